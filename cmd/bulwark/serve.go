package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/bulwark-ai/bulwark/internal/alert"
	"github.com/bulwark-ai/bulwark/internal/api"
	"github.com/bulwark-ai/bulwark/internal/audit"
	"github.com/bulwark-ai/bulwark/internal/config"
	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/exchange"
	"github.com/bulwark-ai/bulwark/internal/extauthz"
	"github.com/bulwark-ai/bulwark/internal/extproc"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
	"github.com/bulwark-ai/bulwark/internal/server"
	"github.com/bulwark-ai/bulwark/internal/telemetry"
	"github.com/bulwark-ai/bulwark/policies"
	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
)

func runServe(ctx context.Context, args []string, _ io.Reader, _, stderr io.Writer) error {
	cfg, err := config.Load(args, os.Environ(), stderr)
	if err != nil {
		return &exitError{2, err}
	}
	logger := newLogger(cfg, stderr)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.GCPercent)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	tracing, err := telemetry.Setup(ctx)
	if err != nil {
		return &exitError{2, err}
	}
	defer func() {
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(shutCtx); err != nil {
			logger.Warn("traces not fully exported", "error", err)
		}
	}()
	if tracing.Enabled {
		logger.Info("tracing on (OTLP)", "endpoint_set", true)
	}

	var auditor *audit.Writer
	if cfg.AuditLog != "" {
		auditor, err = audit.Open(audit.Config{Path: cfg.AuditLog, KeyFile: cfg.AuditKeyFile, MaxBytes: cfg.AuditMaxBytes,
			Buffer: cfg.AuditBuffer, Overflow: audit.Overflow(cfg.AuditOverflow), MaxFiles: cfg.AuditMaxFiles,
			CheckpointInterval: cfg.AuditCheckpointInterval, CheckpointRecords: uint64(cfg.AuditCheckpointRecords)}, logger, reg) // #nosec G115 -- Validate keeps it positive
		if err != nil {
			return err
		}
		defer func() {
			closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := auditor.Close(closeCtx); err != nil {
				logger.Error("audit log not fully flushed", "error", err)
			}
		}()
		summary := configSummary(cfg)
		summary["audit_failure_mode"] = cfg.AuditFailureMode
		auditor.Log(ctx, audit.Record{Type: audit.TypeConfigLoaded, Details: summary})
	}
	// Security alerts are derived from the audit stream: decisions and
	// system changes go through the notifier's tap, then to the audit log
	// (when there is one).
	notifier, err := alert.New(alertConfig(cfg), logger, reg)
	if err != nil {
		return &exitError{2, err}
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := notifier.Close(closeCtx); err != nil {
			logger.Warn("alerts not fully delivered", "error", err)
		}
	}()
	var auditNext alert.Recorder // a nil *audit.Writer must not become a non-nil interface
	if auditor != nil {
		auditNext = auditor
	}
	recorder := notifier.Tap(auditNext)
	pc := policyConfig(cfg)
	if auditor != nil {
		pc.OnLoad = func(oldRev, newRev string, err error) {
			d := map[string]any{"source": pc.Source(), "old_revision": oldRev}
			if err != nil {
				d["error"] = "policy failed to load; the previous revision stays in force"
			} else {
				d["new_revision"] = newRev
			}
			auditor.Log(context.Background(), audit.Record{Type: audit.TypePolicyReload, PolicyRevision: newRev, Details: d})
		}
	}
	engine, err := policy.New(ctx, pc, logger, reg)
	if err != nil {
		return fmt.Errorf("load policies: %w", err)
	}
	var rdb redis.UniversalClient
	if cfg.RedisURL != "" {
		if rdb, err = ratelimit.NewRedisClient(cfg.RedisURL, cfg.RedisCAFile, time.Second); err != nil {
			return &exitError{2, fmt.Errorf("config redis_url: %w", err)}
		}
		defer rdb.Close()
	}
	idCfg := cfg.IdentityConfig(os.Getenv("BULWARK_KEY_PEPPER"))
	idCfg.OnKeyChange = func(c identity.KeyChange) { recorder.Log(context.Background(), keyChangeRecord(c)) }
	auth, err := identity.New(idCfg, rdb, reg, logger)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	defer auth.Close()
	auth.Start(ctx)

	limiter, err := ratelimit.New(ratelimit.Config{
		RedisURL:     cfg.RedisURL,
		TLSCAFile:    cfg.RedisCAFile,
		CheckTimeout: cfg.RateLimitTimeout,
		FailureMode:  ratelimit.FailureMode(cfg.RateLimitFailureMode),
		LocalShare:   cfg.RateLimitLocalShare,
		OnBreakerChange: func(s ratelimit.BreakerState) {
			recorder.Log(context.Background(), breakerRecord(s, cfg))
		},
	}, reg)
	if err != nil {
		return fmt.Errorf("rate limiter: %w", err)
	}
	defer limiter.Close()

	scanner, err := detect.New(detect.Config{GreyZone: engine})
	if err != nil {
		return fmt.Errorf("detectors: %w", err)
	}
	pipeCfg := pipeline.Config{Timeout: cfg.CheckTimeout, DryRun: cfg.DryRun, RateLimitHeaders: cfg.RateLimitHeaders}
	if auditor != nil && cfg.AuditFailureMode == "fail_closed" {
		pipeCfg.AuditGate = auditor.Err
	}
	pipe, err := pipeline.New(pipeCfg, auth, engine, limiter, logger, reg)
	if err != nil {
		return err
	}
	var detector pipeline.Detector = scanner
	if cfg.RemoteClassifierURL != "" {
		remote, err := detect.NewRemote(cfg.RemoteClassifierConfig(), nil, nil, reg)
		if err != nil {
			return fmt.Errorf("remote classifier: %w", err)
		}
		detector = detect.WithRemote(scanner, remote)
	}
	pipe.WithDetector(detector).WithTracer(tracing.Tracer).WithAuditor(recorder)

	srv := server.New(server.Config{
		GRPCAddr:             cfg.GRPCAddr,
		APIAddr:              cfg.APIAddr,
		AdminAddr:            cfg.AdminAddr,
		Reflection:           cfg.GRPCReflection,
		MaxRecvMsgBytes:      cfg.MaxRecvMsgBytes,
		MaxSendMsgBytes:      cfg.MaxSendMsgBytes,
		MaxConcurrentStreams: uint32(cfg.MaxConcurrentStreams), // #nosec G115 -- Validate keeps it in [1, MaxUint32]
		KeepaliveMinTime:     cfg.KeepaliveMinTime,
		ShutdownGrace:        cfg.ShutdownGrace,
		Pprof:                cfg.AdminPprof,
		TLS: server.TLSFiles{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey,
			ClientCAFile: cfg.TLSClientCA, ClientSANs: cfg.TLSClientSANs},
		APITLS: server.TLSFiles{CertFile: cfg.APITLSCert, KeyFile: cfg.APITLSKey,
			ClientCAFile: cfg.APITLSClientCA, ClientSANs: cfg.APITLSClientSANs},
		AdminTLS: server.TLSFiles{CertFile: cfg.AdminTLSCert, KeyFile: cfg.AdminTLSKey},
		Overload: server.OverloadConfig{MaxInFlight: cfg.MaxInFlight, MaxStreams: cfg.MaxStreams, Window: cfg.OverloadWindow},
	}, logger, reg)
	voucher, err := metadataVoucher(cfg.MetadataKeyFile)
	if err != nil {
		return err
	}
	authv3.RegisterAuthorizationServer(srv.GRPC(), extauthz.New(pipe, extauthz.Options{
		StripCredentials: cfg.StripCredentials && cfg.IdentityEnabled(), Tracing: tracing, ScanRoles: cfg.ExtProcScanRoles, TrustedRoles: cfg.TrustedRoles, Voucher: voucher}))
	redactKey, err := redactKey(cfg.RedactKeyFile)
	if err != nil {
		return err
	}
	outScanner, err := detect.New(detect.Config{DisableInjection: true, GreyZone: engine})
	if err != nil {
		return fmt.Errorf("detectors: %w", err)
	}
	xMetrics, err := exchange.NewMetrics(reg)
	if err != nil {
		return err
	}
	// One exchange core for both doors that carry LLM exchanges (ext_proc
	// and the Guard API): the same bytes get the same decision.
	core := exchange.New(pipe, scanner, limiter, exchange.Options{
		StripCredentials:         cfg.StripCredentials && cfg.IdentityEnabled(),
		Tracing:                  tracing,
		ScanRoles:                cfg.ExtProcScanRoles,
		TrustedRoles:             cfg.TrustedRoles,
		MaxBodyBytes:             cfg.ExtProcMaxBodyBytes,
		StreamStep:               cfg.ExtProcStreamStep,
		StreamLookahead:          cfg.ExtProcStreamLookahead,
		ClampMaxTokens:           cfg.ExtProcClampMaxTokens,
		Canary:                   cfg.ExtProcCanary,
		RedactKey:                redactKey,
		ResponseScanner:          outScanner,
		StripUpstreamCredentials: cfg.StripUpstreamCredentials && cfg.IdentityEnabled(),
	}, logger, xMetrics)
	epMetrics, err := extproc.NewMetrics(reg)
	if err != nil {
		return err
	}
	ep := extproc.New(core, extproc.Options{
		Tracing:           tracing,
		MessageTimeout:    cfg.ExtProcMessageTimeout,
		MaxMessageTimeout: cfg.ExtProcMaxMessageTimeout,
		IdleTimeout:       cfg.ExtProcIdleTimeout,
		MaxStreamDuration: cfg.ExtProcMaxStreamDuration,
		MaxBufferedBytes:  cfg.ExtProcMaxBufferedBytes,
		Voucher:           voucher,
	}, logger, epMetrics)
	extprocv3.RegisterExternalProcessorServer(srv.GRPC(), ep)
	// Bulwark's own API, on a listener of its own (never Envoy's: an API
	// caller must not reach Check or Process, whose attributes are believed
	// as Envoy's): GuardService starts its exchanges in the same core as
	// ext_proc; AdminService requires a principal with the operator role
	// on every call, scoped to its tenant.
	if g := srv.API(); g != nil {
		if err := registerAPI(g, cfg, core, scanner, auth, engine, limiter, rdb, auditor, logger); err != nil {
			return err
		}
	}
	if cfg.TrustSourcePrincipal && cfg.TLSClientCA == "" && !loopback(cfg.GRPCAddr) {
		logger.Warn("trust_source_principal is on and the Envoy listener is not loopback-only nor mTLS: anyone who reaches it can name any peer; " +
			"set tls_client_ca with tls_client_sans (Envoy's identity), or restrict the port to Envoy (NetworkPolicy, Istio AuthorizationPolicy)")
	}
	srv.AddReadinessCheck(server.ReadinessCheck{Name: "identity", Check: auth.Ready})
	if auditor != nil {
		// fail_open: a failing audit sink is reported, not a reason to stop
		// deciding; fail_closed: no decision is made, so not ready either.
		auditReady := func() error { return nil }
		if cfg.AuditFailureMode == "fail_closed" {
			auditReady = auditor.Err
		}
		srv.AddReadinessCheck(server.ReadinessCheck{
			Name:  "audit",
			Check: auditReady,
			Detail: func() any {
				st := auditor.Status()
				return map[string]any{"path": cfg.AuditLog, "healthy": st.Healthy, "error": st.Error, "since": st.Since,
					"lost_records": st.LostRecords, "failure_mode": cfg.AuditFailureMode}
			},
		})
	}
	// The limiter never fails readiness: with Redis down, fail_open limits
	// are still decided in-process and fail_closed ones answer 503 at once;
	// taking Bulwark out of rotation would help neither. /readyz shows it.
	srv.AddReadinessCheck(server.ReadinessCheck{
		Name:  "ratelimit",
		Check: func() error { return nil },
		Detail: func() any {
			return map[string]any{"redis": cfg.RedisURL != "", "breaker": limiter.State().String(), "healthy": limiter.Healthy()}
		},
	})
	srv.AddReadinessCheck(server.ReadinessCheck{
		Name: "policy",
		Check: func() error {
			if !engine.Status().Ready {
				return errors.New("no policy loaded")
			}
			return nil
		},
		Detail: func() any { return engine.Status() },
	})
	if err := srv.Listen(); err != nil {
		return err
	}
	if cfg.DryRun {
		logger.Warn("dry-run mode: every request is allowed; denials are only logged and counted")
	}
	go func() {
		if err := engine.Watch(ctx, cfg.ReloadDebounce); err != nil {
			logger.Error("policy watch stopped; hot reload disabled", "error", err)
		}
	}()
	return srv.Serve(ctx)
}

// registerAPI registers bulwark.v1.GuardService and AdminService.
func registerAPI(g *grpc.Server, cfg config.Config, core *exchange.Core, scanner *detect.Scanner, auth *identity.Authenticator,
	engine *policy.Engine, limiter *ratelimit.Limiter, rdb redis.UniversalClient, auditor *audit.Writer, logger *slog.Logger) error {
	apiCfg := api.Config{MaxBodyBytes: cfg.ExtProcMaxBodyBytes, AdminRole: cfg.OperatorRole, CrossTenantRole: cfg.OperatorCrossTenantRole,
		ScanTextMaxBytes: cfg.GuardScanMaxBytes, ScanTextPerMinute: cfg.GuardScanPerMinute}
	guard, err := api.NewGuard(apiCfg, core, scanner, auth, limiter, logger)
	if err != nil {
		return err
	}
	keys := api.Keys{File: cfg.KeysFile}
	if cfg.KeysFile != "" {
		keys.Reload = auth.ReloadKeys
	}
	if rdb != nil {
		keys.Redis = identity.NewRedisKeyStore(rdb, identity.DefaultConfig().RedisKeyPrefix)
	}
	var aud api.Auditor
	if auditor != nil {
		aud = auditor // a nil *audit.Writer must not become a non-nil interface
	}
	admin, err := api.NewAdmin(apiCfg, auth, engine, limiter, keys, aud, logger.With("component", "admin_api"))
	if err != nil {
		return err
	}
	bulwarkv1.RegisterGuardServiceServer(g, guard)
	bulwarkv1.RegisterAdminServiceServer(g, admin)
	return nil
}

// redactKey reads the hash redaction key, or makes a random one: hashes of
// low-entropy values (phone numbers) must not be reversible by guessing.
func redactKey(path string) ([]byte, error) {
	if path == "" {
		k := make([]byte, 32)
		_, _ = rand.Read(k) // crypto/rand.Read never fails
		return k, nil
	}
	k, err := os.ReadFile(path) // #nosec G304 -- redact_key_file is operator configuration, trusted (SECURITY.md)
	if err != nil {
		return nil, fmt.Errorf("config redact_key_file: %w", err)
	}
	k = bytes.TrimSpace(k)
	if len(k) < 16 {
		return nil, &exitError{2, fmt.Errorf("config redact_key_file: key must be at least 16 bytes")}
	}
	return k, nil
}

// loopback reports whether a listen address is on the loopback interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// metadataVoucher seals and checks the principal ext_authz forwards to
// ext_proc, keyed from metadata_key_file or, without one, with a random key
// of this process's own. The key is never logged.
func metadataVoucher(path string) (*identity.Voucher, error) {
	key := identity.RandomVouchKey()
	if path != "" {
		k, err := os.ReadFile(path) // #nosec G304 -- metadata_key_file is operator configuration, trusted (SECURITY.md)
		if err != nil {
			return nil, &exitError{2, fmt.Errorf("config metadata_key_file: %w", err)}
		}
		key = bytes.TrimSpace(k)
	}
	v, err := identity.NewVoucher(key, 0, nil)
	if err != nil {
		return nil, &exitError{2, fmt.Errorf("config metadata_key_file: %w", err)}
	}
	return v, nil
}

// configSummary is what the audit trail records of the configuration:
// where things come from, never secrets.
func configSummary(cfg config.Config) map[string]any {
	return map[string]any{
		"version": version, "grpc_addr": cfg.GRPCAddr, "api_addr": cfg.APIAddr, "admin_addr": cfg.AdminAddr,
		"policy_source": policyConfig(cfg).Source(), "policy_query": cfg.PolicyQuery, "dry_run": cfg.DryRun,
		"redis": cfg.RedisURL != "", "identity": cfg.IdentityEnabled(), "keys_file": cfg.KeysFile != "",
		"jwks": cfg.JWKSURL != "", "ratelimit_failure_mode": cfg.RateLimitFailureMode,
		"tls": cfg.TLSCert != "", "mtls": cfg.TLSClientCA != "", "max_in_flight": cfg.MaxInFlight,
		"metadata_key": map[bool]string{true: "file", false: "per_process"}[cfg.MetadataKeyFile != ""], // never the key
		"alerts":       map[bool]string{true: "webhook", false: "log"}[cfg.AlertWebhookURL != ""],      // never the URL: it may hold a token
	}
}

func policyConfig(cfg config.Config) policy.Config {
	return policy.Config{
		Dir:      cfg.PolicyDir,
		Bundle:   cfg.Bundle,
		Embedded: policies.FS,
		Query:    cfg.PolicyQuery,
		RegoV0:   cfg.RegoV0,
	}
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
