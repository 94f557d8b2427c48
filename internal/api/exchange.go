package api

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/extproc"
	"github.com/bulwark-ai/bulwark/internal/llmapi"
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

// exchange drives one extproc.Exchange the way Envoy's filter does (as
// test/envoysim plays it against a real server): messages in Envoy's order,
// exactly one answer each, mode_override honoured, header and body
// mutations applied. Like Envoy's, it starts from the filter defaults
// (headers sent, bodies not) and lets Bulwark choose the body modes.
type exchange struct {
	x    *extproc.Exchange
	api  llmapi.API
	mode *filterv3.ProcessingMode

	decisionID string
	last       *bulwarkv1.Decision
	reqHeaders map[string]string // what the policy added to the request
	rspHeaders map[string]string // ... and to the response

	respMode filterv3.ProcessingMode_BodySendMode
	buffered []byte
	ended    bool
}

func newExchange(x *extproc.Exchange, api llmapi.API) *exchange {
	return &exchange{x: x, api: api, mode: &filterv3.ProcessingMode{},
		reqHeaders: map[string]string{}, rspHeaders: map[string]string{}}
}

// handle sends one message and checks the answer is of the expected kind
// (or an immediate response). A failure to decide keeps its meaning for
// the caller (deadline, unavailable).
func (e *exchange) handle(ctx context.Context, req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	resp, err := e.x.Handle(ctx, req)
	if err != nil {
		return nil, undecided(ctx, err)
	}
	if resp == nil {
		return nil, status.Error(codes.Internal, "ext_proc exchange gave no answer")
	}
	return resp, nil
}

func unexpected(what string, resp *extprocv3.ProcessingResponse) error {
	return status.Errorf(codes.Internal, "ext_proc answered %s with %T", what, resp.GetResponse())
}

// request runs the request phases: headers (identity, route, role, request
// rate), then, when Bulwark asks for it, the body (detectors, policy, token
// quota, redaction). It returns the last decision, and the body to send to
// the model when allowed.
func (e *exchange) request(ctx context.Context, c caller, r httpRequest) (d *bulwarkv1.Decision, body []byte, modified bool, err error) {
	req := &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: extproc.EnvoyHeaders(requestHeaders(c, r)), EndOfStream: len(r.body) == 0}},
		Attributes: attributes(c),
	}
	resp, err := e.handle(ctx, req)
	if err != nil {
		return nil, nil, false, err
	}
	if ir := resp.GetImmediateResponse(); ir != nil {
		return e.denial(ir, phaseRequestHeaders), nil, false, nil
	}
	hr := resp.GetRequestHeaders()
	if hr == nil {
		return nil, nil, false, unexpected("request headers", resp)
	}
	e.allow(phaseRequestHeaders, hr.GetResponse().GetHeaderMutation(), e.reqHeaders)
	if mo := resp.GetModeOverride(); mo != nil {
		e.mode = cloneMode(mo)
	}
	body = r.body
	if len(body) == 0 {
		return e.last, body, false, nil
	}
	switch e.mode.GetRequestBodyMode() {
	case filterv3.ProcessingMode_NONE: // not inspected: forwarded as is
		return e.last, body, false, nil
	case filterv3.ProcessingMode_BUFFERED:
	default:
		return nil, nil, false, status.Errorf(codes.Internal, "request body mode %v is not driven", e.mode.GetRequestBodyMode())
	}
	resp, err = e.handle(ctx, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}})
	if err != nil {
		return nil, nil, false, err
	}
	if ir := resp.GetImmediateResponse(); ir != nil {
		return e.denial(ir, phaseRequestBody), nil, false, nil
	}
	br := resp.GetRequestBody()
	if br == nil {
		return nil, nil, false, unexpected("request body", resp)
	}
	e.allow(phaseRequestBody, br.GetResponse().GetHeaderMutation(), e.reqHeaders)
	if nb, ok := applyBody(body, br.GetResponse().GetBodyMutation()); ok {
		modified = !bytes.Equal(nb, body)
		body = nb
	}
	return e.last, body, modified, nil
}

// responseHeaders runs the response headers phase of a 200 answer of
// content type ct and sets how its body is read. A non-nil Decision is a
// denial.
func (e *exchange) responseHeaders(ctx context.Context, ct string) (*bulwarkv1.Decision, error) {
	if e.mode.GetResponseHeaderMode() == filterv3.ProcessingMode_SKIP {
		e.respMode = filterv3.ProcessingMode_NONE
		return nil, nil
	}
	h := map[string]string{":status": "200", "content-type": ct}
	resp, err := e.handle(ctx, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: extproc.EnvoyHeaders(h)}}})
	if err != nil {
		return nil, err
	}
	if ir := resp.GetImmediateResponse(); ir != nil {
		return e.denial(ir, phaseResponseHeaders), nil
	}
	hr := resp.GetResponseHeaders()
	if hr == nil {
		return nil, unexpected("response headers", resp)
	}
	e.allow(phaseResponseHeaders, hr.GetResponse().GetHeaderMutation(), e.rspHeaders)
	if mo := resp.GetModeOverride(); mo != nil {
		e.mode.ResponseBodyMode = mo.GetResponseBodyMode()
		e.mode.ResponseTrailerMode = mo.GetResponseTrailerMode()
	}
	e.respMode = e.mode.GetResponseBodyMode()
	return nil, nil
}

// responseChunk feeds the next piece of the answer and returns what the
// client receives now. A non-nil Decision is a denial of the whole answer
// (buffered); a stream the policy stopped sets e.ended instead, its error
// event in the output.
func (e *exchange) responseChunk(ctx context.Context, data []byte, last bool) ([]byte, *bulwarkv1.Decision, error) {
	switch e.respMode {
	case filterv3.ProcessingMode_NONE: // not inspected: passed as is
		return data, nil, nil
	case filterv3.ProcessingMode_BUFFERED:
		e.buffered = append(e.buffered, data...)
		if !last {
			return nil, nil, nil
		}
		whole := e.buffered
		e.buffered = nil
		resp, err := e.handle(ctx, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: whole, EndOfStream: true}}})
		if err != nil {
			return nil, nil, err
		}
		if ir := resp.GetImmediateResponse(); ir != nil {
			return nil, e.denial(ir, phaseResponseBody), nil
		}
		br := resp.GetResponseBody()
		if br == nil {
			return nil, nil, unexpected("response body", resp)
		}
		e.allow(phaseResponseBody, br.GetResponse().GetHeaderMutation(), e.rspHeaders)
		out, _ := applyBody(whole, br.GetResponse().GetBodyMutation())
		return out, nil, nil
	case filterv3.ProcessingMode_STREAMED:
		resp, err := e.handle(ctx, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: data, EndOfStream: last}}})
		if err != nil {
			return nil, nil, err
		}
		if ir := resp.GetImmediateResponse(); ir != nil {
			// Headers have gone to the client: Envoy would reset the stream.
			d := e.denial(ir, phaseResponseBodyChunk)
			d.HttpStatus = 0
			e.ended = true
			return nil, nil, nil
		}
		br := resp.GetResponseBody()
		if br == nil {
			return nil, nil, unexpected("response chunk", resp)
		}
		out, _ := applyBody(data, br.GetResponse().GetBodyMutation())
		if !e.ended {
			if cut, ok := e.x.Cut(); ok {
				e.ended = true
				id := cut.DecisionID
				if id == "" {
					id = e.decisionID
				}
				e.last = &bulwarkv1.Decision{Allowed: false, Reason: cut.Reason, Message: cut.Message, Phase: phaseResponseBodyChunk,
					DecisionId: id}
			}
		}
		return out, nil, nil
	}
	return nil, nil, status.Errorf(codes.Internal, "response body mode %v is not driven", e.respMode)
}

// allow records an allowing phase: the headers its decision set, and its id.
func (e *exchange) allow(phase string, m *extprocv3.HeaderMutation, into map[string]string) {
	for _, o := range m.GetSetHeaders() {
		k := strings.ToLower(o.GetHeader().GetKey())
		v := extproc.HeaderValue(o.GetHeader())
		switch k {
		case envoy.DecisionIDHeader:
			e.decisionID = v
		case "content-length", "content-type", "content-encoding":
		default:
			into[k] = v
		}
	}
	e.last = &bulwarkv1.Decision{Allowed: true, DecisionId: e.decisionID, Phase: phase, Headers: copyMap(into)}
}

// denial renders an immediate response as the Decision it carries.
func (e *exchange) denial(ir *extprocv3.ImmediateResponse, phase string) *bulwarkv1.Decision {
	d := &bulwarkv1.Decision{
		Allowed:    false,
		HttpStatus: int32(ir.GetStatus().GetCode()),
		Reason:     strings.TrimPrefix(ir.GetDetails(), "bulwark_"),
		Phase:      phase,
		ErrorBody:  toValidUTF8(ir.GetBody()),
		Headers:    map[string]string{},
	}
	for _, o := range ir.GetHeaders().GetSetHeaders() {
		k := strings.ToLower(o.GetHeader().GetKey())
		v := extproc.HeaderValue(o.GetHeader())
		switch k {
		case envoy.DecisionIDHeader:
			d.DecisionId = v
		case "content-type":
		default:
			d.Headers[k] = v
		}
	}
	d.Message = errorMessage(ir.GetBody())
	if d.DecisionId == "" {
		d.DecisionId = decisionIDIn(d.Message, "")
	}
	e.decisionID = d.DecisionId
	e.last = d
	return d
}

// errorMessage is the message of an error body in any API's shape.
func errorMessage(body []byte) string {
	var doc struct {
		Message string `json:"message"`
		Error   struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &doc) != nil {
		return ""
	}
	if doc.Error.Message != "" {
		return doc.Error.Message
	}
	return doc.Message
}

// decisionIDIn finds "(decision <id>)", which Bulwark's error messages end
// with; def when there is none.
func decisionIDIn(msg, def string) string {
	i := strings.LastIndex(msg, "(decision ")
	if i < 0 || !strings.HasSuffix(msg, ")") {
		return def
	}
	return msg[i+len("(decision ") : len(msg)-1]
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

// attributes are the connection attributes Envoy sends when its filter
// lists them in request_attributes: the verified peer identity and address.
func attributes(c caller) map[string]*structpb.Struct {
	f := map[string]*structpb.Value{}
	if c.peerPrincipal != "" {
		f[extproc.AttrPeerURISAN] = structpb.NewStringValue(c.peerPrincipal)
	}
	if c.peerAddress != "" {
		f[extproc.AttrSourceAddress] = structpb.NewStringValue(c.peerAddress)
	}
	if len(f) == 0 {
		return nil
	}
	return map[string]*structpb.Struct{extproc.AttributesNamespace: {Fields: f}}
}

// applyBody applies a body mutation as Envoy does.
func applyBody(body []byte, m *extprocv3.BodyMutation) ([]byte, bool) {
	switch x := m.GetMutation().(type) {
	case *extprocv3.BodyMutation_Body:
		return x.Body, true
	case *extprocv3.BodyMutation_ClearBody:
		if x.ClearBody {
			return nil, true
		}
	}
	return body, false
}

func cloneMode(m *filterv3.ProcessingMode) *filterv3.ProcessingMode {
	return &filterv3.ProcessingMode{
		RequestHeaderMode: m.GetRequestHeaderMode(), ResponseHeaderMode: m.GetResponseHeaderMode(),
		RequestBodyMode: m.GetRequestBodyMode(), ResponseBodyMode: m.GetResponseBodyMode(),
		RequestTrailerMode: m.GetRequestTrailerMode(), ResponseTrailerMode: m.GetResponseTrailerMode(),
	}
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
