// Package app builds the whole Bulwark service from a Config, once: the
// decision core (internal/app/core), the audit log and alerts, the three
// doors (ext_authz, ext_proc, the Guard and Admin API) and the listeners
// with their readiness checks. `bulwark serve` is config, New, Run; `bulwark
// check` and the tests build through the same constructors.
package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/bulwark-ai/bulwark/internal/alert"
	"github.com/bulwark-ai/bulwark/internal/api"
	"github.com/bulwark-ai/bulwark/internal/app/core"
	"github.com/bulwark-ai/bulwark/internal/audit"
	"github.com/bulwark-ai/bulwark/internal/config"
	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/exchange"
	"github.com/bulwark-ai/bulwark/internal/extauthz"
	"github.com/bulwark-ai/bulwark/internal/extproc"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/mcp"
	"github.com/bulwark-ai/bulwark/internal/quality"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
	"github.com/bulwark-ai/bulwark/internal/rls"
	"github.com/bulwark-ai/bulwark/internal/server"
	"github.com/bulwark-ai/bulwark/internal/telemetry"
	"github.com/bulwark-ai/bulwark/internal/usage"
	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
)

// ConfigError is an error caused by the configuration: the command exits
// with status 2. It is core's, so one errors.As finds either.
type ConfigError = core.ConfigError

// closeTimeout bounds flushing the audit log and delivering alerts on Close.
const closeTimeout = 5 * time.Second

// Deps is what the service takes from the process around it. Every field
// may be left zero.
type Deps struct {
	// Logger receives every log (nil: discarded).
	Logger *slog.Logger
	// Registry receives every metric and serves them on the admin
	// listener's /metrics (nil: none).
	Registry server.Registry
	// Pepper is the API key pepper when the Config names no pepper file.
	Pepper string
	// ModerationToken is the moderation endpoint's bearer token when the
	// Config names no moderation_token_file ($BULWARK_MODERATION_TOKEN).
	ModerationToken string
	// Tracing is the process's tracer provider (telemetry.Setup; nil: off).
	Tracing *telemetry.Tracing
	// Version names the build in the config_loaded audit record.
	Version string
}

// App is the service: every part built once by New. Run serves it; Close
// releases it.
type App struct {
	*core.Core
	// Audit is the audit log (nil without audit_log).
	Audit *audit.Writer
	// Alerts derives security alerts from the audit stream.
	Alerts *alert.Notifier
	// Server holds the listeners and readiness checks.
	Server *server.Server
	// ExtAuthz and ExtProc are the Envoy doors.
	ExtAuthz *extauthz.Server
	ExtProc  *extproc.Server
	// Exchange is the LLM exchange core ext_proc and the Guard API share.
	Exchange *exchange.Core
	// RLS is Envoy's RateLimitService door (nil without rls_config).
	RLS *rls.Server

	cfg    config.Config
	logger *slog.Logger
}

// New builds the service from cfg. Nothing listens until Run. On error
// whatever was built is closed.
func New(ctx context.Context, cfg config.Config, d Deps) (a *App, err error) {
	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tracing := d.Tracing // nil: off, the doors start no span
	var tracer trace.Tracer
	if tracing != nil {
		tracer = tracing.Tracer
	}
	a = &App{cfg: cfg, logger: logger}
	defer func() {
		if err != nil {
			a.Close(context.WithoutCancel(ctx))
			a = nil
		}
	}()
	var kek audit.KEK // the audit keyset's key-encryption key, when there is one
	// principalName names principals in decision logs, spans and alerts:
	// nil (their ids) unless --pseudonymize-principals.
	var principalName func(id string) string
	if cfg.AuditLog != "" {
		if cfg.AuditKeyset != "" {
			if kek, err = audit.LoadKEK(cfg.AuditKEKFile); err != nil {
				return a, err
			}
		}
		a.Audit, err = audit.Open(audit.Config{Path: cfg.AuditLog, KeyFile: cfg.AuditKeyFile, MaxBytes: cfg.AuditMaxBytes,
			Buffer: cfg.AuditBuffer, Overflow: audit.Overflow(cfg.AuditOverflow), MaxFiles: cfg.AuditMaxFiles,
			CheckpointInterval: cfg.AuditCheckpointInterval, CheckpointRecords: uint64(cfg.AuditCheckpointRecords), // #nosec G115 -- Validate keeps it positive
			Keyset: cfg.AuditKeyset, KEK: kek, MaxAge: cfg.AuditMaxAge, RotateEvery: cfg.AuditRotateEvery}, logger, d.Registry)
		if err != nil {
			return a, err
		}
		if cfg.PseudonymizePrincipals {
			if cfg.AuditKeyset == "" {
				return a, errors.New("--pseudonymize-principals needs --audit-keyset (its pseudonym key names principals)")
			}
			keys, err := audit.OpenKeyset(cfg.AuditKeyset, kek)
			if err != nil {
				return a, err
			}
			principalName = keys.Pseudonym
		}
		summary := configSummary(cfg, d.Version)
		summary["audit_failure_mode"] = cfg.AuditFailureMode
		a.Audit.Log(ctx, audit.Record{Type: audit.TypeConfigLoaded, Details: summary})
	}
	// Security alerts are derived from the audit stream: decisions and
	// system changes go through the notifier's tap, then to the audit log
	// (when there is one).
	if a.Alerts, err = alert.New(alertConfig(cfg, principalName), logger, d.Registry); err != nil {
		return a, &ConfigError{Err: err}
	}
	var auditNext alert.Recorder // a nil *audit.Writer must not become a non-nil interface
	if a.Audit != nil {
		auditNext = a.Audit
	}
	recorder := a.Alerts.Tap(auditNext)
	cd := core.Deps{
		Logger: logger, Registerer: d.Registry, Pepper: d.Pepper, ModerationToken: d.ModerationToken, Tracer: tracer, Auditor: recorder,
		OnKeyChange: func(c identity.KeyChange) { recorder.Log(context.Background(), keyChangeRecord(c)) },
		OnBreakerChange: func(s ratelimit.BreakerState) {
			recorder.Log(context.Background(), breakerRecord(s, cfg))
		},
		OnBudget: func(b usage.BudgetAlert) { recorder.Log(context.Background(), budgetRecord(b)) },
	}
	if a.Audit != nil {
		source := core.PolicyConfig(cfg, nil).Source()
		cd.OnPolicyLoad = func(oldRev, newRev string, err error) {
			src := source
			if a.Core != nil { // later loads (OPA bundles come only after Start)
				src = a.Engine.Source()
			}
			d := map[string]any{"source": src, "old_revision": oldRev}
			if err != nil {
				d["error"] = "policy failed to load; the previous revision stays in force"
			} else {
				d["new_revision"] = newRev
			}
			a.Audit.Log(context.Background(), audit.Record{Type: audit.TypePolicyReload, PolicyRevision: newRev, Details: d})
		}
		if cfg.AuditFailureMode == "fail_closed" {
			cd.AuditGate = a.Audit.Err
		}
		cd.PrincipalName = principalName
	}
	if a.Core, err = core.New(ctx, cfg, cd); err != nil {
		return a, err
	}
	a.Server = server.New(serverConfig(cfg), logger, d.Registry)
	voucher, err := metadataVoucher(cfg.MetadataKeyFile)
	if err != nil {
		return a, err
	}
	a.ExtAuthz = NewExtAuthz(a.Core, cfg, tracing, voucher)
	authv3.RegisterAuthorizationServer(a.Server.GRPC(), a.ExtAuthz)
	redactKey, err := redactKey(cfg.RedactKeyFile)
	if err != nil {
		return a, err
	}
	xMetrics, err := exchange.NewMetrics(d.Registry)
	if err != nil {
		return a, err
	}
	// One exchange core for both doors that carry LLM exchanges (ext_proc
	// and the Guard API): the same bytes get the same decision.
	// Answer quality by model; a model's refusal or error rate jumping
	// over its baseline raises an alert.
	qm, err := quality.NewMonitor(quality.MonitorConfig{OnJump: qualityAlert(a.Alerts)}, d.Registry)
	if err != nil {
		return a, err
	}
	a.Exchange = NewExchange(a.Core, cfg, tracing, redactKey, logger, xMetrics, qm)
	epMetrics, err := extproc.NewMetrics(d.Registry)
	if err != nil {
		return a, err
	}
	a.ExtProc = newExtProc(a.Exchange, cfg, voucher, logger, epMetrics)
	extprocv3.RegisterExternalProcessorServer(a.Server.GRPC(), a.ExtProc)
	if cfg.RLSConfig != "" {
		// Envoy's rate_limit filter, on Envoy's listener, counting with
		// the same limiter (and Redis) as the policy's limits.
		a.RLS, err = rls.New(rls.Options{Path: cfg.RLSConfig, ResponseHeaders: cfg.RLSResponseHeaders,
			LimitHeader: cfg.RLSLimitHeader, RemainingHeader: cfg.RLSRemainingHeader, ResetHeader: cfg.RLSResetHeader},
			a.Limiter, logger.With("component", "rls"), d.Registry)
		if err != nil {
			return a, &ConfigError{Err: err}
		}
		rlsv3.RegisterRateLimitServiceServer(a.Server.GRPC(), a.RLS)
	}
	// Bulwark's own API, on a listener of its own (never Envoy's: an API
	// caller must not reach Check or Process, whose attributes are believed
	// as Envoy's): GuardService starts its exchanges in the same exchange
	// core as ext_proc; AdminService requires a principal with the operator
	// role on every call, scoped to its tenant.
	if g := a.Server.API(); g != nil {
		if err := registerAPI(g, cfg, a.Core, a.Exchange, a.Audit, logger); err != nil {
			return a, err
		}
	}
	if cfg.TrustSourcePrincipal && cfg.TLSClientCA == "" && !loopback(cfg.GRPCAddr) {
		logger.Warn("trust_source_principal is on and the Envoy listener is not loopback-only nor mTLS: anyone who reaches it can name any peer; " +
			"set tls_client_ca with tls_client_sans (Envoy's identity), or restrict the port to Envoy (NetworkPolicy, Istio AuthorizationPolicy)")
	}
	a.addReadinessChecks()
	return a, nil
}

// NewExtAuthz is the ext_authz door over c as cfg configures it. voucher
// seals the principal for ext_proc (nil: not sealed, as in `bulwark check`);
// tracing may be nil (off).
func NewExtAuthz(c *core.Core, cfg config.Config, tracing *telemetry.Tracing, voucher *identity.Voucher) *extauthz.Server {
	return extauthz.New(c.Pipeline, extauthz.Options{StripCredentials: cfg.StripCredentials && cfg.IdentityEnabled(), Tracing: tracing,
		ScanRoles: cfg.ExtProcScanRoles, TrustedRoles: cfg.TrustedRoles, Voucher: voucher, MCP: mcpOptions(cfg)})
}

// mcpOptions are the MCP settings both Envoy doors and the exchange share.
func mcpOptions(cfg config.Config) envoy.MCPOptions {
	return envoy.MCPOptions{Paths: cfg.MCPPaths, ResourceMetadata: cfg.MCPResourceMetadataURL}
}

// NewExchange is the LLM exchange core over c as cfg configures it, which
// the ext_proc door and the Guard API share; tracing may be nil (off).
func NewExchange(c *core.Core, cfg config.Config, tracing *telemetry.Tracing, redactKey []byte,
	logger *slog.Logger, m *exchange.Metrics, q *quality.Monitor) *exchange.Core {
	return exchange.New(c.Pipeline, c.Scanner, c.Limiter, exchange.Options{
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
		ResponseScanner:          c.ResponseScanner,
		Moderator:                c.ResponseModerator(cfg),
		ModerationWindow:         cfg.ModerationStreamWindow,
		StripUpstreamCredentials: cfg.StripUpstreamCredentials && cfg.IdentityEnabled(),
		MCP:                      mcpOptions(cfg),
		MCPMemory:                mcpMemory(c, cfg, logger),
		ToolLists:                c.Engine,
		Quality:                  q,
		Usage:                    c.Usage,
	}, logger, m)
}

// mcpMemory is the rug-pull memory: shared by the replicas through Redis
// when one is configured (with this replica's memory as the fallback),
// in-process otherwise.
func mcpMemory(c *core.Core, cfg config.Config, logger *slog.Logger) mcp.ToolMemory {
	local := mcp.NewMemory(cfg.MCPSessionTTL, cfg.MCPMaxSessions, 0, nil)
	if c.Redis == nil {
		return local
	}
	return mcp.NewRedisMemory(c.Redis, cfg.MCPSessionTTL, 0, 0, local, logger)
}

// newExtProc is the ext_proc door over x as cfg configures it: the one
// place its constructor is called.
func newExtProc(x *exchange.Core, cfg config.Config, voucher *identity.Voucher,
	logger *slog.Logger, m *extproc.Metrics) *extproc.Server {
	return extproc.New(x, extproc.Options{
		MessageTimeout:    cfg.ExtProcMessageTimeout,
		MaxMessageTimeout: cfg.ExtProcMaxMessageTimeout,
		IdleTimeout:       cfg.ExtProcIdleTimeout,
		MaxStreamDuration: cfg.ExtProcMaxStreamDuration,
		MaxBufferedBytes:  cfg.ExtProcMaxBufferedBytes,
		Voucher:           voucher,
	}, logger, m)
}

// registerAPI registers bulwark.v1.GuardService and AdminService.
func registerAPI(g *grpc.Server, cfg config.Config, c *core.Core, x *exchange.Core, auditor *audit.Writer, logger *slog.Logger) error {
	apiCfg := api.Config{MaxBodyBytes: cfg.ExtProcMaxBodyBytes, AdminRole: cfg.OperatorRole, CrossTenantRole: cfg.OperatorCrossTenantRole,
		ScanTextMaxBytes: cfg.GuardScanMaxBytes, ScanTextPerMinute: cfg.GuardScanPerMinute}
	guard, err := api.NewGuard(apiCfg, x, c.Scanner, c.Identity, c.Limiter, logger)
	if err != nil {
		return err
	}
	keys := api.Keys{File: cfg.KeysFile}
	if cfg.KeysFile != "" {
		keys.Reload = c.Identity.ReloadKeys
	}
	if c.Redis != nil {
		keys.Redis = identity.NewRedisKeyStore(c.Redis, identity.DefaultConfig().RedisKeyPrefix)
	}
	var aud api.Auditor
	if auditor != nil {
		aud = auditor // a nil *audit.Writer must not become a non-nil interface
	}
	admin, err := api.NewAdmin(apiCfg, c.Identity, c.Engine, c.Limiter, keys, c.Usage.Store(), aud, logger.With("component", "admin_api"))
	if err != nil {
		return err
	}
	bulwarkv1.RegisterGuardServiceServer(g, guard)
	bulwarkv1.RegisterAdminServiceServer(g, admin)
	return nil
}

// serverConfig maps cfg onto the listeners' configuration.
func serverConfig(cfg config.Config) server.Config {
	return server.Config{
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
	}
}

// addReadinessChecks registers /readyz's per-component checks.
func (a *App) addReadinessChecks() {
	cfg := a.cfg
	a.Server.AddReadinessCheck(server.ReadinessCheck{Name: "identity", Check: a.Identity.Ready})
	if a.Audit != nil {
		// fail_open: a failing audit sink is reported, not a reason to stop
		// deciding; fail_closed: no decision is made, so not ready either.
		auditReady := func() error { return nil }
		if cfg.AuditFailureMode == "fail_closed" {
			auditReady = a.Audit.Err
		}
		a.Server.AddReadinessCheck(server.ReadinessCheck{
			Name:  "audit",
			Check: auditReady,
			Detail: func() any {
				st := a.Audit.Status()
				return map[string]any{"path": cfg.AuditLog, "healthy": st.Healthy, "error": st.Error, "since": st.Since,
					"lost_records": st.LostRecords, "failure_mode": cfg.AuditFailureMode}
			},
		})
	}
	// The limiter never fails readiness: with Redis down, fail_open limits
	// are still decided in-process and fail_closed ones answer 503 at once;
	// taking Bulwark out of rotation would help neither. /readyz shows it.
	a.Server.AddReadinessCheck(server.ReadinessCheck{
		Name:  "ratelimit",
		Check: func() error { return nil },
		Detail: func() any {
			return map[string]any{"redis": cfg.RedisURL != "", "breaker": a.Limiter.State().String(), "healthy": a.Limiter.Healthy()}
		},
	})
	if a.RLS != nil {
		// Ready once a configuration is loaded; a failed reload keeps the
		// last good one serving and shows its error here.
		a.Server.AddReadinessCheck(server.ReadinessCheck{
			Name: "rls",
			Check: func() error {
				if !a.RLS.Status().Ready {
					return errors.New("no rls config loaded")
				}
				return nil
			},
			Detail: func() any { return a.RLS.Status() },
		})
	}
	a.Server.AddReadinessCheck(server.ReadinessCheck{
		Name: "policy",
		Check: func() error {
			if st := a.Engine.Status(); !st.Ready {
				if st.LastError != "" {
					return fmt.Errorf("no policy loaded: %s", st.LastError)
				}
				return errors.New("no policy loaded")
			}
			return nil
		},
		Detail: func() any { return a.Engine.Status() },
	})
	if a.OPA != nil {
		// OPA's plugins (bundle, decision_logs, status, discovery) as OPA's
		// own /health?plugins sees them; the policy check above already
		// fails until a bundle is active.
		a.Server.AddReadinessCheck(server.ReadinessCheck{
			Name:   "opa_plugins",
			Check:  func() error { return nil },
			Detail: func() any { return a.OPA.PluginStatus() },
		})
	}
}

// Run opens the listeners and serves until ctx ends (Listen, then Serve).
func (a *App) Run(ctx context.Context) error {
	if err := a.Listen(); err != nil {
		return err
	}
	return a.Serve(ctx)
}

// Listen opens the listeners, so that their addresses are known (a port 0
// gets one of the system's choosing) before Serve.
func (a *App) Listen() error { return a.Server.Listen() }

// Serve hot-reloads the policy and serves on the open listeners until ctx
// ends, then stops gracefully (server.Serve).
func (a *App) Serve(ctx context.Context) error {
	if a.cfg.DryRun {
		a.logger.Warn("dry-run mode: every request is allowed; denials are only logged and counted")
	}
	go func() {
		if err := a.Engine.Watch(ctx, a.cfg.ReloadDebounce); err != nil {
			a.logger.Error("policy watch stopped; hot reload disabled", "error", err)
		}
	}()
	if a.OPA != nil {
		// Bundles download, decision logs and status upload from now on,
		// until Close stops the plugins.
		if err := a.OPA.Start(context.WithoutCancel(ctx)); err != nil {
			return err
		}
	}
	if a.RLS != nil {
		go func() {
			if err := a.RLS.Watch(ctx, a.cfg.ReloadDebounce); err != nil {
				a.logger.Error("rls config watch stopped; hot reload disabled", "error", err)
			}
		}()
	}
	return a.Server.Serve(ctx)
}

// Close releases what New built, in reverse: the core (limiter, identity,
// then the Redis client they share), then delivers pending alerts and
// flushes the audit log, each within closeTimeout of ctx (whose
// cancellation it ignores). It is safe on a partly built App.
func (a *App) Close(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	if a.Core != nil {
		a.Core.Close()
	}
	if a.Alerts != nil {
		closeCtx, cancel := context.WithTimeout(ctx, closeTimeout)
		if err := a.Alerts.Close(closeCtx); err != nil {
			a.logger.Warn("alerts not fully delivered", "error", err)
		}
		cancel()
	}
	if a.Audit != nil {
		closeCtx, cancel := context.WithTimeout(ctx, closeTimeout)
		if err := a.Audit.Close(closeCtx); err != nil {
			a.logger.Error("audit log not fully flushed", "error", err)
		}
		cancel()
	}
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
		return nil, &ConfigError{Err: fmt.Errorf("config redact_key_file: key must be at least 16 bytes")}
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
			return nil, &ConfigError{Err: fmt.Errorf("config metadata_key_file: %w", err)}
		}
		key = bytes.TrimSpace(k)
	}
	v, err := identity.NewVoucher(key, 0, nil)
	if err != nil {
		return nil, &ConfigError{Err: fmt.Errorf("config metadata_key_file: %w", err)}
	}
	return v, nil
}

// configSummary is what the audit trail records of the configuration:
// where things come from, never secrets.
func configSummary(cfg config.Config, version string) map[string]any {
	return map[string]any{
		"version": version, "grpc_addr": cfg.GRPCAddr, "api_addr": cfg.APIAddr, "admin_addr": cfg.AdminAddr,
		"policy_source": core.PolicyConfig(cfg, nil).Source(), "policy_query": cfg.PolicyQuery, "dry_run": cfg.DryRun,
		"redis": cfg.RedisURL != "", "identity": cfg.IdentityEnabled(), "keys_file": cfg.KeysFile != "",
		"jwks": cfg.JWKSURL != "", "ratelimit_failure_mode": cfg.RateLimitFailureMode,
		"tls": cfg.TLSCert != "", "mtls": cfg.TLSClientCA != "", "max_in_flight": cfg.MaxInFlight,
		"metadata_key": map[bool]string{true: "file", false: "per_process"}[cfg.MetadataKeyFile != ""], // never the key
		"alerts":       map[bool]string{true: "webhook", false: "log"}[cfg.AlertWebhookURL != ""],      // never the URL: it may hold a token
		"opa_config":   cfg.OPAConfig,                                                                  // a path; its services' credentials stay in the file
	}
}
