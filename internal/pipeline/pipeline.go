// Package pipeline is where every decision is made, whichever door the request
// came through (ext_authz, ext_proc, Bulwark's own API). Adapters translate
// their protocol into a Request and an Outcome back into their protocol; no
// decision logic lives in an adapter.
//
// The stages run in this order: identity, detection (skipped when the
// policy refuses an unauthenticated caller with 401 without signals), policy,
// limits, audit.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulwark-ai/bulwark/internal/audit"
	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
)

// Phase names where in an HTTP exchange a decision is made.
type Phase string

// The phases of the policy contract (input.phase).
const (
	PhaseRequestHeaders    Phase = "request_headers"
	PhaseRequestBody       Phase = "request_body"
	PhaseResponseHeaders   Phase = "response_headers"
	PhaseResponseBody      Phase = "response_body"
	PhaseResponseBodyChunk Phase = "response_body_chunk"
)

// Authenticator turns a request's credentials into a Principal. It never
// fails: a missing credential is an anonymous principal, an invalid one an
// anonymous principal with an Error reason.
type Authenticator interface {
	Authenticate(ctx context.Context, r identity.Request) identity.Principal
}

var _ Authenticator = (*identity.Authenticator)(nil)

// Limiter checks a decision's rate limits and quotas, all or nothing.
type Limiter interface {
	Check(ctx context.Context, decisionID string, limits []ratelimit.Limit) (ratelimit.Result, error)
}

var _ Limiter = (*ratelimit.Limiter)(nil)

// Auditor records decisions; Log must not block for long (the audit writer
// buffers and, by default, counts what it drops).
type Auditor interface {
	Log(ctx context.Context, r audit.Record)
}

var _ Auditor = (*audit.Writer)(nil)

// auditFilter is implemented by an Auditor that needs only some decisions
// (the alert tap when there is no audit log): for the others no record is
// built at all.
type auditFilter interface {
	WantsDecision(reason string, tags map[string]any) bool
}

// Evaluator is the policy engine as the pipeline needs it.
type Evaluator interface {
	Evaluate(ctx context.Context, input ast.Value) (policy.Result, error)
}

var _ Evaluator = (*policy.Engine)(nil)

// Config tunes the pipeline.
type Config struct {
	// Timeout bounds one decision: identity, policy and rate limits. The
	// detectors run outside it, after identity (bounded by the caller's own
	// context and the body size); when they ran, policy and limits get a
	// fresh Timeout after them. It is applied on top of any deadline the
	// caller's context already carries; the earlier one wins.
	Timeout time.Duration
	// DryRun turns every deny into an allow after it has been logged and counted.
	DryRun bool
	// RateLimitHeaders adds RateLimit and RateLimit-Policy headers to allowed
	// responses that carried limits (denials always get them).
	RateLimitHeaders bool
	// AuditGate, when set, is asked before every decision: an error fails
	// the decision (an error, so Envoy's failure mode applies). Serve sets
	// it to the audit writer's Err under audit_failure_mode fail_closed, so
	// no decision is made while the audit trail cannot record it.
	AuditGate func() error
	// PrincipalName, when set, is how decision logs and spans name a
	// principal: serve sets it to the audit keyset's keyed pseudonym
	// (--pseudonymize-principals), so logs and traces correlate by a stable
	// name without holding the id; `bulwark audit read` maps it back.
	PrincipalName func(id string) string
	// OffenceReasons are the denial reasons recorded as offences in the
	// principal's history (Deps.Abuse); nil: DefaultOffenceReasons.
	OffenceReasons []string
}

// Request is one decision to make. Input holds the adapter-built,
// OPA-Envoy-compatible fields (attributes, parsed_path, ...); the pipeline
// adds its own (phase, decision_id, ...) before evaluation.
type Request struct {
	Phase Phase
	Input ast.Object
	// Method and Path (without the query string) name the route in the
	// audit trail.
	Method, Path string
	// Credentials are the raw credential headers; the pipeline authenticates
	// them and puts only the resulting principal into the input.
	Credentials identity.Request
	// Principal, when set, is who asked as an earlier decision of the same
	// exchange established it (ext_authz's metadata, or ext_proc's request
	// headers phase): the identity stage is skipped and Credentials ignored.
	Principal *identity.Principal
	// Text, when set, is the text to scan instead of the prompt found in
	// input.parsed_body (ext_proc passes the messages of the roles it is
	// configured to scan).
	Text string
	// ToolText is the text of the tool results the request carries
	// (llmapi.Request.ToolResultText): data the model reads but nobody
	// vouches for, scanned apart from Text so that policy can hold it to a
	// stricter threshold. Its signals are input.signals.tool_results
	// (present only when there is tool text).
	ToolText string
	// Signals, when set, are findings the adapter already computed (ext_proc
	// scans streamed output itself, window by window): the detection stage
	// is skipped and these become input.signals.
	Signals *detect.Signals
	// ToolSignals, with Signals, are findings the adapter computed on
	// untrusted text the model will read (an MCP server's tools/call,
	// resources/read or prompts/get result, a sampling request's messages):
	// they become input.signals.tool_results, as ToolText's would.
	ToolSignals *detect.Signals
}

// Outcome is the decision to enforce plus what explains it.
type Outcome struct {
	// DecisionID identifies this decision in responses, logs and audit records.
	DecisionID string
	// Decision is what to enforce. In dry-run mode it is always allowed.
	Decision policy.Decision
	// Reason is the policy's reason or, when the policy failed, the error code.
	Reason string
	// PolicyRevision is the content hash of the policy that decided.
	PolicyRevision string
	// PolicyError is set when the policy could not produce a valid decision;
	// the Outcome is then a deny carrying the error code as its reason.
	PolicyError *policy.Error
	// DryRunDenied is set when dry-run mode overrode a deny.
	DryRunDenied bool
	// Principal is who asked, as the policy saw it.
	Principal identity.Principal
	// RateLimit is the limiter's answer when the decision carried limits.
	RateLimit *ratelimit.Result
	// Signals are the detectors' findings (counts and scores, never text)
	// when there was prompt text to scan.
	Signals *detect.Signals
	// ToolSignals are the findings in the request's tool results
	// (Request.ToolText), nil when there were none to scan.
	ToolSignals *detect.Signals
}

// Pipeline runs the stages of a decision. It is safe for concurrent use.
type Pipeline struct {
	cfg         Config
	tracer      trace.Tracer
	audit       Auditor
	auditFilter auditFilter // set when audit only wants some decisions
	detect      Detector
	moderator   Moderator
	auth        Authenticator
	eval        Evaluator
	limiter     Limiter
	ids         *IDSource
	logger      *slog.Logger
	metrics     *metrics
	decisionLog DecisionLogger
	// abuse is the per-principal abuse state (nil: no input.history nor
	// input.usage_pattern), offenceReasons what it records.
	abuse          AbuseTracker
	abuseMetrics   *abuseMetrics
	offenceReasons []string
	usage          UsageSource
	usageTerms     usageTerms
}

// Deps are the stages a Pipeline runs, given once at construction: a
// pipeline never changes after New, so it needs no lock and no "call
// before serving" rule.
type Deps struct {
	// Eval is the policy engine. Required.
	Eval Evaluator
	// Auth authenticates credentials; nil: every request is anonymous.
	Auth Authenticator
	// Limiter checks the decision's limits; nil: a decision with limits is
	// denied (limits must never be silently ignored).
	Limiter Limiter
	// Detector is the detection stage: the prompt text of a parsed LLM
	// request body is scanned and its signals become input.signals. nil:
	// no detection.
	Detector Detector
	// Moderator, when set, is asked about the prompt text beside the
	// detectors (concurrently); its verdict is input.signals.moderation.
	// nil: not asked, and no cost.
	Moderator Moderator
	// Tracer adds child spans (identity, detect, policy, ratelimit) under
	// the caller's span. Without a recording parent span none are started,
	// so tracing off costs nothing. nil: no spans.
	Tracer trace.Tracer
	// Auditor records every decision (or, when it filters, those it
	// wants). nil: nothing is recorded.
	Auditor Auditor
	// DecisionLog receives every decision with the policy input and the
	// policy's answer (OPA's decision log plugin, with --opa-config).
	// nil: none.
	DecisionLog DecisionLogger
	// Abuse keeps each principal's usage pattern and offences
	// (input.usage_pattern and input.history at request_headers). nil: none.
	Abuse AbuseTracker
	// Usage gives the usage totals every decision carries as input.usage
	// (tenant or principal), for budget rules. nil: none.
	Usage UsageSource
}

// DecisionLogger records decisions in OPA's decision log format, besides
// Bulwark's own audit log: fleets that collect OPA-Envoy's decision logs
// keep collecting them.
type DecisionLogger interface {
	LogDecision(ctx context.Context, ev policy.DecisionEvent)
}

var _ DecisionLogger = (*policy.DecisionLog)(nil)

// New wires a pipeline from its stages. logger may be nil (discarded), reg
// may be nil (no metrics registered, as in tests).
// principalName is how logs and spans name principal id.
func (p *Pipeline) principalName(id string) string {
	if id == "" || p.cfg.PrincipalName == nil {
		return id
	}
	return p.cfg.PrincipalName(id)
}

func New(cfg Config, d Deps, logger *slog.Logger, reg prometheus.Registerer) (*Pipeline, error) {
	if d.Eval == nil {
		return nil, errors.New("pipeline: nil evaluator")
	}
	if cfg.Timeout <= 0 {
		return nil, errors.New("pipeline: timeout must be positive")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{cfg: cfg, auth: d.Auth, eval: d.Eval, limiter: d.Limiter, detect: d.Detector, moderator: d.Moderator, tracer: d.Tracer,
		audit: d.Auditor, ids: NewIDSource(), logger: logger, metrics: m, decisionLog: d.DecisionLog, usage: d.Usage}
	p.auditFilter, _ = d.Auditor.(auditFilter)
	if p.abuseMetrics, err = newAbuseMetrics(reg); err != nil {
		return nil, fmt.Errorf("pipeline: register metrics: %w", err)
	}
	p.abuse, p.offenceReasons = d.Abuse, cfg.OffenceReasons
	if p.offenceReasons == nil {
		p.offenceReasons = DefaultOffenceReasons
	}
	return p, nil
}

// stage starts a child span when the request is being traced.
func (p *Pipeline) stage(ctx context.Context, name string) (context.Context, trace.Span) {
	if p.tracer == nil || !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, nil
	}
	return p.tracer.Start(ctx, name)
}

func end(s trace.Span) {
	if s != nil {
		s.End()
	}
}

// audited reports whether the auditor wants out's record.
func (p *Pipeline) audited(out *Outcome) bool {
	return p.audit != nil && (p.auditFilter == nil || p.auditFilter.WantsDecision(out.Reason, out.Decision.Audit))
}

var (
	keyPhase      = ast.StringTerm("phase")
	keyDecisionID = ast.StringTerm("decision_id")
	keyPrincipal  = ast.StringTerm("principal")
)

var phaseTerms = map[Phase]*ast.Term{
	PhaseRequestHeaders:    ast.StringTerm(string(PhaseRequestHeaders)),
	PhaseRequestBody:       ast.StringTerm(string(PhaseRequestBody)),
	PhaseResponseHeaders:   ast.StringTerm(string(PhaseResponseHeaders)),
	PhaseResponseBody:      ast.StringTerm(string(PhaseResponseBody)),
	PhaseResponseBodyChunk: ast.StringTerm(string(PhaseResponseBodyChunk)),
}

func phaseTerm(p Phase) *ast.Term {
	if t, ok := phaseTerms[p]; ok {
		return t
	}
	return ast.StringTerm(string(p))
}

// unauthenticatedDeny evaluates the policy on input without input.signals
// and reports whether its answer is a deny with HTTP status 401, which then
// stands as the decision: the request is refused on identity alone, so the
// detectors need not run. The contract for policies: a 401 must not depend
// on input.signals (the default policy's 401 depends only on the
// principal). A policy written for OPA-Envoy never reads input.signals, so
// its answer is the same with or without them. Any other answer, or an
// error, is discarded and the decision is made again with the signals.
func (p *Pipeline) unauthenticatedDeny(ctx context.Context, input ast.Object) (policy.Result, bool) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout) // the earlier deadline wins
	defer cancel()
	ectx, span := p.stage(ctx, "bulwark.policy")
	res, err := p.eval.Evaluate(ectx, input)
	end(span)
	if err != nil || res.Decision.Allowed || res.Decision.HTTPStatus != http.StatusUnauthorized {
		return policy.Result{}, false
	}
	return res, true
}

// Decide makes one decision. A policy deny, and a policy that fails to
// produce a valid decision, are Outcomes (deny with a reason). An error is
// returned only when no decision could be made in time: the caller maps it
// to a transport error so Envoy's failure mode applies.
//
// When ctx carries a recording span (the server span a door started for
// this request), Decide puts the decision on it, errors included, so the
// doors only start and end that span: identifiers, verdict, reason, who
// asked, policy revision, signal summaries and limits hit, never prompt
// text, credentials or finding values.
func (p *Pipeline) Decide(ctx context.Context, req Request) (Outcome, error) {
	out, err := p.makeDecision(ctx, req)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		annotate(span, out, err, p.principalName)
	}
	return out, err
}

// scan runs the detectors on text under a bulwark.detect span.
func (p *Pipeline) scan(ctx context.Context, text string) (detect.Signals, error) {
	_, span := p.stage(ctx, "bulwark.detect")
	res, err := p.detect.ScanContext(ctx, text)
	end(span)
	if err != nil {
		return detect.Signals{}, err
	}
	return res.Signals(), nil
}

// moderate asks the moderation model about text in the background; the
// verdict arrives on the returned channel.
func (p *Pipeline) moderate(ctx context.Context, text string) chan detect.ModerationVerdict {
	c := make(chan detect.ModerationVerdict, 1)
	go func() {
		sctx, span := p.stage(ctx, "bulwark.moderation")
		c <- p.moderator.Moderate(sctx, text)
		end(span)
	}()
	return c
}

// scanStopped counts and logs detection stopped by the caller's context.
func (p *Pipeline) scanStopped(out Outcome, req Request, start time.Time, err error) error {
	p.metrics.scanStopped.Inc()
	p.metrics.decision("error", "detect_stopped")
	p.logger.Warn("detection stopped", "decision_id", out.DecisionID, "phase", req.Phase, "elapsed", time.Since(start), "error", err)
	return fmt.Errorf("pipeline: %w", err)
}

// makeDecision is Decide without the span annotation.
func (p *Pipeline) makeDecision(ctx context.Context, req Request) (Outcome, error) {
	start := time.Now()
	out := Outcome{DecisionID: p.ids.New()}
	if p.cfg.AuditGate != nil {
		if err := p.cfg.AuditGate(); err != nil {
			p.metrics.decision("error", "audit_unavailable")
			return out, fmt.Errorf("pipeline: not deciding: %w", err)
		}
	}
	input := req.Input
	if input == nil {
		input = ast.NewObject()
	}
	input.Insert(keyPhase, phaseTerm(req.Phase))
	input.Insert(keyDecisionID, ast.StringTerm(out.DecisionID))

	// Identity comes first: who asks decides whether the text is worth
	// scanning at all. It runs under the decision deadline; when the
	// detectors run, the policy gets a fresh one after them.
	callerCtx := ctx
	timed := false // ctx carries the decision deadline
	if req.Principal != nil {
		out.Principal = *req.Principal
	} else if p.auth != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(callerCtx, p.cfg.Timeout)
		defer cancel()
		timed = true
		sctx, span := p.stage(ctx, "bulwark.identity")
		out.Principal = p.auth.Authenticate(sctx, req.Credentials)
		end(span)
	} else {
		out.Principal = identity.Principal{Kind: identity.KindAnonymous}
	}
	input.Insert(keyPrincipal, ast.NewTerm(PrincipalValue(out.Principal)))
	if req.Phase == PhaseRequestHeaders && p.abuse != nil {
		// Once per exchange (ext_proc skips request_headers when ext_authz
		// decided): the principal's usage pattern and offences.
		actx, span := p.stage(ctx, "bulwark.abuse")
		p.observeAbuse(actx, input, out.Principal)
		end(span)
	}
	p.addUsage(input, out.Principal)

	// The detectors run outside the decision deadline: their time is
	// bounded by the body size limits (each detector is linear in the text,
	// no outbound call but the remote classifier's, which has its own
	// timeout), not by Timeout, which protects against slow dependencies and
	// policies. Inside it, the largest body ext_proc accepts (8 MiB) could
	// time out on detection alone. The caller's context (Envoy's own
	// timeouts, a client that went away) still stops them.
	scanned := false
	var pre *policy.Result // a decision made without signals that stands
	switch {
	case req.Signals != nil:
		p.metrics.signals(*req.Signals)
		v := signalsValue(*req.Signals)
		if req.ToolSignals != nil {
			p.metrics.signals(*req.ToolSignals)
			v.Insert(kToolResults, ast.NewTerm(signalsValue(*req.ToolSignals)))
			out.ToolSignals = req.ToolSignals
		}
		input.Insert(keySignals, ast.NewTerm(v))
		out.Signals = req.Signals
	case p.detect != nil:
		// The door read the text from the body (llmapi, one extractor for
		// every door); the pipeline never reads a body of its own.
		text, toolText := req.Text, req.ToolText
		if text == "" && toolText == "" {
			break
		}
		if !out.Principal.Authenticated() {
			// An unauthenticated caller must not buy CPU with its body: ask
			// the policy first, without input.signals. A 401 answer stands
			// and the text is never scanned (see unauthenticatedDeny).
			r, ok := p.unauthenticatedDeny(ctx, input)
			if ok {
				p.metrics.scanSkipped.Inc()
				pre = &r
				break
			}
		}
		scanned = true
		var sig detect.Signals
		if text != "" {
			var verdict chan detect.ModerationVerdict
			if p.moderator != nil {
				verdict = p.moderate(callerCtx, text)
			}
			var err error
			sig, err = p.scan(callerCtx, text)
			if verdict != nil {
				v := <-verdict // bounded by the moderator's timeout
				sig.Moderation = &v
			}
			if err != nil {
				return out, p.scanStopped(out, req, start, err)
			}
			p.metrics.signals(sig)
		}
		v := signalsValue(sig)
		out.Signals = &sig
		if toolText != "" {
			tsig, err := p.scan(callerCtx, toolText)
			if err != nil {
				return out, p.scanStopped(out, req, start, err)
			}
			p.metrics.signals(tsig)
			v.Insert(kToolResults, ast.NewTerm(signalsValue(tsig)))
			out.ToolSignals = &tsig
		}
		input.Insert(keySignals, ast.NewTerm(v))
	}

	if scanned || !timed {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(callerCtx, p.cfg.Timeout)
		defer cancel()
	}
	var res policy.Result
	var err error
	if pre != nil {
		res = *pre
	} else {
		ectx, espan := p.stage(ctx, "bulwark.policy")
		res, err = p.eval.Evaluate(ectx, input)
		end(espan)
	}
	elapsed := time.Since(start)
	p.metrics.evalSeconds.Observe(elapsed.Seconds())
	out.PolicyRevision = res.Revision
	out.Decision = res.Decision
	out.Reason = res.Decision.Reason

	if err != nil {
		var perr *policy.Error
		if !errors.As(err, &perr) {
			perr = &policy.Error{Code: policy.CodeEvalError, Detail: "policy evaluation failed", Err: err}
		}
		if perr.Code == policy.CodeTimeout || ctx.Err() != nil {
			p.metrics.decision("error", string(policy.CodeTimeout))
			out.Reason = string(policy.CodeTimeout)
			if p.audited(&out) {
				p.audit.Log(context.WithoutCancel(ctx), auditRecord(ctx, req, out))
			}
			p.logDecision(ctx, start, req, input, res, &out, err)
			p.logger.Warn("decision timed out", "decision_id", out.DecisionID, "phase", req.Phase, "elapsed", elapsed, "error", err)
			return out, err
		}
		// The policy answered, but not with a usable decision: deny, and keep
		// the detail in logs only.
		out.PolicyError = perr
		out.Decision = policy.Decision{Allowed: false}
		out.Reason = string(perr.Code)
		p.logger.Error("policy failed; denying", "decision_id", out.DecisionID, "phase", req.Phase,
			"policy_revision", res.Revision, "code", perr.Code, "error", perr)
	}

	if out.Decision.Allowed && len(out.Decision.Limits) > 0 {
		lctx, lspan := p.stage(ctx, "bulwark.ratelimit")
		err := p.checkLimits(lctx, &out)
		end(lspan)
		if err != nil {
			p.metrics.decision("error", "ratelimit_timeout")
			return out, err
		}
		if !out.Decision.Allowed {
			out.Reason = out.Decision.Reason
		}
	}
	if !out.Decision.Allowed && out.Reason == "" {
		out.Reason = "denied"
	}
	result := "allow"
	if !out.Decision.Allowed {
		result = "deny"
		if p.cfg.DryRun {
			result = "dry_run_deny"
			out.DryRunDenied = true
			out.Decision = policy.Decision{Allowed: true}
		}
	}
	if req.Phase == PhaseRequestHeaders || req.Phase == PhaseRequestBody {
		// Every answer that lets a request go upstream owns the identity
		// headers, dry-run allows included: a client's own never pass.
		out.Decision.ProtectIdentityHeaders()
	}
	p.metrics.decision(result, out.Reason)
	p.recordOffence(ctx, &out)
	if p.audited(&out) {
		p.audit.Log(context.WithoutCancel(ctx), auditRecord(ctx, req, out))
	}
	p.logDecision(ctx, start, req, input, res, &out, err)
	if result == "allow" {
		if !p.logger.Enabled(ctx, slog.LevelDebug) {
			return out, nil // skip building the log record's arguments on the hot path
		}
		p.logger.Debug("decision", "decision_id", out.DecisionID, "phase", req.Phase, "allowed", true,
			"principal", p.principalName(out.Principal.ID), "principal_kind", out.Principal.Kind,
			"reason", out.Reason, "policy_revision", out.PolicyRevision, "elapsed", elapsed)
	} else {
		p.logger.Info("decision", "decision_id", out.DecisionID, "phase", req.Phase, "allowed", false,
			"dry_run", out.DryRunDenied, "principal", p.principalName(out.Principal.ID), "principal_kind", out.Principal.Kind,
			"credential_error", out.Principal.Error, "reason", out.Reason, "policy_revision", out.PolicyRevision, "elapsed", elapsed)
	}
	return out, nil
}

// logDecision sends the decision to the decision log, when there is one:
// the input as the policy saw it, the policy's own answer as result, and
// Bulwark's final verdict (after rate limits and dry-run) as custom.bulwark.
func (p *Pipeline) logDecision(ctx context.Context, start time.Time, req Request, input ast.Object,
	res policy.Result, out *Outcome, err error) {
	if p.decisionLog == nil {
		return
	}
	custom := map[string]any{
		"phase": string(req.Phase), "allowed": out.Decision.Allowed, "reason": out.Reason,
		"dry_run_denied": out.DryRunDenied, "policy_revision": out.PolicyRevision,
		"elapsed_ns": time.Since(start).Nanoseconds(),
	}
	p.decisionLog.LogDecision(ctx, policy.DecisionEvent{
		DecisionID: out.DecisionID, Input: input, Result: res.Value, Bundles: res.Bundles,
		Err: err, Timestamp: start, Custom: map[string]any{"bulwark": custom},
	})
}
