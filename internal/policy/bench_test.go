package policy

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/policies"
)

// BenchmarkEvaluateDefaultPolicy is OPA evaluation alone of the embedded
// default policy for an authenticated chat request: the part of a Check a
// policy author controls.
func BenchmarkEvaluateDefaultPolicy(b *testing.B) {
	e, err := New(context.Background(), Config{Embedded: policies.FS, Query: "bulwark/decision"}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	in := ast.MustParseTerm(`{
		"attributes": {"request": {"http": {"method": "POST", "path": "/v1/chat/completions?stream=false",
			"headers": {"content-type": "application/json", "user-agent": "bench"}}}},
		"parsed_path": ["v1", "chat", "completions"], "parsed_query": {"stream": ["false"]},
		"parsed_body": {"model": "gpt-4o-mini"}, "truncated_body": false, "phase": "request_headers",
		"principal": {"id": "alice", "kind": "api_key", "roles": ["user"], "tenant": "acme", "claims": {}}}`).Value
	ctx := context.Background()
	res, err := e.Evaluate(ctx, in)
	if err != nil || !res.Decision.Allowed {
		b.Fatalf("%+v %v", res, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.Evaluate(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}
