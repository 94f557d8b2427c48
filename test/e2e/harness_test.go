// Package e2e drives the real bulwark binary the way Envoy does: it builds the
// binary once, starts it on free loopback ports, and speaks ext_authz with
// go-control-plane types over real gRPC.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/bulwark-ai/bulwark/internal/envoy"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bulwark-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "bulwark")
	// BULWARK_E2E_RACE=0 builds without the race detector, to measure
	// memory and speed as production runs.
	flags := []string{"build", "-race", "-o", binary}
	if os.Getenv("BULWARK_E2E_RACE") == "0" {
		flags = []string{"build", "-o", binary}
	}
	build := exec.Command("go", append(flags, "github.com/bulwark-ai/bulwark/cmd/bulwark")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build bulwark:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one running bulwark serve.
type proc struct {
	t         *testing.T
	cmd       *exec.Cmd
	GRPCAddr  string
	APIAddr   string
	AdminAddr string
	conn      *grpc.ClientConn // Envoy's listener
	apiConn   *grpc.ClientConn // Bulwark's own API
	Auth      authv3.AuthorizationClient

	mu     sync.Mutex
	logs   bytes.Buffer
	exited chan struct{}
	err    error
}

// start runs `bulwark serve` with args on free ports and waits until it
// serves. The process is stopped when the test ends.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, args...)
}

// startEnv is start with extra environment variables (e.g. BULWARK_KEY_PEPPER).
func startEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	full := append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--log-level", "debug", "--shutdown-grace", "5s", "--reload-debounce", "50ms",
		// A race-built binary on a loaded CI machine can miss the production
		// 100ms budget; tests about deadlines set their own.
		"--check-timeout", "5s"}, args...)
	p := &proc{t: t, exited: make(chan struct{})}
	p.cmd = exec.Command(binary, full...)
	p.cmd.Env = append(cleanEnv(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start bulwark: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "serving" {
				p.mu.Lock()
				p.GRPCAddr, _ = rec["grpc_addr"].(string)
				p.APIAddr, _ = rec["api_addr"].(string)
				p.AdminAddr, _ = rec["admin_addr"].(string)
				p.mu.Unlock()
				once.Do(func() { close(ready) })
			}
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	select {
	case <-ready:
	case <-p.exited:
		t.Fatalf("bulwark exited before serving: %v\n%s", p.err, p.Logs())
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("bulwark did not start serving in 20s\n%s", p.Logs())
	}
	p.conn, err = grpc.NewClient(p.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p.Auth = authv3.NewAuthorizationClient(p.conn)
	if p.APIAddr != "" {
		if p.apiConn, err = grpc.NewClient(p.APIAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		p.conn.Close()
		if p.apiConn != nil {
			p.apiConn.Close()
		}
		p.Stop()
		if t.Failed() {
			t.Logf("bulwark logs:\n%s", p.Logs())
		}
	})
	return p
}

// cleanEnv keeps the developer's BULWARK_* settings out of the tests.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BULWARK_") && !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	return env
}

// Stop sends SIGTERM and waits for exit (killing after 15 s).
func (p *proc) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// Logs returns everything the process wrote to stderr so far.
func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Check sends a CheckRequest built as Envoy would for r.
func (p *proc) Check(t *testing.T, r envoy.HTTPRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := p.Auth.Check(ctx, envoy.NewCheckRequest(r))
	if err != nil {
		t.Fatalf("Check(%s %s): %v", r.Method, r.Path, err)
	}
	return resp
}

func (p *proc) health(t *testing.T, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(p.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	return resp.GetStatus()
}

func (p *proc) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + p.AdminAddr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// runCLI runs the bulwark binary with args and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runCLIEnv(t, nil, args...)
}

// runCLIEnv is runCLI with extra environment variables.
func runCLIEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(cleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// Write then rename, as editors and ConfigMaps do, so the watcher never
	// sees a half-written file.
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
