// Command bulwark is the policy-decision service Envoy calls through ext_authz
// and ext_proc, plus the tools around it: check a request against a policy,
// scan text with the detectors, manage API keys, verify audit logs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bulwark:", err)
		}
		os.Exit(exitCode(err))
	}
}

// exitError carries a specific exit status (e.g. 2 for usage errors).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 1
}

type command struct {
	run   func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error
	usage string
}

func commands() map[string]command {
	return map[string]command{
		"serve":   {runServe, "run the gRPC policy-decision server"},
		"check":   {runCheck, "send one request to a server (or a policy dir) and print the decision"},
		"scan":    {runScan, "scan JSON lines {id, text} with the detectors; one JSON line of findings each"},
		"keys":    {runKeys, "create, revoke and list API keys (secrets are printed once, stored hashed)"},
		"audit":   {runAudit, "verify FILE...: check a hash-chained audit log"},
		"usage":   {runUsage, "report a tenant's or principal's tokens, requests, denials and cost (Admin API)"},
		"version": {runVersion, "print the version"},
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return &exitError{2, errors.New("no command given")}
		}
		return nil
	}
	c, ok := cmds[args[0]]
	if !ok {
		usage(stderr, cmds)
		return &exitError{2, fmt.Errorf("unknown command %q", args[0])}
	}
	return c.run(ctx, args[1:], stdin, stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: bulwark <command> [flags]\n\ncommands:")
	for _, name := range []string{"serve", "check", "scan", "keys", "audit", "usage", "version"} {
		if c, ok := cmds[name]; ok {
			fmt.Fprintf(w, "  %-8s %s\n", name, c.usage)
		}
	}
	fmt.Fprintln(w, "\nRun 'bulwark <command> -h' for a command's flags.")
}

func runVersion(_ context.Context, _ []string, _ io.Reader, stdout, _ io.Writer) error {
	fmt.Fprintln(stdout, "bulwark", version)
	return nil
}
