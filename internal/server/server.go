// Package server runs Bulwark's listeners: the gRPC server Envoy calls
// (ext_authz, ext_proc, gRPC health), the gRPC server of Bulwark's own API
// (GuardService, AdminService, gRPC health, optional reflection), and the
// admin HTTP server (/healthz, /readyz, /metrics). The Envoy listener and the
// API listener are apart because their callers are trusted for different
// things: Envoy's attributes (source.principal, forwarded metadata) are
// believed, an API caller's are not, so an API caller must never reach
// Check or Process. It owns their lifecycle: health goes NOT_SERVING first
// on shutdown, then in-flight calls drain under a hard-stop timer.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Config holds the listener settings (a subset of config.Config).
type Config struct {
	// GRPCAddr is the Envoy listener: ext_authz, ext_proc, health.
	GRPCAddr string
	// APIAddr is the listener of Bulwark's own API (Guard, Admin, health,
	// reflection); empty: no API listener.
	APIAddr   string
	AdminAddr string
	// Reflection serves gRPC reflection on each listener (of its own services).
	Reflection           bool
	MaxRecvMsgBytes      int
	MaxSendMsgBytes      int
	MaxConcurrentStreams uint32
	// Pprof serves /debug/pprof on the admin listener.
	Pprof            bool
	KeepaliveMinTime time.Duration
	ShutdownGrace    time.Duration
	// TLS secures the gRPC listener (mTLS with a client CA); files are
	// reloaded when they change. Empty: plaintext.
	TLS TLSFiles
	// APITLS secures the API listener (mTLS with a client CA; the verified
	// client certificate may then name the caller). Empty: plaintext.
	APITLS TLSFiles
	// AdminTLS secures the admin listener (no client certificates).
	AdminTLS TLSFiles
	// Overload bounds in-flight decisions and open streams.
	Overload OverloadConfig
}

// Registry is where the server registers its own metrics and what /metrics
// serves (*prometheus.Registry is one).
type Registry interface {
	prometheus.Registerer
	prometheus.Gatherer
}

// ReadinessCheck reports one component's readiness: nil when ready, else why
// not. Detail, when non-nil, is shown in /readyz's JSON.
type ReadinessCheck struct {
	Name   string
	Check  func() error
	Detail func() any
}

// Server is Bulwark's listeners.
type Server struct {
	cfg      Config
	logger   *slog.Logger
	grpc     *grpc.Server
	api      *grpc.Server // nil without APIAddr
	health   *health.Server
	gatherer prometheus.Gatherer

	mu       sync.Mutex
	checks   []ReadinessCheck
	draining bool

	overload              *Overload
	tls, apiTLS, adminTLS *CertReloader

	grpcLis  net.Listener
	apiLis   net.Listener
	adminLis net.Listener
}

// New creates the gRPC servers (Envoy's, and the API's when APIAddr is set)
// with explicit limits, one overload gate for both, TLS when configured and
// a keepalive enforcement policy that accepts Envoy's pings. Certificates
// load in Listen. Register Envoy's services on GRPC() and the API's on API()
// before Serve. reg may be nil (no metrics).
func New(cfg Config, logger *slog.Logger, reg Registry, opts ...grpc.ServerOption) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var registerer prometheus.Registerer
	var gatherer prometheus.Gatherer
	if reg != nil {
		registerer, gatherer = reg, reg
	}
	s := &Server{cfg: cfg, logger: logger, gatherer: gatherer}
	s.overload = NewOverload(cfg.Overload, registerer)
	s.checks = append(s.checks, s.overload.readinessCheck())
	base := []grpc.ServerOption{
		grpc.InTapHandle(s.overload.Tap),
		grpc.ChainUnaryInterceptor(s.overload.Unary),
		grpc.ChainStreamInterceptor(s.overload.Stream),
		// Long-lived workers keep their grown stacks: a fresh goroutine per
		// call copies its stack several times over in OPA's deep recursion
		// (about a third of the CPU samples in a profile under load).
		grpc.NumStreamWorkers(uint32(max(64, 16*runtime.GOMAXPROCS(0)))), // #nosec G115 -- 16 × GOMAXPROCS is far below 2^32
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes),
		grpc.MaxSendMsgSize(cfg.MaxSendMsgBytes),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.KeepaliveMinTime,
			PermitWithoutStream: true, // Envoy pings idle connections too
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    30 * time.Second,
			Timeout: 10 * time.Second,
		}),
	}
	if cfg.TLS.Enabled() || cfg.APITLS.Enabled() || cfg.AdminTLS.Enabled() {
		reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_tls_reload_total",
			Help: "Certificate reloads after a file change, by result (success, failure); a failure keeps the last good certificate.",
		}, []string{"result"})
		reloads.WithLabelValues("success")
		reloads.WithLabelValues("failure")
		if registerer != nil {
			registerer.MustRegister(reloads)
		}
		if cfg.TLS.Enabled() {
			s.tls = newCertReloader("grpc", cfg.TLS, logger, reloads)
		}
		if cfg.APITLS.Enabled() && cfg.APIAddr != "" {
			s.apiTLS = newCertReloader("api", cfg.APITLS, logger, reloads)
		}
		if cfg.AdminTLS.Enabled() {
			s.adminTLS = newCertReloader("admin", TLSFiles{CertFile: cfg.AdminTLS.CertFile, KeyFile: cfg.AdminTLS.KeyFile}, logger, reloads)
		}
	}
	newServer := func(r *CertReloader) *grpc.Server {
		o := append([]grpc.ServerOption{}, base...)
		if r != nil {
			o = append(o, grpc.Creds(credentials.NewTLS(r.ServerConfig())))
		}
		return grpc.NewServer(append(o, opts...)...)
	}
	s.health = health.NewServer()
	s.grpc = newServer(s.tls)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	if cfg.APIAddr != "" {
		s.api = newServer(s.apiTLS)
		healthpb.RegisterHealthServer(s.api, s.health)
	}
	if cfg.Reflection {
		// Each listener describes only its own services.
		for _, g := range s.servers() {
			reflection.Register(g)
		}
	}
	return s
}

// GRPC is the Envoy listener's server: register ext_authz and ext_proc on it.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// API is the API listener's server, for Bulwark's own services; nil when
// Config.APIAddr is empty (the API is not served).
func (s *Server) API() *grpc.Server { return s.api }

// AddReadinessCheck adds a component to /readyz and to gRPC health.
func (s *Server) AddReadinessCheck(c ReadinessCheck) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, c)
}

// Listen binds both listeners, so callers (and tests) learn the real
// addresses before serving starts. Use ":0" ports to pick free ones.
func (s *Server) Listen() error {
	for _, r := range []*CertReloader{s.tls, s.apiTLS, s.adminTLS} {
		if r != nil {
			if err := r.Reload(); err != nil {
				return err
			}
		}
	}
	var err error
	if s.grpcLis, err = net.Listen("tcp", s.cfg.GRPCAddr); err != nil {
		return fmt.Errorf("listen grpc %s: %w", s.cfg.GRPCAddr, err)
	}
	if s.api != nil {
		if s.apiLis, err = net.Listen("tcp", s.cfg.APIAddr); err != nil {
			_ = s.grpcLis.Close() // the API listen error is the one to report
			return fmt.Errorf("listen api %s: %w", s.cfg.APIAddr, err)
		}
	}
	if s.adminLis, err = net.Listen("tcp", s.cfg.AdminAddr); err != nil {
		_ = s.grpcLis.Close() // the admin listen error is the one to report
		if s.apiLis != nil {
			_ = s.apiLis.Close()
		}
		return fmt.Errorf("listen admin %s: %w", s.cfg.AdminAddr, err)
	}
	return nil
}

// APIAddr is the bound API address (after Listen); empty without one.
func (s *Server) APIAddr() string {
	if s.apiLis == nil {
		return ""
	}
	return s.apiLis.Addr().String()
}

// GRPCAddr is the bound gRPC address (after Listen).
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// AdminAddr is the bound admin address (after Listen).
func (s *Server) AdminAddr() string { return s.adminLis.Addr().String() }

// Serve runs until ctx is done, then shuts down gracefully: health
// NOT_SERVING, GracefulStop, and a hard Stop once ShutdownGrace has passed.
// It returns the first listener error, or nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context) error {
	if s.grpcLis == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	admin := &http.Server{
		Handler:           s.adminMux(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
	}
	s.updateHealth()
	services := s.grpc.GetServiceInfo()
	if s.api != nil {
		for name, info := range s.api.GetServiceInfo() {
			services[name] = info
		}
	}
	s.overload.SetStreaming(services)
	errc := make(chan error, 3)
	go func() { errc <- s.grpc.Serve(s.grpcLis) }()
	if s.api != nil {
		go func() { errc <- s.api.Serve(s.apiLis) }()
	}
	adminServe := func() error { return admin.Serve(s.adminLis) }
	if s.adminTLS != nil {
		admin.TLSConfig = s.adminTLS.ServerConfig()
		adminServe = func() error { return admin.ServeTLS(s.adminLis, "", "") }
	}
	overloadCtx, stopOverload := context.WithCancel(ctx)
	overloadDone := make(chan struct{})
	go func() {
		s.overload.watch(overloadCtx, s.logger, s.updateHealth)
		close(overloadDone)
	}()
	defer func() { stopOverload(); <-overloadDone }()
	go func() {
		if err := adminServe(); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
			return
		}
		errc <- nil
	}()
	s.logger.Info("serving", "grpc_addr", s.GRPCAddr(), "api_addr", s.APIAddr(), "admin_addr", s.AdminAddr(),
		"tls", s.tls != nil, "mtls", s.cfg.TLS.ClientCAFile != "", "api_tls", s.apiTLS != nil,
		"api_mtls", s.apiTLS != nil && s.cfg.APITLS.ClientCAFile != "", "admin_tls", s.adminTLS != nil,
		"max_in_flight", s.cfg.Overload.MaxInFlight, "max_streams", s.cfg.Overload.MaxStreams)

	// Health follows readiness (a policy that failed to load, later Redis...).
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var serveErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			serveErr = err
			break loop
		case <-tick.C:
			s.updateHealth()
		}
	}

	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.health.Shutdown() // every service NOT_SERVING: Envoy stops sending new work
	s.logger.Info("draining", "grace", s.cfg.ShutdownGrace)
	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, g := range s.servers() {
			wg.Go(g.GracefulStop)
		}
		wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(s.cfg.ShutdownGrace)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		s.logger.Warn("grace period over; stopping hard")
		for _, g := range s.servers() {
			g.Stop()
		}
		<-done
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = admin.Shutdown(shutCtx)
	s.logger.Info("stopped")
	return serveErr
}

// servers are the gRPC servers: Envoy's, and the API's when there is one.
func (s *Server) servers() []*grpc.Server {
	if s.api == nil {
		return []*grpc.Server{s.grpc}
	}
	return []*grpc.Server{s.grpc, s.api}
}

func (s *Server) updateHealth() {
	st := healthpb.HealthCheckResponse_SERVING
	if _, ok := s.readiness(); !ok {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if !draining {
		s.health.SetServingStatus("", st)
		s.health.SetServingStatus("envoy.service.auth.v3.Authorization", st)
		s.health.SetServingStatus("envoy.service.ext_proc.v3.ExternalProcessor", st)
		if _, ok := s.grpc.GetServiceInfo()["envoy.service.ratelimit.v3.RateLimitService"]; ok {
			s.health.SetServingStatus("envoy.service.ratelimit.v3.RateLimitService", st)
		}
	}
}

type componentStatus struct {
	Ready  bool   `json:"ready"`
	Error  string `json:"error,omitempty"`
	Detail any    `json:"detail,omitempty"`
}

func (s *Server) readiness() (map[string]componentStatus, bool) {
	s.mu.Lock()
	checks := append([]ReadinessCheck(nil), s.checks...)
	draining := s.draining
	s.mu.Unlock()
	all := !draining
	out := make(map[string]componentStatus, len(checks)+1)
	for _, c := range checks {
		cs := componentStatus{Ready: true}
		if err := c.Check(); err != nil {
			cs.Ready, cs.Error, all = false, err.Error(), false
		}
		if c.Detail != nil {
			cs.Detail = c.Detail()
		}
		out[c.Name] = cs
	}
	if draining {
		out["server"] = componentStatus{Ready: false, Error: "draining"}
	}
	return out, all
}

func (s *Server) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		comps, ok := s.readiness()
		w.Header().Set("content-type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": ok, "components": comps})
	})
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if s.gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	}
	return mux
}
