package e2e

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/test/fixture"
)

// tlsFiles writes a server certificate and key signed by ca into dir and
// returns their paths.
func tlsFiles(t *testing.T, dir string, ca *fixture.CA, serial int64) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c, k := ca.Issue(t, serial, false)
	writeFile(t, keyFile, string(k))
	writeFile(t, certFile, string(c))
	return certFile, keyFile
}

// dialTLS connects to p's gRPC listener over TLS trusting ca, presenting
// certs.
func dialTLS(t *testing.T, p *proc, ca *fixture.CA, certs ...tls.Certificate) *grpc.ClientConn {
	t.Helper()
	return dialTLSTo(t, p.GRPCAddr, ca, certs...)
}

// dialTLSTo is dialTLS to any of the process's listeners.
func dialTLSTo(t *testing.T, addr string, ca *fixture.CA, certs ...tls.Certificate) *grpc.ClientConn {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), Certificates: certs, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// tlsCheck makes one ext_authz Check on conn; the default policy allows
// GET /healthz.
func tlsCheck(conn *grpc.ClientConn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, envoy.NewCheckRequest(envoy.HTTPRequest{Method: "GET", Path: "/healthz"}))
	if err != nil {
		return err
	}
	if resp.GetStatus().GetCode() != int32(codes.OK) {
		return status.Errorf(codes.Internal, "denied: %v", resp.GetStatus())
	}
	return nil
}

// peerSerial makes a new TLS connection and returns the server
// certificate's serial number.
func peerSerial(t *testing.T, addr string, ca *fixture.CA) int64 {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr,
		&tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func TestTLSOnly(t *testing.T) {
	t.Parallel()
	ca := fixture.NewCA(t)
	cert, key := tlsFiles(t, t.TempDir(), ca, 100)
	p := start(t, "--tls-cert", cert, "--tls-key", key)

	conn := dialTLS(t, p, ca)
	if err := tlsCheck(conn, 5*time.Second); err != nil {
		t.Fatalf("Check over TLS: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health over TLS: %v %v", r, err)
	}
	// TLS 1.1 is refused; TLS 1.3 is what Go clients get.
	if _, err := tls.Dial("tcp", p.GRPCAddr, &tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("a TLS 1.1 handshake succeeded")
	}
	c, err := tls.Dial("tcp", p.GRPCAddr, &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("negotiated version %x, want TLS 1.3", v)
	}
	c.Close()

	// A plaintext client gets nothing, and fails fast.
	plain, err := grpc.NewClient(p.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	began := time.Now()
	if err := tlsCheck(plain, 5*time.Second); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext Check on a TLS listener: %v, want UNAVAILABLE", err)
	}
	if d := time.Since(began); d > 4*time.Second {
		t.Errorf("plaintext refusal took %v", d)
	}
}

func TestTLSMutual(t *testing.T) {
	t.Parallel()
	ca, other := fixture.NewCA(t), fixture.NewCA(t)
	dir := t.TempDir()
	cert, key := tlsFiles(t, dir, ca, 100)
	caFile := filepath.Join(dir, "ca.crt")
	writeFile(t, caFile, string(ca.PEM))
	gateway := "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"
	p := start(t, "--tls-cert", cert, "--tls-key", key, "--tls-client-ca", caFile,
		"--tls-client-sans", gateway+",envoy.bulwark.local")

	cases := []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"no client certificate", nil, false},
		{"allowed SPIFFE id", []tls.Certificate{ca.Client(t, gateway)}, true},
		{"allowed DNS SAN", []tls.Certificate{ca.Client(t, "envoy.bulwark.local")}, true},
		{"SAN not allowed", []tls.Certificate{ca.Client(t, "spiffe://cluster.local/ns/default/sa/web")}, false},
		{"signed by another CA", []tls.Certificate{other.Client(t, gateway)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tlsCheck(dialTLS(t, p, ca, tc.certs...), 5*time.Second)
			if tc.ok && err != nil {
				t.Fatalf("Check: %v, want allowed", err)
			}
			if !tc.ok && status.Code(err) != codes.Unavailable {
				t.Fatalf("Check: %v, want UNAVAILABLE (connection refused)", err)
			}
		})
	}
	// bulwark check reaches the same server with the CLI's TLS flags.
	clientCert, clientKey := ca.Issue(t, 101, true, gateway)
	writeFile(t, filepath.Join(dir, "client.crt"), string(clientCert))
	writeFile(t, filepath.Join(dir, "client.key"), string(clientKey))
	tlsArgs := []string{"check", "--addr", p.GRPCAddr, "--path", "/healthz", "--tls-ca", caFile}
	out, stderr, code := runCLI(t, append(tlsArgs, "--tls-cert", filepath.Join(dir, "client.crt"), "--tls-key", filepath.Join(dir, "client.key"))...)
	if code != 0 || !strings.Contains(out, `"allowed": true`) {
		t.Errorf("bulwark check over mTLS: exit %d\n%s\n%s", code, out, stderr)
	}
	if _, stderr, code := runCLI(t, tlsArgs...); code == 0 || !strings.Contains(stderr, "Unavailable") {
		t.Errorf("bulwark check without a client certificate: exit %d, stderr %s; want a refused connection", code, stderr)
	}
	if logs := p.Logs(); !strings.Contains(logs, "client certificate refused") || !strings.Contains(logs, "tls_client_sans") {
		t.Errorf("the SAN refusal is not logged clearly:\n%s", logs)
	}
}

// TestTLSRotation replaces the certificate files while Check calls flow,
// on a long-lived connection and on a new connection per call: no call
// fails, and new connections soon see the new certificate.
func TestTLSRotation(t *testing.T) {
	t.Parallel()
	ca := fixture.NewCA(t)
	dir := t.TempDir()
	cert, key := tlsFiles(t, dir, ca, 1001)
	p := start(t, "--tls-cert", cert, "--tls-key", key)
	if got := peerSerial(t, p.GRPCAddr, ca); got != 1001 {
		t.Fatalf("serial = %d, want 1001", got)
	}

	var calls, failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	long := dialTLS(t, p, ca)
	loop := func(conn func() (*grpc.ClientConn, func(), error)) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, done, err := conn()
			if err == nil {
				err = tlsCheck(c, 5*time.Second)
				done()
			}
			calls.Add(1)
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		}
	}
	wg.Add(2)
	go loop(func() (*grpc.ClientConn, func(), error) { return long, func() {}, nil })
	go loop(func() (*grpc.ClientConn, func(), error) {
		c, err := grpc.NewClient(p.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool()})))
		if err != nil {
			return nil, nil, err
		}
		return c, func() { c.Close() }, nil
	})
	eventually(t, 10*time.Second, "calls flowing", func() bool { return calls.Load() > 20 })

	// Write-then-rename each file, key first, as a secret updater would.
	certB, keyB := ca.Issue(t, 2002, false)
	writeFile(t, key, string(keyB))
	writeFile(t, cert, string(certB))
	eventually(t, 10*time.Second, "new connections presenting certificate B", func() bool {
		return peerSerial(t, p.GRPCAddr, ca) == 2002
	})
	before := calls.Load()
	eventually(t, 10*time.Second, "calls after the rotation", func() bool { return calls.Load() > before+20 })
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d calls failed across the rotation; first: %v", n, calls.Load(), firstErr.Load())
	}
	t.Logf("%d calls, none failed", calls.Load())
	_, metrics := p.get(t, "/metrics")
	if metricValue(metrics, `bulwark_tls_reload_total{result="success"}`) < 1 {
		t.Errorf("rotation not counted:\n%s", grepMetric(metrics, "bulwark_tls_reload_total"))
	}

	// A broken certificate keeps B in force.
	failures0 := metricValue(metrics, `bulwark_tls_reload_total{result="failure"}`)
	writeFile(t, cert, "not a certificate")
	eventually(t, 10*time.Second, "the failed reload counted", func() bool {
		peerSerial(t, p.GRPCAddr, ca) // handshakes drive the look at the files
		_, m := p.get(t, "/metrics")
		return metricValue(m, `bulwark_tls_reload_total{result="failure"}`) > failures0
	})
	if got := peerSerial(t, p.GRPCAddr, ca); got != 2002 {
		t.Errorf("after a broken update serial = %d, want 2002 still", got)
	}
	if err := tlsCheck(long, 5*time.Second); err != nil {
		t.Errorf("Check after a broken update: %v", err)
	}
}

func TestTLSAdmin(t *testing.T) {
	t.Parallel()
	ca := fixture.NewCA(t)
	dir := t.TempDir()
	cert, key := tlsFiles(t, dir, ca, 300)
	p := start(t, "--admin-tls-cert", cert, "--admin-tls-key", key)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	resp, err := client.Get("https://" + p.AdminAddr + "/readyz")
	if err != nil {
		t.Fatalf("GET https /readyz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz over TLS = %d", resp.StatusCode)
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + p.AdminAddr + "/readyz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP /readyz answered 200 on a TLS admin listener")
		}
	}
	// The gRPC listener stays plaintext: TLS there is configured apart.
	p.Check(t, envoy.HTTPRequest{Method: "GET", Path: "/healthz"})
}

func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()
	ca := fixture.NewCA(t)
	dir := t.TempDir()
	cert, key := tlsFiles(t, dir, ca, 100)
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"cert without key", []string{"--tls-cert", cert}, "tls_key"},
		{"key without cert", []string{"--tls-key", key}, "tls_cert"},
		{"client CA without TLS", []string{"--tls-client-ca", cert}, "tls_client_ca"},
		{"SANs without client CA", []string{"--tls-cert", cert, "--tls-key", key, "--tls-client-sans", "spiffe://x/y"}, "tls_client_sans"},
		{"admin cert without key", []string{"--admin-tls-cert", cert}, "admin_tls_key"},
		{"unreadable pair", []string{"--tls-cert", junk, "--tls-key", junk}, "junk.pem"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, tc.args...)
			_, stderr, code := runCLI(t, args...)
			if code == 0 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want a failure naming %s", code, stderr, tc.want)
			}
		})
	}
}

// metricValue is the value of one series in a /metrics body (-1 when absent).
func metricValue(body, series string) float64 {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// grepMetric returns the lines of a /metrics body that mention name.
func grepMetric(body, name string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, name) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
