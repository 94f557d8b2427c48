package envoy

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
)

// TestAddMCPRecognition: off the configured MCP paths a body is MCP only
// when it is a JSON-RPC message (a top-level "jsonrpc" member); an LLM
// request that merely mentions "jsonrpc" somewhere inside (a tool's schema,
// a pasted example) stays an LLM request and is not refused as malformed MCP.
func TestAddMCPRecognition(t *testing.T) {
	o := MCPOptions{Paths: []string{"/mcp"}}
	tests := []struct {
		name, path, body string
		mcp              bool
	}{
		{"json-rpc off the path", "/rpc", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, true},
		{"llm body with a jsonrpc property", "/v1/chat/completions",
			`{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"call","parameters":{"type":"object","properties":{"jsonrpc":{"type":"string"}}}}}]}`, false},
		{"llm body quoting a message", "/v1/chat/completions",
			`{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"example":{"jsonrpc":"2.0"}}}`, false},
		{"malformed on the path", "/mcp", `{"model":"m"}`, true},
		{"batch off the path", "/rpc", `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Method: "POST", Path: tt.path, Headers: map[string]string{}}}}}
			in := ast.NewObject()
			got := AddMCP(in, req, []byte(tt.body), o) != nil
			if got != tt.mcp || (in.Get(keyMCP) != nil) != tt.mcp {
				t.Errorf("MCP = %v (input.mcp set %v), want %v", got, in.Get(keyMCP) != nil, tt.mcp)
			}
		})
	}
}
