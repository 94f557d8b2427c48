// Package redisserver starts real redis-server processes for tests: a single
// node or a small Redis Cluster, each on free loopback ports, stopped when the
// test ends. Tests never touch the machine's own Redis on 6379, so they can run
// in parallel and can kill a server without disturbing anything else.
package redisserver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// InstallHint is printed when redis-server is missing, so a newcomer knows the
// one command that fixes it instead of seeing a wall of connection errors.
const InstallHint = "redis-server not found on PATH; install it with: apt-get update && apt-get install -y redis-server"

// Server is one running redis-server process.
type Server struct {
	// Addr is host:port of the server on loopback.
	Addr string
	cmd  *exec.Cmd
	dir  string
	args []string
}

// Start runs a standalone redis-server on a free loopback port and registers
// its shutdown with t.Cleanup. Extra arguments are passed as config directives,
// e.g. "--requirepass", "secret".
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	s, err := start(tb.TempDir(), extra...)
	if err != nil {
		tb.Fatalf("start redis-server: %v", err)
	}
	tb.Cleanup(s.Stop)
	return s
}

func start(dir string, extra ...string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("%s", InstallHint)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		args := []string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", dir,
			"--daemonize", "no",
			"--protected-mode", "no",
		}
		args = append(args, extra...)
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, args: args}
		s.cmd = exec.Command(bin, args...) // #nosec G204 -- test harness: redis-server from PATH, arguments built here
		s.cmd.Stdout = nil
		s.cmd.Stderr = nil
		if err := s.cmd.Start(); err != nil {
			return nil, fmt.Errorf("exec redis-server: %w", err)
		}
		if err := waitReady(s.Addr, 5*time.Second); err != nil {
			lastErr = err
			s.Stop()
			continue // port raced with another process; try another
		}
		return s, nil
	}
	return nil, fmt.Errorf("redis-server never became ready: %w", lastErr)
}

// Stop kills the server (SIGKILL: tests that model a crash want exactly that)
// and waits for it to exit. Stop is idempotent.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port after Stop, so clients
// configured with Addr reconnect to it.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatal(InstallHint)
	}
	s.cmd = exec.Command(bin, s.args...) // #nosec G204 -- test harness: redis-server from PATH, arguments built here
	if err := s.cmd.Start(); err != nil {
		tb.Fatalf("restart redis-server: %v", err)
	}
	if err := waitReady(s.Addr, 5*time.Second); err != nil {
		tb.Fatalf("restart redis-server: %v", err)
	}
}

// Cluster is a Redis Cluster of several masters with all 16384 slots assigned.
type Cluster struct {
	// Addrs lists host:port of every node.
	Addrs   []string
	servers []*Server
}

// StartCluster runs n (>= 3) cluster-enabled masters, assigns the slots with
// `redis-cli --cluster create`, waits until the cluster reports ok, and
// registers shutdown with t.Cleanup.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	if n < 3 {
		tb.Fatalf("a Redis Cluster needs at least 3 masters, got %d", n)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		tb.Fatal("redis-cli not found on PATH; install it with: apt-get update && apt-get install -y redis-server")
	}
	c := &Cluster{}
	for i := 0; i < n; i++ {
		dir := filepath.Join(tb.TempDir(), strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o750); err != nil {
			tb.Fatal(err)
		}
		s, err := start(dir, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "2000")
		if err != nil {
			tb.Fatalf("start cluster node: %v", err)
		}
		tb.Cleanup(s.Stop)
		c.servers = append(c.servers, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput() // #nosec G204 -- test harness: redis-cli from PATH, arguments built here
	if err != nil {
		tb.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok := true
		for _, a := range c.Addrs {
			info, err := command(a, "CLUSTER", "INFO")
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				ok = false
				break
			}
		}
		if ok {
			return c
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redis cluster never reached cluster_state:ok")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Node returns the i-th node, e.g. to kill it in a failure test.
func (c *Cluster) Node(i int) *Server { return c.servers[i] }

// FreePort asks the kernel for a free loopback TCP port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitReady(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		var out string
		out, err = command(addr, "PING")
		if err == nil && strings.Contains(out, "PONG") {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no PONG from %s: %v", addr, err)
}

// command sends one RESP command and returns the raw reply text. It exists so
// the harness does not depend on the client library under test.
func command(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(line, "$") {
		n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	if strings.HasPrefix(line, "-") {
		return "", fmt.Errorf("redis: %s", strings.TrimSpace(line[1:]))
	}
	return line, nil
}

// Pause freezes the server with SIGSTOP for d (connections stay open but
// nothing is answered, like a stalled or partitioned Redis), then resumes it.
// It returns at once; the resume happens in the background.
func (s *Server) Pause(tb testing.TB, d time.Duration) {
	tb.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		tb.Fatalf("pause redis-server: %v", err)
	}
	proc := s.cmd.Process
	timer := time.AfterFunc(d, func() { _ = proc.Signal(syscall.SIGCONT) })
	tb.Cleanup(func() {
		timer.Stop()
		_ = proc.Signal(syscall.SIGCONT)
	})
}
