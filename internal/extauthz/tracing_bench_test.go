package extauthz

import (
	"context"
	"io/fs"
	"os"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/bulwark-ai/bulwark/internal/app/core"
	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/telemetry"
)

// discardExporter is an exporter that drops spans: the benchmark measures
// what tracing costs the Check path (span creation, attributes, the batch
// processor's queue), not a collector's network.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkCheckTracing is BenchmarkCheck with tracing off and on at 100 %
// sampling (a real SDK tracer provider, parent-based always-on, the span
// batcher Bulwark serves with), on requests carrying Envoy's traceparent: the bulwark.check
// span, its child spans (identity, policy, ratelimit) and the decision
// attributes. The goal is on ≤ 1.15 × off. cpu-ns/op is the process's CPU
// time per Check (the span processor's goroutine and GC included), steadier
// than ns/op when the machine is shared.
func BenchmarkCheckTracing(b *testing.B) {
	rbac := os.DirFS("../../test/load/rbac")
	def := unlimitedDefaultPolicies(b)
	hdrs := func(cred string) map[string]string {
		return map[string]string{"x-role": "user", "user-agent": "bench/1.0", "accept": "*/*", "content-type": "application/json",
			"authorization": cred, "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	}
	cases := []struct {
		name  string
		pol   fs.FS
		query string
		keyed bool // an API key, sent as the bearer; else "Bearer abc"
	}{
		{"opa_envoy_rbac", rbac, "envoy/authz/allow", false},
		{"default_api_key", def, "bulwark/decision", true},
	}
	for _, tc := range cases {
		for _, traced := range []bool{false, true} {
			name := tc.name + "/tracing=off"
			if traced {
				name = tc.name + "/tracing=on_100pct"
			}
			b.Run(name, func(b *testing.B) {
				opts := Options{StripCredentials: true}
				var d core.Deps
				if traced {
					tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(telemetry.NewBatcher(discardExporter{}, telemetry.BatchConfig{})),
						sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
					tr := telemetry.New(tp)
					defer tr.Shutdown(context.Background())
					d.Tracer = tr.Tracer
					opts.Tracing = tr
				}
				st, key := benchStack(b, tc.pol, tc.query, tc.keyed, d)
				cred := "Bearer abc"
				if tc.keyed {
					cred = "Bearer " + key
				}
				hdrs := hdrs(cred)
				s := New(st.Pipeline, opts)
				reqs := make([]*authv3.CheckRequest, b.N+1)
				for i := range reqs {
					reqs[i] = envoy.NewCheckRequest(envoy.HTTPRequest{Method: "POST", Path: "/v1/chat/completions?stream=false", Headers: hdrs})
				}
				if resp, err := s.Check(context.Background(), reqs[b.N]); err != nil || resp.GetStatus().GetCode() != 0 {
					b.Fatalf("not allowed: %v %v", resp.GetStatus(), err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				cpu := processCPU()
				for i := 0; i < b.N; i++ {
					if _, err := s.Check(context.Background(), reqs[i]); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}
