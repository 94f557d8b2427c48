package policy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// BenchmarkOPALogDecision is what --opa-config decision logs add to one
// decision: the event built from Bulwark's input and result and handed to
// OPA's decision log plugin (encoding and buffering; the upload runs on
// the plugin's own schedule). Without decision logs the pipeline makes no
// call at all.
func BenchmarkOPALogDecision(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer sink.Close()
	cfg := "services:\n  logs:\n    url: " + sink.URL + "\ndecision_logs:\n  service: logs\n  reporting:\n    trigger: manual\n    buffer_type: event\n    buffer_size_limit_events: 10000\n"
	ctx := context.Background()
	o, err := NewOPA(ctx, []byte(cfg), "bench.yaml", OPAOptions{ID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	if err := o.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer o.Stop(ctx)
	dl, err := NewDecisionLog(o, "bulwark/decision")
	if err != nil {
		b.Fatal(err)
	}
	in := ast.MustParseTerm(`{
		"attributes": {"request": {"http": {"method": "POST", "path": "/v1/chat/completions?stream=false",
			"headers": {"content-type": "application/json", "user-agent": "bench"}}}},
		"parsed_path": ["v1", "chat", "completions"], "parsed_query": {"stream": ["false"]},
		"parsed_body": {"model": "gpt-4o-mini"}, "truncated_body": false, "phase": "request_headers",
		"principal": {"id": "alice", "kind": "api_key", "roles": ["user"], "tenant": "acme", "claims": {}}}`).Value
	res := ast.MustParseTerm(`{"allow": true, "reason": "", "headers": {}}`).Value
	ev := DecisionEvent{DecisionID: "d", Input: in, Result: res, Timestamp: time.Now(),
		Custom: map[string]any{"bulwark": map[string]any{"allowed": true}}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dl.LogDecision(ctx, ev)
	}
}
