package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/bulwark-ai/bulwark/test/fixture"
	"github.com/bulwark-ai/bulwark/test/fixture/fakeclock"
)

// replace writes body to path through a temporary file and a rename, as
// editors and secret updaters do.
func replace(t testing.TB, path string, body []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, body, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// newTestReloader is a reloader whose once-per-second look reads a fake
// clock the test moves.
func newTestReloader(t *testing.T, files TLSFiles) (*CertReloader, *fakeclock.Clock, *prometheus.CounterVec) {
	t.Helper()
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "r"}, []string{"result"})
	r := newCertReloader("grpc", files, nil, reloads)
	clk := fakeclock.New(time.Now())
	r.now = clk.Now
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	return r, clk, reloads
}

func serial(t *testing.T, r *CertReloader) int64 {
	t.Helper()
	c, err := r.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.Int64()
}

func TestCertReloaderRotates(t *testing.T) {
	t.Parallel()
	ca := fixture.NewCA(t)
	dir := t.TempDir()
	files := TLSFiles{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	certA, keyA := ca.Issue(t, 100, false)
	replace(t, files.CertFile, certA)
	replace(t, files.KeyFile, keyA)
	r, clk, reloads := newTestReloader(t, files)
	if got := serial(t, r); got != 100 {
		t.Fatalf("serial = %d, want 100", got)
	}

	// Files are looked at no more than once a second.
	certB, keyB := ca.Issue(t, 200, false)
	replace(t, files.KeyFile, keyB)
	replace(t, files.CertFile, certB)
	clk.Advance(900 * time.Millisecond)
	if got := serial(t, r); got != 100 {
		t.Errorf("serial within the check interval = %d, want 100 still", got)
	}
	clk.Advance(100 * time.Millisecond)
	if got := serial(t, r); got != 200 {
		t.Fatalf("after rotation serial = %d, want 200", got)
	}
	if got := testutil.ToFloat64(reloads.WithLabelValues("success")); got != 1 {
		t.Errorf("success reloads = %v, want 1", got)
	}

	// Unchanged files are not reloaded.
	clk.Advance(time.Second)
	serial(t, r)
	if got := testutil.ToFloat64(reloads.WithLabelValues("success")); got != 1 {
		t.Errorf("success reloads after no change = %v, want 1", got)
	}
}

func TestCertReloaderKeepsLastGood(t *testing.T) {
	t.Parallel()
	ca := fixture.NewCA(t)
	dir := t.TempDir()
	files := TLSFiles{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	certA, keyA := ca.Issue(t, 100, false)
	replace(t, files.CertFile, certA)
	replace(t, files.KeyFile, keyA)
	r, clk, reloads := newTestReloader(t, files)
	certB, keyB := ca.Issue(t, 200, false)

	steps := []struct {
		name   string
		write  func()
		serial int64
	}{
		{"garbage certificate", func() { replace(t, files.CertFile, []byte("not a certificate")) }, 100},
		{"half of the pair written (B's cert, A's key)", func() { replace(t, files.CertFile, certB) }, 100},
		{"key file removed", func() { os.Remove(files.KeyFile) }, 100},
		{"the rest of the pair arrives", func() { replace(t, files.KeyFile, keyB) }, 200},
	}
	for i, st := range steps {
		st.write()
		clk.Advance(time.Second)
		if got := serial(t, r); got != st.serial {
			t.Fatalf("%s: serial = %d, want %d", st.name, got, st.serial)
		}
		// A broken set is tried once per change, not once per second.
		clk.Advance(time.Second)
		serial(t, r)
		if got, want := testutil.ToFloat64(reloads.WithLabelValues("failure")), float64(min(i+1, 3)); got != want {
			t.Errorf("%s: failures = %v, want %v", st.name, got, want)
		}
	}
	if got := testutil.ToFloat64(reloads.WithLabelValues("success")); got != 1 {
		t.Errorf("success reloads = %v, want 1", got)
	}
}

// TestCertReloaderKubernetesSecret swaps a secret volume's ..data symlink,
// the way the kubelet updates a mounted Secret: the file paths never
// change, their targets do.
func TestCertReloaderKubernetesSecret(t *testing.T) {
	t.Parallel()
	ca := fixture.NewCA(t)
	dir := t.TempDir()
	writeVersion := func(name string, serial int64) {
		c, k := ca.Issue(t, serial, false)
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		replace(t, filepath.Join(dir, name, "tls.crt"), c)
		replace(t, filepath.Join(dir, name, "tls.key"), k)
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	writeVersion("..v1", 100)
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	r, clk, _ := newTestReloader(t, TLSFiles{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")})
	writeVersion("..v2", 200)
	os.RemoveAll(filepath.Join(dir, "..v1"))
	clk.Advance(time.Second)
	if got := serial(t, r); got != 200 {
		t.Fatalf("serial after the secret update = %d, want 200", got)
	}
}

func TestSANAllowList(t *testing.T) {
	t.Parallel()
	ca := fixture.NewCA(t)
	gateway := "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"
	cases := []struct {
		name    string
		allowed []string
		sans    []string
		ok      bool
	}{
		{"empty list allows any", nil, []string{"spiffe://cluster.local/ns/x/sa/y"}, true},
		{"exact SPIFFE id", []string{gateway}, []string{gateway}, true},
		{"other SPIFFE id", []string{gateway}, []string{"spiffe://cluster.local/ns/default/sa/web"}, false},
		{"prefix", []string{"spiffe://cluster.local/ns/istio-system/*"}, []string{gateway}, true},
		{"prefix of another namespace", []string{"spiffe://cluster.local/ns/batch/*"}, []string{gateway}, false},
		{"DNS SAN, case-insensitive", []string{"Envoy.Mesh.Local"}, []string{"envoy.mesh.local"}, true},
		{"one of several SANs", []string{"envoy.mesh.local"}, []string{"spiffe://x/y", "envoy.mesh.local"}, true},
		{"no SAN at all", []string{gateway}, nil, false},
		{"URI is not a DNS name", []string{"cluster.local"}, []string{"spiffe://cluster.local"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leaf := ca.Client(t, tc.sans...).Leaf
			err := newSANAllowList(tc.allowed).verify(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}})
			if (err == nil) != tc.ok {
				t.Fatalf("verify(%v) with allow-list %v = %v, want ok=%v", tc.sans, tc.allowed, err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "tls_client_sans") {
				t.Errorf("error %q does not name tls_client_sans", err)
			}
		})
	}
}

// TestServerMTLS runs the real gRPC server with mTLS and a SAN allow-list
// and calls gRPC health as clients with and without acceptable certificates.
func TestServerMTLS(t *testing.T) {
	t.Parallel()
	ca := fixture.NewCA(t)
	dir := t.TempDir()
	allowed := "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"
	files := TLSFiles{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
		ClientCAFile: filepath.Join(dir, "ca.crt"), ClientSANs: []string{allowed}}
	c, k := ca.Issue(t, 100, false)
	replace(t, files.CertFile, c)
	replace(t, files.KeyFile, k)
	replace(t, files.ClientCAFile, ca.PEM)
	reg := prometheus.NewRegistry()
	s := New(Config{GRPCAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MaxRecvMsgBytes: 1 << 20, MaxSendMsgBytes: 1 << 20,
		MaxConcurrentStreams: 10, ShutdownGrace: time.Second, TLS: files}, nil, reg)
	startServing(t, s)

	otherCA := fixture.NewCA(t)
	cases := []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"allowed SAN", []tls.Certificate{ca.Client(t, allowed)}, true},
		{"no client certificate", nil, false},
		{"SAN not allowed", []tls.Certificate{ca.Client(t, "spiffe://cluster.local/ns/default/sa/web")}, false},
		{"another CA", []tls.Certificate{otherCA.Client(t, allowed)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			creds := credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), Certificates: tc.certs, ServerName: "localhost"})
			conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer ccancel()
			_, err = healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
			if (err == nil) != tc.ok {
				t.Fatalf("health over mTLS: err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
				t.Errorf("refusal took the whole deadline: %v", err)
			}
		})
	}
	if n, err := testutil.GatherAndCount(reg, "bulwark_tls_reload_total"); err != nil || n != 2 {
		t.Errorf("bulwark_tls_reload_total series = %d, %v; want success and failure", n, err)
	}
}

func TestServerTLSLoadError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	files := TLSFiles{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	replace(t, files.CertFile, []byte("junk"))
	replace(t, files.KeyFile, []byte("junk"))
	s := New(Config{GRPCAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", TLS: files}, nil, nil)
	if err := s.Listen(); err == nil || !strings.Contains(err.Error(), "tls.crt") {
		t.Fatalf("Listen with a broken certificate: %v, want an error naming the file", err)
	}
}
