package envoy

import (
	"encoding/base64"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/policy"
)

// Attribute keys: the protojson (lowerCamel) names of AttributeContext fields.
var (
	kSource               = ast.StringTerm("source")
	kDestination          = ast.StringTerm("destination")
	kRequest              = ast.StringTerm("request")
	kContextExtensions    = ast.StringTerm("contextExtensions")
	kMetadataContext      = ast.StringTerm("metadataContext")
	kRouteMetadataContext = ast.StringTerm("routeMetadataContext")
	kTLSSession           = ast.StringTerm("tlsSession")
	kAddress              = ast.StringTerm("address")
	kService              = ast.StringTerm("service")
	kLabels               = ast.StringTerm("labels")
	kPrincipal            = ast.StringTerm("principal")
	kCertificate          = ast.StringTerm("certificate")
	kSocketAddress        = ast.StringTerm("socketAddress")
	kPortValue            = ast.StringTerm("portValue")
	kTime                 = ast.StringTerm("time")
	kHTTP                 = ast.StringTerm("http")
	kID                   = ast.StringTerm("id")
	kMethod               = ast.StringTerm("method")
	kHeaders              = ast.StringTerm("headers")
	kHeaderMap            = ast.StringTerm("headerMap")
	kPath                 = ast.StringTerm("path")
	kHost                 = ast.StringTerm("host")
	kScheme               = ast.StringTerm("scheme")
	kQuery                = ast.StringTerm("query")
	kFragment             = ast.StringTerm("fragment")
	kSize                 = ast.StringTerm("size")
	kProtocol             = ast.StringTerm("protocol")
	kBody                 = ast.StringTerm("body")
	kRawBody              = ast.StringTerm("rawBody")
)

// attributesValue renders an AttributeContext exactly as policy.ProtoValue
// (and so protojson) would, reading the Go structs directly for the fields
// Envoy fills on every request and handing the rare ones (metadata, TLS
// session, non-socket addresses, header_map) to the generic converter.
// Reflection cost more than a fifth of the server's CPU per Check; the
// equivalence is pinned by TestAttributesMatchProtoValue and its fuzz target.
func attributesValue(a *authv3.AttributeContext) ast.Value {
	if a == nil {
		return ast.NewObject()
	}
	var buf [8][2]*ast.Term
	kv := buf[:0]
	if a.Source != nil {
		kv = append(kv, [2]*ast.Term{kSource, ast.NewTerm(peerValue(a.Source))})
	}
	if a.Destination != nil {
		kv = append(kv, [2]*ast.Term{kDestination, ast.NewTerm(peerValue(a.Destination))})
	}
	if a.Request != nil {
		kv = append(kv, [2]*ast.Term{kRequest, ast.NewTerm(requestValue(a.Request))})
	}
	if len(a.ContextExtensions) > 0 {
		kv = append(kv, [2]*ast.Term{kContextExtensions, ast.NewTerm(stringMap(a.ContextExtensions))})
	}
	if a.MetadataContext != nil {
		kv = append(kv, [2]*ast.Term{kMetadataContext, ast.NewTerm(policy.ProtoValue(a.MetadataContext))})
	}
	if a.RouteMetadataContext != nil {
		kv = append(kv, [2]*ast.Term{kRouteMetadataContext, ast.NewTerm(policy.ProtoValue(a.RouteMetadataContext))})
	}
	if a.TlsSession != nil {
		kv = append(kv, [2]*ast.Term{kTLSSession, ast.NewTerm(policy.ProtoValue(a.TlsSession))})
	}
	return ast.NewObject(kv...)
}

func peerValue(p *authv3.AttributeContext_Peer) ast.Value {
	var buf [5][2]*ast.Term
	kv := buf[:0]
	if p.Address != nil {
		kv = append(kv, [2]*ast.Term{kAddress, ast.NewTerm(addressValue(p.Address))})
	}
	if p.Service != "" {
		kv = append(kv, [2]*ast.Term{kService, ast.StringTerm(p.Service)})
	}
	if len(p.Labels) > 0 {
		kv = append(kv, [2]*ast.Term{kLabels, ast.NewTerm(stringMap(p.Labels))})
	}
	if p.Principal != "" {
		kv = append(kv, [2]*ast.Term{kPrincipal, ast.StringTerm(p.Principal)})
	}
	if p.Certificate != "" {
		kv = append(kv, [2]*ast.Term{kCertificate, ast.StringTerm(p.Certificate)})
	}
	return ast.NewObject(kv...)
}

func addressValue(a *corev3.Address) ast.Value {
	sa := a.GetSocketAddress()
	pv, isPort := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
	if sa == nil || !isPort || sa.Protocol != corev3.SocketAddress_TCP || sa.ResolverName != "" ||
		sa.Ipv4Compat || sa.NetworkNamespaceFilepath != "" {
		return policy.ProtoValue(a) // pipes, internal addresses, named ports, UDP, ...
	}
	var buf [2][2]*ast.Term
	kv := buf[:0]
	if sa.Address != "" {
		kv = append(kv, [2]*ast.Term{kAddress, ast.StringTerm(sa.Address)})
	}
	kv = append(kv, [2]*ast.Term{kPortValue, ast.UIntNumberTerm(uint64(pv.PortValue))})
	return ast.NewObject([2]*ast.Term{kSocketAddress, ast.NewTerm(ast.NewObject(kv...))})
}

func requestValue(r *authv3.AttributeContext_Request) ast.Value {
	var buf [2][2]*ast.Term
	kv := buf[:0]
	if r.Time != nil {
		kv = append(kv, [2]*ast.Term{kTime, ast.NewTerm(policy.ProtoValue(r.Time))})
	}
	if r.Http != nil {
		kv = append(kv, [2]*ast.Term{kHTTP, ast.NewTerm(httpValue(r.Http))})
	}
	return ast.NewObject(kv...)
}

func httpValue(h *authv3.AttributeContext_HttpRequest) ast.Value {
	var buf [13][2]*ast.Term
	kv := buf[:0]
	str := func(k *ast.Term, v string) {
		if v != "" {
			kv = append(kv, [2]*ast.Term{k, policy.StringTerm(v)})
		}
	}
	str(kID, h.Id)
	str(kMethod, h.Method)
	if len(h.Headers) > 0 {
		kv = append(kv, [2]*ast.Term{kHeaders, ast.NewTerm(stringMap(h.Headers))})
	}
	if h.HeaderMap != nil {
		kv = append(kv, [2]*ast.Term{kHeaderMap, ast.NewTerm(policy.ProtoValue(h.HeaderMap))})
	}
	str(kPath, h.Path)
	str(kHost, h.Host)
	str(kScheme, h.Scheme)
	str(kQuery, h.Query)
	str(kFragment, h.Fragment)
	if h.Size != 0 {
		kv = append(kv, [2]*ast.Term{kSize, ast.StringTerm(strconv.FormatInt(h.Size, 10))}) // int64: a string in protojson
	}
	str(kProtocol, h.Protocol)
	str(kBody, h.Body)
	if len(h.RawBody) > 0 {
		kv = append(kv, [2]*ast.Term{kRawBody, ast.StringTerm(base64.StdEncoding.EncodeToString(h.RawBody))})
	}
	return ast.NewObject(kv...)
}

func stringMap(m map[string]string) ast.Value {
	kv := make([][2]*ast.Term, 0, len(m))
	for k, v := range m {
		kv = append(kv, [2]*ast.Term{policy.StringTerm(k), policy.StringTerm(v)})
	}
	return ast.NewObject(kv...)
}
