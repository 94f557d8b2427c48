// Package exchange is one LLM exchange, protocol-neutral: request headers,
// request body, response headers, response body (whole, or streamed chunk by
// chunk), each step answered with a typed Result (continue, possibly with
// edits, or deny with a status and a body in the API's own error shape).
//
// It owns what an exchange needs beyond one decision: parsing the LLM
// request and answer (llmapi), the prompt text the detectors read, redaction
// of the request and of the answer (whole, or event by event, holding back
// only the tail that could still complete a finding), the canary, the
// max-tokens cap, token settlement and the streamed answer's windows. The
// pipeline remains the one place that decides; a door (ext_proc, the Guard
// API) translates its protocol into Session calls and Results back, and
// never decides.
package exchange

import (
	"context"
	"log/slog"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/mcp"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/quality"
	"github.com/bulwark-ai/bulwark/internal/redact"
	"github.com/bulwark-ai/bulwark/internal/telemetry"
)

// Decider is the pipeline as the exchange needs it.
type Decider interface {
	Decide(ctx context.Context, req pipeline.Request) (pipeline.Outcome, error)
}

var _ Decider = (*pipeline.Pipeline)(nil)

// Scanner finds PII, secrets and the like in text, for redaction.
type Scanner interface {
	Scan(text string) detect.Result
}

// Moderator gives a moderation model's verdict on text (never failing:
// no verdict is a verdict with Available false).
type Moderator interface {
	Moderate(ctx context.Context, text string) detect.ModerationVerdict
}

var _ Moderator = (*detect.Moderator)(nil)

// Reconciler settles a token reservation with the usage the model reported.
type Reconciler interface {
	Reconcile(ctx context.Context, decisionID string, actual int64) error
}

// Defaults for Options fields left zero.
const (
	DefaultMaxBodyBytes    = 8 << 20
	DefaultStreamStep      = 64
	DefaultStreamLookahead = 512
	DefaultMaxEventBytes   = 1 << 20
	// DefaultModerationWindow: a streamed answer's text goes to the
	// moderation model (and, once allowed, to the client) 1 KiB at a time.
	DefaultModerationWindow = 1024
)

// Options tune the exchange.
type Options struct {
	// StripCredentials keeps credential headers out of input.attributes, as
	// the ext_authz door does.
	StripCredentials bool
	// Tracing, when enabled, starts a bulwark.<door>.<phase> span per
	// decision, joined to the trace in the request's headers.
	Tracing *telemetry.Tracing
	// ScanRoles are the message roles whose text the detectors read in the
	// request phase; empty means every role. Text outside the conversation
	// (llmapi.RoleOther: descriptions, schemas, unknown fields) is always
	// read. ext_authz takes the same list, so every door scans the same text.
	ScanRoles []string
	// TrustedRoles are the roles whose text is the application's own, which
	// the detectors do not read (see envoy.RoleFilter).
	TrustedRoles []string
	// MaxBodyBytes bounds a request or response body inspected whole (after
	// decompression); a bigger one is denied with 413 (502 for an answer).
	MaxBodyBytes int
	// StreamStep and StreamLookahead size the streaming redactor's windows:
	// text is released StreamStep bytes at a time once StreamLookahead more
	// bytes are known, so a finding up to StreamLookahead bytes long is
	// caught however the stream was split.
	StreamStep, StreamLookahead int
	// MaxEventBytes bounds one SSE event held while incomplete.
	MaxEventBytes int
	// ClampMaxTokens, when positive, caps the request's max-tokens field.
	ClampMaxTokens int64
	// Canary plants a random marker in the system prompt of every LLM
	// request; a response that repeats it leaked its instructions and is
	// blocked.
	Canary bool
	// RedactKey keys the "hash" redaction action (HMAC-SHA256), so hashed
	// values can be correlated but not guessed.
	RedactKey []byte
	// StripUpstreamCredentials removes the headers that carried the client's
	// Bulwark credential (authorization; x-api-key when it was the
	// credential or holds a Bulwark key) from the request forwarded to the
	// model, so the provider never receives them. Set it only when Bulwark
	// authenticates: otherwise those headers may be the provider's own key.
	StripUpstreamCredentials bool
	// ResponseScanner scans model output; nil means the request scanner.
	// Give it one without the injection detector: the streaming redactor
	// scans every byte several times, and output needs PII and secrets only.
	ResponseScanner Scanner
	// Moderator, when set, is asked about answers: a whole answer before
	// its decision, a streamed one every ModerationWindow bytes of text and
	// at its end (phase response_body_chunk), the client receiving a
	// window's text only once it was allowed. Its verdict is
	// input.signals.moderation. nil: not asked, and no cost.
	Moderator Moderator
	// ModerationWindow is how many bytes of a streamed answer's text are
	// asked about at a time; default DefaultModerationWindow.
	ModerationWindow int
	// MCP says where MCP traffic is expected and how an unauthenticated
	// MCP client is challenged; ext_authz takes the same (see mcp.go).
	MCP envoy.MCPOptions
	// MCPMemory remembers the tool definitions each MCP session was shown,
	// to flag a definition that changes later: mcp.Memory in-process,
	// mcp.RedisMemory shared by the replicas (nil: not remembered; only a
	// name listed twice within one answer is flagged).
	MCPMemory mcp.ToolMemory
	// ToolLists gives the policy's compiled tool allow-lists (the policy
	// engine): a tools/list answer's tools that they admit and no scan
	// flagged go to the policy by name only (nil: every tool goes to the
	// policy in full, which is slower but decides the same).
	ToolLists ToolListSource
	// Quality judges every LLM answer (finish reason, empty, refusal,
	// truncation, JSON validity, time to first token, tokens per second),
	// counts it by model and puts it in input.response.quality of the
	// response_body decision. nil: not judged.
	Quality *quality.Monitor
	// Usage records every exchange's tokens, request and denial when it
	// ends (nil: not recorded).
	Usage UsageRecorder
}

// ToolListSource is the policy engine as the MCP dialect needs it.
type ToolListSource interface {
	ToolLists() *policy.ToolLists
}

var _ ToolListSource = (*policy.Engine)(nil)

func (o *Options) defaults() {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.StreamStep <= 0 {
		o.StreamStep = DefaultStreamStep
	}
	if o.StreamLookahead <= 0 {
		o.StreamLookahead = DefaultStreamLookahead
	}
	if o.MaxEventBytes <= 0 {
		o.MaxEventBytes = DefaultMaxEventBytes
	}
	if o.ModerationWindow <= 0 {
		o.ModerationWindow = DefaultModerationWindow
	}
}

// Core holds what every exchange shares: the pipeline, the scanners, the
// reconciler, the options and the metrics. Build it once; every door starts
// its sessions from the same Core, so the same bytes get the same decision
// whichever door they came through.
type Core struct {
	decider   Decider
	scanner   Scanner
	outScan   Scanner
	reconcile Reconciler
	opts      Options
	scan      func(role string) bool // ScanRoles less TrustedRoles; nil: every role
	logger    *slog.Logger
	metrics   *metrics
	// verdicts caches the scans of MCP tool definitions by their hash.
	verdicts *mcp.VerdictCache
}

// New returns a Core. scanner finds what redaction removes (nil: nothing
// is redacted); reconcile settles token reservations (nil: usage is only
// reported to the policy); m comes from NewMetrics (nil: not counted).
func New(d Decider, scanner Scanner, reconcile Reconciler, opts Options, logger *slog.Logger, m *Metrics) *Core {
	opts.defaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = &Metrics{}
	}
	out := opts.ResponseScanner
	if out == nil {
		out = scanner
	}
	return &Core{decider: d, scanner: scanner, outScan: out, reconcile: reconcile, opts: opts,
		scan: envoy.RoleFilter(opts.ScanRoles, opts.TrustedRoles), logger: logger, metrics: m.m,
		verdicts: mcp.NewVerdictCache(0)}
}

// MaxBodyBytes is the largest body the exchange inspects whole: a door that
// accumulates a body sent in pieces stops keeping bytes past it.
func (c *Core) MaxBodyBytes() int { return c.opts.MaxBodyBytes }

// redactor builds the redactor for a decision's rules; nil when there are
// none or no scanner.
func (c *Core) redactor(rules redact.Rules) *redact.Redactor {
	if len(rules) == 0 || c.scanner == nil {
		return nil
	}
	return redact.New(rules, c.opts.RedactKey)
}
