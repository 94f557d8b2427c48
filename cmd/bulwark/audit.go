package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/bulwark-ai/bulwark/internal/audit"
)

// runAudit implements `bulwark audit verify FILE... [--key-file F]`: files
// oldest first (rotated audit.log.N ... audit.log.1, then audit.log). It exits
// non-zero and names the first broken, reordered or missing record.
func runAudit(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, "usage: bulwark audit verify FILE... [--key-file F]")
		return &exitError{2, errors.New("audit: want the verify command")}
	}
	fs := flag.NewFlagSet("bulwark audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key-file", "", "HMAC key the log was signed with (checks every record's signature)")
	// Accept flags before or after the file names.
	var files []string
	rest := args[1:]
	for len(rest) > 0 {
		if err := fs.Parse(rest); err != nil {
			return &exitError{2, err}
		}
		rest = fs.Args()
		if len(rest) > 0 {
			files = append(files, rest[0])
			rest = rest[1:]
		}
	}
	if len(files) == 0 {
		return &exitError{2, errors.New("audit verify: no files given")}
	}
	var key []byte
	if *keyFile != "" {
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("audit verify: key file: %w", err)
		}
		key = []byte(strings.TrimSpace(string(b)))
	}
	rep, err := audit.Verify(files, key)
	if err != nil {
		return fmt.Errorf("audit verify: FAILED after %d good records: %w", rep.Records, err)
	}
	fmt.Fprintf(stdout, "ok: %d records, seq %d..%d", rep.Records, rep.FirstSeq, rep.LastSeq)
	if rep.Dropped > 0 {
		fmt.Fprintf(stdout, ", %d dropped under load (recorded on the chain)", rep.Dropped)
	}
	if rep.StartsMidChain {
		fmt.Fprint(stdout, "; starts mid-chain (its first link points into an older file not given)")
	}
	if len(key) > 0 {
		fmt.Fprint(stdout, "; signatures valid")
	}
	fmt.Fprintln(stdout)
	return nil
}
