package extauthz

import (
	"context"
	"github.com/bulwark-ai/bulwark/internal/envoy"
	"os"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
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
	rbac := policy.Config{Embedded: os.DirFS("../../test/load/rbac"), Query: "envoy/authz/allow"}
	def := policy.Config{Embedded: unlimitedDefaultPolicies(b), Query: "bulwark/decision"}
	auth, key := benchAuthenticator(b)
	hdrs := func(cred string) map[string]string {
		return map[string]string{"x-role": "user", "user-agent": "bench/1.0", "accept": "*/*", "content-type": "application/json",
			"authorization": cred, "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	}
	cases := []struct {
		name string
		cfg  policy.Config
		auth pipeline.Authenticator
		hdrs map[string]string
	}{
		{"opa_envoy_rbac", rbac, nil, hdrs("Bearer abc")},
		{"default_api_key", def, auth, hdrs("Bearer " + key)},
	}
	for _, tc := range cases {
		for _, traced := range []bool{false, true} {
			name := tc.name + "/tracing=off"
			if traced {
				name = tc.name + "/tracing=on_100pct"
			}
			b.Run(name, func(b *testing.B) {
				e, err := policy.New(context.Background(), tc.cfg, nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				lim, err := ratelimit.New(ratelimit.Config{}, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer lim.Close()
				p, err := pipeline.New(pipeline.Config{Timeout: time.Second}, tc.auth, e, lim, nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				opts := Options{StripCredentials: true}
				if traced {
					tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(telemetry.NewBatcher(discardExporter{}, telemetry.BatchConfig{})),
						sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
					tr := telemetry.New(tp)
					defer tr.Shutdown(context.Background())
					p.WithTracer(tr.Tracer)
					opts.Tracing = tr
				}
				s := New(p, opts)
				reqs := make([]*authv3.CheckRequest, b.N+1)
				for i := range reqs {
					reqs[i] = envoy.NewCheckRequest(envoy.HTTPRequest{Method: "POST", Path: "/v1/chat/completions?stream=false", Headers: tc.hdrs})
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
