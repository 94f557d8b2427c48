package telemetry

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
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
