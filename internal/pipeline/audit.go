package pipeline

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/bulwark-ai/bulwark/internal/audit"
)

// auditRecord summarises a decision for the audit trail: identifiers, codes
// and counts, never prompt text, credentials or finding values.
func auditRecord(ctx context.Context, req Request, out Outcome) audit.Record {
	allowed := out.Decision.Allowed
	r := audit.Record{
		Type:           audit.TypeDecision,
		DecisionID:     out.DecisionID,
		Phase:          string(req.Phase),
		Route:          req.Method + " " + req.Path,
		Allowed:        &allowed,
		HTTPStatus:     out.Decision.HTTPStatus,
		Reason:         out.Reason,
		PolicyRevision: out.PolicyRevision,
		DryRun:         out.DryRunDenied,
	}
	// The trace id links the record to the request's trace (set when the
	// decision is traced: the adapter's span is in ctx).
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		r.TraceID = sc.TraceID().String()
	}
	if !allowed && r.HTTPStatus == 0 {
		r.HTTPStatus = 403
	}
	if len(out.Decision.Audit) > 0 {
		r.Details = map[string]any{"tags": out.Decision.Audit}
	}
	if pr := out.Principal; pr.Kind != "" {
		r.Principal = &audit.Principal{ID: pr.ID, Kind: string(pr.Kind), Tenant: pr.Tenant}
	}
	if s := out.Signals; s != nil {
		sig := map[string]any{"prompt_injection_score": s.PromptInjection.Score}
		for _, c := range s.PII {
			sig["pii."+c.Type] = c.Count
		}
		for _, c := range s.Secrets {
			sig["secrets."+c.Type] = c.Count
		}
		if s.HiddenText.Detected {
			sig["hidden_text"] = true
		}
		r.Signals = sig
	}
	if s := out.ToolSignals; s != nil {
		// The request's tool results, scanned apart: counts under
		// tool_results., never text.
		if r.Signals == nil {
			r.Signals = map[string]any{}
		}
		r.Signals["tool_results.prompt_injection_score"] = s.PromptInjection.Score
		for _, c := range s.PII {
			r.Signals["tool_results.pii."+c.Type] = c.Count
		}
		for _, c := range s.Secrets {
			r.Signals["tool_results.secrets."+c.Type] = c.Count
		}
	}
	if rl := out.RateLimit; rl != nil && !rl.Allowed {
		for _, l := range rl.Limits {
			if l.Exceeded && !l.Shadow {
				r.Limits = append(r.Limits, l.Name)
			}
		}
	}
	return r
}
