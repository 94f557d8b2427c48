// Package core builds the decision core every door shares, from a Config,
// once: the policy engine, one Redis client per URL, identity, the limiter,
// the request and response detectors and the pipeline over them. It
// imports no door, so internal/app builds the doors on top of it and a
// door's own tests (which may not import internal/app: it imports them)
// can build the same core through test/fixture.
package core

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulwark-ai/bulwark/internal/abuse"
	"github.com/bulwark-ai/bulwark/internal/config"
	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
	"github.com/bulwark-ai/bulwark/internal/usage"
	"github.com/bulwark-ai/bulwark/policies"
)

// ConfigError is an error caused by the configuration (a redis_url that
// does not parse, a key file that cannot be used): the command exits with
// status 2, as for a flag it cannot parse. Its text is Err's.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// RedisTimeout bounds one command on the shared Redis client. Every limiter
// call carries its own, shorter deadline (ratelimit_timeout, which the
// client honours: ContextTimeoutEnabled), so this is the bound of the
// identity stage's key lookups and revocation watch.
const RedisTimeout = time.Second

// Deps is what the core takes from its caller besides the Config: where
// its logs, metrics, spans and audit records go, and the hooks that turn
// its events into audit records. Every field may be left zero.
type Deps struct {
	// Logger receives the components' logs (nil: discarded).
	Logger *slog.Logger
	// Registerer receives every metric (nil: none registered, as in tests
	// and `bulwark check`).
	Registerer prometheus.Registerer
	// Pepper is the API key pepper when cfg names no pepper file (serve and
	// check read it from BULWARK_KEY_PEPPER; it is never in the Config).
	Pepper string
	// ModerationToken is the moderation endpoint's bearer token when cfg
	// names no moderation_token_file (serve reads $BULWARK_MODERATION_TOKEN;
	// it is never in the Config).
	ModerationToken string
	// Tracer starts the pipeline's child spans (nil: none).
	Tracer trace.Tracer
	// Auditor records every decision (nil: none).
	Auditor pipeline.Auditor
	// AuditGate fails every decision while it returns an error (serve sets
	// it under audit_failure_mode fail_closed).
	AuditGate func() error
	// PrincipalName names principals in decision logs and spans (nil: by id).
	PrincipalName func(id string) string
	// OnPolicyLoad is told of every policy load that changed something or
	// failed (policy.Config.OnLoad).
	OnPolicyLoad func(oldRevision, newRevision string, err error)
	// OnKeyChange is told of every API key change (identity.Config.OnKeyChange).
	OnKeyChange func(identity.KeyChange)
	// OnBreakerChange is told when the limiter's Redis breaker opens or
	// closes (ratelimit.Config.OnBreakerChange).
	OnBreakerChange func(ratelimit.BreakerState)
	// OnBudget is told of each tenant budget threshold this replica's
	// exchanges crossed (usage.Options.OnBudget).
	OnBudget func(usage.BudgetAlert)
	// Policies is the policy tree used when cfg names no policy_dir nor
	// bundle (nil: the embedded default policies). Tests pass tuned copies.
	Policies fs.FS
	// NoGreyZone builds the detectors without the policy's grey zone
	// (redaction.never_redact), so example.com addresses are findings.
	// Only tests whose fixtures plant such values set it; serve never does.
	NoGreyZone bool
}

// Core is the decision core. Its fields are built once by New and never
// replaced; Close releases them.
type Core struct {
	// Engine evaluates the policy; Watch it to hot-reload.
	Engine *policy.Engine
	// Redis is the one client for cfg.RedisURL, shared by the limiter, the
	// identity stage and the Admin API's key store (nil without Redis).
	Redis redis.UniversalClient
	// Identity authenticates credentials.
	Identity *identity.Authenticator
	// Limiter decides rate limits and quotas.
	Limiter *ratelimit.Limiter
	// Scanner scans prompts (every detector).
	Scanner *detect.Scanner
	// ResponseScanner scans model output (no injection classifier: output
	// is not an instruction to Bulwark).
	ResponseScanner *detect.Scanner
	// Moderator asks the moderation model (nil unless cfg names a
	// moderation_url): the pipeline about prompts, the exchange about
	// answers (ResponseModerator).
	Moderator *detect.Moderator
	// Pipeline decides, whichever door a request came through.
	Pipeline *pipeline.Pipeline
	// Usage records every exchange's usage (in Redis when there is one)
	// and gives the totals decisions carry as input.usage.
	Usage *usage.Recorder
	// OPA is OPA's plugin manager (bundles, decision logs, status,
	// discovery) when cfg names an opa_config (nil otherwise). Start it
	// to begin downloading; Close stops it.
	OPA *policy.OPA
}

// opaStopTimeout bounds the last decision log and status uploads on Close.
const opaStopTimeout = 5 * time.Second

// PolicyConfig is the policy engine's configuration from cfg: a directory,
// a bundle, or else tree (nil: the embedded default policies).
func PolicyConfig(cfg config.Config, tree fs.FS) policy.Config {
	if tree == nil {
		tree = policies.FS
	}
	return policy.Config{
		Dir:      cfg.PolicyDir,
		Bundle:   cfg.Bundle,
		Embedded: tree,
		Query:    cfg.PolicyQuery,
		RegoV0:   cfg.RegoV0,
	}
}

// New builds the core from cfg and starts the identity stage's background
// work (key file and JWKS refresh, Redis key changes) under ctx. On error
// whatever was built is closed.
func New(ctx context.Context, cfg config.Config, d Deps) (c *Core, err error) {
	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c = &Core{}
	defer func() {
		if err != nil {
			c.Close()
			c = nil
		}
	}()
	pc := PolicyConfig(cfg, d.Policies)
	pc.OnLoad = d.OnPolicyLoad
	if cfg.OPAConfig != "" {
		raw, err := policy.LoadOPAConfig(cfg.OPAConfig)
		if err != nil {
			return c, &ConfigError{Err: fmt.Errorf("config opa_config: %w", err)}
		}
		if c.OPA, err = policy.NewOPA(ctx, raw, cfg.OPAConfig, policy.OPAOptions{Logger: logger, Registerer: d.Registerer}); err != nil {
			return c, &ConfigError{Err: fmt.Errorf("config opa_config: %w", err)}
		}
		if c.OPA.ServesPolicy() && (cfg.PolicyDir != "" || cfg.Bundle != "") {
			return c, &ConfigError{Err: fmt.Errorf("config opa_config: it names bundles, which are the policy source: set it or policy_dir/bundle, not both")}
		}
		pc.OPA = c.OPA
	}
	if c.Engine, err = policy.New(ctx, pc, logger, d.Registerer); err != nil {
		return c, fmt.Errorf("load policies: %w", err)
	}
	if cfg.RedisURL != "" {
		if c.Redis, err = ratelimit.NewRedisClient(cfg.RedisURL, cfg.RedisCAFile, RedisTimeout); err != nil {
			return c, &ConfigError{Err: fmt.Errorf("config redis_url: %w", err)}
		}
	}
	idCfg := cfg.IdentityConfig(d.Pepper)
	idCfg.OnKeyChange = d.OnKeyChange
	if c.Identity, err = identity.New(idCfg, c.Redis, d.Registerer, logger); err != nil {
		return c, fmt.Errorf("identity: %w", err)
	}
	c.Identity.Start(ctx)
	if c.Limiter, err = ratelimit.New(ratelimit.Config{
		RedisURL:        cfg.RedisURL,
		Client:          c.Redis,
		CheckTimeout:    cfg.RateLimitTimeout,
		FailureMode:     ratelimit.FailureMode(cfg.RateLimitFailureMode),
		LocalShare:      cfg.RateLimitLocalShare,
		OnBreakerChange: d.OnBreakerChange,
	}, d.Registerer); err != nil {
		return c, fmt.Errorf("rate limiter: %w", err)
	}
	var grey detect.GreyZoneSource = c.Engine
	if d.NoGreyZone {
		grey = nil
	}
	// Content-safety categories and output sanitisation come from policy
	// data too (data.bulwark.content_safety, data.bulwark.output).
	if c.Scanner, err = detect.New(detect.Config{GreyZone: grey, Content: c.Engine, Direction: detect.DirectionRequest}); err != nil {
		return c, fmt.Errorf("detectors: %w", err)
	}
	if c.ResponseScanner, err = detect.New(detect.Config{DisableInjection: true, GreyZone: grey,
		Content: c.Engine, Direction: detect.DirectionResponse}); err != nil {
		return c, fmt.Errorf("detectors: %w", err)
	}
	// The remote classifier, when configured, is asked beside the local
	// detectors; its verdict reaches input.signals.remote_classifier.
	var detector pipeline.Detector = c.Scanner
	if cfg.RemoteClassifierURL != "" {
		remote, err := detect.NewRemote(cfg.RemoteClassifierConfig(), nil, nil, d.Registerer)
		if err != nil {
			return c, fmt.Errorf("remote classifier: %w", err)
		}
		detector = detect.WithRemote(c.Scanner, remote)
	}
	// Usage attribution shares the limiter's Redis client (every replica
	// counts into the same buckets); without Redis, this process counts.
	store := usage.NewLocal(nil)
	if c.Redis != nil {
		store = usage.NewRedis(c.Redis, "")
	}
	if c.Usage, err = usage.NewRecorder(store, c.Engine, usage.Options{OnBudget: d.OnBudget, Logger: logger, Registerer: d.Registerer}); err != nil {
		return c, err
	}
	deps := pipeline.Deps{Eval: c.Engine, Auth: c.Identity, Limiter: c.Limiter, Detector: detector, Tracer: d.Tracer, Auditor: d.Auditor,
		Usage: c.Usage}
	// The moderation model, when configured, is asked about prompts beside
	// the detectors; its verdict reaches input.signals.moderation.
	if cfg.ModerationURL != "" {
		mc, err := cfg.ModerationConfig(d.ModerationToken)
		if err != nil {
			return c, &ConfigError{Err: err}
		}
		if c.Moderator, err = detect.NewModerator(mc, nil, nil, d.Registerer); err != nil {
			return c, fmt.Errorf("moderation: %w", err)
		}
		deps.Moderator = c.Moderator
	}
	if deps.Abuse, err = newAbuseTracker(cfg, c.Redis); err != nil {
		return c, &ConfigError{Err: err}
	}
	dl, err := policy.NewDecisionLog(c.OPA, cfg.PolicyQuery)
	if err != nil {
		return c, err
	}
	if dl != nil { // a nil *DecisionLog must not become a non-nil interface
		deps.DecisionLog = dl
	}
	pipeCfg := pipeline.Config{Timeout: cfg.CheckTimeout, DryRun: cfg.DryRun, RateLimitHeaders: cfg.RateLimitHeaders, AuditGate: d.AuditGate,
		PrincipalName: d.PrincipalName}
	if c.Pipeline, err = pipeline.New(pipeCfg, deps, logger, d.Registerer); err != nil {
		return c, err // already says "pipeline: ..."
	}
	return c, nil
}

// ResponseModerator is the moderator the exchange asks about answers: nil
// when none is configured or moderation_responses is off. It is an
// interface so that "none" is a nil interface, never a nil pointer in one.
func (c *Core) ResponseModerator(cfg config.Config) pipeline.Moderator {
	if c.Moderator == nil || !cfg.ModerationResponses {
		return nil
	}
	return c.Moderator
}

// Close stops the limiter and the identity stage, then closes the shared
// Redis client they used. It is safe on a partly built Core.
func (c *Core) Close() {
	if c.OPA != nil {
		ctx, cancel := context.WithTimeout(context.Background(), opaStopTimeout)
		c.OPA.Stop(ctx)
		cancel()
	}
	if c.Limiter != nil {
		_ = c.Limiter.Close()
	}
	if c.Identity != nil {
		c.Identity.Close()
	}
	if c.Redis != nil {
		_ = c.Redis.Close()
	}
}

// newAbuseTracker keeps principals' abuse patterns in Redis when there is
// one (shared by every replica), in the process otherwise.
func newAbuseTracker(cfg config.Config, client redis.UniversalClient) (pipeline.AbuseTracker, error) {
	ac := abuse.Config{OffenceWindow: cfg.AbuseOffenceWindow, BaselineWindow: cfg.AbuseBaselineWindow, Timeout: cfg.RateLimitTimeout}
	if client != nil {
		return abuse.NewRedis(ac, client)
	}
	return abuse.NewLocal(ac, nil)
}
