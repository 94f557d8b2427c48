package pipeline

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
	"github.com/bulwark-ai/bulwark/internal/telemetry"
)

type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkDecisionSpans is the tracing work of one traced decision alone:
// extracting Envoy's traceparent, the decision span with four stage spans
// (identity, detect, policy, ratelimit), and the decision's attributes, on
// a real SDK provider (always sample, Bulwark's Batcher, discarding
// exporter). Compare with BenchmarkCheck's ns/op.
func BenchmarkDecisionSpans(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(telemetry.NewBatcher(discard{}, telemetry.BatchConfig{})),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	defer tp.Shutdown(context.Background())
	tr := telemetry.New(tp)
	hdrs := telemetry.HeaderCarrier{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "content-type": "application/json",
		":path": "/v1/chat/completions", ":method": "POST", "user-agent": "bench"}
	out := Outcome{
		DecisionID: "0b6c6f5e-0000-4000-8000-000000000001", Decision: policy.Decision{Allowed: true, Reason: "allowed"}, Reason: "allowed",
		PolicyRevision: "0cddf8025a84ea87", Principal: identity.Principal{ID: "alice", Kind: identity.KindAPIKey},
		Signals:   &detect.Signals{PromptInjection: detect.InjectionSignal{Score: 0.1}, PII: []detect.TypeCount{{Type: "EMAIL_ADDRESS", Count: 1}}},
		RateLimit: &ratelimit.Result{Allowed: true, Limits: []ratelimit.LimitState{{Name: "requests_per_minute"}}},
	}
	b.ReportAllocs()
	for b.Loop() {
		ctx := tr.Propagator.Extract(context.Background(), hdrs)
		ctx, span := tr.Tracer.Start(ctx, "bulwark.check", trace.WithSpanKind(trace.SpanKindServer))
		for _, stage := range []string{"bulwark.identity", "bulwark.detect", "bulwark.policy", "bulwark.ratelimit"} {
			_, s := tr.Tracer.Start(ctx, stage)
			s.End()
		}
		annotate(span, out, nil, func(s string) string { return s })
		span.End()
	}
}
