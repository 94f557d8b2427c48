// Package mcp reads Model Context Protocol traffic over the Streamable HTTP
// transport (JSON-RPC 2.0 messages POSTed to one endpoint, answered with
// application/json or text/event-stream) so that policy can decide on the
// method, the tool, the resource or the prompt an agent asks for, and so that
// answers can be filtered before the agent sees them: tools/list without the
// tools the caller may not call or that look poisoned, tools/call results
// without injected instructions or secrets.
//
// It parses and rewrites; it never decides. The exchange core asks the
// pipeline (and so the policy) and applies what it answers.
package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The headers of the Streamable HTTP transport, lower-cased as Envoy gives
// them.
const (
	SessionHeader  = "mcp-session-id"
	VersionHeader  = "mcp-protocol-version"
	JSONRPCVersion = "2.0"
)

// The methods whose parameters input.mcp spells out, and whose answers the
// exchange reads.
const (
	MethodToolsList     = "tools/list"
	MethodToolsCall     = "tools/call"
	MethodResourcesRead = "resources/read"
	MethodPromptsGet    = "prompts/get"
	// MethodSamplingCreate is a server's request, sent on an SSE stream,
	// that the client run its model on the messages it carries.
	MethodSamplingCreate = "sampling/createMessage"
)

// JSON-RPC error codes Bulwark answers with. -32600 and -32700 are JSON-RPC's
// own; -32001 is in the range JSON-RPC leaves to servers, for a request the
// gateway refused.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeDenied         = -32001
)

// ErrBatch is a JSON array body: JSON-RPC batches, which the current MCP
// transport no longer allows, and which would let one request smuggle
// calls past a decision made on the first.
var ErrBatch = errors.New("JSON-RPC batches are not supported")

// Kind is what a JSON-RPC message is.
type Kind string

// The kinds of JSON-RPC message.
const (
	KindRequest      Kind = "request"
	KindNotification Kind = "notification"
	KindResponse     Kind = "response"
	// KindBatch is a JSON array of messages, refused (ErrBatch).
	KindBatch Kind = "batch"
)

// Request is one MCP message a client sent, as policy sees it (input.mcp).
type Request struct {
	Kind   Kind
	Method string
	// ID is the JSON-RPC id as it was sent (a string or a number; nil for a
	// notification): a denial carries it back so the client can match it.
	ID json.RawMessage
	// SessionID and ProtocolVersion are the transport's headers.
	SessionID, ProtocolVersion string
	// Tool is a tools/call's tool, Prompt a prompts/get's prompt; Resource
	// the URI of resources/read, subscribe and unsubscribe.
	Tool, Prompt *Call
	Resource     string
	// Error says why the message is not a valid MCP request ("" when it is):
	// input.mcp.error, which the default policy denies on.
	Error string
	// jsonRPC: the message has a top-level "jsonrpc" member, whatever its
	// value (JSONRPC).
	jsonRPC bool
}

// JSONRPC reports whether the message has a top-level "jsonrpc" member: off
// the configured MCP paths only such a body is MCP, not one that merely
// mentions "jsonrpc" deeper inside (an LLM tool's schema, a pasted example).
func (r *Request) JSONRPC() bool { return r != nil && r.jsonRPC }

// Call is a named call with arguments: a tool's or a prompt's.
type Call struct {
	Name string
	// Arguments is the decoded arguments object (nil when none was sent).
	Arguments map[string]any
}

// Looks reports whether body looks like a JSON-RPC message, so that MCP is
// recognised off the configured paths too: a JSON object or array that
// names "jsonrpc". Cheap: it runs on every JSON body.
func Looks(body []byte) bool {
	b := bytes.TrimLeft(body, " \t\r\n")
	if len(b) == 0 || (b[0] != '{' && b[0] != '[') {
		return false
	}
	return bytes.Contains(b, []byte(`"jsonrpc"`))
}

// message is a JSON-RPC message on the wire.
type message struct {
	JSONRPC *string         `json:"jsonrpc"`
	Method  *string         `json:"method"`
	ID      json.RawMessage `json:"id"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// Parse reads one client message. A batch returns ErrBatch; any other
// message comes back as a Request, whose Error says what is wrong with it
// (the method and id are filled in as far as they could be read), so that
// the policy decides and the denial can still carry the id.
func Parse(body []byte, headers map[string]string) (*Request, error) {
	r := &Request{SessionID: headers[SessionHeader], ProtocolVersion: headers[VersionHeader]}
	b := bytes.TrimLeft(body, " \t\r\n")
	if len(b) > 0 && b[0] == '[' {
		return nil, ErrBatch
	}
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		r.Error = "not a JSON-RPC message: " + jsonError(err)
		return r, nil
	}
	r.jsonRPC = m.JSONRPC != nil
	if m.ID != nil {
		if id := bytes.TrimSpace(m.ID); validID(id) {
			r.ID = id
		} else {
			r.Error = "the id must be a string or an integer"
		}
	}
	switch {
	case m.JSONRPC == nil || *m.JSONRPC != JSONRPCVersion:
		r.setError(`"jsonrpc" must be "2.0"`)
	case m.Method == nil && (m.Result != nil || m.Error != nil):
		r.Kind = KindResponse
		if r.ID == nil {
			r.setError("a response needs an id")
		}
		return r, nil
	case m.Method == nil || *m.Method == "":
		r.setError(`a request needs a "method"`)
		return r, nil
	}
	if m.Method == nil {
		return r, nil
	}
	r.Method = *m.Method
	r.Kind = KindRequest
	if m.ID == nil {
		r.Kind = KindNotification
	}
	if err := r.readParams(m.Params); err != nil {
		r.setError(err.Error())
	}
	return r, nil
}

func (r *Request) setError(msg string) {
	if r.Error == "" {
		r.Error = msg
	}
}

// validID: JSON-RPC ids are strings or numbers; MCP forbids null, and a
// fraction has no business in one.
func validID(id []byte) bool {
	if len(id) == 0 {
		return false
	}
	switch id[0] {
	case '"':
		var s string
		return json.Unmarshal(id, &s) == nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var n json.Number
		if json.Unmarshal(id, &n) != nil {
			return false
		}
		_, err := n.Int64()
		return err == nil
	}
	return false
}

// params holds every parameter input.mcp names.
type params struct {
	Name      *string         `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
	URI       *string         `json:"uri"`
}

func (r *Request) readParams(raw json.RawMessage) error {
	var p params
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &p); err != nil {
			return fmt.Errorf(`"params" must be an object: %s`, jsonError(err))
		}
	}
	switch r.Method {
	case MethodToolsCall, MethodPromptsGet:
		if p.Name == nil || *p.Name == "" {
			return fmt.Errorf("%s needs a name", r.Method)
		}
		c := &Call{Name: *p.Name}
		if r.Method == MethodToolsCall {
			r.Tool = c
		} else {
			r.Prompt = c
		}
		args, err := decodeArguments(p.Arguments)
		c.Arguments = args
		return err
	case MethodResourcesRead, "resources/subscribe", "resources/unsubscribe":
		if p.URI == nil || *p.URI == "" {
			return fmt.Errorf("%s needs a uri", r.Method)
		}
		r.Resource = *p.URI
	}
	return nil
}

// decodeArguments: arguments are a JSON object. A string holding JSON (a
// client that encoded twice) is not read as one: the server would not
// either, and the policy must see what the server sees.
func decodeArguments(raw json.RawMessage) (map[string]any, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, errors.New(`"arguments" must be a JSON object`)
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var args map[string]any
	if err := d.Decode(&args); err != nil {
		return nil, fmt.Errorf(`"arguments": %s`, jsonError(err))
	}
	return args, nil
}

// jsonError words a decoding error without quoting the input.
func jsonError(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q has the wrong type (%s)", te.Field, te.Value)
	}
	msg := err.Error()
	if i := strings.IndexByte(msg, ':'); i > 0 && strings.HasPrefix(msg, "json") {
		msg = strings.TrimSpace(msg[i+1:])
	}
	return msg
}

// IDValue is the id as policy sees it: a string, a number, or null.
func (r *Request) idValue() any {
	if r.ID == nil {
		return nil
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(r.ID))
	d.UseNumber()
	if d.Decode(&v) != nil {
		return nil
	}
	return v
}

// Value is input.mcp:
//
//	kind              request | notification | response
//	method            the JSON-RPC method
//	id                the request's id (absent for a notification)
//	session_id        Mcp-Session-Id ("" before initialize)
//	protocol_version  MCP-Protocol-Version
//	tool              tools/call: {name, arguments}
//	resource          resources/read: {uri}
//	prompt            prompts/get: {name, arguments}
//	error             why the message is not valid MCP (absent when it is)
func (r *Request) Value() (ast.Value, error) {
	m := map[string]any{
		"kind":             string(r.Kind),
		"method":           r.Method,
		"session_id":       r.SessionID,
		"protocol_version": r.ProtocolVersion,
	}
	if r.ID != nil {
		m["id"] = r.idValue()
	}
	if r.Tool != nil {
		m["tool"] = callValue(r.Tool)
	}
	if r.Prompt != nil {
		m["prompt"] = callValue(r.Prompt)
	}
	if r.Resource != "" {
		m["resource"] = map[string]any{"uri": r.Resource}
	}
	if r.Error != "" {
		m["error"] = r.Error
	}
	v, err := ast.InterfaceToValue(m)
	if err != nil {
		return nil, fmt.Errorf("mcp input: %w", err)
	}
	return v, nil
}

func callValue(c *Call) map[string]any {
	args := c.Arguments
	if args == nil {
		args = map[string]any{}
	}
	return map[string]any{"name": c.Name, "arguments": args}
}

// ErrorBody is a JSON-RPC error answering the request whose id is id (nil:
// null, for a request whose id was never read): what an MCP client expects
// in place of a result, so a denial reads as one. data carries Bulwark's
// reason and decision id.
func ErrorBody(id json.RawMessage, code int, message, reason, decisionID string) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	doc := struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Data    struct {
				Reason     string `json:"reason,omitempty"`
				DecisionID string `json:"decision_id,omitempty"`
			} `json:"data"`
		} `json:"error"`
	}{JSONRPC: JSONRPCVersion, ID: id}
	doc.Error.Code = code
	doc.Error.Message = message
	doc.Error.Data.Reason = reason
	doc.Error.Data.DecisionID = decisionID
	b, err := json.Marshal(doc)
	if err != nil { // only an id that is not JSON could fail: answer with null
		doc.ID = json.RawMessage("null")
		b, _ = json.Marshal(doc)
	}
	return b
}
