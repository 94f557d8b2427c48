package extauthz

import (
	"context"
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/bulwark-ai/bulwark/internal/app/core"
	"github.com/bulwark-ai/bulwark/internal/config"
	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/test/fixture"
)

const benchPepper = "bench-pepper-0123456789abcdef"

// benchStack is the core serve builds over pol (query q), with one API key
// (role user) when keyed, and that key.
func benchStack(b *testing.B, pol fs.FS, q string, keyed bool, d core.Deps) (*fixture.Stack, string) {
	o := fixture.StackOptions{Policies: pol, Query: q, Config: func(c *config.Config) { c.CheckTimeout = time.Second }, Deps: d}
	o.Deps.Pepper = benchPepper
	if keyed {
		o.Keys = []fixture.Key{{ID: "bench", Roles: []string{"user"}, Tenant: "acme"}}
	}
	st := fixture.NewStack(b, o)
	return st, st.Secrets["bench"]
}

// BenchmarkCheck measures one in-process Check: input building, identity,
// OPA evaluation and response rendering (no gRPC).
//
//	opa_envoy_rbac      test/load/rbac (OPA-Envoy style, envoy/authz/allow), no identity stage
//	default_api_key     the embedded default policy with an API key: identity + RBAC routes
func BenchmarkCheck(b *testing.B) {
	rbac := os.DirFS("../../test/load/rbac")
	def := unlimitedDefaultPolicies(b)
	headers := func(extra map[string]string) map[string]string {
		h := map[string]string{"x-role": "user", "user-agent": "bench/1.0", "accept": "*/*",
			"content-type": "application/json"}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	// A chat request as Envoy's with_request_body sends it (about 1 KiB).
	chat := []byte(`{"model":"gpt-4o","max_tokens":256,"messages":[{"role":"system","content":"You are a helpful analyst."},` +
		`{"role":"user","content":"` + strings.Repeat("please summarise the quarterly report for the board ", 18) + `"}]}`)
	cases := []struct {
		name  string
		pol   fs.FS
		query string
		keyed bool // an API key, sent as the bearer; else "Bearer abc"
		body  []byte
		// sealed: the allow's principal is sealed for ext_proc, as serve does.
		sealed bool
	}{
		{"opa_envoy_rbac", rbac, "envoy/authz/allow", false, nil, false},
		{"default_api_key", def, "bulwark/decision", true, nil, false},
		{"default_api_key_sealed", def, "bulwark/decision", true, nil, true},
		{"default_api_key_body", def, "bulwark/decision", true, chat, false},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			st, key := benchStack(b, tc.pol, tc.query, tc.keyed, core.Deps{})
			cred := "Bearer abc"
			if tc.keyed {
				cred = "Bearer " + key
			}
			hdrs := headers(map[string]string{"authorization": cred})
			opts := Options{StripCredentials: true}
			if tc.sealed {
				opts.Voucher = testVoucher(b)
			}
			s := New(st.Pipeline, opts)
			req := envoy.NewCheckRequest(envoy.HTTPRequest{Method: "POST", Path: "/v1/chat/completions?stream=false", Headers: hdrs, Body: tc.body})
			ctx := context.Background()
			resp, err := s.Check(ctx, req)
			if err != nil || resp.GetStatus().GetCode() != 0 {
				b.Fatalf("not allowed: %v %v %s", resp.GetStatus(), err, resp.GetDeniedResponse().GetBody())
			}
			// Each Check gets its own request, as each gRPC call decodes its
			// own (Check strips credential headers from the one it is given).
			reqs := make([]*authv3.CheckRequest, b.N)
			for i := range reqs {
				reqs[i] = envoy.NewCheckRequest(envoy.HTTPRequest{Method: "POST", Path: "/v1/chat/completions?stream=false", Headers: hdrs, Body: tc.body})
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Check(ctx, reqs[i]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// unlimitedDefaultPolicies is the embedded policy tree with its rate limits
// out of the way: the benchmark measures the allow path.
func unlimitedDefaultPolicies(b *testing.B) fstest.MapFS { return fixture.Unlimited(b) }

func BenchmarkBuildInput(b *testing.B) {
	req := envoy.NewCheckRequest(envoy.HTTPRequest{Method: "POST", Path: "/v1/chat/completions",
		Headers: map[string]string{"content-type": "application/json"}, Body: []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		envoy.BuildInput(req)
	}
}
