package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/bulwark-ai/bulwark/internal/identity"
)

// caller is what a gRPC call says about who is asking, in the terms Envoy
// would use for an HTTP request.
type caller struct {
	// authorization and apiKey are the credential metadata, as the HTTP
	// headers of the same names.
	authorization, apiKey string
	// peerPrincipal is the verified mTLS client certificate's identity (URI
	// SAN, else DNS SAN, else subject), as Envoy's source.principal.
	peerPrincipal string
	// peerAddress is the client's IPv4 address and port.
	peerAddress string
	// tls is set when the connection is TLS.
	tls bool
	// authority is the :authority the client dialed.
	authority string
	// trace are the W3C and B3 trace headers, to join the caller's trace.
	trace map[string]string
	// requestID is the client's x-request-id, or a fresh one.
	requestID string
}

// traceHeaders are the propagation headers Bulwark reads (W3C, B3 single
// and multi), passed from metadata into the exchange's headers.
var traceHeaders = []string{"traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
	"x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"}

// callerOf reads the call's metadata and connection. x-forwarded-client-cert
// is never taken from metadata: a direct client could forge it.
func callerOf(ctx context.Context) caller {
	var c caller
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	c.authorization = first("authorization")
	c.apiKey = first("x-api-key")
	c.authority = first(":authority")
	c.requestID = first("x-request-id")
	if c.requestID == "" || len(c.requestID) > 128 {
		var b [16]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		c.requestID = hex.EncodeToString(b[:])
	}
	for _, k := range traceHeaders {
		if v := first(k); v != "" {
			if c.trace == nil {
				c.trace = map[string]string{}
			}
			c.trace[k] = v
		}
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ta, ok := p.Addr.(*net.TCPAddr); ok && ta.IP.To4() != nil {
			c.peerAddress = ta.String()
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			c.tls = true
			c.peerPrincipal = certPrincipal(ti)
		}
	}
	return c
}

// certPrincipal is the identity of a verified client certificate, in the
// order Envoy's source.principal uses: URI SAN, DNS SAN, subject.
func certPrincipal(ti credentials.TLSInfo) string {
	st := ti.State
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return ""
	}
	leaf := st.PeerCertificates[0]
	switch {
	case len(leaf.URIs) > 0:
		return leaf.URIs[0].String()
	case len(leaf.DNSNames) > 0:
		return leaf.DNSNames[0]
	}
	return leaf.Subject.String()
}

// credentials is what the identity stage reads of the call.
func (c caller) credentials() identity.Request {
	return identity.Request{Authorization: c.authorization, APIKey: c.apiKey, SourcePrincipal: c.peerPrincipal}
}
