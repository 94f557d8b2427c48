package extauthz

import (
	"context"
	"testing"
	"testing/fstest"
	"time"

	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/policies"
)

// RBACPolicy is the three-condition RBAC policy the README's figures use for
// comparison with OPA-Envoy: a role from a header, a method and a path
// prefix, looked up in data.
const RBACPolicy = `package envoy.authz

import rego.v1

default allow := false

allow if {
	some grant in data.grants[input.attributes.request.http.headers["x-role"]]
	grant.method == input.attributes.request.http.method
	startswith(input.attributes.request.http.path, grant.prefix)
}
`

const rbacData = `{"grants": {"admin": [{"method": "GET", "prefix": "/"}, {"method": "POST", "prefix": "/"}],
"user": [{"method": "GET", "prefix": "/v1/"}, {"method": "POST", "prefix": "/v1/chat/"}]}}`

func benchServer(b *testing.B, cfg policy.Config) *Server {
	e, err := policy.New(context.Background(), cfg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	p, err := pipeline.New(pipeline.Config{Timeout: time.Second}, nil, e, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	return New(p, Options{})
}

func BenchmarkCheck(b *testing.B) {
	req := NewCheckRequest(HTTPRequest{Method: "POST", Path: "/v1/chat/completions?stream=false",
		Headers: map[string]string{"x-role": "user", "user-agent": "bench/1.0", "accept": "*/*",
			"content-type": "application/json", "authorization": "Bearer abc"}})
	cases := []struct {
		name string
		cfg  policy.Config
	}{
		{"default_policy", policy.Config{Embedded: policies.FS, Query: "bulwark/decision"}},
		{"opa_envoy_rbac", policy.Config{Embedded: fstest.MapFS{
			"p.rego":    {Data: []byte(RBACPolicy)},
			"data.json": {Data: []byte(rbacData)},
		}, Query: "envoy/authz/allow"}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			s := benchServer(b, tc.cfg)
			ctx := context.Background()
			resp, err := s.Check(ctx, req)
			if err != nil || resp.GetStatus().GetCode() != 0 {
				b.Fatalf("not allowed: %v %v", resp.GetStatus(), err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkBuildInput(b *testing.B) {
	req := NewCheckRequest(HTTPRequest{Method: "POST", Path: "/v1/chat/completions",
		Headers: map[string]string{"content-type": "application/json"}, Body: []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		BuildInput(req)
	}
}
