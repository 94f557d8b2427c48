// Package config is Bulwark's one typed configuration: defaults that run with
// nothing else, overridden by a YAML file (--config), then BULWARK_*
// environment variables, then command-line flags. Every setting has all three
// names, derived from one table so they cannot drift apart.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
)

// Config is everything `bulwark serve` needs. The zero value is not useful;
// start from Default.
type Config struct {
	// GRPCAddr is where Envoy reaches ext_authz, ext_proc and gRPC health.
	// Only Envoy may reach it: whoever can call Check or Process can present
	// any attributes (source.principal, forwarded metadata) as Envoy's.
	GRPCAddr string `yaml:"grpc_addr"`
	// APIAddr serves Bulwark's own API (GuardService, AdminService, gRPC
	// health, reflection when enabled), apart from the Envoy listener so an
	// API caller can never reach Check or Process. Empty: no API listener.
	APIAddr string `yaml:"api_addr"`
	// AdminAddr serves /healthz, /readyz and /metrics; loopback by default so
	// metrics are not exposed to the mesh unless asked for.
	AdminAddr string `yaml:"admin_addr"`

	// PolicyDir loads policies from a directory and hot-reloads it; empty means
	// the policies embedded in the binary.
	PolicyDir string `yaml:"policy_dir"`
	// Bundle loads an OPA bundle tarball instead of PolicyDir.
	Bundle string `yaml:"bundle"`
	// PolicyQuery is the decision rule; OPA-Envoy policies use envoy/authz/allow.
	PolicyQuery string `yaml:"policy_query"`
	// RegoV0 parses policies written in pre-1.0 Rego syntax.
	RegoV0 bool `yaml:"rego_v0"`

	// CheckTimeout bounds one decision (identity, OPA evaluation, rate
	// limits; detection runs before it) below Envoy's own 200 ms default so
	// Bulwark answers (or fails) before Envoy gives up.
	CheckTimeout time.Duration `yaml:"check_timeout"`
	// DryRun computes, logs and counts decisions but always allows.
	DryRun bool `yaml:"dry_run"`

	// GRPCReflection exposes gRPC reflection on the Envoy and API listeners,
	// each describing its own services (off: it documents the attack surface).
	GRPCReflection bool `yaml:"grpc_reflection"`
	// MaxRecvMsgBytes caps one inbound gRPC message; keep it at or above
	// Envoy's with_request_body.max_request_bytes plus headers.
	MaxRecvMsgBytes int `yaml:"max_recv_msg_bytes"`
	// MaxSendMsgBytes caps one outbound gRPC message.
	MaxSendMsgBytes int `yaml:"max_send_msg_bytes"`
	// MaxConcurrentStreams caps streams per HTTP/2 connection from Envoy.
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
	// KeepaliveMinTime is the shortest ping interval accepted from Envoy;
	// faster pings are answered with GOAWAY (too_many_pings).
	KeepaliveMinTime time.Duration `yaml:"keepalive_min_time"`
	// ShutdownGrace is how long SIGTERM waits for in-flight calls before a hard stop.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// ReloadDebounce coalesces bursts of policy file changes into one reload.
	ReloadDebounce time.Duration `yaml:"reload_debounce"`

	// TLSCert and TLSKey serve the gRPC listener over TLS (1.2 at least),
	// reloaded from disk when they change. Both or neither; empty: plaintext.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// TLSClientCA requires client certificates signed by this CA bundle (mTLS).
	TLSClientCA string `yaml:"tls_client_ca"`
	// TLSClientSANs restricts mTLS clients to these URI SANs (SPIFFE IDs)
	// or DNS SANs; an entry ending in * matches by prefix. Empty: any
	// client certificate TLSClientCA signed.
	TLSClientSANs []string `yaml:"tls_client_sans"`
	// APITLSCert and APITLSKey serve the API listener over TLS (1.2 at
	// least), reloaded when they change; empty: plaintext.
	APITLSCert string `yaml:"api_tls_cert"`
	APITLSKey  string `yaml:"api_tls_key"`
	// APITLSClientCA requires API clients to present certificates signed by
	// this CA bundle (mTLS); with trust_source_principal the verified
	// certificate names the caller.
	APITLSClientCA string `yaml:"api_tls_client_ca"`
	// APITLSClientSANs restricts API mTLS clients to these URI or DNS SANs
	// (prefix* matches a prefix). Empty: any client the CA signed.
	APITLSClientSANs []string `yaml:"api_tls_client_sans"`
	// AdminTLSCert and AdminTLSKey serve the admin listener over TLS.
	AdminTLSCert string `yaml:"admin_tls_cert"`
	AdminTLSKey  string `yaml:"admin_tls_key"`

	// MaxInFlight bounds decisions admitted and not yet answered (Check
	// calls, stream messages awaiting their answer); beyond it calls get
	// UNAVAILABLE at once, never a queue. It is a latency budget: an
	// admitted call waits for at most MaxInFlight / cores decisions. The
	// default, 256, keeps that near 50 ms for the default policy on 2 cores
	// (an estimate: 256 / 2 × ~0.4 ms per decision), inside Envoy's 200 ms
	// timeout. 0: unlimited.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxStreams bounds open gRPC streams (ext_proc exchanges) over all
	// connections; MaxConcurrentStreams is per connection. 0: unlimited.
	MaxStreams int `yaml:"max_streams"`
	// OverloadWindow is how long rejections must go on before health turns
	// NOT_SERVING, and stay away before it turns SERVING again.
	OverloadWindow time.Duration `yaml:"overload_window"`

	// RedisURL points at the Redis shared by all replicas (API key store,
	// later rate limits): redis://, rediss://, or comma-separated addresses
	// for a Cluster. Empty: nothing shared, everything in-process.
	RedisURL string `yaml:"redis_url"`
	// RedisCAFile verifies a rediss:// server with this CA bundle.
	RedisCAFile string `yaml:"redis_ca_file"`

	// RateLimitFailureMode is what limits do when Redis cannot answer:
	// fail_open (decide in-process with RateLimitLocalShare of each limit) or
	// fail_closed (503). A limit in a policy may override it.
	RateLimitFailureMode string `yaml:"ratelimit_failure_mode"`
	// RateLimitLocalShare is the fraction of each limit one replica allows on
	// its own while Redis is down, e.g. 1/replicas.
	RateLimitLocalShare float64 `yaml:"ratelimit_local_share"`
	// RateLimitTimeout bounds the Redis round trip of one limit check.
	RateLimitTimeout time.Duration `yaml:"ratelimit_timeout"`
	// RateLimitHeaders adds RateLimit / RateLimit-Policy headers (remaining
	// quota) to allowed responses; 429s always carry them.
	RateLimitHeaders bool `yaml:"ratelimit_headers"`

	// KeysFile is the API keys file (hashes only), hot-reloaded.
	KeysFile string `yaml:"keys_file"`
	// PepperFile holds the server-side secret API key hashes are keyed with;
	// BULWARK_KEY_PEPPER may carry it instead.
	PepperFile string `yaml:"pepper_file"`
	// JWKSURL is the JWT issuer's key set, fetched with a timeout and cached.
	JWKSURL string `yaml:"jwks_url"`
	// JWTKeysFile holds static JWT verification keys (JWKS or PEM).
	JWTKeysFile string `yaml:"jwt_keys_file"`
	// JWTIssuer and JWTAudience must match the token's iss and aud; both are
	// required with jwks_url or jwt_keys_file, unless
	// JWTInsecureSkipIssuerAudience.
	JWTIssuer   string `yaml:"jwt_issuer"`
	JWTAudience string `yaml:"jwt_audience"`
	// JWTInsecureSkipIssuerAudience lets Bulwark start with JWT keys but
	// without an issuer or audience to check, accepting tokens minted for
	// other services; warned about at every start. Off by default.
	JWTInsecureSkipIssuerAudience bool `yaml:"jwt_insecure_skip_issuer_audience"`
	// JWTMaxTokenLifetime refuses tokens whose exp is further than this after
	// their iat (lifetime_too_long); 0 or negative: no bound.
	JWTMaxTokenLifetime time.Duration `yaml:"jwt_max_token_lifetime"`
	// JWKSMaxCacheTTL caps the cache lifetime a JWKS response asks for: the
	// longest a key withdrawn from the JWKS still verifies tokens.
	JWKSMaxCacheTTL time.Duration `yaml:"jwks_max_cache_ttl"`
	// JWTAlgorithms is the signature allow-list (asymmetric only).
	JWTAlgorithms []string `yaml:"jwt_algorithms"`
	// JWTRolesClaim and JWTTenantClaim map claims to roles and tenant.
	JWTRolesClaim  string `yaml:"jwt_roles_claim"`
	JWTTenantClaim string `yaml:"jwt_tenant_claim"`
	// TrustSourcePrincipal takes the peer identity Envoy verified over mTLS
	// (attributes.source.principal) as a principal.
	TrustSourcePrincipal bool `yaml:"trust_source_principal"`
	// TrustXFCC takes x-forwarded-client-cert as a principal; only safe when
	// the nearest proxy sanitises it.
	TrustXFCC bool `yaml:"trust_xfcc"`
	// MTLSPrincipals gives roles and tenant to mTLS peers (exact id or prefix*).
	MTLSPrincipals map[string]identity.PeerIdentity `yaml:"mtls_principals"`
	// OperatorRole is the role every AdminService call needs. Keep it apart
	// from the roles policies give LLM callers (the default policy's
	// "admin" and "user"): an operator manages Bulwark, not the models.
	OperatorRole string `yaml:"operator_role"`
	// OperatorCrossTenantRole, held with OperatorRole, lets an operator act
	// on every tenant (and reload the shared policy); without it an
	// operator acts only on its own tenant's keys and quotas.
	OperatorCrossTenantRole string `yaml:"operator_cross_tenant_role"`
	// StripCredentials keeps credential headers out of the policy input once
	// the identity stage has read them. It applies only when Bulwark
	// authenticates (IdentityEnabled); without any identity source the
	// headers stay, so OPA-Envoy policies that verify tokens themselves run
	// unchanged.
	StripCredentials bool `yaml:"strip_credentials"`
	// StripUpstreamCredentials makes ext_proc remove the client's Bulwark
	// credential headers (authorization; x-api-key when it carried the
	// credential) from the request Envoy forwards to the model. It applies
	// only when Bulwark authenticates (IdentityEnabled). The Envoy configs in
	// deploy/ also drop them at the route (request_headers_to_remove), which
	// covers ext_authz-only deployments.
	StripUpstreamCredentials bool `yaml:"strip_upstream_credentials"`

	// ExtProcMaxBodyBytes bounds a request or response body ext_proc buffers
	// (after decompression); bigger ones are refused with 413/502. Keep it
	// below max_recv_msg_bytes and Envoy's buffer limits.
	ExtProcMaxBodyBytes int `yaml:"extproc_max_body_bytes"`
	// GuardScanMaxBytes bounds the text of one Guard API ScanText call
	// (extproc_max_body_bytes when that is smaller): ScanText is not a
	// policy decision, so this and GuardScanPerMinute are what bound a
	// caller's CPU.
	GuardScanMaxBytes int `yaml:"guard_scan_max_bytes"`
	// GuardScanPerMinute is how many ScanText calls one principal may make
	// per minute, counted by the rate limiter (Redis when configured).
	GuardScanPerMinute int `yaml:"guard_scan_per_minute"`
	// ExtProcScanRoles are the message roles whose text the detectors read
	// in requests; empty means every role.
	ExtProcScanRoles []string `yaml:"extproc_scan_roles"`
	// TrustedRoles are the message roles whose text the application wrote
	// itself (system prompt, developer messages): the detectors neither
	// score nor redact it. Empty: every role is read as the user's.
	TrustedRoles []string `yaml:"trusted_roles"`
	// ExtProcStreamStep and ExtProcStreamLookahead bound the streaming
	// redactor: ordinary prose leaves a word or two behind the model (see
	// redact.Stream), and text with no quiet cut (a long token, a key, a
	// table of numbers) leaves StreamStep bytes at a time once
	// StreamLookahead more bytes are known, so a finding up to the lookahead
	// long is caught however the stream was chunked. Step plus lookahead is
	// the most a stream holds.
	ExtProcStreamStep      int `yaml:"extproc_stream_step"`
	ExtProcStreamLookahead int `yaml:"extproc_stream_lookahead"`
	// ExtProcMessageTimeout and ExtProcMaxMessageTimeout mirror the Envoy
	// ext_proc filter's message_timeout and max_message_timeout: with the
	// second set, an answer not ready after half of the first is preceded
	// by override_message_timeout, so Envoy waits for it (0: never asks,
	// as Envoy's default max_message_timeout disables the API).
	ExtProcMessageTimeout    time.Duration `yaml:"extproc_message_timeout"`
	ExtProcMaxMessageTimeout time.Duration `yaml:"extproc_max_message_timeout"`
	// ExtProcIdleTimeout ends an ext_proc exchange (DEADLINE_EXCEEDED, so
	// Envoy fails the request) when Envoy sends no message for this long;
	// the first message must come within the smaller of this and 10s.
	// ExtProcMaxStreamDuration ends one this long after it opened. Both
	// bound how long a stream can hold its goroutine and max_streams slot.
	ExtProcIdleTimeout       time.Duration `yaml:"extproc_idle_timeout"`
	ExtProcMaxStreamDuration time.Duration `yaml:"extproc_max_stream_duration"`
	// ExtProcMaxBufferedBytes bounds the body bytes all ext_proc exchanges
	// hold together while bodies sent in chunks accumulate; past it an
	// exchange is refused with 503 (body_buffer_exhausted).
	ExtProcMaxBufferedBytes int64 `yaml:"extproc_max_buffered_bytes"`
	// ExtProcClampMaxTokens caps the max-tokens field of LLM requests (0: off).
	ExtProcClampMaxTokens int64 `yaml:"extproc_clamp_max_tokens"`
	// ExtProcCanary plants a random marker in system prompts and stops
	// answers that repeat it.
	ExtProcCanary bool `yaml:"extproc_canary"`
	// RedactKeyFile keys the "hash" redaction action; empty: a random key per
	// process (hashes then correlate only within one replica's lifetime).
	RedactKeyFile string `yaml:"redact_key_file"`
	// MetadataKeyFile holds the key (at least 32 bytes) ext_authz seals the
	// principal it forwards to ext_proc with (HMAC-SHA256 in Envoy's dynamic
	// metadata); ext_proc believes only a seal it can verify. Every replica
	// must read the same key. Empty: a random key per process, so a seal
	// made by another replica fails and ext_proc authenticates the
	// request's credentials again (safe, but a second identity decision).
	MetadataKeyFile string `yaml:"metadata_key_file"`

	// AuditLog is the hash-chained audit log file; empty disables auditing.
	AuditLog string `yaml:"audit_log"`
	// AuditKeyFile holds the key every audit line is HMAC-signed with.
	AuditKeyFile string `yaml:"audit_key_file"`
	// AuditMaxBytes rotates the audit log past this size.
	AuditMaxBytes int64 `yaml:"audit_max_bytes"`
	// AuditBuffer is how many records may wait to be written.
	AuditBuffer int `yaml:"audit_buffer"`
	// AuditOverflow is drop (count the loss on the chain) or block.
	AuditOverflow string `yaml:"audit_overflow"`
	// AuditMaxFiles is how many rotated audit files are kept; rotating
	// deletes the oldest beyond it, so a flood of audited requests cannot
	// fill the disk with old files.
	AuditMaxFiles int `yaml:"audit_max_files"`
	// AuditFailureMode is what decisions do while the audit log cannot be
	// written (a full disk): fail_open decides on and counts the lost
	// records on the chain; fail_closed fails every decision (gRPC
	// UNAVAILABLE, so Envoy's failure mode, deny by default, applies) until
	// writing resumes.
	AuditFailureMode string `yaml:"audit_failure_mode"`
	// AuditCheckpointInterval and AuditCheckpointRecords bound how far the
	// audit checkpoint may lag the log: only records written since the last
	// checkpoint can be cut from the tail unseen by `audit verify`.
	AuditCheckpointInterval time.Duration `yaml:"audit_checkpoint_interval"`
	AuditCheckpointRecords  int           `yaml:"audit_checkpoint_records"`
	// AuditKeyset turns on encrypted audit records (the production
	// setting): the keyset `bulwark audit keygen` made, unwrapped with the
	// key-encryption key from AuditKEKFile or $BULWARK_AUDIT_KEK.
	AuditKeyset  string `yaml:"audit_keyset"`
	AuditKEKFile string `yaml:"audit_kek_file"`
	// AuditMaxAge deletes rotated audit files whose newest record is older
	// (0: by count only); AuditRotateEvery starts a new file that often
	// (default AuditMaxAge/8) so old records leave the current one.
	AuditMaxAge      time.Duration `yaml:"audit_max_age"`
	AuditRotateEvery time.Duration `yaml:"audit_rotate_every"`
	// PseudonymizePrincipals names principals in decision logs and spans by
	// their keyed pseudonym from the audit keyset instead of their id.
	PseudonymizePrincipals bool `yaml:"pseudonymize_principals"`

	// AlertWebhookURL receives security alerts (injection bursts, canary
	// leaks, limiter fallback) as JSON POSTs; empty: they are logged at
	// warn. Treated as a secret (never logged nor audited).
	AlertWebhookURL string `yaml:"alert_webhook_url"`
	// AlertWebhookTimeout bounds one webhook POST.
	AlertWebhookTimeout time.Duration `yaml:"alert_webhook_timeout"`
	// AlertMinInterval is the least time between two alerts of one event
	// about one subject (principal); the ones in between are counted.
	AlertMinInterval time.Duration `yaml:"alert_min_interval"`
	// AlertMaxPerMinute caps alerts of every kind together.
	AlertMaxPerMinute int `yaml:"alert_max_per_minute"`
	// AlertInjectionBurst prompt_injection denials of one principal within
	// AlertInjectionWindow raise an injection_burst alert; 0 disables it.
	AlertInjectionBurst int `yaml:"alert_injection_burst"`
	// AlertInjectionWindow is the injection burst's window.
	AlertInjectionWindow time.Duration `yaml:"alert_injection_window"`

	// Abuse patterns (internal/abuse): each principal's offences (denials
	// for the pipeline's offence reasons) within AbuseOffenceWindow are
	// input.history; its request and token rates against a baseline
	// averaged over AbuseBaselineWindow are input.usage_pattern. Kept in
	// Redis with redis_url (shared by every replica), in-process otherwise.
	AbuseOffenceWindow  time.Duration `yaml:"abuse_offence_window"`
	AbuseBaselineWindow time.Duration `yaml:"abuse_baseline_window"`

	// RemoteClassifierURL is an HTTP endpoint scoring prompts ({"text"} in,
	// {"score", "label"} out), asked beside the local detectors; its verdict
	// is input.signals.remote_classifier. Empty: no remote classifier. May
	// carry a token: never echoed.
	RemoteClassifierURL string `yaml:"remote_classifier_url"`
	// RemoteClassifierTimeout bounds one call. The decision waits for it
	// (detection runs before check_timeout starts), so keep it short.
	RemoteClassifierTimeout time.Duration `yaml:"remote_classifier_timeout"`
	// RemoteClassifierThreshold is the score at or above which
	// signals.remote_classifier.detected is true.
	RemoteClassifierThreshold float64 `yaml:"remote_classifier_threshold"`
	// RemoteClassifierBreakerFailures consecutive failed calls open the
	// circuit breaker: no call is sent (the verdict is unavailable,
	// circuit_open) for RemoteClassifierBreakerCooldown, then one trial
	// call decides whether it closes.
	RemoteClassifierBreakerFailures int           `yaml:"remote_classifier_breaker_failures"`
	RemoteClassifierBreakerCooldown time.Duration `yaml:"remote_classifier_breaker_cooldown"`

	// The moderation model (one block: moderation_*). ModerationURL speaks
	// the OpenAI moderations API (POST {"input", "model"} → results[0].
	// flagged, categories, category_scores): OpenAI's own endpoint or a
	// self-hosted model behind an OpenAI-compatible server. It is asked
	// about prompts before the decision and about answers (whole, or every
	// ModerationStreamWindow bytes of a streamed one, and at its end); the
	// verdict is input.signals.moderation. Empty: not asked, no cost. May
	// carry a token: never echoed.
	ModerationURL string `yaml:"moderation_url"`
	// ModerationModel, when set, is sent as "model".
	ModerationModel string `yaml:"moderation_model"`
	// ModerationTokenFile holds a bearer token for the endpoint; without it
	// $BULWARK_MODERATION_TOKEN is used. Never logged.
	ModerationTokenFile string `yaml:"moderation_token_file"`
	// ModerationTimeout bounds one call; the decision (or the streamed
	// chunk) waits for it, so keep it inside Envoy's timeouts.
	ModerationTimeout time.Duration `yaml:"moderation_timeout"`
	// ModerationFailureMode is fail_open (no verdict: the decision goes on
	// without one) or fail_closed (the default policy denies with
	// moderation_unavailable). It reaches the policy as
	// signals.moderation.failure_mode.
	ModerationFailureMode string `yaml:"moderation_failure_mode"`
	// ModerationBreakerFailures consecutive failed calls open the breaker
	// for ModerationBreakerCooldown (no call: error circuit_open).
	ModerationBreakerFailures int           `yaml:"moderation_breaker_failures"`
	ModerationBreakerCooldown time.Duration `yaml:"moderation_breaker_cooldown"`
	// ModerationCacheTTL is how long a verdict is reused for the same text
	// (by SHA-256); ModerationCacheSize bounds how many are kept (0: none).
	ModerationCacheTTL  time.Duration `yaml:"moderation_cache_ttl"`
	ModerationCacheSize int           `yaml:"moderation_cache_size"`
	// ModerationResponses asks about answers too, not only prompts.
	ModerationResponses bool `yaml:"moderation_responses"`
	// ModerationStreamWindow is how many bytes of a streamed answer's text
	// go to the model at a time (and what is left at the end).
	ModerationStreamWindow int `yaml:"moderation_stream_window"`

	// GCPercent sets the Go garbage collector's target (GOGC) unless the GOGC
	// environment variable is set. Bulwark's live heap is small and its
	// garbage per request large, so a higher target trades a little memory
	// for much less GC CPU on the hot path (see README, Performance).
	GCPercent int `yaml:"gc_percent"`

	// AdminPprof serves Go's /debug/pprof on the admin listener, for profiling
	// under real load. Off by default: profiles reveal internals.
	AdminPprof bool `yaml:"admin_pprof"`

	// LogLevel is debug, info, warn or error. Allowed decisions log at debug.
	LogLevel string `yaml:"log_level"`
	// LogFormat is json or text.
	LogFormat string `yaml:"log_format"`

	// MCPPaths are the MCP (Streamable HTTP) endpoints: exact paths, or
	// prefixes ending in "/". A request there is MCP with or without a
	// body; elsewhere a JSON-RPC body is recognised by itself.
	MCPPaths []string `yaml:"mcp_paths"`
	// MCPResourceMetadataURL, when set, is the OAuth protected resource
	// metadata URL (RFC 9728) a 401 to an MCP request points to:
	// WWW-Authenticate: Bearer resource_metadata="<url>".
	MCPResourceMetadataURL string `yaml:"mcp_resource_metadata_url"`
	// MCPSessionTTL is how long the tool definitions an MCP session was
	// shown are remembered after its last tools/list, to flag a changed
	// definition (a rug pull); MCPMaxSessions bounds how many sessions
	// are remembered in-process (least recently listed forgotten first).
	// With a Redis URL the memory is shared by the replicas (one hash per
	// session, keyed by a hash of the principal and session id, expiring
	// MCPSessionTTL after its last listing); each replica's own memory is
	// the fallback while Redis is unreachable.
	MCPSessionTTL  time.Duration `yaml:"mcp_session_ttl"`
	MCPMaxSessions int           `yaml:"mcp_max_sessions"`
	// OPAConfig is an OPA configuration file (services, bundles,
	// decision_logs, status, discovery, keys): Bulwark runs OPA's plugin
	// manager with it. When it names bundles (or discovery) they are the
	// policy source, instead of policy_dir or bundle; its decision logs
	// record every decision beside the audit log.
	OPAConfig string `yaml:"opa_config"`
	// RLSConfig is an envoy/ratelimit YAML file, or a directory of them:
	// with it, Bulwark serves Envoy's RateLimitService v3 on the gRPC
	// listener (Envoy's rate_limit filter), counting with its own limiter.
	// Hot-reloaded; a bad file keeps the last good one. Empty: not served.
	RLSConfig string `yaml:"rls_config"`
	// RLSResponseHeaders adds x-ratelimit-limit, -remaining and -reset to
	// ShouldRateLimit answers, as envoy/ratelimit's
	// LIMIT_RESPONSE_HEADERS_ENABLED does.
	RLSResponseHeaders bool `yaml:"rls_response_headers"`
	// RLSLimitHeader, RLSRemainingHeader and RLSResetHeader rename them
	// (envoy/ratelimit's LIMIT_LIMIT_HEADER, LIMIT_REMAINING_HEADER,
	// LIMIT_RESET_HEADER).
	RLSLimitHeader     string `yaml:"rls_limit_header"`
	RLSRemainingHeader string `yaml:"rls_remaining_header"`
	RLSResetHeader     string `yaml:"rls_reset_header"`
}

// Default returns the configuration `make run` uses: loopback listeners,
// embedded policies, in-process everything.
func Default() Config {
	return Config{
		GRPCAddr:                 "127.0.0.1:9191",
		APIAddr:                  "127.0.0.1:9193",
		AdminAddr:                "127.0.0.1:9192",
		PolicyQuery:              "bulwark/decision",
		RLSLimitHeader:           "x-ratelimit-limit",
		RLSRemainingHeader:       "x-ratelimit-remaining",
		RLSResetHeader:           "x-ratelimit-reset",
		CheckTimeout:             100 * time.Millisecond,
		MaxRecvMsgBytes:          16 << 20,
		MaxSendMsgBytes:          16 << 20,
		MaxConcurrentStreams:     1024,
		KeepaliveMinTime:         5 * time.Second,
		ShutdownGrace:            10 * time.Second,
		ReloadDebounce:           100 * time.Millisecond,
		MaxInFlight:              256,
		MaxStreams:               10000,
		OverloadWindow:           5 * time.Second,
		LogLevel:                 "info",
		LogFormat:                "json",
		JWTAlgorithms:            []string{"RS256", "ES256", "EdDSA"},
		JWTRolesClaim:            "roles",
		JWTTenantClaim:           "tenant",
		StripCredentials:         true,
		StripUpstreamCredentials: true,
		ExtProcMaxBodyBytes:      8 << 20,
		GuardScanMaxBytes:        1 << 20,
		GuardScanPerMinute:       60,
		ExtProcStreamStep:        64,
		ExtProcStreamLookahead:   512,
		ExtProcMessageTimeout:    200 * time.Millisecond,
		GCPercent:                400,
		AuditMaxBytes:            100 << 20,
		AuditBuffer:              4096,
		AuditOverflow:            "drop",
		AlertWebhookTimeout:      5 * time.Second,
		AlertMinInterval:         time.Minute,
		AlertMaxPerMinute:        30,
		AlertInjectionBurst:      5,
		AlertInjectionWindow:     time.Minute,
		AbuseOffenceWindow:       15 * time.Minute,
		AbuseBaselineWindow:      time.Hour,
		RateLimitFailureMode:     "fail_open",
		RateLimitLocalShare:      1,
		RateLimitTimeout:         50 * time.Millisecond,

		// The remote classifier, when remote_classifier_url is set.
		RemoteClassifierTimeout:         150 * time.Millisecond,
		RemoteClassifierThreshold:       0.5,
		RemoteClassifierBreakerFailures: 5,
		RemoteClassifierBreakerCooldown: 10 * time.Second,

		// The moderation model, when moderation_url is set.
		ModerationTimeout:         150 * time.Millisecond,
		ModerationFailureMode:     "fail_open",
		ModerationBreakerFailures: 5,
		ModerationBreakerCooldown: 10 * time.Second,
		ModerationCacheTTL:        time.Minute,
		ModerationCacheSize:       10000,
		ModerationResponses:       true,
		ModerationStreamWindow:    1024,

		ExtProcIdleTimeout:       10 * time.Minute,
		ExtProcMaxStreamDuration: time.Hour,
		ExtProcMaxBufferedBytes:  128 << 20,

		AuditMaxFiles:           10,
		AuditFailureMode:        "fail_open",
		AuditCheckpointInterval: time.Second,
		AuditCheckpointRecords:  1000,

		// JWT bounds and the Admin API's operator roles.
		JWTMaxTokenLifetime:     24 * time.Hour,
		JWKSMaxCacheTTL:         time.Hour,
		OperatorRole:            "bulwark-operator",
		OperatorCrossTenantRole: "bulwark-cross-tenant",

		// The application's own text: not scored as the user's.
		TrustedRoles: []string{"system", "developer"},
	}
}

// IdentityEnabled reports whether Bulwark itself authenticates requests
// (some credential source is configured).
func (c Config) IdentityEnabled() bool {
	return c.KeysFile != "" || c.RedisURL != "" || c.JWKSURL != "" || c.JWTKeysFile != "" ||
		c.TrustSourcePrincipal || c.TrustXFCC
}

// IdentityConfig is the identity stage's configuration; pepper is the
// BULWARK_KEY_PEPPER value, kept out of Config so it is never printed.
func (c Config) IdentityConfig(pepper string) identity.Config {
	ic := identity.DefaultConfig()
	ic.KeysFile = c.KeysFile
	ic.PepperFile = c.PepperFile
	if c.PepperFile == "" {
		ic.Pepper = pepper
	}
	ic.JWKSURL = c.JWKSURL
	ic.JWTKeysFile = c.JWTKeysFile
	ic.Issuer = c.JWTIssuer
	ic.Audience = c.JWTAudience
	ic.InsecureSkipIssuerAudience = c.JWTInsecureSkipIssuerAudience
	ic.MaxTokenLifetime = c.JWTMaxTokenLifetime
	if c.JWTMaxTokenLifetime <= 0 {
		ic.MaxTokenLifetime = -1 // identity's "no bound"
	}
	ic.JWKSMaxCacheTTL = c.JWKSMaxCacheTTL
	if len(c.JWTAlgorithms) > 0 {
		ic.Algorithms = c.JWTAlgorithms
	}
	if c.JWTRolesClaim != "" {
		ic.RolesClaim = c.JWTRolesClaim
	}
	if c.JWTTenantClaim != "" {
		ic.TenantClaim = c.JWTTenantClaim
	}
	ic.TrustSourcePrincipal = c.TrustSourcePrincipal
	ic.TrustXFCC = c.TrustXFCC
	ic.MTLSPrincipals = c.MTLSPrincipals
	return ic
}

// FieldError names the setting that failed validation, by its config-file key.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return fmt.Sprintf("config %s: %s", e.Field, e.Msg) }

// Validate checks every field and returns the first problem as a *FieldError.
func (c Config) Validate() error {
	addr := func(field, v string) error {
		if _, _, err := net.SplitHostPort(v); err != nil {
			return &FieldError{field, fmt.Sprintf("%q is not host:port: %v", v, err)}
		}
		return nil
	}
	if err := addr("grpc_addr", c.GRPCAddr); err != nil {
		return err
	}
	if err := addr("admin_addr", c.AdminAddr); err != nil {
		return err
	}
	if c.APIAddr != "" {
		if err := addr("api_addr", c.APIAddr); err != nil {
			return err
		}
		if sameListener(c.APIAddr, c.GRPCAddr) || sameListener(c.APIAddr, c.AdminAddr) {
			return &FieldError{"api_addr", fmt.Sprintf("%q must differ from grpc_addr and admin_addr: the API is served on a listener of its own", c.APIAddr)}
		}
	}
	if c.PolicyDir != "" && c.Bundle != "" {
		return &FieldError{"bundle", "set policy_dir or bundle, not both"}
	}
	if c.PolicyDir != "" {
		if st, err := os.Stat(c.PolicyDir); err != nil || !st.IsDir() {
			return &FieldError{"policy_dir", fmt.Sprintf("%q is not a readable directory", c.PolicyDir)}
		}
	}
	if c.Bundle != "" {
		if _, err := os.Stat(c.Bundle); err != nil {
			return &FieldError{"bundle", err.Error()}
		}
	}
	if _, err := policy.DataQuery(c.PolicyQuery); err != nil {
		return &FieldError{"policy_query", err.Error()}
	}
	if c.CheckTimeout <= 0 || c.CheckTimeout > time.Minute {
		return &FieldError{"check_timeout", fmt.Sprintf("%s must be in (0, 1m]", c.CheckTimeout)}
	}
	if c.MaxRecvMsgBytes < 64<<10 || c.MaxRecvMsgBytes > math.MaxInt32 {
		return &FieldError{"max_recv_msg_bytes", "must be in [65536, 2147483647] (protobuf's 2 GiB limit)"}
	}
	if c.MaxSendMsgBytes < 64<<10 {
		return &FieldError{"max_send_msg_bytes", "must be at least 65536"}
	}
	if c.ExtProcMaxBodyBytes < 1<<10 || c.ExtProcMaxBodyBytes > c.MaxRecvMsgBytes {
		return &FieldError{"extproc_max_body_bytes", fmt.Sprintf("%d must be in [1024, max_recv_msg_bytes]", c.ExtProcMaxBodyBytes)}
	}
	if c.GuardScanMaxBytes < 1<<10 || c.GuardScanMaxBytes > c.MaxRecvMsgBytes {
		return &FieldError{"guard_scan_max_bytes", fmt.Sprintf("%d must be in [1024, max_recv_msg_bytes]", c.GuardScanMaxBytes)}
	}
	if c.GuardScanPerMinute < 1 {
		return &FieldError{"guard_scan_per_minute", "must be at least 1"}
	}
	if c.ExtProcStreamStep < 1 || c.ExtProcStreamStep > 1<<16 {
		return &FieldError{"extproc_stream_step", "must be in [1, 65536]"}
	}
	if c.ExtProcStreamLookahead < 64 || c.ExtProcStreamLookahead > 1<<16 {
		return &FieldError{"extproc_stream_lookahead", "must be in [64, 65536]"}
	}
	if c.ExtProcMessageTimeout <= 0 || c.ExtProcMessageTimeout > time.Hour {
		return &FieldError{"extproc_message_timeout", "must be in (0, 1h]"}
	}
	if c.ExtProcMaxMessageTimeout < 0 || (c.ExtProcMaxMessageTimeout > 0 && c.ExtProcMaxMessageTimeout <= c.ExtProcMessageTimeout) ||
		c.ExtProcMaxMessageTimeout > time.Hour {
		return &FieldError{"extproc_max_message_timeout", "must be 0 (off) or longer than extproc_message_timeout, at most 1h"}
	}
	if c.ExtProcIdleTimeout <= 0 || c.ExtProcIdleTimeout > 24*time.Hour {
		return &FieldError{"extproc_idle_timeout", "must be in (0, 24h]"}
	}
	if c.ExtProcMaxStreamDuration < c.ExtProcIdleTimeout || c.ExtProcMaxStreamDuration > 7*24*time.Hour {
		return &FieldError{"extproc_max_stream_duration", "must be at least extproc_idle_timeout and at most 168h"}
	}
	if c.ExtProcMaxBufferedBytes < int64(c.ExtProcMaxBodyBytes) {
		return &FieldError{"extproc_max_buffered_bytes", fmt.Sprintf("%d must be at least extproc_max_body_bytes (%d)", c.ExtProcMaxBufferedBytes, c.ExtProcMaxBodyBytes)}
	}
	if c.ExtProcClampMaxTokens < 0 {
		return &FieldError{"extproc_clamp_max_tokens", "must not be negative"}
	}
	if c.RedactKeyFile != "" {
		if _, err := os.Stat(c.RedactKeyFile); err != nil {
			return &FieldError{"redact_key_file", err.Error()}
		}
	}
	if c.MaxConcurrentStreams < 1 || c.MaxConcurrentStreams > math.MaxUint32 {
		return &FieldError{"max_concurrent_streams", "must be in [1, 4294967295]"}
	}
	if c.KeepaliveMinTime < 0 {
		return &FieldError{"keepalive_min_time", "must not be negative"}
	}
	if c.ShutdownGrace < 0 {
		return &FieldError{"shutdown_grace", "must not be negative"}
	}
	switch c.RateLimitFailureMode {
	case "fail_open", "fail_closed":
	default:
		return &FieldError{"ratelimit_failure_mode", fmt.Sprintf("%q is not fail_open or fail_closed", c.RateLimitFailureMode)}
	}
	if c.RateLimitLocalShare <= 0 || c.RateLimitLocalShare > 1 {
		return &FieldError{"ratelimit_local_share", "must be in (0, 1]"}
	}
	if c.RateLimitTimeout <= 0 || c.RateLimitTimeout > c.CheckTimeout {
		return &FieldError{"ratelimit_timeout", fmt.Sprintf("%s must be positive and at most check_timeout (%s)", c.RateLimitTimeout, c.CheckTimeout)}
	}
	if c.AuditOverflow != "drop" && c.AuditOverflow != "block" {
		return &FieldError{"audit_overflow", fmt.Sprintf("%q is not drop or block", c.AuditOverflow)}
	}
	if c.AuditMaxBytes < 4096 {
		return &FieldError{"audit_max_bytes", "must be at least 4096"}
	}
	if c.AuditBuffer < 1 {
		return &FieldError{"audit_buffer", "must be positive"}
	}
	if c.PseudonymizePrincipals && (c.AuditKeyset == "" || c.AuditLog == "") {
		return &FieldError{"pseudonymize_principals", "needs audit_log and audit_keyset: the keyset's pseudonym key names principals"}
	}
	if c.AuditMaxAge < 0 || c.AuditRotateEvery < 0 {
		return &FieldError{"audit_max_age", "audit_max_age and audit_rotate_every must not be negative"}
	}
	if c.AuditMaxFiles < 1 {
		return &FieldError{"audit_max_files", "must be at least 1"}
	}
	if c.AuditFailureMode != "fail_open" && c.AuditFailureMode != "fail_closed" {
		return &FieldError{"audit_failure_mode", fmt.Sprintf("%q is not fail_open or fail_closed", c.AuditFailureMode)}
	}
	if c.AuditCheckpointInterval <= 0 {
		return &FieldError{"audit_checkpoint_interval", "must be positive"}
	}
	if c.AuditCheckpointRecords < 1 {
		return &FieldError{"audit_checkpoint_records", "must be positive"}
	}
	if c.AlertWebhookURL != "" {
		if u, err := url.Parse(c.AlertWebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return &FieldError{"alert_webhook_url", "must be an http:// or https:// URL"} // the value may hold a token: not echoed
		}
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"alert_webhook_timeout", c.AlertWebhookTimeout}, {"alert_min_interval", c.AlertMinInterval}, {"alert_injection_window", c.AlertInjectionWindow},
		{"abuse_offence_window", c.AbuseOffenceWindow}} {
		if d.v <= 0 {
			return &FieldError{d.field, "must be positive"}
		}
	}
	if c.AbuseBaselineWindow <= time.Minute {
		return &FieldError{"abuse_baseline_window", "must be longer than 1m (the current rate's window)"}
	}
	if c.AlertMaxPerMinute < 1 {
		return &FieldError{"alert_max_per_minute", "must be positive"}
	}
	if c.AlertInjectionBurst < 0 {
		return &FieldError{"alert_injection_burst", "must not be negative (0: off)"}
	}
	if err := c.validateRemoteClassifier(); err != nil {
		return err
	}
	if err := c.validateModeration(); err != nil {
		return err
	}
	if c.GCPercent < 25 {
		return &FieldError{"gc_percent", "must be at least 25"}
	}
	if c.ReloadDebounce < 0 {
		return &FieldError{"reload_debounce", "must not be negative"}
	}
	if err := c.validateTLS(); err != nil {
		return err
	}
	if c.MaxInFlight < 0 {
		return &FieldError{"max_in_flight", "must not be negative (0: unlimited)"}
	}
	if c.MaxStreams < 0 {
		return &FieldError{"max_streams", "must not be negative (0: unlimited)"}
	}
	if c.OverloadWindow <= 0 {
		return &FieldError{"overload_window", "must be positive"}
	}
	if c.KeysFile != "" {
		if _, err := os.Stat(c.KeysFile); err != nil {
			return &FieldError{"keys_file", err.Error()}
		}
	}
	if c.MetadataKeyFile != "" {
		if _, err := os.Stat(c.MetadataKeyFile); err != nil {
			return &FieldError{"metadata_key_file", err.Error()}
		}
	}
	if c.JWKSURL != "" || c.JWTKeysFile != "" {
		if !c.JWTInsecureSkipIssuerAudience && (c.JWTIssuer == "" || c.JWTAudience == "") {
			field := "jwt_issuer"
			if c.JWTIssuer != "" {
				field = "jwt_audience"
			}
			return &FieldError{field, "JWT keys are configured: set both jwt_issuer and jwt_audience, or tokens minted for " +
				"other services or by other issuers sharing the keys are accepted (jwt_insecure_skip_issuer_audience accepts that)"}
		}
	}
	if c.JWKSMaxCacheTTL < 30*time.Second || c.JWKSMaxCacheTTL > 24*time.Hour {
		return &FieldError{"jwks_max_cache_ttl", fmt.Sprintf("%s must be in [30s, 24h]", c.JWKSMaxCacheTTL)}
	}
	if err := c.IdentityConfig("placeholder-for-validation-only").Validate(); err != nil {
		return &FieldError{"identity", err.Error()}
	}
	for _, r := range []struct{ field, v string }{{"operator_role", c.OperatorRole}, {"operator_cross_tenant_role", c.OperatorCrossTenantRole}} {
		if strings.TrimSpace(r.v) != r.v || r.v == "" || strings.ContainsAny(r.v, " ,") {
			return &FieldError{r.field, fmt.Sprintf("%q is not a role name", r.v)}
		}
	}
	if c.OperatorRole == c.OperatorCrossTenantRole {
		return &FieldError{"operator_cross_tenant_role", "must differ from operator_role (else every operator reaches every tenant)"}
	}
	if err := c.validateRLS(); err != nil {
		return err
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return &FieldError{"log_level", fmt.Sprintf("%q is not one of debug, info, warn, error", c.LogLevel)}
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		return &FieldError{"log_format", fmt.Sprintf("%q is not json or text", c.LogFormat)}
	}
	if c.OPAConfig != "" {
		if st, err := os.Stat(c.OPAConfig); err != nil || st.IsDir() {
			return &FieldError{"opa_config", fmt.Sprintf("%q is not a readable file", c.OPAConfig)}
		}
	}
	return nil
}

// validateRLS checks the RateLimitService settings: the YAML path exists
// (its contents are checked when loaded) and header names are tokens.
func (c Config) validateRLS() error {
	if c.RLSConfig != "" {
		if _, err := os.Stat(c.RLSConfig); err != nil {
			return &FieldError{"rls_config", err.Error()}
		}
	}
	for _, h := range []struct{ field, v string }{{"rls_limit_header", c.RLSLimitHeader}, {"rls_remaining_header", c.RLSRemainingHeader}, {"rls_reset_header", c.RLSResetHeader}} {
		if h.v == "" || strings.IndexFunc(h.v, func(r rune) bool {
			return (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' && r != '_'
		}) >= 0 {
			return &FieldError{h.field, fmt.Sprintf("%q is not a lower-case header name", h.v)}
		}
	}
	return nil
}

func (c Config) validateRemoteClassifier() error {
	if c.RemoteClassifierURL != "" {
		if u, err := url.Parse(c.RemoteClassifierURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return &FieldError{"remote_classifier_url", "must be an http:// or https:// URL"} // the value may hold a token: not echoed
		}
	}
	if c.RemoteClassifierTimeout <= 0 || c.RemoteClassifierTimeout > 10*time.Second {
		return &FieldError{"remote_classifier_timeout", fmt.Sprintf("%s must be in (0, 10s]", c.RemoteClassifierTimeout)}
	}
	if !(c.RemoteClassifierThreshold > 0 && c.RemoteClassifierThreshold <= 1) {
		return &FieldError{"remote_classifier_threshold", fmt.Sprintf("%v must be in (0, 1]", c.RemoteClassifierThreshold)}
	}
	if c.RemoteClassifierBreakerFailures < 1 {
		return &FieldError{"remote_classifier_breaker_failures", "must be at least 1"}
	}
	if c.RemoteClassifierBreakerCooldown <= 0 {
		return &FieldError{"remote_classifier_breaker_cooldown", "must be positive"}
	}
	return nil
}

// RemoteClassifierConfig is the remote classifier's configuration; it is
// used only when RemoteClassifierURL is set.
func (c Config) RemoteClassifierConfig() detect.RemoteConfig {
	return detect.RemoteConfig{
		URL:             c.RemoteClassifierURL,
		Timeout:         c.RemoteClassifierTimeout,
		Threshold:       c.RemoteClassifierThreshold,
		BreakerFailures: c.RemoteClassifierBreakerFailures,
		BreakerCooldown: c.RemoteClassifierBreakerCooldown,
	}
}

// validateModeration checks the moderation_* block.
func (c Config) validateModeration() error {
	if c.ModerationURL != "" {
		if u, err := url.Parse(c.ModerationURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return &FieldError{"moderation_url", "must be an http:// or https:// URL"} // the value may hold a token: not echoed
		}
	}
	if c.ModerationTokenFile != "" {
		if _, err := os.Stat(c.ModerationTokenFile); err != nil {
			return &FieldError{"moderation_token_file", err.Error()}
		}
	}
	if c.ModerationTimeout <= 0 || c.ModerationTimeout > 30*time.Second {
		return &FieldError{"moderation_timeout", fmt.Sprintf("%s must be in (0, 30s]", c.ModerationTimeout)}
	}
	if c.ModerationFailureMode != detect.FailOpen && c.ModerationFailureMode != detect.FailClosed {
		return &FieldError{"moderation_failure_mode", fmt.Sprintf("%q is not fail_open or fail_closed", c.ModerationFailureMode)}
	}
	if c.ModerationBreakerFailures < 1 {
		return &FieldError{"moderation_breaker_failures", "must be at least 1"}
	}
	if c.ModerationBreakerCooldown <= 0 {
		return &FieldError{"moderation_breaker_cooldown", "must be positive"}
	}
	if c.ModerationCacheTTL <= 0 || c.ModerationCacheTTL > 24*time.Hour {
		return &FieldError{"moderation_cache_ttl", fmt.Sprintf("%s must be in (0, 24h]", c.ModerationCacheTTL)}
	}
	if c.ModerationCacheSize < 0 || c.ModerationCacheSize > 1<<20 {
		return &FieldError{"moderation_cache_size", "must be in [0, 1048576] (0: no cache)"}
	}
	if c.ModerationStreamWindow < 64 || c.ModerationStreamWindow > 1<<20 {
		return &FieldError{"moderation_stream_window", "must be in [64, 1048576] bytes"}
	}
	return nil
}

// ModerationConfig is the moderation model's configuration; it is used
// only when ModerationURL is set. token is the bearer token when no
// moderation_token_file is set ($BULWARK_MODERATION_TOKEN, kept out of
// Config so it is never printed).
func (c Config) ModerationConfig(token string) (detect.ModerationConfig, error) {
	if c.ModerationTokenFile != "" {
		b, err := os.ReadFile(c.ModerationTokenFile) // #nosec G304 -- the operator names the token file
		if err != nil {
			return detect.ModerationConfig{}, &FieldError{"moderation_token_file", err.Error()}
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return detect.ModerationConfig{}, &FieldError{"moderation_token_file", "is empty"}
		}
	}
	if strings.ContainsAny(token, "\r\n") {
		return detect.ModerationConfig{}, &FieldError{"moderation_token_file", "the token holds a line break"}
	}
	size := c.ModerationCacheSize
	if size == 0 {
		size = -1 // detect's "no cache"
	}
	return detect.ModerationConfig{
		URL:             c.ModerationURL,
		Model:           c.ModerationModel,
		Token:           token,
		Timeout:         c.ModerationTimeout,
		BreakerFailures: c.ModerationBreakerFailures,
		BreakerCooldown: c.ModerationBreakerCooldown,
		CacheTTL:        c.ModerationCacheTTL,
		CacheSize:       size,
		FailClosed:      c.ModerationFailureMode == detect.FailClosed,
	}, nil
}

func (c Config) validateTLS() error {
	pair := func(certField, cert, keyField, key string) error {
		switch {
		case cert != "" && key == "":
			return &FieldError{keyField, fmt.Sprintf("%s is set, so %s is needed too", certField, keyField)}
		case key != "" && cert == "":
			return &FieldError{certField, fmt.Sprintf("%s is set, so %s is needed too", keyField, certField)}
		}
		if cert == "" {
			return nil
		}
		if _, err := os.Stat(cert); err != nil {
			return &FieldError{certField, err.Error()}
		}
		if _, err := os.Stat(key); err != nil {
			return &FieldError{keyField, err.Error()}
		}
		return nil
	}
	if err := pair("tls_cert", c.TLSCert, "tls_key", c.TLSKey); err != nil {
		return err
	}
	if err := pair("admin_tls_cert", c.AdminTLSCert, "admin_tls_key", c.AdminTLSKey); err != nil {
		return err
	}
	if err := pair("api_tls_cert", c.APITLSCert, "api_tls_key", c.APITLSKey); err != nil {
		return err
	}
	if err := clientAuth("api_", c.APITLSCert, c.APITLSClientCA, c.APITLSClientSANs); err != nil {
		return err
	}
	return clientAuth("", c.TLSCert, c.TLSClientCA, c.TLSClientSANs)
}

// clientAuth validates one listener's client-certificate settings: its
// <prefix>tls_client_ca (which needs the listener's TLS certificate) and
// <prefix>tls_client_sans (which need the CA).
func clientAuth(prefix, cert, ca string, sans []string) error {
	if ca != "" {
		if cert == "" {
			return &FieldError{prefix + "tls_client_ca", fmt.Sprintf("client certificates need TLS: set %stls_cert and %stls_key", prefix, prefix)}
		}
		if _, err := os.Stat(ca); err != nil {
			return &FieldError{prefix + "tls_client_ca", err.Error()}
		}
	}
	if len(sans) > 0 && ca == "" {
		return &FieldError{prefix + "tls_client_sans", fmt.Sprintf("a SAN allow-list needs client certificates: set %stls_client_ca", prefix)}
	}
	for _, san := range sans {
		if strings.TrimSpace(san) != san || san == "" || san == "*" || strings.ContainsAny(san, " ,") {
			return &FieldError{prefix + "tls_client_sans", fmt.Sprintf("%q is not a URI or DNS name (an entry may end in * to match a prefix)", san)}
		}
	}
	return nil
}

// sameListener reports whether two host:port addresses would bind the same
// port: equal ports (other than 0, a fresh one each time) on equal hosts, or
// where either host is a wildcard.
func sameListener(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wild(ha) || wild(hb)
}

// bind registers one flag per setting on fs, writing into c. Flag names are
// the YAML keys with "-" for "_"; environment names are BULWARK_ + the YAML
// key upper-cased.
func bind(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.GRPCAddr, "grpc-addr", c.GRPCAddr, "Envoy's gRPC listen address (ext_authz, ext_proc, health); reachable by Envoy only")
	fs.StringVar(&c.APIAddr, "api-addr", c.APIAddr, "gRPC listen address of Bulwark's own API (GuardService, AdminService, health, reflection); empty: not served")
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "admin HTTP listen address (/healthz, /readyz, /metrics)")
	fs.StringVar(&c.PolicyDir, "policy-dir", c.PolicyDir, "directory of .rego and data files, hot-reloaded (default: embedded policies)")
	fs.StringVar(&c.Bundle, "bundle", c.Bundle, "OPA bundle tarball to load instead of --policy-dir")
	fs.StringVar(&c.PolicyQuery, "policy-query", c.PolicyQuery, "decision rule path (OPA-Envoy policies: envoy/authz/allow)")
	fs.BoolVar(&c.RegoV0, "rego-v0", c.RegoV0, "parse policies with pre-1.0 Rego syntax")
	fs.DurationVar(&c.CheckTimeout, "check-timeout", c.CheckTimeout, "deadline for one decision, policy evaluation included")
	fs.BoolVar(&c.DryRun, "dry-run", c.DryRun, "compute, log and count decisions but always allow")
	fs.BoolVar(&c.GRPCReflection, "grpc-reflection", c.GRPCReflection, "enable gRPC server reflection (each listener lists its own services)")
	fs.IntVar(&c.MaxRecvMsgBytes, "max-recv-msg-bytes", c.MaxRecvMsgBytes, "largest gRPC message accepted")
	fs.IntVar(&c.MaxSendMsgBytes, "max-send-msg-bytes", c.MaxSendMsgBytes, "largest gRPC message sent")
	fs.IntVar(&c.MaxConcurrentStreams, "max-concurrent-streams", c.MaxConcurrentStreams, "concurrent streams per HTTP/2 connection")
	fs.DurationVar(&c.KeepaliveMinTime, "keepalive-min-time", c.KeepaliveMinTime, "shortest client keepalive ping interval accepted")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "time to drain in-flight calls on SIGTERM before a hard stop")
	fs.DurationVar(&c.ReloadDebounce, "reload-debounce", c.ReloadDebounce, "quiet time after a policy file change before reloading")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "PEM certificate (chain) for the gRPC listener, reloaded when it changes (empty: plaintext)")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "PEM private key for --tls-cert")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", c.TLSClientCA, "CA bundle client certificates must chain to (mTLS; requires --tls-cert)")
	fs.Var((*stringList)(&c.TLSClientSANs), "tls-client-sans", "comma-separated client URI SANs (SPIFFE IDs) or DNS SANs allowed; prefix* matches a prefix (empty: any client the CA signed)")
	fs.StringVar(&c.APITLSCert, "api-tls-cert", c.APITLSCert, "PEM certificate (chain) for the API listener, reloaded when it changes (empty: plaintext)")
	fs.StringVar(&c.APITLSKey, "api-tls-key", c.APITLSKey, "PEM private key for --api-tls-cert")
	fs.StringVar(&c.APITLSClientCA, "api-tls-client-ca", c.APITLSClientCA, "CA bundle API client certificates must chain to (mTLS; requires --api-tls-cert)")
	fs.Var((*stringList)(&c.APITLSClientSANs), "api-tls-client-sans", "comma-separated API client URI or DNS SANs allowed; prefix* matches a prefix (empty: any client the CA signed)")
	fs.StringVar(&c.AdminTLSCert, "admin-tls-cert", c.AdminTLSCert, "PEM certificate for the admin listener (empty: plain HTTP)")
	fs.StringVar(&c.AdminTLSKey, "admin-tls-key", c.AdminTLSKey, "PEM private key for --admin-tls-cert")
	fs.IntVar(&c.MaxInFlight, "max-in-flight", c.MaxInFlight, "decisions admitted and not yet answered; beyond it calls get UNAVAILABLE at once (0: unlimited)")
	fs.IntVar(&c.MaxStreams, "max-streams", c.MaxStreams, "open gRPC streams over all connections (0: unlimited)")
	fs.DurationVar(&c.OverloadWindow, "overload-window", c.OverloadWindow, "rejections lasting this long turn health NOT_SERVING; as long without turn it back")
	fs.Var((*credentialURL)(&c.RedisURL), "redis-url", "shared Redis: redis://, rediss://, or comma-separated Cluster addresses (empty: in-process)")
	fs.StringVar(&c.RedisCAFile, "redis-ca-file", c.RedisCAFile, "CA bundle for rediss:// servers")
	fs.StringVar(&c.RateLimitFailureMode, "ratelimit-failure-mode", c.RateLimitFailureMode, "when Redis cannot answer: fail_open (in-process share) or fail_closed (503)")
	fs.Float64Var(&c.RateLimitLocalShare, "ratelimit-local-share", c.RateLimitLocalShare, "fraction of each limit a replica allows alone while Redis is down")
	fs.DurationVar(&c.RateLimitTimeout, "ratelimit-timeout", c.RateLimitTimeout, "deadline of one Redis limit check")
	fs.BoolVar(&c.RateLimitHeaders, "ratelimit-headers", c.RateLimitHeaders, "add RateLimit headers to allowed responses")
	fs.StringVar(&c.KeysFile, "keys-file", c.KeysFile, "API keys file (hashes only), hot-reloaded")
	fs.StringVar(&c.PepperFile, "pepper-file", c.PepperFile, "file holding the API key hashing secret (or set BULWARK_KEY_PEPPER)")
	fs.StringVar(&c.JWKSURL, "jwks-url", c.JWKSURL, "JWT issuer's JWKS URL")
	fs.StringVar(&c.JWTKeysFile, "jwt-keys-file", c.JWTKeysFile, "static JWT verification keys (JWKS or PEM)")
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", c.JWTIssuer, "required JWT iss")
	fs.StringVar(&c.JWTAudience, "jwt-audience", c.JWTAudience, "required JWT aud")
	fs.Var((*stringList)(&c.JWTAlgorithms), "jwt-algorithms", "comma-separated JWT signature algorithms (asymmetric only)")
	fs.StringVar(&c.JWTRolesClaim, "jwt-roles-claim", c.JWTRolesClaim, "claim holding roles (array or space-separated; dots for nesting)")
	fs.StringVar(&c.JWTTenantClaim, "jwt-tenant-claim", c.JWTTenantClaim, "claim holding the tenant")
	fs.BoolVar(&c.JWTInsecureSkipIssuerAudience, "jwt-insecure-skip-issuer-audience", c.JWTInsecureSkipIssuerAudience, "accept JWTs without checking iss or aud when --jwt-issuer or --jwt-audience is unset (insecure)")
	fs.DurationVar(&c.JWTMaxTokenLifetime, "jwt-max-token-lifetime", c.JWTMaxTokenLifetime, "refuse JWTs whose exp is further than this after their iat (0: no bound)")
	fs.DurationVar(&c.JWKSMaxCacheTTL, "jwks-max-cache-ttl", c.JWKSMaxCacheTTL, "longest a fetched JWKS is used before it is fetched again, whatever its Cache-Control says")
	fs.StringVar(&c.OperatorRole, "operator-role", c.OperatorRole, "role every AdminService call needs (keep it apart from LLM roles)")
	fs.StringVar(&c.OperatorCrossTenantRole, "operator-cross-tenant-role", c.OperatorCrossTenantRole, "role that, with --operator-role, reaches every tenant in AdminService")
	fs.BoolVar(&c.TrustSourcePrincipal, "trust-source-principal", c.TrustSourcePrincipal, "take Envoy's verified mTLS peer identity as a principal")
	fs.BoolVar(&c.TrustXFCC, "trust-xfcc", c.TrustXFCC, "take x-forwarded-client-cert as a principal (only behind a sanitising proxy)")
	fs.BoolVar(&c.StripCredentials, "strip-credentials", c.StripCredentials, "keep credential headers out of the policy input")
	fs.BoolVar(&c.StripUpstreamCredentials, "strip-upstream-credentials", c.StripUpstreamCredentials, "ext_proc removes the client's Bulwark credential headers from the request forwarded to the model (when Bulwark authenticates)")
	fs.IntVar(&c.ExtProcMaxBodyBytes, "extproc-max-body-bytes", c.ExtProcMaxBodyBytes, "largest body ext_proc buffers and inspects")
	fs.IntVar(&c.GuardScanMaxBytes, "guard-scan-max-bytes", c.GuardScanMaxBytes, "largest text one Guard API ScanText call may send")
	fs.IntVar(&c.GuardScanPerMinute, "guard-scan-per-minute", c.GuardScanPerMinute, "Guard API ScanText calls per principal per minute")
	fs.Var((*stringList)(&c.ExtProcScanRoles), "extproc-scan-roles", "comma-separated message roles the detectors read (empty: all)")
	fs.Var((*stringList)(&c.TrustedRoles), "trusted-roles", "comma-separated message roles the application writes itself, not read by the detectors (empty: none)")
	fs.IntVar(&c.ExtProcStreamStep, "extproc-stream-step", c.ExtProcStreamStep, "bytes released at a time from streamed text that has no quiet cut (a long token, a key block)")
	fs.IntVar(&c.ExtProcStreamLookahead, "extproc-stream-lookahead", c.ExtProcStreamLookahead, "most bytes of streamed text held back, for text with no quiet cut, so split findings are caught (prose leaves a word or two behind)")
	fs.DurationVar(&c.ExtProcMessageTimeout, "extproc-message-timeout", c.ExtProcMessageTimeout, "the Envoy ext_proc filter's message_timeout")
	fs.DurationVar(&c.ExtProcMaxMessageTimeout, "extproc-max-message-timeout", c.ExtProcMaxMessageTimeout, "the filter's max_message_timeout: ask Envoy for it when an answer is slow (0: never)")
	fs.DurationVar(&c.ExtProcIdleTimeout, "extproc-idle-timeout", c.ExtProcIdleTimeout, "end an ext_proc exchange when Envoy sends nothing for this long")
	fs.DurationVar(&c.ExtProcMaxStreamDuration, "extproc-max-stream-duration", c.ExtProcMaxStreamDuration, "end an ext_proc exchange this long after it opened")
	fs.Int64Var(&c.ExtProcMaxBufferedBytes, "extproc-max-buffered-bytes", c.ExtProcMaxBufferedBytes, "body bytes all ext_proc exchanges may hold together while accumulating chunked bodies")
	fs.Int64Var(&c.ExtProcClampMaxTokens, "extproc-clamp-max-tokens", c.ExtProcClampMaxTokens, "cap on LLM requests' max tokens (0: off)")
	fs.BoolVar(&c.ExtProcCanary, "extproc-canary", c.ExtProcCanary, "plant a canary in system prompts and stop answers that leak it")
	fs.StringVar(&c.RedactKeyFile, "redact-key-file", c.RedactKeyFile, "key for the hash redaction action (empty: random per process)")
	fs.StringVar(&c.MetadataKeyFile, "metadata-key-file", c.MetadataKeyFile, "key (32+ bytes, shared by every replica) sealing the principal ext_authz forwards to ext_proc (empty: random per process)")
	fs.StringVar(&c.AuditLog, "audit-log", c.AuditLog, "hash-chained audit log file (empty: no audit log)")
	fs.StringVar(&c.AuditKeyFile, "audit-key-file", c.AuditKeyFile, "key to HMAC-sign audit records with")
	fs.Int64Var(&c.AuditMaxBytes, "audit-max-bytes", c.AuditMaxBytes, "rotate the audit log past this size")
	fs.IntVar(&c.AuditBuffer, "audit-buffer", c.AuditBuffer, "audit records that may wait to be written")
	fs.StringVar(&c.AuditOverflow, "audit-overflow", c.AuditOverflow, "when the audit buffer is full: drop (counted on the chain) or block")
	fs.IntVar(&c.AuditMaxFiles, "audit-max-files", c.AuditMaxFiles, "rotated audit files kept; older ones are deleted")
	fs.StringVar(&c.AuditFailureMode, "audit-failure-mode", c.AuditFailureMode, "while the audit log cannot be written: fail_open (decide on, loss counted on the chain) or fail_closed (decisions fail)")
	fs.DurationVar(&c.AuditCheckpointInterval, "audit-checkpoint-interval", c.AuditCheckpointInterval, "longest time between two audit checkpoints")
	fs.IntVar(&c.AuditCheckpointRecords, "audit-checkpoint-records", c.AuditCheckpointRecords, "most audit records between two checkpoints")
	fs.StringVar(&c.AuditKeyset, "audit-keyset", c.AuditKeyset, "audit keyset (bulwark audit keygen): encrypt audit records")
	fs.StringVar(&c.AuditKEKFile, "audit-kek-file", c.AuditKEKFile, "file with the audit key-encryption key, base64 of 32 bytes (default: $BULWARK_AUDIT_KEK)")
	fs.DurationVar(&c.AuditMaxAge, "audit-max-age", c.AuditMaxAge, "delete rotated audit files whose newest record is older (0: off)")
	fs.BoolVar(&c.PseudonymizePrincipals, "pseudonymize-principals", c.PseudonymizePrincipals, "name principals in decision logs and spans by a keyed pseudonym (needs --audit-keyset)")
	fs.DurationVar(&c.AuditRotateEvery, "audit-rotate-every", c.AuditRotateEvery, "start a new audit file this often (default: audit-max-age/8)")
	fs.StringVar(&c.AlertWebhookURL, "alert-webhook-url", c.AlertWebhookURL, "URL that receives security alerts as JSON POSTs (empty: alerts are logged at warn)")
	fs.DurationVar(&c.AlertWebhookTimeout, "alert-webhook-timeout", c.AlertWebhookTimeout, "deadline of one alert webhook POST")
	fs.DurationVar(&c.AlertMinInterval, "alert-min-interval", c.AlertMinInterval, "least time between two alerts of one event about one principal")
	fs.IntVar(&c.AlertMaxPerMinute, "alert-max-per-minute", c.AlertMaxPerMinute, "cap on alerts of every kind together")
	fs.IntVar(&c.AlertInjectionBurst, "alert-injection-burst", c.AlertInjectionBurst, "prompt_injection denials of one principal within --alert-injection-window that raise an alert (0: off)")
	fs.DurationVar(&c.AlertInjectionWindow, "alert-injection-window", c.AlertInjectionWindow, "window of --alert-injection-burst")
	fs.DurationVar(&c.AbuseOffenceWindow, "abuse-offence-window", c.AbuseOffenceWindow, "how long a principal's offences (injection, secrets, content safety denials) count in input.history")
	fs.DurationVar(&c.AbuseBaselineWindow, "abuse-baseline-window", c.AbuseBaselineWindow, "time constant of each principal's baseline request and token rates (input.usage_pattern)")
	fs.Var((*secretURL)(&c.RemoteClassifierURL), "remote-classifier-url", "HTTP endpoint scoring prompts ({\"text\"} in, {\"score\",\"label\"} out) beside the local detectors: input.signals.remote_classifier (empty: none)")
	fs.DurationVar(&c.RemoteClassifierTimeout, "remote-classifier-timeout", c.RemoteClassifierTimeout, "deadline of one remote classifier call (the decision waits for it)")
	fs.Float64Var(&c.RemoteClassifierThreshold, "remote-classifier-threshold", c.RemoteClassifierThreshold, "remote classifier score at or above which signals.remote_classifier.detected is true")
	fs.IntVar(&c.RemoteClassifierBreakerFailures, "remote-classifier-breaker-failures", c.RemoteClassifierBreakerFailures, "consecutive failed remote classifier calls that open its circuit breaker")
	fs.DurationVar(&c.RemoteClassifierBreakerCooldown, "remote-classifier-breaker-cooldown", c.RemoteClassifierBreakerCooldown, "how long an open breaker sends no remote classifier call before one trial")
	fs.Var((*secretURL)(&c.ModerationURL), "moderation-url", "OpenAI moderations API endpoint asked about prompts and answers: input.signals.moderation (empty: none)")
	fs.StringVar(&c.ModerationModel, "moderation-model", c.ModerationModel, "model named in moderation calls (empty: the server's default)")
	fs.StringVar(&c.ModerationTokenFile, "moderation-token-file", c.ModerationTokenFile, "file holding the moderation endpoint's bearer token (default: $BULWARK_MODERATION_TOKEN)")
	fs.DurationVar(&c.ModerationTimeout, "moderation-timeout", c.ModerationTimeout, "deadline of one moderation call (the decision or streamed chunk waits for it)")
	fs.StringVar(&c.ModerationFailureMode, "moderation-failure-mode", c.ModerationFailureMode, "without a moderation verdict: fail_open (decide without it) or fail_closed (the default policy denies)")
	fs.IntVar(&c.ModerationBreakerFailures, "moderation-breaker-failures", c.ModerationBreakerFailures, "consecutive failed moderation calls that open its circuit breaker")
	fs.DurationVar(&c.ModerationBreakerCooldown, "moderation-breaker-cooldown", c.ModerationBreakerCooldown, "how long an open breaker sends no moderation call before one trial")
	fs.DurationVar(&c.ModerationCacheTTL, "moderation-cache-ttl", c.ModerationCacheTTL, "how long a moderation verdict is reused for the same text")
	fs.IntVar(&c.ModerationCacheSize, "moderation-cache-size", c.ModerationCacheSize, "most moderation verdicts cached (0: no cache)")
	fs.BoolVar(&c.ModerationResponses, "moderation-responses", c.ModerationResponses, "ask the moderation model about answers too, not only prompts")
	fs.IntVar(&c.ModerationStreamWindow, "moderation-stream-window", c.ModerationStreamWindow, "bytes of a streamed answer's text asked about at a time")
	fs.IntVar(&c.GCPercent, "gc-percent", c.GCPercent, "Go GC target percentage (GOGC), unless GOGC is set")
	fs.BoolVar(&c.AdminPprof, "admin-pprof", c.AdminPprof, "serve /debug/pprof on the admin listener")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "json or text")
	fs.Var((*stringList)(&c.MCPPaths), "mcp-paths", "comma-separated MCP endpoints (exact paths, or prefixes ending in /); JSON-RPC bodies elsewhere are recognised too")
	fs.StringVar(&c.MCPResourceMetadataURL, "mcp-resource-metadata-url", c.MCPResourceMetadataURL, "OAuth protected resource metadata URL a 401 to an MCP request points to (WWW-Authenticate: Bearer resource_metadata=...)")
	fs.DurationVar(&c.MCPSessionTTL, "mcp-session-ttl", c.MCPSessionTTL, "how long an MCP session's first tool definitions are remembered after its last tools/list, to flag changed ones")
	fs.IntVar(&c.MCPMaxSessions, "mcp-max-sessions", c.MCPMaxSessions, "most MCP sessions whose tool definitions each replica remembers in-process (with --redis-url, Redis is shared and this is the fallback)")
	fs.StringVar(&c.OPAConfig, "opa-config", c.OPAConfig, "OPA configuration file (services, bundles, decision_logs, status, discovery, keys) run by OPA's plugin manager")
	fs.StringVar(&c.RLSConfig, "rls-config", c.RLSConfig, "envoy/ratelimit YAML file or directory: serve Envoy's RateLimitService v3 on the gRPC listener, hot-reloaded (empty: not served)")
	fs.BoolVar(&c.RLSResponseHeaders, "rls-response-headers", c.RLSResponseHeaders, "add x-ratelimit-limit, -remaining and -reset to ShouldRateLimit answers")
	fs.StringVar(&c.RLSLimitHeader, "rls-limit-header", c.RLSLimitHeader, "name of the limit header (--rls-response-headers)")
	fs.StringVar(&c.RLSRemainingHeader, "rls-remaining-header", c.RLSRemainingHeader, "name of the remaining header (--rls-response-headers)")
	fs.StringVar(&c.RLSResetHeader, "rls-reset-header", c.RLSResetHeader, "name of the reset header, seconds (--rls-response-headers)")
}

// Load builds the configuration for `bulwark serve` from args (without the
// subcommand name) and the environment (as os.Environ returns it): defaults,
// then the --config file, then BULWARK_* variables, then flags. It validates
// the result. Unknown file keys, unknown BULWARK_ variables and bad values are
// errors naming the culprit.
func Load(args []string, environ []string, stderr io.Writer) (Config, error) {
	// Pass 1 only finds --config; values land in a scratch Config.
	scratch := Default()
	pre := flag.NewFlagSet("serve", flag.ContinueOnError)
	pre.SetOutput(io.Discard)
	bind(pre, &scratch)
	configPath := pre.String("config", "", "")
	if err := pre.Parse(args); err != nil {
		// Report with the real flag set below for a proper usage message.
		fs := newFlagSet(&scratch, stderr)
		return Config{}, fs.Parse(args)
	}
	if pre.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %q", pre.Args())
	}

	cfg := Default()
	if *configPath == "" {
		if p, ok := lookupEnv(environ, "BULWARK_CONFIG"); ok {
			*configPath = p
		}
	}
	if *configPath != "" {
		if err := loadFile(*configPath, &cfg); err != nil {
			return Config{}, err
		}
	}
	fs := newFlagSet(&cfg, stderr)
	if err := applyEnv(fs, environ); err != nil {
		return Config{}, err
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func newFlagSet(c *Config, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("bulwark serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bind(fs, c)
	fs.String("config", "", "YAML configuration file (keys are the flag names with _ for -)")
	return fs
}

// LoadFile reads a YAML configuration file over c, rejecting unknown keys.
func loadFile(path string, c *Config) error {
	f, err := os.Open(path) // #nosec G304 -- the operator names the config file (--config), trusted (SECURITY.md)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

func envName(flagName string) string {
	return "BULWARK_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func lookupEnv(environ []string, name string) (string, bool) {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

// applyEnv sets every flag whose BULWARK_ variable is present. A BULWARK_
// variable that names no setting is an error: a typo must not silently leave
// a default in force.
func applyEnv(fs *flag.FlagSet, environ []string) error {
	known := map[string]string{"BULWARK_CONFIG": "config"}
	fs.VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = f.Name })
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "BULWARK_") {
			continue
		}
		name, ok := known[k]
		if !ok {
			if ignoredEnv[k] || serviceLink(k) {
				continue
			}
			return fmt.Errorf("environment variable %s names no setting", k)
		}
		if name == "config" {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("environment variable %s: %w", k, err)
		}
	}
	return nil
}

// serviceLink reports whether k is one of the variables Kubernetes injects
// for a Service named "bulwark" in the pod's namespace (BULWARK_SERVICE_HOST,
// BULWARK_PORT_9191_TCP_ADDR, ...): they are not settings, and refusing them
// would stop Bulwark from starting next to its own Service.
func serviceLink(k string) bool {
	return strings.HasPrefix(k, "BULWARK_SERVICE_") || k == "BULWARK_PORT" || strings.HasPrefix(k, "BULWARK_PORT_")
}

// credentialURL is a URL flag whose value may carry a password
// (redis://user:pass@host): String, which the usage message shows as the
// default, hides the credentials.
type credentialURL string

func (u *credentialURL) String() string {
	if u == nil {
		return ""
	}
	return ratelimit.RedactURL(string(*u))
}

func (u *credentialURL) Set(v string) error {
	*u = credentialURL(v)
	return nil
}

// secretURL is a URL flag whose value may carry a token (in its query or
// user info): String, which the usage message shows as the default, shows
// only whether it is set.
type secretURL string

func (u *secretURL) String() string {
	if u == nil || *u == "" {
		return ""
	}
	return "(set)"
}

func (u *secretURL) Set(v string) error {
	*u = secretURL(v)
	return nil
}

// stringList is a comma-separated list flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	*l = nil
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// ignoredEnv lists BULWARK_ variables read elsewhere (secrets passed by
// environment), so applyEnv does not reject them.
var ignoredEnv = map[string]bool{
	"BULWARK_KEY_PEPPER": true,
	"BULWARK_AUDIT_KEK":  true,
	// The moderation endpoint's bearer token (moderation_token_file).
	"BULWARK_MODERATION_TOKEN": true,
}
