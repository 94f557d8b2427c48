package pipeline

import (
	"context"
	"math"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwark-ai/bulwark/internal/abuse"
	"github.com/bulwark-ai/bulwark/internal/identity"
)

// AbuseTracker is the per-principal abuse state (internal/abuse): each
// exchange is observed once, at its request_headers decision, and each
// denial for an offence reason is recorded.
type AbuseTracker interface {
	Observe(ctx context.Context, principal string, tokens int64) (abuse.Snapshot, error)
	Offend(ctx context.Context, principal, reason, decisionID string) error
}

var (
	_ AbuseTracker = (*abuse.Redis)(nil)
	_ AbuseTracker = (*abuse.Local)(nil)
)

// DefaultOffenceReasons are the denial reasons that count as offences in
// input.history when Config.OffenceReasons is nil: attacks on the model
// (injection, in the prompt or through tool results, or a prompt that made
// the model leak its instructions) and content the policy refused to carry
// (secrets, a content-safety deny category, a prompt the moderation model
// flagged).
var DefaultOffenceReasons = []string{
	"prompt_injection", "tool_result_injection", "mcp_content_injection", "canary_leak", "secrets_detected",
	"blocked_content", "moderation_flagged",
}

var (
	keyHistory      = ast.StringTerm("history")
	keyUsagePattern = ast.StringTerm("usage_pattern")
	kAvailable2     = ast.StringTerm("available")
	kOffences       = ast.StringTerm("offences")
	kByReason       = ast.StringTerm("by_reason")
	kWindowSeconds  = ast.StringTerm("window_seconds")
	kRequestRate    = ast.StringTerm("request_rate")
	kBaseReqRate    = ast.StringTerm("baseline_request_rate")
	kRequestRatio   = ast.StringTerm("request_ratio")
	kTokenRate      = ast.StringTerm("token_rate")
	kBaseTokRate    = ast.StringTerm("baseline_token_rate")
	kTokenRatio     = ast.StringTerm("token_ratio")
	kAgeSeconds     = ast.StringTerm("age_seconds")
	kLLM            = ast.StringTerm("llm")
)

// abuseMetrics counts the tracker's failures: the decision goes on
// without input.history (available false).
type abuseMetrics struct {
	errors *prometheus.CounterVec
}

func newAbuseMetrics(reg prometheus.Registerer) (*abuseMetrics, error) {
	m := &abuseMetrics{errors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_abuse_tracker_errors_total",
		Help: "Abuse tracker calls that failed (observe, offend); the decision is made without input.history.",
	}, []string{"op"})}
	if reg != nil {
		if err := reg.Register(m.errors); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observeAbuse counts the request in its principal's rates and puts
// input.history and input.usage_pattern into input. Only authenticated
// principals are tracked (an anonymous caller has no identity to keep a
// history for; the policy refuses it anyway). A tracker failure is not a
// decision failure: both objects then say available: false.
func (p *Pipeline) observeAbuse(ctx context.Context, input ast.Object, pr identity.Principal) {
	if p.abuse == nil || !pr.Authenticated() {
		return
	}
	s, err := p.abuse.Observe(ctx, pr.ID, estimatedTokens(input))
	if err != nil {
		p.abuseMetrics.errors.WithLabelValues("observe").Inc()
		p.logger.Warn("abuse tracker unavailable", "error", err)
		off := ast.NewObject([2]*ast.Term{kAvailable2, ast.BooleanTerm(false)})
		input.Insert(keyHistory, ast.NewTerm(off))
		input.Insert(keyUsagePattern, ast.NewTerm(off.Copy()))
		return
	}
	input.Insert(keyHistory, ast.NewTerm(historyValue(s)))
	input.Insert(keyUsagePattern, ast.NewTerm(patternValue(s.Rates)))
}

// historyValue is input.history: {available, offences, by_reason, window_seconds}.
func historyValue(s abuse.Snapshot) ast.Object {
	by := ast.NewObject()
	for r, n := range s.Offences {
		by.Insert(ast.StringTerm(r), ast.IntNumberTerm(n))
	}
	return ast.NewObject(
		[2]*ast.Term{kAvailable2, ast.BooleanTerm(true)},
		[2]*ast.Term{kOffences, ast.IntNumberTerm(s.Total())},
		[2]*ast.Term{kByReason, ast.NewTerm(by)},
		[2]*ast.Term{kWindowSeconds, ast.IntNumberTerm(int(s.Window.Seconds()))},
	)
}

// patternValue is input.usage_pattern: rates per minute, ratios (a ratio
// with no baseline is reported as 1e9, JSON having no infinity), and the
// baseline's age.
func patternValue(r abuse.Rates) ast.Object {
	return ast.NewObject(
		[2]*ast.Term{kAvailable2, ast.BooleanTerm(true)},
		[2]*ast.Term{kRequestRate, floatTerm(r.Requests)},
		[2]*ast.Term{kBaseReqRate, floatTerm(r.BaselineRequests)},
		[2]*ast.Term{kRequestRatio, floatTerm(r.RequestRatio())},
		[2]*ast.Term{kTokenRate, floatTerm(r.Tokens)},
		[2]*ast.Term{kBaseTokRate, floatTerm(r.BaselineTokens)},
		[2]*ast.Term{kTokenRatio, floatTerm(r.TokenRatio())},
		[2]*ast.Term{kAgeSeconds, ast.IntNumberTerm(int(r.Age.Seconds()))},
	)
}

func floatTerm(f float64) *ast.Term {
	if math.IsInf(f, 1) || f > 1e9 {
		f = 1e9
	}
	if math.IsNaN(f) || f < 0 {
		f = 0
	}
	return ast.FloatNumberTerm(math.Round(f*1000) / 1000)
}

// recordOffence records a denial whose reason is an offence (dry-run
// denials too: the principal did attack). It runs after the decision,
// bounded by the tracker's own timeout, detached from the caller's
// cancellation so that a client hanging up does not erase its offence.
func (p *Pipeline) recordOffence(ctx context.Context, out *Outcome) {
	if p.abuse == nil || !out.Principal.Authenticated() || (out.Decision.Allowed && !out.DryRunDenied) {
		return
	}
	if !slices.Contains(p.offenceReasons, out.Reason) {
		return
	}
	if err := p.abuse.Offend(context.WithoutCancel(ctx), out.Principal.ID, out.Reason, out.DecisionID); err != nil {
		p.abuseMetrics.errors.WithLabelValues("offend").Inc()
		p.logger.Warn("offence not recorded", "decision_id", out.DecisionID, "reason", out.Reason, "error", err)
	}
}

// estimatedTokens is input.llm.estimated_tokens (0 when the decision has
// no parsed LLM request, as ext_proc's request_headers).
func estimatedTokens(input ast.Object) int64 {
	llm := input.Get(kLLM)
	if llm == nil {
		return 0
	}
	o, ok := llm.Value.(ast.Object)
	if !ok {
		return 0
	}
	t := o.Get(kEstimatedTokens)
	if t == nil {
		return 0
	}
	n, ok := t.Value.(ast.Number)
	if !ok {
		return 0
	}
	v, _ := n.Int64()
	return v
}
