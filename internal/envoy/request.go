package envoy

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// HTTPRequest describes a request the way a client sent it to Envoy. It exists
// for `bulwark check`, tests and benchmarks, which must play Envoy's part.
type HTTPRequest struct {
	Method  string
	Path    string // with query string
	Host    string
	Headers map[string]string
	Body    []byte
	// PackAsBytes sends the body in raw_body (Envoy's pack_as_bytes) rather than body.
	PackAsBytes bool
	// MaxBodyBytes mimics with_request_body.max_request_bytes with
	// allow_partial_message: only the first N bytes are sent and
	// x-envoy-auth-partial-body is set. 0 sends the whole body.
	MaxBodyBytes int
	// SourceAddress and SourcePrincipal fill attributes.source.
	SourceAddress   string
	SourcePrincipal string
}

// NewCheckRequest builds the CheckRequest Envoy's ext_authz filter would send
// for r: lower-cased headers including the HTTP/2 pseudo-headers, a request
// id, source and destination addresses, and the body per with_request_body.
func NewCheckRequest(r HTTPRequest) *authv3.CheckRequest {
	method := r.Method
	if method == "" {
		method = "GET"
	}
	path := r.Path
	if path == "" {
		path = "/"
	}
	host := r.Host
	if host == "" {
		host = "api.example.com"
	}
	id := requestID()
	headers := map[string]string{
		":authority":        host,
		":method":           method,
		":path":             path,
		":scheme":           "https",
		"x-forwarded-proto": "https",
		"x-request-id":      id,
	}
	for k, v := range r.Headers {
		headers[strings.ToLower(k)] = v
	}
	httpReq := &authv3.AttributeContext_HttpRequest{
		Id:       id,
		Method:   method,
		Headers:  headers,
		Path:     path,
		Host:     host,
		Scheme:   "https",
		Protocol: "HTTP/2",
	}
	if u, err := url.Parse(path); err == nil {
		httpReq.Query = u.RawQuery
		httpReq.Path = path
	}
	if len(r.Body) > 0 {
		body := r.Body
		headers["content-length"] = strconv.Itoa(len(body))
		httpReq.Size = int64(len(body))
		if r.MaxBodyBytes > 0 && len(body) > r.MaxBodyBytes {
			body = body[:r.MaxBodyBytes]
			headers["x-envoy-auth-partial-body"] = "true"
		} else {
			headers["x-envoy-auth-partial-body"] = "false"
		}
		if r.PackAsBytes {
			httpReq.RawBody = body
		} else {
			httpReq.Body = string(body)
		}
	}
	src := r.SourceAddress
	if src == "" {
		src = "10.0.0.7:51234"
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Address:   socketAddress(src),
			Principal: r.SourcePrincipal,
		},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress("10.0.0.2:8080")},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Now()),
			Http: httpReq,
		},
		ContextExtensions: map[string]string{},
	}}
}

func socketAddress(hostport string) *corev3.Address {
	host, portStr, _ := strings.Cut(hostport, ":")
	port, _ := strconv.ParseUint(portStr, 10, 16) // 0 when it is not a port number
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// HeadersCheckRequest shapes request headers (lower-cased names, repeated
// values joined with commas, pseudo-headers included) as ext_authz's
// AttributeContext, so that a request that did not come through ext_authz
// (an ext_proc exchange, a Guard API call) gives policies the same input.
// md is the dynamic metadata Envoy forwarded, source the peer (nil: none).
func HeadersCheckRequest(h map[string]string, md *corev3.Metadata, source *authv3.AttributeContext_Peer) *authv3.CheckRequest {
	path := h[":path"]
	httpReq := &authv3.AttributeContext_HttpRequest{
		Id:       h["x-request-id"],
		Method:   h[":method"],
		Headers:  h,
		Path:     path,
		Host:     h[":authority"],
		Scheme:   h[":scheme"],
		Protocol: "HTTP/2",
	}
	if _, q, ok := strings.Cut(path, "?"); ok {
		httpReq.Query = q
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:          source,
		Request:         &authv3.AttributeContext_Request{Http: httpReq},
		MetadataContext: md,
	}}
}

// Peer is attributes.source for a connection, as ext_authz names it:
// principal is the verified peer's certificate URI SAN (a SPIFFE ID under
// Istio) or subject; address is "host:port" (IPv6 hosts in brackets) or a
// bare host, whose port is then port. An empty address gives a peer
// without one.
func Peer(address string, port uint64, principal string) *authv3.AttributeContext_Peer {
	peer := &authv3.AttributeContext_Peer{Principal: principal}
	if address == "" {
		return peer
	}
	host := address
	if h, p, err := net.SplitHostPort(address); err == nil {
		host = h
		if n, err := strconv.ParseUint(p, 10, 16); err == nil {
			port = n
		}
	}
	peer.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}} // #nosec G115 -- at most 65535
	return peer
}
