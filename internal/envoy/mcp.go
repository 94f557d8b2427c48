package envoy

import (
	"errors"
	"net/http"
	"strings"
	"unsafe"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/mcp"
	"github.com/bulwark-ai/bulwark/internal/policy"
)

// MCPOptions say where MCP traffic is expected and how an unauthenticated
// MCP client is told where to get a token. Both Envoy doors and the
// exchange core take the same, so MCP is recognised (and denials shaped)
// alike whichever door a request came through.
type MCPOptions struct {
	// Paths are the MCP endpoints (exact paths, or prefixes ending in "/"):
	// a request there is MCP even without a body (a GET opening the SSE
	// stream, a DELETE ending a session), and a body there that is not
	// JSON-RPC is malformed MCP. Elsewhere a JSON-RPC body is recognised
	// by itself.
	Paths []string
	// ResourceMetadata, when set, is the URL of the OAuth protected
	// resource metadata (RFC 9728) an unauthenticated MCP client is sent
	// to: a 401 for an MCP request carries
	// WWW-Authenticate: Bearer resource_metadata="<it>", as the MCP
	// authorization spec asks.
	ResourceMetadata string
}

// OnPath reports whether path (without its query) is a configured MCP
// endpoint.
func (o MCPOptions) OnPath(path string) bool {
	for _, p := range o.Paths {
		if path == p || (strings.HasSuffix(p, "/") && strings.HasPrefix(path, p)) {
			return true
		}
	}
	return false
}

var keyMCP = ast.StringTerm("mcp")

// MCP is the MCP side of a request: the parsed message (nil when the body
// was not read), and whether the request is MCP at all.
type MCP struct {
	// Request is the client's message; nil for a request without a body
	// on an MCP path.
	Request *mcp.Request
	// Batch: the body was a JSON-RPC batch (input.mcp.error says so).
	Batch bool
}

// AddMCP recognises an MCP request (a configured path, or a JSON-RPC body
// anywhere) and adds input.mcp to in; nil when the request is not MCP.
// body is the request body the input was built from (nil: not read).
func AddMCP(in ast.Object, req *authv3.CheckRequest, body []byte, o MCPOptions) *MCP {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	path, _, _ := strings.Cut(httpReq.GetPath(), "?")
	onPath := o.OnPath(path)
	if len(body) == 0 {
		if !onPath {
			return nil
		}
		h := httpReq.GetHeaders()
		r := &mcp.Request{SessionID: h[mcp.SessionHeader], ProtocolVersion: h[mcp.VersionHeader]}
		insertMCP(in, r)
		return &MCP{Request: nil}
	}
	if !onPath && !mcp.Looks(body) {
		return nil
	}
	r, err := mcp.Parse(body, httpReq.GetHeaders())
	if !onPath && err == nil && !r.JSONRPC() {
		return nil // "jsonrpc" was somewhere inside, not a member of the message
	}
	out := &MCP{Request: r}
	if errors.Is(err, mcp.ErrBatch) {
		h := httpReq.GetHeaders()
		r = &mcp.Request{SessionID: h[mcp.SessionHeader], ProtocolVersion: h[mcp.VersionHeader], Kind: mcp.KindBatch, Error: err.Error()}
		out = &MCP{Request: r, Batch: true}
	}
	insertMCP(in, r)
	return out
}

func insertMCP(in ast.Object, r *mcp.Request) {
	v, err := r.Value()
	if err != nil {
		v = ast.NewObject([2]*ast.Term{ast.StringTerm("error"), ast.StringTerm(err.Error())})
	}
	in.Insert(keyMCP, ast.NewTerm(v))
}

// RequestBody is the body of a CheckRequest as bytes, a read-only view
// (for AddMCP, which only reads it).
func RequestBody(req *authv3.CheckRequest) []byte {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	if b := httpReq.GetRawBody(); len(b) > 0 {
		return b
	}
	s := httpReq.GetBody()
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s)) // #nosec G103 -- read-only view of an immutable string, never written or kept
}

// MCPDenial shapes a deny for an MCP client, when the policy wrote no body
// of its own: the body a JSON-RPC error carrying the request's id (null
// when it was never read), and a 401 the resource-metadata challenge when
// one is configured. headers are the policy's, returned with the
// challenge in place of any www-authenticate it set.
func MCPDenial(m *MCP, o MCPOptions, status int, reason, message, decisionID string, headers []policy.Header) ([]byte, []policy.Header) {
	var id []byte
	if m != nil && m.Request != nil {
		id = m.Request.ID
	}
	code := mcp.CodeDenied
	if status == http.StatusBadRequest {
		code = mcp.CodeInvalidRequest
	}
	body := mcp.ErrorBody(id, code, message, reason, decisionID)
	return body, MCPHeaders(o, status, headers)
}

// MCPHeaders puts the resource-metadata challenge on a 401 for an MCP
// request, when one is configured, in place of the policy's.
func MCPHeaders(o MCPOptions, status int, headers []policy.Header) []policy.Header {
	if status != http.StatusUnauthorized || o.ResourceMetadata == "" {
		return headers
	}
	out := make([]policy.Header, 0, len(headers)+1)
	for _, h := range headers {
		if !strings.EqualFold(h.Key, "www-authenticate") {
			out = append(out, h)
		}
	}
	return append(out, policy.Header{Key: "www-authenticate",
		Value: `Bearer resource_metadata="` + strings.ReplaceAll(o.ResourceMetadata, `"`, "%22") + `"`})
}
