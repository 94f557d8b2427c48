package telemetry

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
)

// TestParentFromEnvoyHeaders: the parent span comes from W3C trace context
// or either B3 encoding, as Envoy and Istio send them.
func TestParentFromEnvoyHeaders(t *testing.T) {
	t.Parallel()
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tests := []struct {
		name    string
		headers HeaderCarrier
	}{
		{"w3c", HeaderCarrier{"traceparent": "00-" + tid + "-" + sid + "-01", "tracestate": "vendor=x"}},
		{"b3 single", HeaderCarrier{"b3": tid + "-" + sid + "-1"}},
		{"b3 multi", HeaderCarrier{"x-b3-traceid": tid, "x-b3-spanid": sid, "x-b3-sampled": "1"}},
		{"w3c wins over b3", HeaderCarrier{"traceparent": "00-" + tid + "-" + sid + "-01", "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"}},
		{"b3 when traceparent is invalid", HeaderCarrier{"traceparent": "00-zz-yy-01", "b3": tid + "-" + sid + "-1"}},
		{"with baggage", HeaderCarrier{"traceparent": "00-" + tid + "-" + sid + "-01", "baggage": "tenant=acme"}},
	}
	prop := propagator()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sc := trace.SpanContextFromContext(prop.Extract(context.Background(), tc.headers))
			if sc.TraceID().String() != tid || sc.SpanID().String() != sid || !sc.IsSampled() || !sc.IsRemote() {
				t.Errorf("extracted %v, want trace %s span %s sampled remote", sc, tid, sid)
			}
		})
	}
}

func TestSetupIsOffWithoutEndpoint(t *testing.T) {
	for _, env := range [][2]string{{"OTEL_EXPORTER_OTLP_ENDPOINT", ""}, {"OTEL_TRACES_EXPORTER", "none"}} {
		t.Run(env[0]+"="+env[1], func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
			t.Setenv(env[0], env[1])
			tr, err := Setup(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tr.Enabled {
				t.Error("tracing on, want off")
			}
			_, span := tr.Tracer.Start(context.Background(), "x")
			if span.IsRecording() {
				t.Error("disabled tracer records spans")
			}
		})
	}
	t.Run("bad protocol", func(t *testing.T) {
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
		t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
		if _, err := Setup(context.Background()); err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL") {
			t.Errorf("Setup() error = %v", err)
		}
	})
}

// TestAnnotate puts the decision's identifiers, verdict, principal, signal
// summaries and limits on the span, and nothing that is text or credential.
func TestAnnotate(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tr := New(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	_, span := tr.Tracer.Start(context.Background(), "bulwark.check")
	out := pipeline.Outcome{
		DecisionID:     "0b6c6f5e-0000-4000-8000-000000000001",
		Decision:       policy.Decision{Allowed: false, HTTPStatus: 429, Reason: "rate_limited", Message: "secret-ish message"},
		Reason:         "rate_limited",
		PolicyRevision: "0cddf8025a84ea87",
		Principal:      identity.Principal{ID: "alice", Kind: identity.KindAPIKey, Tenant: "acme", Claims: map[string]any{"key_id": "k1"}},
		Signals: &detect.Signals{PromptInjection: detect.InjectionSignal{Score: 0.97, Detected: true, Rules: []string{"instruction_override"}},
			PII: []detect.TypeCount{{Type: "EMAIL_ADDRESS", Count: 2}}, Secrets: []detect.TypeCount{{Type: "GITHUB_TOKEN", Count: 1}}},
		RateLimit: &ratelimit.Result{Limits: []ratelimit.LimitState{{Name: "requests_per_minute", Key: "{acme}:alice", Exceeded: true}}},
	}
	Annotate(span, out, nil)
	span.End()
	got := map[string]attribute.Value{}
	for _, kv := range rec.Ended()[0].Attributes() {
		got[string(kv.Key)] = kv.Value
	}
	want := map[string]string{
		"bulwark.decision_id":                    out.DecisionID,
		"bulwark.allowed":                        "false",
		"bulwark.reason":                         "rate_limited",
		"http.response.status_code":              "429",
		"bulwark.principal.id":                   "alice",
		"bulwark.principal.kind":                 "api_key",
		"bulwark.policy_revision":                "0cddf8025a84ea87",
		"bulwark.signals.prompt_injection.score": "0.97",
		"bulwark.signals.prompt_injection.rules": `["instruction_override"]`,
		"bulwark.signals.pii.count":              "2",
		"bulwark.signals.pii.types":              `["EMAIL_ADDRESS=2"]`,
		"bulwark.signals.secrets.types":          `["GITHUB_TOKEN=1"]`,
		"bulwark.limits.exceeded":                `["requests_per_minute"]`,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g.String() != v {
			t.Errorf("%s = %q, want %q", k, got[k].String(), v)
		}
	}
	for k, v := range got {
		if s := v.String(); strings.Contains(s, "secret-ish") || strings.Contains(s, "{acme}:alice") || strings.Contains(s, "k1") {
			t.Errorf("attribute %s carries %q", k, s)
		}
	}
}
