package policy

import (
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/llmapi"
)

// TestAddToolCalls: input.response.tool_calls carries parsed arguments, {}
// for none, and the raw text with arguments_valid false when it is not JSON.
func TestAddToolCalls(t *testing.T) {
	in := ast.NewObject()
	AddResponse(in, 200, "application/json")
	AddToolCalls(in, []llmapi.ToolCall{
		{ID: "c1", Name: "fetch_url", Arguments: `{"url":"https://x.example/","n":1}`},
		{ID: "c2", Name: "now", Arguments: ""},
		{ID: "c3", Name: "rm", Arguments: `{"path":"/`},
	})
	want := ast.MustParseTerm(`[
		{"id": "c1", "name": "fetch_url", "arguments": {"url": "https://x.example/", "n": 1}, "arguments_valid": true},
		{"id": "c2", "name": "now", "arguments": {}, "arguments_valid": true},
		{"id": "c3", "name": "rm", "arguments": "{\"path\":\"/", "arguments_valid": false}]`)
	got := in.Get(ast.StringTerm("response")).Value.(ast.Object).Get(ast.StringTerm("tool_calls"))
	if got == nil || !got.Equal(want) {
		t.Fatalf("tool_calls %v, want %v", got, want)
	}
	bare := ast.NewObject()
	AddToolCalls(bare, nil) // no input.response: nothing to add to, no panic
	if bare.Len() != 0 {
		t.Fatalf("input without response: %v", bare)
	}
}
