package api

import (
	"context"
	"math"
	"strconv"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/exchange"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
)

// The phases as Decision.phase names them.
const (
	phaseRequestHeaders    = string(pipeline.PhaseRequestHeaders)
	phaseRequestBody       = string(pipeline.PhaseRequestBody)
	phaseResponseHeaders   = string(pipeline.PhaseResponseHeaders)
	phaseResponseBody      = string(pipeline.PhaseResponseBody)
	phaseResponseBodyChunk = string(pipeline.PhaseResponseBodyChunk)
)

// guarded is one Guard call's exchange: the Session in the exchange core that
// every door shares, and what the call reports of it (the last decision,
// the headers the policy set).
type guarded struct {
	x *exchange.Session

	decisionID string
	last       *bulwarkv1.Decision
	reqHeaders map[string]string // what the policy added to the request
	rspHeaders map[string]string // ... and to the response

	respMode exchange.BodyMode
	buffered []byte
	ended    bool

	// toolResults and toolCalls are what the exchange's decisions saw of
	// tools (input.signals.tool_results, input.response.tool_calls), which
	// every Decision after them reports.
	toolResults *bulwarkv1.ToolResultSignals
	toolCalls   []*bulwarkv1.ToolCall
}

// note keeps what a step's decision saw of tools.
func (e *guarded) note(res exchange.Result) {
	if res.Decided && res.Outcome.ToolSignals != nil {
		s := res.Outcome.ToolSignals
		e.toolResults = &bulwarkv1.ToolResultSignals{
			PromptInjection: &bulwarkv1.PromptInjection{Score: s.PromptInjection.Score, Rules: s.PromptInjection.Rules},
			Pii:             findingCounts(s.PII),
			Secrets:         findingCounts(s.Secrets),
		}
	}
	if res.ToolCalls != nil {
		e.toolCalls = make([]*bulwarkv1.ToolCall, len(res.ToolCalls))
		for i, c := range res.ToolCalls {
			e.toolCalls[i] = &bulwarkv1.ToolCall{Id: validUTF8(c.ID), Name: validUTF8(c.Name), Arguments: validUTF8(c.Arguments)}
		}
	}
}

func findingCounts(cs []detect.TypeCount) []*bulwarkv1.FindingCount {
	out := make([]*bulwarkv1.FindingCount, len(cs))
	for i, c := range cs {
		out[i] = &bulwarkv1.FindingCount{Type: c.Type, Count: int32(min(c.Count, math.MaxInt32))} // #nosec G115 -- clamped
	}
	return out
}

// decision returns d carrying what the exchange saw of tools.
func (e *guarded) decision(d *bulwarkv1.Decision) *bulwarkv1.Decision {
	d.ToolResults, d.ToolCalls = e.toolResults, e.toolCalls
	return d
}

func (g *Guard) start() *guarded {
	return &guarded{x: g.ex.Start("api"), reqHeaders: map[string]string{}, rspHeaders: map[string]string{}}
}

// request runs the request steps: headers (identity, route, role, request
// rate), then, when the exchange reads it, the body (detectors, policy,
// token quota, redaction). It returns the last decision, and the body to
// send to the model when allowed.
func (e *guarded) request(ctx context.Context, c caller, r httpRequest) (d *bulwarkv1.Decision, body []byte, modified bool, err error) {
	var source *authv3.AttributeContext_Peer
	if c.peerPrincipal != "" || c.peerAddress != "" {
		source = envoy.Peer(c.peerAddress, 0, c.peerPrincipal)
	}
	res, err := e.x.RequestHeaders(ctx, exchange.Head{
		Check:       envoy.HeadersCheckRequest(requestHeaders(c, r), nil, source),
		EndOfStream: len(r.body) == 0,
	})
	if err != nil {
		return nil, nil, false, undecided(ctx, err)
	}
	if res.Deny != nil {
		return e.denial(res.Deny, phaseRequestHeaders), nil, false, nil
	}
	e.allow(phaseRequestHeaders, res, e.reqHeaders)
	body = r.body
	if len(body) == 0 || res.ReadBody != exchange.BodyWhole { // not inspected: forwarded as is
		return e.last, body, false, nil
	}
	if res, err = e.x.RequestBody(ctx, body); err != nil {
		return nil, nil, false, undecided(ctx, err)
	}
	e.note(res)
	if res.Deny != nil {
		return e.denial(res.Deny, phaseRequestBody), nil, false, nil
	}
	e.allow(phaseRequestBody, res, e.reqHeaders)
	if res.BodyChanged {
		modified = string(res.Body) != string(body)
		body = res.Body
	}
	return e.last, body, modified, nil
}

// responseHeaders runs the response headers step of a 200 answer of
// content type ct and sets how its body is read. A non-nil Decision is a
// denial.
func (e *guarded) responseHeaders(ctx context.Context, ct string) (*bulwarkv1.Decision, error) {
	h := map[string]string{":status": "200", "content-type": ct}
	res, err := e.x.ResponseHeaders(ctx, 200, h, false)
	if err != nil {
		return nil, undecided(ctx, err)
	}
	if res.Deny != nil {
		return e.denial(res.Deny, phaseResponseHeaders), nil
	}
	e.allow(phaseResponseHeaders, res, e.rspHeaders)
	e.respMode = res.ReadBody
	return nil, nil
}

// responseChunk feeds the next piece of the answer and returns what the
// client receives now. A non-nil Decision is a denial of the whole answer
// (read whole); a stream the policy stopped sets e.ended instead, its error
// event in the output.
func (e *guarded) responseChunk(ctx context.Context, data []byte, last bool) ([]byte, *bulwarkv1.Decision, error) {
	switch e.respMode {
	case exchange.BodySkip: // not inspected: passed as is
		return data, nil, nil
	case exchange.BodyWhole:
		e.buffered = append(e.buffered, data...)
		if !last {
			return nil, nil, nil
		}
		whole := e.buffered
		e.buffered = nil
		res, err := e.x.ResponseBody(ctx, whole)
		if err != nil {
			return nil, nil, undecided(ctx, err)
		}
		e.note(res)
		if res.Deny != nil {
			return nil, e.denial(res.Deny, phaseResponseBody), nil
		}
		e.allow(phaseResponseBody, res, e.rspHeaders)
		if res.BodyChanged {
			return res.Body, nil, nil
		}
		return whole, nil, nil
	}
	res, err := e.x.ResponseChunk(ctx, data, last)
	if err != nil {
		return nil, nil, undecided(ctx, err)
	}
	e.note(res)
	if !e.ended && res.Cut != nil {
		e.ended = true
		id := res.Cut.DecisionID
		if id == "" {
			id = e.decisionID
		}
		e.last = e.decision(&bulwarkv1.Decision{Allowed: false, Reason: res.Cut.Reason, Message: res.Cut.Message, Phase: phaseResponseBodyChunk,
			DecisionId: id})
	}
	return res.Body, nil, nil
}

// allow records an allowing step: the headers its decision set, and its id.
func (e *guarded) allow(phase string, res exchange.Result, into map[string]string) {
	if res.Decided && res.Outcome.DecisionID != "" {
		e.decisionID = res.Outcome.DecisionID
	}
	for _, h := range res.SetHeaders {
		switch k := strings.ToLower(h.Key); k {
		case envoy.DecisionIDHeader, "content-length", "content-type", "content-encoding":
		default:
			into[k] = h.Value
		}
	}
	e.last = e.decision(&bulwarkv1.Decision{Allowed: true, DecisionId: e.decisionID, Phase: phase, Headers: copyMap(into)})
}

// denial renders the exchange's denial as the Decision it carries.
func (e *guarded) denial(dn *exchange.Denial, phase string) *bulwarkv1.Decision {
	d := &bulwarkv1.Decision{
		Allowed:    false,
		HttpStatus: int32(dn.Status), // #nosec G115 -- an HTTP status
		Reason:     dn.Reason,
		Message:    dn.Message,
		Phase:      phase,
		DecisionId: dn.DecisionID,
		ErrorBody:  toValidUTF8(dn.Body),
		Headers:    map[string]string{},
	}
	for _, h := range dn.Headers {
		switch k := strings.ToLower(h.Key); k {
		case envoy.DecisionIDHeader, "content-type":
		default:
			d.Headers[k] = h.Value
		}
	}
	e.decisionID = d.DecisionId
	e.last = e.decision(d)
	return d
}

// requestHeaders are the HTTP request headers Envoy would send for r:
// pseudo-headers, the body's framing, the caller's headers, its trace
// context and its credentials.
func requestHeaders(c caller, r httpRequest) map[string]string {
	authority := c.authority
	if authority == "" {
		authority = "bulwark"
	}
	scheme := "http"
	if c.tls {
		scheme = "https"
	}
	h := map[string]string{":method": "POST", ":path": r.path, ":authority": authority, ":scheme": scheme,
		"x-request-id": c.requestID, "content-type": "application/json"}
	if len(r.body) > 0 {
		h["content-length"] = strconv.Itoa(len(r.body))
	}
	for k, v := range c.trace {
		h[k] = v
	}
	for k, v := range r.headers {
		h[k] = v
	}
	if c.authorization != "" {
		h["authorization"] = c.authorization
	}
	if c.apiKey != "" {
		h["x-api-key"] = c.apiKey
	}
	return h
}

func copyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// toValidUTF8 keeps a proto string field marshalable whatever the bytes.
func toValidUTF8(b []byte) string { return strings.ToValidUTF8(string(b), "\uFFFD") }

// validUTF8 keeps a string a proto string field can carry (protobuf refuses
// to marshal invalid UTF-8).
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
