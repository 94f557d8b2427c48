package policy

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/policies"
)

// benchSignals is input.signals as the pipeline renders it for a benign
// prompt (every detector ran, nothing found).
const benchSignals = `"signals": {
		"prompt_injection": {"score": 0.05, "detected": false, "rules": []},
		"pii": [], "secrets": [],
		"hidden_text": {"detected": false, "tag_chars": 0, "bidi": 0, "zero_width": 0, "homoglyphs": 0, "encoded": 0},
		"length": {"chars": 4096, "bytes": 4096, "estimated_tokens": 1024}}`

// benchInputs are the default policy's inputs for an authenticated chat
// call, one per phase that decides: ext_authz's check (or ext_proc's request
// headers), ext_proc's request body with the parsed LLM request and the
// detectors' signals, and the buffered answer.
var benchInputs = []struct{ name, input string }{
	{"request_headers", `{
		"attributes": {"request": {"http": {"method": "POST", "path": "/v1/chat/completions?stream=false",
			"headers": {"content-type": "application/json", "user-agent": "bench"}}}},
		"parsed_path": ["v1", "chat", "completions"], "parsed_query": {"stream": ["false"]},
		"parsed_body": {"model": "gpt-4o-mini"}, "truncated_body": false, "phase": "request_headers",
		"decision_id": "0123456789abcdef",
		"principal": {"id": "alice", "kind": "api_key", "roles": ["user"], "tenant": "acme", "claims": {}}}`},
	{"request_body", `{
		"attributes": {"request": {"http": {"method": "POST", "path": "/v1/chat/completions",
			"headers": {"content-type": "application/json", "user-agent": "bench"}}}},
		"parsed_path": ["v1", "chat", "completions"], "parsed_query": {},
		"parsed_body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
		"truncated_body": false, "phase": "request_body", "decision_id": "0123456789abcdef",
		"llm": {"api": "openai.chat", "provider": "openai", "model": "gpt-4o-mini", "stream": false, "max_tokens": 256, "n": 1,
			"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
			"tools": [{"type": "function", "name": "search", "description": "web search"}], "tool_calls": [],
			"estimated_tokens": 1024},
		` + benchSignals + `,
		"principal": {"id": "alice", "kind": "api_key", "roles": ["user"], "tenant": "acme", "claims": {}}}`},
	{"response_body", `{
		"attributes": {"request": {"http": {"method": "POST", "path": "/v1/chat/completions",
			"headers": {"content-type": "application/json", "user-agent": "bench"}}}},
		"parsed_path": ["v1", "chat", "completions"], "parsed_query": {},
		"truncated_body": false, "phase": "response_body", "decision_id": "0123456789abcdef",
		"llm": {"api": "openai.chat", "provider": "openai", "model": "gpt-4o-mini", "stream": false, "max_tokens": 256, "n": 1,
			"tools": [], "tool_calls": [], "estimated_tokens": 1024},
		"response": {"status": 200, "content_type": "application/json", "tool_calls": [],
			"usage": {"prompt_tokens": 1024, "completion_tokens": 200, "total_tokens": 1224}},
		` + benchSignals + `,
		"principal": {"id": "alice", "kind": "api_key", "roles": ["user"], "tenant": "acme", "claims": {}}}`},
}

// BenchmarkEvaluateDefaultPolicy is OPA evaluation alone of the embedded
// default policy for an authenticated chat request, per phase: the part of
// a decision a policy author controls.
func BenchmarkEvaluateDefaultPolicy(b *testing.B) {
	e, err := New(context.Background(), Config{Embedded: policies.FS, Query: "bulwark/decision"}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, bi := range benchInputs {
		b.Run(bi.name, func(b *testing.B) {
			in := ast.MustParseTerm(bi.input).Value
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
		})
	}
}
