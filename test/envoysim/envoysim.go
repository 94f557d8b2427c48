// Package envoysim plays Envoy's ext_proc filter against a real ext_proc
// server, for tests and load tools: Envoy cannot be installed here, so the
// tests must behave as it does. It sends the messages in Envoy's order,
// honours mode_override (when allowed, as allow_mode_override does), expects
// exactly one response of the matching type per message, applies header and
// body mutations the way Envoy does (refusing the ones Envoy refuses), and
// reports what the upstream and the client would have seen.
//
// The upstream (the LLM) is a function, so tests decide exactly how its
// answer is chunked.
package envoysim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/bulwark-ai/bulwark/internal/extproc"
)

// Request is what the client sent to Envoy.
type Request struct {
	Method  string
	Path    string
	Headers map[string]string
	Body    []byte
	// Metadata is the dynamic metadata Envoy forwards (ext_authz's, when
	// forwarding_namespaces lists it).
	Metadata *corev3.Metadata
	// Attributes are the connection attributes the filter's
	// request_attributes list, sent with the request headers.
	Attributes map[string]*structpb.Value
}

// Forwarded is what the upstream received.
type Forwarded struct {
	Headers map[string]string
	Body    []byte
}

// Upstream is the model's answer: Chunks are the body as the upstream's
// network delivers it (Envoy's chunk boundaries).
type Upstream struct {
	Status  int
	Headers map[string]string
	Chunks  [][]byte
}

// Result is what happened.
type Result struct {
	// Immediate is set when Bulwark answered itself (immediate_response).
	Immediate *extprocv3.ImmediateResponse
	// UpstreamCalled and Upstream describe the request the model received.
	UpstreamCalled bool
	Upstream       Forwarded
	// Status, Headers and Body are what the client received. Reset is set
	// when an immediate response came after response headers had gone to
	// the client: Envoy then resets the stream and the body is cut.
	Status  int
	Headers map[string]string
	Body    []byte
	Reset   bool
	// Modes are the body modes in force after the header responses.
	RequestBodyMode, ResponseBodyMode filterv3.ProcessingMode_BodySendMode
	// DynamicMetadata is what the server's answers left in the stream's
	// dynamic metadata, per namespace (only those the filter receives),
	// merged the way Envoy merges it: later top-level keys replace earlier.
	DynamicMetadata map[string]*structpb.Struct
	// TimeoutOverrides counts the override_message_timeout messages the
	// server sent (each before the answer it extended).
	TimeoutOverrides int
}

// Filter is the ext_proc filter's configuration that matters here.
type Filter struct {
	// Mode is processing_mode; zero value: Envoy's defaults (headers SEND,
	// bodies NONE, trailers SKIP).
	Mode *filterv3.ProcessingMode
	// AllowModeOverride mirrors allow_mode_override.
	AllowModeOverride bool
	// ReceivingNamespaces mirrors metadata_options.receiving_namespaces:
	// the dynamic metadata namespaces kept from the server's answers.
	ReceivingNamespaces []string
	// MaxMessageTimeout mirrors max_message_timeout: zero disables
	// override_message_timeout, so a server sending one is in error.
	MaxMessageTimeout time.Duration
}

// DefaultFilter is the configuration deploy/envoy/envoy.yaml uses.
var DefaultFilter = Filter{AllowModeOverride: true}

// Run plays one exchange. upstream is called once the request phases let the
// request through.
func Run(ctx context.Context, client extprocv3.ExternalProcessorClient, f Filter, req Request, upstream func(Forwarded) Upstream) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Process(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	defer stream.CloseSend()
	mode := &filterv3.ProcessingMode{}
	if f.Mode != nil {
		mode = cloneMode(f.Mode)
	}
	// Envoy encodes its configured body modes (protocol_config) in the
	// stream's first message only, whichever message that is.
	pc := &extprocv3.ProtocolConfiguration{RequestBodyMode: mode.RequestBodyMode, ResponseBodyMode: mode.ResponseBodyMode}
	res := &Result{}
	send := func(r *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
		r.ProtocolConfig, pc = pc, nil
		resp, err := exchange(stream, r)
		if err == nil && resp.GetOverrideMessageTimeout() != nil {
			// Envoy restarts its timer and ignores the rest of this message;
			// the answer follows. At most once per message.
			if err := f.checkOverride(resp); err != nil {
				return nil, err
			}
			res.TimeoutOverrides++
			if resp, err = receive(stream); err == nil && resp.GetOverrideMessageTimeout() != nil {
				return nil, errors.New("override_message_timeout sent twice for one message")
			}
		}
		if err == nil {
			f.keepMetadata(res, resp.GetDynamicMetadata())
		}
		return resp, err
	}
	headers := map[string]string{
		":method": req.Method, ":path": req.Path, ":authority": "api.example.com", ":scheme": "https",
		"x-request-id": "envoysim-1", "x-forwarded-proto": "https",
	}
	for k, v := range req.Headers {
		headers[strings.ToLower(k)] = v
	}
	if len(req.Body) > 0 {
		if _, ok := headers["content-length"]; !ok {
			headers["content-length"] = strconv.Itoa(len(req.Body))
		}
	}
	body := req.Body

	// Request headers (SEND unless configured SKIP).
	if mode.RequestHeaderMode != filterv3.ProcessingMode_SKIP {
		resp, err := send(&extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
				Headers: extproc.EnvoyHeaders(headers), EndOfStream: len(body) == 0}},
			MetadataContext: req.Metadata,
			Attributes:      attributes(req.Attributes),
		})
		if err != nil {
			return nil, err
		}
		if ir := resp.GetImmediateResponse(); ir != nil {
			return immediate(res, ir), nil
		}
		hr := resp.GetRequestHeaders()
		if hr == nil {
			return nil, fmt.Errorf("request headers answered with %T", resp.GetResponse())
		}
		if err := applyHeaders(headers, hr.GetResponse().GetHeaderMutation()); err != nil {
			return nil, err
		}
		if resp.GetModeOverride() != nil && f.AllowModeOverride && !fullDuplex(mode) {
			mode = cloneMode(resp.GetModeOverride())
		}
	}
	res.RequestBodyMode = mode.RequestBodyMode

	// Request body.
	if len(body) > 0 {
		switch mode.RequestBodyMode {
		case filterv3.ProcessingMode_BUFFERED:
			resp, err := send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
				RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}})
			if err != nil {
				return nil, err
			}
			if ir := resp.GetImmediateResponse(); ir != nil {
				return immediate(res, ir), nil
			}
			br := resp.GetRequestBody()
			if br == nil {
				return nil, fmt.Errorf("request body answered with %T", resp.GetResponse())
			}
			nb, mutated := applyBody(body, br.GetResponse().GetBodyMutation())
			if err := applyHeaders(headers, br.GetResponse().GetHeaderMutation()); err != nil {
				return nil, err
			}
			if mutated {
				if cl, ok := headers["content-length"]; ok && cl != strconv.Itoa(len(nb)) {
					// Envoy answers 500: the body no longer matches its length.
					return nil, fmt.Errorf("body mutated to %d bytes but content-length is %s", len(nb), cl)
				}
			}
			body = nb
		case filterv3.ProcessingMode_NONE:
		default:
			return nil, fmt.Errorf("envoysim: request body mode %v not simulated", mode.RequestBodyMode)
		}
	}

	// Upstream.
	res.UpstreamCalled = true
	res.Upstream = Forwarded{Headers: copyMap(headers), Body: body}
	up := upstream(res.Upstream)
	rh := map[string]string{":status": strconv.Itoa(up.Status)}
	for k, v := range up.Headers {
		rh[strings.ToLower(k)] = v
	}
	var whole []byte
	for _, c := range up.Chunks {
		whole = append(whole, c...)
	}
	hasBody := len(whole) > 0
	if mode.ResponseHeaderMode != filterv3.ProcessingMode_SKIP {
		resp, err := send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
			ResponseHeaders: &extprocv3.HttpHeaders{Headers: extproc.EnvoyHeaders(rh), EndOfStream: !hasBody}}})
		if err != nil {
			return nil, err
		}
		if ir := resp.GetImmediateResponse(); ir != nil {
			return immediate(res, ir), nil
		}
		hr := resp.GetResponseHeaders()
		if hr == nil {
			return nil, fmt.Errorf("response headers answered with %T", resp.GetResponse())
		}
		if err := applyHeaders(rh, hr.GetResponse().GetHeaderMutation()); err != nil {
			return nil, err
		}
		if resp.GetModeOverride() != nil && f.AllowModeOverride && !fullDuplex(mode) {
			m := resp.GetModeOverride()
			mode.ResponseBodyMode = m.GetResponseBodyMode()
			mode.ResponseTrailerMode = m.GetResponseTrailerMode()
		}
	}
	res.ResponseBodyMode = mode.ResponseBodyMode
	res.Status, _ = strconv.Atoi(rh[":status"])

	switch {
	case !hasBody:
	case mode.ResponseBodyMode == filterv3.ProcessingMode_BUFFERED:
		resp, err := send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: whole, EndOfStream: true}}})
		if err != nil {
			return nil, err
		}
		if ir := resp.GetImmediateResponse(); ir != nil {
			return immediate(res, ir), nil // headers were held: the status can still change
		}
		br := resp.GetResponseBody()
		if br == nil {
			return nil, fmt.Errorf("response body answered with %T", resp.GetResponse())
		}
		nb, mutated := applyBody(whole, br.GetResponse().GetBodyMutation())
		if err := applyHeaders(rh, br.GetResponse().GetHeaderMutation()); err != nil {
			return nil, err
		}
		if mutated {
			if cl, ok := rh["content-length"]; ok && cl != strconv.Itoa(len(nb)) {
				return nil, fmt.Errorf("response body mutated to %d bytes but content-length is %s", len(nb), cl)
			}
		}
		res.Body = nb
	case mode.ResponseBodyMode == filterv3.ProcessingMode_STREAMED:
		delete(rh, "content-length") // Envoy removes it in STREAMED mode
		for i, c := range up.Chunks {
			resp, err := send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
				ResponseBody: &extprocv3.HttpBody{Body: c, EndOfStream: i == len(up.Chunks)-1}}})
			if err != nil {
				return nil, err
			}
			if resp.GetImmediateResponse() != nil {
				res.Reset = true // headers already went to the client
				break
			}
			br := resp.GetResponseBody()
			if br == nil {
				return nil, fmt.Errorf("response chunk answered with %T", resp.GetResponse())
			}
			nb, _ := applyBody(c, br.GetResponse().GetBodyMutation())
			res.Body = append(res.Body, nb...)
		}
	case mode.ResponseBodyMode == filterv3.ProcessingMode_NONE:
		res.Body = whole
	default:
		return nil, fmt.Errorf("envoysim: response body mode %v not simulated", mode.ResponseBodyMode)
	}
	res.Headers = rh
	return res, nil
}

// checkOverride refuses an override_message_timeout Envoy would not take.
func (f Filter) checkOverride(resp *extprocv3.ProcessingResponse) error {
	d := resp.GetOverrideMessageTimeout().AsDuration()
	switch {
	case f.MaxMessageTimeout <= 0:
		return errors.New("override_message_timeout sent, but the filter has no max_message_timeout")
	case d < time.Millisecond || d > f.MaxMessageTimeout:
		return fmt.Errorf("override_message_timeout %v outside [1ms, %v]", d, f.MaxMessageTimeout)
	}
	return nil
}

// exchange sends one message and reads exactly one answer.
func exchange(stream extprocv3.ExternalProcessor_ProcessClient, req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	if err := stream.Send(req); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	return receive(stream)
}

// receive reads one answer.
func receive(stream extprocv3.ExternalProcessor_ProcessClient) (*extprocv3.ProcessingResponse, error) {
	resp, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("server closed the stream without answering")
	}
	if err != nil {
		return nil, fmt.Errorf("recv: %w", err)
	}
	return resp, nil
}

func immediate(res *Result, ir *extprocv3.ImmediateResponse) *Result {
	res.Immediate = ir
	res.Status = int(ir.GetStatus().GetCode())
	res.Body = ir.GetBody()
	res.Headers = map[string]string{}
	for _, h := range ir.GetHeaders().GetSetHeaders() {
		res.Headers[strings.ToLower(h.GetHeader().GetKey())] = extproc.HeaderValue(h.GetHeader())
	}
	return res
}

// applyHeaders applies a header mutation as Envoy does, refusing what Envoy
// refuses to change.
func applyHeaders(h map[string]string, m *extprocv3.HeaderMutation) error {
	for _, o := range m.GetSetHeaders() {
		k := strings.ToLower(o.GetHeader().GetKey())
		if err := mutable(k); err != nil {
			return err
		}
		v := extproc.HeaderValue(o.GetHeader())
		if o.GetAppendAction() == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD && h[k] != "" {
			h[k] += "," + v
		} else {
			h[k] = v
		}
	}
	for _, k := range m.GetRemoveHeaders() {
		k = strings.ToLower(k)
		if err := mutable(k); err != nil {
			return err
		}
		delete(h, k)
	}
	return nil
}

func mutable(k string) error {
	if strings.HasPrefix(k, "x-envoy-") || k == ":method" || k == ":authority" || k == ":scheme" || k == "host" {
		return fmt.Errorf("header %s cannot be mutated", k)
	}
	return nil
}

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

// keepMetadata merges an answer's dynamic metadata into res, for the
// namespaces the filter receives.
func (f Filter) keepMetadata(res *Result, md *structpb.Struct) {
	for ns, v := range md.GetFields() {
		if !slices.Contains(f.ReceivingNamespaces, ns) || v.GetStructValue() == nil {
			continue
		}
		if res.DynamicMetadata == nil {
			res.DynamicMetadata = map[string]*structpb.Struct{}
		}
		kept := res.DynamicMetadata[ns]
		if kept == nil {
			kept = &structpb.Struct{Fields: map[string]*structpb.Value{}}
			res.DynamicMetadata[ns] = kept
		}
		for k, x := range v.GetStructValue().GetFields() {
			kept.Fields[k] = x
		}
	}
}

func attributes(f map[string]*structpb.Value) map[string]*structpb.Struct {
	if len(f) == 0 {
		return nil
	}
	return map[string]*structpb.Struct{extproc.AttributesNamespace: {Fields: f}}
}

// fullDuplex: Envoy does not support mode_override when a body mode is
// configured FULL_DUPLEX_STREAMED.
func fullDuplex(m *filterv3.ProcessingMode) bool {
	return m.GetRequestBodyMode() == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED ||
		m.GetResponseBodyMode() == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
}

func cloneMode(m *filterv3.ProcessingMode) *filterv3.ProcessingMode {
	return &filterv3.ProcessingMode{
		RequestHeaderMode: m.GetRequestHeaderMode(), ResponseHeaderMode: m.GetResponseHeaderMode(),
		RequestBodyMode: m.GetRequestBodyMode(), ResponseBodyMode: m.GetResponseBodyMode(),
		RequestTrailerMode: m.GetRequestTrailerMode(), ResponseTrailerMode: m.GetResponseTrailerMode(),
	}
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Split cuts b at the given offsets (ascending, in range), the way a network
// delivers a body in chunks.
func Split(b []byte, at ...int) [][]byte {
	var out [][]byte
	prev := 0
	for _, i := range at {
		if i <= prev || i >= len(b) {
			continue
		}
		out = append(out, b[prev:i])
		prev = i
	}
	return append(out, b[prev:])
}
