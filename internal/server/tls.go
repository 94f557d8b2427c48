package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TLSFiles names a listener's certificate files. CertFile and KeyFile are
// set together or not at all; ClientCAFile turns on mTLS (client
// certificates required and verified against it); ClientSANs, when not
// empty, further restricts which verified clients may connect.
type TLSFiles struct {
	CertFile     string
	KeyFile      string
	ClientCAFile string
	// ClientSANs is the allow-list of client URI SANs (SPIFFE IDs) or DNS
	// SANs; an entry ending in "*" matches by prefix. Empty: any client
	// certificate the CA signed.
	ClientSANs []string
}

// Enabled reports whether the listener serves TLS.
func (f TLSFiles) Enabled() bool { return f.CertFile != "" }

// reloadCheckInterval is how often, at most, a handshake looks at the files.
const reloadCheckInterval = time.Second

// CertReloader serves a listener's certificate (and client CA pool) from
// disk and picks up new files without a restart: a handshake looks at the
// files' identity, size and mtime at most once per reloadCheckInterval and
// reloads them when any changed. Files are compared through symlinks, so
// Kubernetes secret volumes (a ..data symlink swapped atomically) and
// write-then-rename updates are both seen. A broken new set (unreadable, a
// key that does not match, half of a pair written) is logged and counted,
// and the last good certificate stays in force; the next change is tried
// again.
type CertReloader struct {
	files   TLSFiles
	name    string // listener, for logs
	logger  *slog.Logger
	now     func() time.Time
	reloads *prometheus.CounterVec
	allowed sanAllowList

	lastCheck atomic.Int64 // unix nanoseconds of the last look at the files
	state     atomic.Pointer[certState]

	mu   sync.Mutex    // serialises reloads
	seen []os.FileInfo // the files as last tried, good or not
}

// certState is one consistent set loaded from disk.
type certState struct {
	cert *tls.Certificate
	// mtls is the whole per-handshake config when a client CA is set.
	mtls *tls.Config
}

// newCertReloader returns a reloader for files; call Reload once before
// serving to load them.
func newCertReloader(name string, files TLSFiles, logger *slog.Logger, reloads *prometheus.CounterVec) *CertReloader {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &CertReloader{files: files, name: name, logger: logger, now: time.Now, reloads: reloads,
		allowed: newSANAllowList(files.ClientSANs)}
}

// Reload reads the files now. On error the previous certificate, if any,
// stays in force.
func (r *CertReloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = r.stat()
	r.lastCheck.Store(r.now().UnixNano())
	st, err := r.load()
	if err != nil {
		return err
	}
	r.state.Store(st)
	return nil
}

func (r *CertReloader) paths() []string {
	p := []string{r.files.CertFile, r.files.KeyFile}
	if r.files.ClientCAFile != "" {
		p = append(p, r.files.ClientCAFile)
	}
	return p
}

// stat returns the files' info; a missing file is a nil entry.
func (r *CertReloader) stat() []os.FileInfo {
	paths := r.paths()
	out := make([]os.FileInfo, len(paths))
	for i, p := range paths {
		out[i], _ = os.Stat(p)
	}
	return out
}

func changed(a, b []os.FileInfo) bool {
	if len(a) != len(b) {
		return true
	}
	for i := range a {
		switch {
		case a[i] == nil || b[i] == nil:
			if a[i] != b[i] {
				return true
			}
		case !os.SameFile(a[i], b[i]) || !a[i].ModTime().Equal(b[i].ModTime()) || a[i].Size() != b[i].Size():
			return true
		}
	}
	return false
}

func (r *CertReloader) load() (*certState, error) {
	cert, err := tls.LoadX509KeyPair(r.files.CertFile, r.files.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls %s: load %s and %s: %w", r.name, r.files.CertFile, r.files.KeyFile, err)
	}
	st := &certState{cert: &cert}
	if r.files.ClientCAFile == "" {
		return st, nil
	}
	pem, err := os.ReadFile(r.files.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("tls %s: client CA: %w", r.name, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls %s: client CA %s: no PEM certificate found", r.name, r.files.ClientCAFile)
	}
	st.mtls = &tls.Config{
		MinVersion:       tls.VersionTLS12,
		Certificates:     []tls.Certificate{cert},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        pool,
		VerifyConnection: r.verifyConnection,
	}
	return st, nil
}

// current returns the certificate set in force, first reloading the files if
// they changed (looked at no more than once per reloadCheckInterval, by one
// handshake while the others go on with the current set).
func (r *CertReloader) current() *certState {
	now := r.now().UnixNano()
	last := r.lastCheck.Load()
	if now-last >= int64(reloadCheckInterval) && r.lastCheck.CompareAndSwap(last, now) {
		r.maybeReload()
	}
	return r.state.Load()
}

func (r *CertReloader) maybeReload() {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := r.stat()
	if !changed(r.seen, seen) {
		return
	}
	r.seen = seen
	st, err := r.load()
	if err != nil {
		r.logger.Error("certificate reload failed; the previous certificate stays in force", "listener", r.name, "error", err)
		r.count("failure")
		return
	}
	r.state.Store(st)
	r.logger.Info("certificate reloaded", "listener", r.name, "cert_file", r.files.CertFile,
		"serial", st.cert.Leaf.SerialNumber.String(), "not_after", st.cert.Leaf.NotAfter)
	r.count("success")
}

func (r *CertReloader) count(result string) {
	if r.reloads != nil {
		r.reloads.WithLabelValues(result).Inc()
	}
}

// GetCertificate is tls.Config.GetCertificate: the current certificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	st := r.current()
	if st == nil {
		return nil, errors.New("tls: no certificate loaded")
	}
	return st.cert, nil
}

// GetConfigForClient is tls.Config.GetConfigForClient: with a client CA, the
// whole config of the current set, so the certificate and the CA pool change
// together; without one, nil (the base config applies).
func (r *CertReloader) GetConfigForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	st := r.current()
	if st == nil {
		return nil, errors.New("tls: no certificate loaded")
	}
	return st.mtls, nil
}

// ServerConfig is the listener's TLS configuration: TLS 1.2 at least (1.3
// negotiated when the client offers it), Go's default cipher suites, the
// certificate from GetCertificate and, with a client CA, client
// certificates required, verified and checked against the SAN allow-list.
func (r *CertReloader) ServerConfig() *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
	if r.files.ClientCAFile != "" {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.GetConfigForClient = r.GetConfigForClient
	}
	return c
}

// verifyConnection enforces the SAN allow-list on the verified client
// certificate.
func (r *CertReloader) verifyConnection(cs tls.ConnectionState) error {
	if err := r.allowed.verify(cs); err != nil {
		r.logger.Warn("client certificate refused", "listener", r.name, "error", err)
		return err
	}
	return nil
}

// sanAllowList matches client certificate SANs: exact entries, and prefixes
// for entries that end in "*". DNS names compare case-insensitively.
type sanAllowList struct {
	exact    map[string]bool
	prefixes []string
}

func newSANAllowList(entries []string) sanAllowList {
	a := sanAllowList{exact: map[string]bool{}}
	for _, e := range entries {
		if !strings.Contains(e, "://") {
			e = strings.ToLower(e)
		}
		if p, ok := strings.CutSuffix(e, "*"); ok {
			a.prefixes = append(a.prefixes, p)
			continue
		}
		a.exact[e] = true
	}
	return a
}

func (a sanAllowList) empty() bool { return len(a.exact) == 0 && len(a.prefixes) == 0 }

func (a sanAllowList) allows(san string) bool {
	if a.exact[san] {
		return true
	}
	for _, p := range a.prefixes {
		if strings.HasPrefix(san, p) {
			return true
		}
	}
	return false
}

// verify accepts a connection whose leaf certificate has an allowed URI or
// DNS SAN.
func (a sanAllowList) verify(cs tls.ConnectionState) error {
	if a.empty() {
		return nil
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: a client certificate is required")
	}
	leaf := cs.PeerCertificates[0]
	var sans []string
	for _, u := range leaf.URIs {
		if s := u.String(); a.allows(s) {
			return nil
		} else {
			sans = append(sans, s)
		}
	}
	for _, d := range leaf.DNSNames {
		if a.allows(strings.ToLower(d)) {
			return nil
		}
		sans = append(sans, d)
	}
	if len(sans) == 0 {
		return fmt.Errorf("tls: client certificate (subject %q) has no URI or DNS SAN; tls_client_sans requires one", leaf.Subject.String())
	}
	return fmt.Errorf("tls: client certificate SANs %v are not in tls_client_sans", sans)
}
