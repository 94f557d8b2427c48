package extproc

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/exchange"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
)

// AuthzNamespace is where Envoy keeps ext_authz's dynamic metadata; the
// ext_proc filter forwards it when listed in
// metadata_options.forwarding_namespaces.
const AuthzNamespace = envoy.AuthzNamespace

// stream is what the door keeps of one ext_proc stream beside its
// exchange: the body being accumulated from several chunks, how the answer's
// body is read, and the metadata of the message being answered.
type stream struct {
	s    *Server
	sess *exchange.Session

	pending     []byte // request or response body accumulated across streamed chunks
	pendingOver bool   // the accumulated body outgrew MaxBodyBytes: bytes are no longer kept
	pendingSize int    // the bytes Envoy sent of the body being accumulated, kept or not
	// respMode is how the answer's body is read (exchange.BodyWhole or
	// BodyStreamed); BodySkip until response headers chose.
	respMode exchange.BodyMode
	// reqHeaders and respHeaders: those messages came, so a body may follow.
	reqHeaders, respHeaders bool
	// ended: an immediate response was sent; the exchange is over.
	ended bool
	// metadata is what the last decision made for the message being
	// answered tells Envoy, and metaPhase that decision's phase; it goes
	// out with the answer. A message's decisions all share one phase.
	metadata  *structpb.Struct
	metaPhase pipeline.Phase
}

func (s *Server) newStream() *stream {
	return &stream{s: s, sess: s.core.Start("extproc")}
}

// handle answers one message with exactly one response (nil in
// observability mode, where Envoy expects none).
func (x *stream) handle(ctx context.Context, req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	if x.ended {
		return nil, &protocolError{msg: "message after the exchange ended with an immediate response"}
	}
	if pc := req.GetProtocolConfig(); pc != nil { // only on the stream's first message
		if err := x.s.checkProtocol(pc); err != nil {
			return nil, err
		}
	}
	var resp *extprocv3.ProcessingResponse
	var err error
	switch r := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		resp, err = x.requestHeaders(ctx, req, r.RequestHeaders)
	case *extprocv3.ProcessingRequest_RequestBody:
		resp, err = x.requestBody(ctx, r.RequestBody)
	case *extprocv3.ProcessingRequest_RequestTrailers:
		resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		resp, err = x.responseHeaders(ctx, r.ResponseHeaders)
	case *extprocv3.ProcessingRequest_ResponseBody:
		resp, err = x.responseBody(ctx, r.ResponseBody)
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
			ResponseTrailers: &extprocv3.TrailersResponse{}}}
	default:
		return nil, &protocolError{msg: "processing request carries no message"}
	}
	if err != nil {
		return nil, err
	}
	md := x.metadata
	x.metadata = nil
	if req.GetObservabilityMode() {
		return nil, nil
	}
	if resp.GetImmediateResponse() != nil {
		x.ended = true // Envoy sends nothing more; nothing more is held
		x.dropPending()
	}
	if md != nil {
		resp.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{
			MetadataNamespace: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
				string(x.metaPhase): structpb.NewStructValue(md)}})}}
	}
	return resp, nil
}

// note keeps the dynamic metadata of the step's last decision, for the answer.
func (x *stream) note(res exchange.Result) {
	if !res.Decided {
		return
	}
	x.metadata, x.metaPhase = envoy.DecisionMetadata(res.Outcome), res.Phase
	if id := res.Outcome.Principal.ID; id != "" {
		x.metadata.Fields["principal_id"] = structpb.NewStringValue(id)
	}
}

// requestHeaders starts the exchange: the principal ext_authz established
// when its sealed metadata verifies, else the exchange decides on the
// headers; the answer sets the body modes.
func (x *stream) requestHeaders(ctx context.Context, req *extprocv3.ProcessingRequest, h *extprocv3.HttpHeaders) (*extprocv3.ProcessingResponse, error) {
	headers := headerMap(h.GetHeaders())
	var source *authv3.AttributeContext_Peer
	// Envoy sends the connection's attributes only when the filter lists
	// them in request_attributes.
	if a := req.GetAttributes()[AttributesNamespace]; a != nil {
		source = connectionPeer(a.GetFields())
	}
	head := exchange.Head{Check: envoy.HeadersCheckRequest(headers, req.GetMetadataContext(), source), EndOfStream: h.GetEndOfStream()}
	if p, id, ok := x.authzPrincipal(req.GetMetadataContext(), headers[":path"]); ok {
		head.Vouched, head.VouchedDecisionID = &p, id
	}
	res, err := x.sess.RequestHeaders(ctx, head)
	if err != nil {
		return nil, err
	}
	x.reqHeaders = true
	x.note(res)
	if res.Deny != nil {
		return immediate(res.Deny), nil
	}
	// Response headers always come back to Bulwark: an answer carries
	// text to filter whether or not the request had a body (a GET of a
	// stored response or a file's content).
	mode := &filterv3.ProcessingMode{
		RequestHeaderMode:   filterv3.ProcessingMode_SEND,
		ResponseHeaderMode:  filterv3.ProcessingMode_SEND,
		RequestBodyMode:     filterv3.ProcessingMode_NONE,
		ResponseBodyMode:    filterv3.ProcessingMode_NONE,
		RequestTrailerMode:  filterv3.ProcessingMode_SKIP,
		ResponseTrailerMode: filterv3.ProcessingMode_SKIP,
	}
	if res.ReadBody == exchange.BodyWhole {
		mode.RequestBodyMode = filterv3.ProcessingMode_BUFFERED
	}
	return &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{HeaderMutation: headerMutation(res)},
		}},
		ModeOverride: mode,
	}, nil
}

// requestBody hands the whole request body to the exchange.
func (x *stream) requestBody(ctx context.Context, b *extprocv3.HttpBody) (*extprocv3.ProcessingResponse, error) {
	if !x.reqHeaders {
		return nil, &protocolError{msg: "request body before request headers"}
	}
	body, size, over, complete, resp := x.accumulate(b, true)
	if !complete {
		return resp, nil
	}
	streamed := resp != nil // earlier chunks were held back: the answer must carry the whole body
	var res exchange.Result
	if over {
		res = x.sess.TooLarge(false, size)
	} else {
		var err error
		if res, err = x.sess.RequestBody(ctx, body); err != nil {
			return nil, err
		}
	}
	x.note(res)
	if res.Deny != nil {
		return immediate(res.Deny), nil
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: bodyCommon(res, body, streamed)}}}, nil
}

// responseHeaders asks the exchange how to read the answer.
func (x *stream) responseHeaders(ctx context.Context, h *extprocv3.HttpHeaders) (*extprocv3.ProcessingResponse, error) {
	rh := headerMap(h.GetHeaders())
	code, _ := strconv.Atoi(rh[":status"])
	res, err := x.sess.ResponseHeaders(ctx, code, rh, h.GetEndOfStream())
	if err != nil {
		return nil, err
	}
	x.respHeaders = true
	x.note(res)
	if res.Deny != nil {
		return immediate(res.Deny), nil
	}
	x.respMode = res.ReadBody
	var mode *filterv3.ProcessingMode
	if res.ReadBody != exchange.BodySkip {
		mode = &filterv3.ProcessingMode{
			RequestHeaderMode:   filterv3.ProcessingMode_SEND,
			ResponseHeaderMode:  filterv3.ProcessingMode_SEND,
			RequestBodyMode:     filterv3.ProcessingMode_NONE,
			ResponseBodyMode:    filterv3.ProcessingMode_BUFFERED,
			RequestTrailerMode:  filterv3.ProcessingMode_SKIP,
			ResponseTrailerMode: filterv3.ProcessingMode_SKIP,
		}
		if res.ReadBody == exchange.BodyStreamed {
			mode.ResponseBodyMode = filterv3.ProcessingMode_STREAMED
		}
	}
	return &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{HeaderMutation: headerMutation(res)}}},
		ModeOverride: mode,
	}, nil
}

// responseBody hands the answer to the exchange: each chunk of a streamed
// one, or the whole of a buffered one.
func (x *stream) responseBody(ctx context.Context, b *extprocv3.HttpBody) (*extprocv3.ProcessingResponse, error) {
	if !x.respHeaders {
		return nil, &protocolError{msg: "response body before response headers"}
	}
	if x.respMode == exchange.BodyStreamed {
		res, err := x.sess.ResponseChunk(ctx, b.GetBody(), b.GetEndOfStream())
		if err != nil {
			return nil, err
		}
		x.note(res)
		body := &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: res.Body}}
		if len(res.Body) == 0 {
			body.Mutation = &extprocv3.BodyMutation_ClearBody{ClearBody: true}
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: body}}}}, nil
	}
	body, size, over, complete, held := x.accumulate(b, false)
	if !complete {
		return held, nil
	}
	streamed := held != nil
	var res exchange.Result
	if over {
		res = x.sess.TooLarge(true, size)
	} else {
		var err error
		if res, err = x.sess.ResponseBody(ctx, body); err != nil {
			return nil, err
		}
	}
	x.note(res)
	if res.Deny != nil {
		return immediate(res.Deny), nil
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: bodyCommon(res, body, streamed)}}}, nil
}

// bodyCommon is the answer to a body the exchange decided on whole. When
// Envoy sent it in chunks (streamed) the earlier ones were held back, so the
// answer carries the whole body, edited or not, and no header mutation
// (Envoy applies those only in BUFFERED mode). In BUFFERED mode Envoy keeps
// the client's content-length: an edited body comes with the right one.
func bodyCommon(res exchange.Result, body []byte, streamed bool) *extprocv3.CommonResponse {
	common := &extprocv3.CommonResponse{}
	switch {
	case res.BodyChanged:
		common.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: res.Body}}
		if !streamed {
			res.SetHeaders = append(res.SetHeaders, exchange.Header{Key: "content-length", Value: strconv.Itoa(len(res.Body))})
		}
	case streamed:
		common.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: body}}
	}
	if !streamed {
		common.HeaderMutation = headerMutation(res)
	}
	return common
}

// immediate renders a denial as Envoy's local reply.
func immediate(d *exchange.Denial) *extprocv3.ProcessingResponse {
	headers := &extprocv3.HeaderMutation{}
	for _, h := range d.Headers {
		headers.SetHeaders = append(headers.SetHeaders, setHeader(h.Key, h.Value))
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)}, // #nosec G115 -- envoy.DenyStatus keeps it in Envoy's enum
			Headers: headers,
			Body:    d.Body,
			Details: "bulwark_" + d.Reason,
		}}}
}

// headerMutation is a Result's header edits, nil when there are none.
func headerMutation(res exchange.Result) *extprocv3.HeaderMutation {
	if len(res.SetHeaders) == 0 && len(res.RemoveHeaders) == 0 {
		return nil
	}
	m := &extprocv3.HeaderMutation{RemoveHeaders: res.RemoveHeaders}
	if len(res.SetHeaders) > 0 {
		m.SetHeaders = make([]*corev3.HeaderValueOption, 0, len(res.SetHeaders))
	}
	for _, h := range res.SetHeaders {
		m.SetHeaders = append(m.SetHeaders, setHeader(h.Key, h.Value))
	}
	return m
}

// accumulate collects a body sent in several chunks (STREAMED or
// BUFFERED_PARTIAL configured on the filter): each chunk is held back
// (cleared) and the whole body is answered for at end of stream. It returns
// the body once complete, and size, the bytes Envoy sent of it; resp is the answer for a held chunk, or, with
// complete, non-nil when chunks were held. over reports a body larger than
// MaxBodyBytes, whose bytes are dropped as soon as it outgrows the bound.
// A chunk the process-wide MaxBufferedBytes budget has no room for ends
// the exchange: resp is then a 503 and complete false.
func (x *stream) accumulate(b *extprocv3.HttpBody, request bool) (body []byte, size int, over, complete bool, resp *extprocv3.ProcessingResponse) {
	limit := x.s.core.MaxBodyBytes()
	held := x.pending != nil || x.pendingOver
	if !held && b.GetEndOfStream() {
		return b.GetBody(), len(b.GetBody()), len(b.GetBody()) > limit, true, nil
	}
	x.pendingSize += len(b.GetBody())
	need := len(x.pending) + len(b.GetBody())
	switch {
	case x.pendingOver || need > limit:
		x.dropPending()
		x.pendingOver = true
	case !x.grow(need, limit):
		x.dropPending()
		x.pendingSize = 0
		return nil, 0, false, false, immediate(x.sess.Refuse(http.StatusServiceUnavailable, "body_buffer_exhausted",
			"the gateway is holding as many request and response bodies as it may; retry shortly").Deny)
	default:
		x.pending = append(x.pending, b.GetBody()...)
	}
	if b.GetEndOfStream() {
		body, size, over = x.pending, x.pendingSize, x.pendingOver
		x.dropPending() // the body is decided on now, like one sent whole
		x.pendingOver, x.pendingSize = false, 0
		return body, size, over, true, &extprocv3.ProcessingResponse{}
	}
	clear := &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
		BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_ClearBody{ClearBody: true}}}}
	if request {
		return nil, 0, false, false, &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: clear}}
	}
	return nil, 0, false, false, &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: clear}}
}

// grow makes room for need bytes in x.pending (at least doubling, at most
// limit), taking the added capacity from the Server's budget first. It
// reports false, changing nothing, when the budget has no room. Every byte
// of capacity x.pending has is counted in s.buffered until dropPending
// gives it back.
func (x *stream) grow(need, limit int) bool {
	have := cap(x.pending)
	if need <= have && x.pending != nil {
		return true
	}
	size := min(max(need, 2*have), limit)
	if !x.s.reserveBuffer(int64(size - have)) {
		return false
	}
	p := make([]byte, len(x.pending), size)
	copy(p, x.pending)
	x.pending = p
	return true
}

// dropPending lets go of the accumulated body and gives its capacity back
// to the budget.
func (x *stream) dropPending() {
	if n := cap(x.pending); n > 0 {
		x.s.releaseBuffer(int64(n))
	}
	x.pending = nil
}

// reserveBuffer takes n bytes from the budget if they fit in it.
func (s *Server) reserveBuffer(n int64) bool {
	for {
		used := s.buffered.Load()
		if used+n > s.opts.MaxBufferedBytes {
			return false
		}
		if s.buffered.CompareAndSwap(used, used+n) {
			s.metrics.bufferedBytes(n)
			return true
		}
	}
}

func (s *Server) releaseBuffer(n int64) {
	s.buffered.Add(-n)
	s.metrics.bufferedBytes(-n)
}

// authzPrincipal is the principal ext_authz established for this request,
// when Envoy forwarded its decision and the seal on it verifies (MAC under
// the deployment's key, not expired). Otherwise ok is false and the
// exchange authenticates the request's own credentials, exactly as when no
// ext_authz ran: the metadata reaches Bulwark on a stream that anyone able
// to reach the Envoy listener can write.
func (x *stream) authzPrincipal(md *corev3.Metadata, path string) (p identity.Principal, id string, ok bool) {
	st := md.GetFilterMetadata()[AuthzNamespace]
	if st == nil {
		return p, "", false
	}
	p, id, result := envoy.VouchedPrincipal(st, x.s.opts.Voucher)
	x.s.metrics.authzMetadata(result)
	switch result {
	case envoy.VouchVerified:
		return p, id, true
	case envoy.VouchAbsent:
	default:
		path, _, _ = strings.Cut(path, "?")
		x.s.logger.Debug("ext_authz metadata not believed; authenticating the request's credentials", "result", result, "path", path)
	}
	return identity.Principal{}, "", false
}

// MetadataNamespace is where ext_proc's decisions appear in Envoy's dynamic
// metadata, one object per phase (request_headers, request_body, ...) with
// decision_id, reason, principal_id and the policy's dynamic_metadata.
// Envoy keeps it only when the filter's
// metadata_options.receiving_namespaces lists it; access logs then read
// e.g. %DYNAMIC_METADATA(bulwark:request_body:decision_id)%.
const MetadataNamespace = "bulwark"

// The connection attributes Bulwark reads, keyed by the name Envoy's
// ext_proc filter sends them under when its request_attributes list them
// (Envoy's attribute vocabulary; there is no peer "principal" attribute).
const (
	AttributesNamespace = "envoy.filters.http.ext_proc"
	AttrSourceAddress   = "source.address"
	AttrSourcePort      = "source.port"
	AttrPeerURISAN      = "connection.uri_san_peer_certificate"
	AttrPeerSubject     = "connection.subject_peer_certificate"
)

// connectionPeer builds ext_authz's attributes.source from Envoy's
// connection attributes, so an mTLS peer is the same principal through
// either door: ext_authz names the peer by its certificate's URI SAN (a
// SPIFFE ID under Istio), or by its subject when it has none.
func connectionPeer(f map[string]*structpb.Value) *authv3.AttributeContext_Peer {
	principal := f[AttrPeerURISAN].GetStringValue()
	if principal == "" {
		principal = f[AttrPeerSubject].GetStringValue()
	}
	return envoy.Peer(f[AttrSourceAddress].GetStringValue(), uint64(f[AttrSourcePort].GetNumberValue()), principal)
}

// headerMap lower-cases names and joins repeated headers with commas, as
// ext_authz presents them. Envoy sends values in raw_value by default.
func headerMap(hm *corev3.HeaderMap) map[string]string {
	hs := hm.GetHeaders()
	m := make(map[string]string, len(hs))
	for _, h := range hs {
		v := HeaderValue(h)
		k := strings.ToLower(h.GetKey())
		if prev, ok := m[k]; ok {
			m[k] = prev + "," + v
		} else {
			m[k] = v
		}
	}
	return m
}

// HeaderValue is a header's value whichever field carries it: Envoy sends
// raw_value by default, value on older versions.
func HeaderValue(h *corev3.HeaderValue) string {
	if len(h.GetRawValue()) > 0 {
		return string(h.GetRawValue())
	}
	return h.GetValue()
}

// EnvoyHeaders encodes headers as Envoy sends them by default (values in
// raw_value), for callers that play Envoy's part: tests and load tools.
func EnvoyHeaders(h map[string]string) *corev3.HeaderMap {
	hm := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(h))}
	for k, v := range h {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	return hm
}

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}
