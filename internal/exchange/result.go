package exchange

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/llmapi"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
)

// Head is what an exchange starts from: the request as ext_authz's
// AttributeContext (the policy contract's input.attributes; build it with
// envoy.NewCheckRequest or envoy.HeadersCheckRequest) and, when a
// decision was already made on these headers, who it found.
type Head struct {
	// Check carries the request's headers, path, source and forwarded
	// metadata. The exchange keeps it (and changes its body fields).
	Check *authv3.CheckRequest
	// Vouched, when not nil, is the principal ext_authz established for
	// this request; VouchedDecisionID the decision that did (and names any
	// reservation it made). Only a door that verified a seal on it
	// (envoy.VouchedPrincipal) may set it: the exchange then makes no
	// request_headers decision of its own.
	Vouched           *identity.Principal
	VouchedDecisionID string
	// EndOfStream: the request has no body.
	EndOfStream bool
}

// BodyMode is how a door must hand the exchange a body.
type BodyMode int

// The body modes a headers step asks for.
const (
	// BodySkip: the body is not inspected; pass it as it is.
	BodySkip BodyMode = iota
	// BodyWhole: collect the whole body and hand it to RequestBody or
	// ResponseBody.
	BodyWhole
	// BodyStreamed: hand each chunk of the answer to ResponseChunk as it
	// arrives (server-sent events).
	BodyStreamed
)

// Header is one header to set.
type Header struct{ Key, Value string }

// Result is the answer to one step of an exchange.
type Result struct {
	// Deny, when not nil, ends the exchange: the client receives it
	// instead of what it asked for.
	Deny *Denial
	// SetHeaders and RemoveHeaders edit the request forwarded to the model
	// (request steps) or the answer returned to the client (response steps).
	// SetHeaders is valid until the Session's next step (its memory is
	// reused): a door applies or copies it at once.
	SetHeaders    []Header
	RemoveHeaders []string
	// Body replaces the body when BodyChanged. For a streamed chunk Body is
	// always what the client receives now (possibly nothing: the text is
	// held until it is safe to release).
	Body        []byte
	BodyChanged bool
	// ReadBody, on a headers step, is how the door must hand over the body.
	ReadBody BodyMode
	// Decided says the step made a decision: Outcome is the last one, for
	// the door to report (decision id, reason, dynamic metadata), and Phase
	// its phase. (A value, not a pointer: it stays off the heap.)
	Decided bool
	Outcome pipeline.Outcome
	Phase   pipeline.Phase
	// Cut, on a streamed chunk, says the answer was ended early; the chunk's
	// Body ends with an error event in the API's shape.
	Cut *Cut
	// ToolCalls, on a response step, are the model's tool calls its
	// decision saw (input.response.tool_calls): a buffered answer's, or
	// every call of a stream complete so far. For a door that reports them
	// (the Guard API).
	ToolCalls []llmapi.ToolCall
}

// Denial is a deny rendered for the client: the status, headers and body of
// the local reply, in the API's own error shape unless the policy wrote one.
type Denial struct {
	Status  int
	Headers []Header // includes content-type and the decision id header
	Body    []byte
	// Reason is the policy's machine-readable reason, Message its
	// human-readable one (empty when it gave none) and DecisionID the
	// decision's id ("local" for a refusal made without the policy).
	Reason, Message, DecisionID string
	Phase                       pipeline.Phase
}

// Cut says why a streamed answer was ended early.
type Cut struct {
	// DecisionID is the decision that ended it; empty when Bulwark could not
	// inspect the stream (Reason says why).
	DecisionID string
	// Reason and Message are the policy's.
	Reason, Message string
}

// policyHeaders converts the policy's headers.
func policyHeaders(dst []Header, hs []policy.Header) []Header {
	for _, h := range hs {
		dst = append(dst, Header{Key: h.Key, Value: h.Value})
	}
	return dst
}
