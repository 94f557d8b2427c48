package pipeline

import (
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// annotate puts a decision on its span: ids, verdict, reason, who asked,
// policy revision, signal summaries and limits hit. Never prompt text,
// credentials or finding values.
func annotate(span trace.Span, out Outcome, err error, name func(string) string) {
	// One allocation, sized for what this decision can carry. Empty lists
	// are left out (each list attribute costs the SDK a copy).
	n := 8
	if out.Signals != nil {
		n += 8
	}
	if out.RateLimit != nil {
		n += 2
	}
	attrs := make([]attribute.KeyValue, 0, n)
	attrs = append(attrs,
		attribute.String("bulwark.decision_id", out.DecisionID),
		attribute.Bool("bulwark.allowed", out.Decision.Allowed && err == nil),
		attribute.String("bulwark.reason", out.Reason),
		attribute.String("bulwark.policy_revision", out.PolicyRevision),
		attribute.String("bulwark.principal.kind", string(out.Principal.Kind)))
	if out.Principal.ID != "" {
		attrs = append(attrs, attribute.String("bulwark.principal.id", name(out.Principal.ID)))
	}
	if !out.Decision.Allowed {
		status := out.Decision.HTTPStatus
		if status == 0 {
			status = 403
		}
		attrs = append(attrs, attribute.Int("http.response.status_code", status))
	}
	if out.DryRunDenied {
		attrs = append(attrs, attribute.Bool("bulwark.dry_run_denied", true))
	}
	if s := out.Signals; s != nil {
		if len(s.PromptInjection.Rules) > 0 {
			attrs = append(attrs, attribute.StringSlice("bulwark.signals.prompt_injection.rules", s.PromptInjection.Rules))
		}
		attrs = append(attrs,
			attribute.Float64("bulwark.signals.prompt_injection.score", s.PromptInjection.Score),
			attribute.Int("bulwark.signals.pii.count", total(s.PII)),
			attribute.Int("bulwark.signals.secrets.count", total(s.Secrets)),
			attribute.Bool("bulwark.signals.hidden_text", s.HiddenText.Detected))
		if len(s.PII) > 0 {
			attrs = append(attrs, attribute.StringSlice("bulwark.signals.pii.types", byType(s.PII)))
		}
		if len(s.Secrets) > 0 {
			attrs = append(attrs, attribute.StringSlice("bulwark.signals.secrets.types", byType(s.Secrets)))
		}
		if s.CanaryLeak {
			attrs = append(attrs, attribute.Bool("bulwark.signals.canary_leak", true))
		}
	}
	if rl := out.RateLimit; rl != nil {
		var hit []string
		for _, l := range rl.Limits {
			if l.Exceeded {
				hit = append(hit, l.Name)
			}
		}
		if len(hit) > 0 {
			attrs = append(attrs, attribute.StringSlice("bulwark.limits.exceeded", hit))
		}
		attrs = append(attrs, attribute.Bool("bulwark.limits.degraded", rl.Degraded))
	}
	span.SetAttributes(attrs...)
	if err != nil {
		span.SetStatus(codes.Error, "no decision in time")
	}
}

func total(xs []detect.TypeCount) int {
	n := 0
	for _, x := range xs {
		n += x.Count
	}
	return n
}

// byType renders counts by type as "TYPE=n" (types are detector names such
// as EMAIL_ADDRESS, never the values found).
func byType(xs []detect.TypeCount) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.Type + "=" + strconv.Itoa(x.Count)
	}
	return out
}
