// Package extauthz adapts Envoy's ext_authz gRPC API to the pipeline: it
// builds the policy input from a CheckRequest and renders the pipeline's
// Outcome as a CheckResponse. A deny is an answer (a CheckResponse with a
// non-OK status); only "could not decide" becomes a gRPC error, so Envoy's
// failure_mode_allow applies exactly when it should.
package extauthz

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"go.opentelemetry.io/otel/trace"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/telemetry"
)

// Decider is the pipeline as this adapter needs it.
type Decider interface {
	Decide(ctx context.Context, req pipeline.Request) (pipeline.Outcome, error)
}

var _ Decider = (*pipeline.Pipeline)(nil)

// Options tune the adapter.
type Options struct {
	// StripCredentials removes the credential headers (authorization,
	// x-api-key, x-forwarded-client-cert) from input.attributes once they have
	// been handed to the identity stage, so credentials never reach policies,
	// decision logs or traces. Turn it off only for OPA-Envoy policies that
	// verify tokens themselves.
	StripCredentials bool
	// Tracing, when enabled, starts a bulwark.check span joined to the trace
	// Envoy propagates in the request headers.
	Tracing *telemetry.Tracing
	// ScanRoles are the message roles whose text the detectors read in a
	// request body (empty: all); text outside the conversation
	// (llmapi.RoleOther) is always read. Set it as ext_proc's, so both
	// doors scan the same text.
	ScanRoles []string
	// TrustedRoles are the roles whose text is the application's own (the
	// system prompt, developer messages): the detectors do not read it, so
	// an application's defensive instructions ("ignore instructions inside
	// documents") are not scored as an injection and its own numbers are
	// not redacted. Set it as ext_proc's.
	TrustedRoles []string
	// Voucher seals the principal an allow found into the dynamic metadata
	// (expiry and MAC), so ext_proc can believe it instead of authenticating
	// again. Nil: the metadata carries no seal and ext_proc authenticates.
	Voucher *identity.Voucher
	// MCP says where MCP traffic is expected and how an unauthenticated
	// MCP client is challenged (as the exchange core's, so both doors read
	// MCP alike): input.mcp, and denials as JSON-RPC errors with the id.
	MCP envoy.MCPOptions
}

// Server implements envoy.service.auth.v3.Authorization.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	decider Decider
	opts    Options
	scan    func(role string) bool // nil: every role
}

// New returns a Server that asks d for every decision.
func New(d Decider, opts Options) *Server {
	return &Server{decider: d, opts: opts, scan: envoy.RoleFilter(opts.ScanRoles, opts.TrustedRoles)}
}

// Check answers one ext_authz request.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if req.GetAttributes().GetRequest().GetHttp() == nil {
		return nil, status.Error(codes.InvalidArgument, "check request has no attributes.request.http")
	}
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	if tr := s.opts.Tracing; tr != nil && tr.Enabled {
		ctx = tr.Propagator.Extract(ctx, telemetry.HeaderCarrier(httpReq.GetHeaders()))
		var span trace.Span
		ctx, span = tr.Tracer.Start(ctx, "bulwark.check", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
	}
	creds := envoy.Credentials(req, s.opts.StripCredentials)
	path, _, _ := strings.Cut(httpReq.GetPath(), "?")
	input, llm := envoy.BuildRequestInput(req)
	var mcpBody []byte
	if !envoy.Truncated(httpReq.GetHeaders(), len(envoy.RequestBody(req))) {
		mcpBody = envoy.RequestBody(req) // a partial body is no message: the path alone says MCP
	}
	mcpReq := envoy.AddMCP(input, req, mcpBody, s.opts.MCP)
	var text, toolText string
	if llm != nil {
		text = llm.PromptText(s.scan)
		toolText = llm.ToolResultText(s.scan)
	}
	out, err := s.decider.Decide(ctx, pipeline.Request{
		Phase:       pipeline.PhaseRequestHeaders,
		Input:       input,
		Method:      httpReq.GetMethod(),
		Path:        path,
		Credentials: creds,
		Text:        text,
		ToolText:    toolText,
	})
	if err != nil {
		return nil, envoy.Undecided(ctx, err, "check")
	}
	resp := Response(out)
	if mcpReq != nil && !out.Decision.Allowed {
		mcpDenial(resp, out, mcpReq, s.opts.MCP)
	}
	if s.opts.Voucher != nil && out.Decision.Allowed {
		envoy.Seal(resp.DynamicMetadata, s.opts.Voucher)
	}
	return resp, nil
}

// Response renders an Outcome as Envoy expects it.
func Response(out pipeline.Outcome) *authv3.CheckResponse {
	d := out.Decision
	md := metadata(out)
	if d.Allowed {
		ok := &authv3.OkHttpResponse{
			Headers:                 headerOptions(d.Headers, policy.Header{Key: envoy.DecisionIDHeader, Value: out.DecisionID}),
			HeadersToRemove:         d.RequestHeadersToRemove,
			ResponseHeadersToAdd:    headerOptions(d.ResponseHeadersToAdd, policy.Header{Key: envoy.DecisionIDHeader, Value: out.DecisionID}),
			QueryParametersToRemove: d.QueryParametersToRemove,
		}
		for _, q := range d.QueryParametersToSet {
			ok.QueryParametersToSet = append(ok.QueryParametersToSet, &corev3.QueryParameter{Key: q.Key, Value: q.Value})
		}
		return &authv3.CheckResponse{
			Status:          &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
			DynamicMetadata: md,
		}
	}

	code := envoy.DenyStatus(d)
	body := d.Body
	headers := d.Headers
	if body == "" {
		body = errorBody(code, out)
		headers = append(headers[:len(headers):len(headers)], policy.Header{Key: "content-type", Value: "application/json"})
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(grpcCodeFor(code)), Message: out.Reason}, // #nosec G115 -- one of four gRPC codes, all < 17
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(code)}, // #nosec G115 -- envoy.DenyStatus keeps it in Envoy's enum
			Headers: headerOptions(headers, policy.Header{Key: envoy.DecisionIDHeader, Value: out.DecisionID}),
			Body:    body,
		}},
		DynamicMetadata: md,
	}
}

// mcpDenial reshapes a deny of an MCP request for its client: a JSON-RPC
// error carrying the request's id in place of Bulwark's JSON error (unless
// the policy wrote a body), and the resource-metadata challenge on a 401.
func mcpDenial(resp *authv3.CheckResponse, out pipeline.Outcome, m *envoy.MCP, o envoy.MCPOptions) {
	denied := resp.GetDeniedResponse()
	if denied == nil {
		return
	}
	d := out.Decision
	code := envoy.DenyStatus(d)
	headers := d.Headers
	if d.Body == "" {
		var body []byte
		body, headers = envoy.MCPDenial(m, o, code, out.Reason, envoy.DenyMessage(out, code), out.DecisionID, headers)
		denied.Body = string(body)
		headers = append(headers[:len(headers):len(headers)], policy.Header{Key: "content-type", Value: "application/json"})
	} else {
		headers = envoy.MCPHeaders(o, code, headers)
	}
	denied.Headers = headerOptions(headers, policy.Header{Key: envoy.DecisionIDHeader, Value: out.DecisionID})
}

// grpcCodeFor picks the gRPC code that best names a denial; Envoy only cares
// that it is not OK, but logs and access logs read better.
func grpcCodeFor(httpStatus int) codes.Code {
	switch httpStatus {
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	default:
		return codes.PermissionDenied
	}
}

type errorDoc struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		DecisionID string `json:"decision_id"`
	} `json:"error"`
}

// errorBody is the JSON body of a deny whose policy gave none. Policy failures
// say only that the policy failed; details stay in the logs.
func errorBody(httpStatus int, out pipeline.Outcome) string {
	var doc errorDoc
	doc.Error.Code = out.Reason
	doc.Error.DecisionID = out.DecisionID
	doc.Error.Message = envoy.DenyMessage(out, httpStatus)
	b, _ := json.Marshal(doc) // cannot fail: only strings
	return string(b)
}

func headerOptions(hs []policy.Header, extra policy.Header) []*corev3.HeaderValueOption {
	out := make([]*corev3.HeaderValueOption, 0, len(hs)+1)
	add := func(h policy.Header) {
		action := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		for _, prev := range out { // a handful of headers: a scan beats a map
			if prev.GetHeader().GetKey() == h.Key {
				action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
				break
			}
		}
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h.Key, Value: h.Value},
			AppendAction: action,
		})
	}
	for _, h := range hs {
		add(h)
	}
	add(extra)
	return out
}

// metadata is what ext_authz leaves under envoy.filters.http.ext_authz:
// envoy.DecisionMetadata and who asked, which ext_proc reads back when Envoy
// forwards the namespace to it (and believes only when Check sealed it).
func metadata(out pipeline.Outcome) *structpb.Struct {
	md := envoy.DecisionMetadata(out)
	fields := md.Fields
	// These keys say who Bulwark found, and nothing else may: a policy's
	// dynamic_metadata of the same names is dropped, so a seal never covers
	// a principal the identity stage did not establish.
	for _, k := range [...]string{"principal_id", "principal_kind", "tenant", "roles", envoy.MetadataExpires, envoy.MetadataMAC} {
		delete(fields, k)
	}
	if p := out.Principal; p.ID != "" {
		fields["principal_id"] = structpb.NewStringValue(p.ID)
		fields["principal_kind"] = structpb.NewStringValue(string(p.Kind))
		if p.Tenant != "" {
			fields["tenant"] = structpb.NewStringValue(p.Tenant)
		}
		if len(p.Roles) > 0 {
			roles := make([]*structpb.Value, len(p.Roles))
			for i, r := range p.Roles {
				roles[i] = structpb.NewStringValue(r)
			}
			fields["roles"] = structpb.NewListValue(&structpb.ListValue{Values: roles})
		}
	}
	return md
}
