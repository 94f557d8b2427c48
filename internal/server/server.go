// Package server runs Bulwark's listeners: the gRPC server Envoy calls
// (ext_authz, ext_proc, gRPC health, optional reflection) and the admin HTTP
// server (/healthz, /readyz, /metrics). It owns their lifecycle: health goes
// NOT_SERVING first on shutdown, then in-flight calls drain under a hard-stop
// timer.
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
	GRPCAddr             string
	AdminAddr            string
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

// Server is Bulwark's pair of listeners.
type Server struct {
	cfg      Config
	logger   *slog.Logger
	grpc     *grpc.Server
	health   *health.Server
	gatherer prometheus.Gatherer

	mu       sync.Mutex
	checks   []ReadinessCheck
	draining bool

	overload      *Overload
	tls, adminTLS *CertReloader

	grpcLis  net.Listener
	adminLis net.Listener
}

// New creates the gRPC server with explicit limits, the overload gate, TLS
// when configured and a keepalive enforcement policy that accepts Envoy's
// pings. Certificates load in Listen. Register services on GRPC() before
// Serve. reg may be nil (no metrics).
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
	if cfg.TLS.Enabled() || cfg.AdminTLS.Enabled() {
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
			base = append(base, grpc.Creds(credentials.NewTLS(s.tls.ServerConfig())))
		}
		if cfg.AdminTLS.Enabled() {
			s.adminTLS = newCertReloader("admin", TLSFiles{CertFile: cfg.AdminTLS.CertFile, KeyFile: cfg.AdminTLS.KeyFile}, logger, reloads)
		}
	}
	s.grpc = grpc.NewServer(append(base, opts...)...)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	if cfg.Reflection {
		reflection.Register(s.grpc)
	}
	return s
}

// GRPC is the server to register Bulwark's services on.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// AddReadinessCheck adds a component to /readyz and to gRPC health.
func (s *Server) AddReadinessCheck(c ReadinessCheck) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, c)
}

// Listen binds both listeners, so callers (and tests) learn the real
// addresses before serving starts. Use ":0" ports to pick free ones.
func (s *Server) Listen() error {
	for _, r := range []*CertReloader{s.tls, s.adminTLS} {
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
	if s.adminLis, err = net.Listen("tcp", s.cfg.AdminAddr); err != nil {
		_ = s.grpcLis.Close() // the admin listen error is the one to report
		return fmt.Errorf("listen admin %s: %w", s.cfg.AdminAddr, err)
	}
	return nil
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
	s.overload.SetStreaming(s.grpc.GetServiceInfo())
	errc := make(chan error, 2)
	go func() { errc <- s.grpc.Serve(s.grpcLis) }()
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
	s.logger.Info("serving", "grpc_addr", s.GRPCAddr(), "admin_addr", s.AdminAddr(),
		"tls", s.tls != nil, "mtls", s.cfg.TLS.ClientCAFile != "", "admin_tls", s.adminTLS != nil,
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
		s.grpc.GracefulStop()
		close(done)
	}()
	timer := time.NewTimer(s.cfg.ShutdownGrace)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		s.logger.Warn("grace period over; stopping hard")
		s.grpc.Stop()
		<-done
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = admin.Shutdown(shutCtx)
	s.logger.Info("stopped")
	return serveErr
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
