package envoy

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/bulwark-ai/bulwark/internal/policy"
)

func attributeSamples() map[string]*authv3.AttributeContext {
	md, _ := structpb.NewStruct(map[string]any{"sub": "alice", "n": 2.0})
	full := NewCheckRequest(HTTPRequest{Method: "POST", Path: "/v1/x?y=1", SourcePrincipal: "spiffe://a/b",
		Headers: map[string]string{"content-type": "application/json", "x-custom": "v"},
		Body:    []byte(`{"a":1}`), PackAsBytes: true}).GetAttributes()
	full.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"jwt": md}}
	full.RouteMetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"r": md}}
	full.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "example.com"}
	full.ContextExtensions = map[string]string{"k": "v"}
	full.Source.Labels = map[string]string{"app": "web"}
	full.Source.Service = "web"
	full.Source.Certificate = "PEM"
	full.Request.Http.Size = -1
	full.Request.Http.Fragment = "frag"
	full.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "a", RawValue: []byte("b")}}}
	pipe := &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{
		Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/tmp/s", Mode: 0o600}}}}}
	named := &authv3.AttributeContext{Destination: &authv3.AttributeContext_Peer{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Protocol: corev3.SocketAddress_UDP, Address: "::1",
			PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: "http"}}}}}}
	zeroPort := &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}}}}
	return map[string]*authv3.AttributeContext{
		"envoy-like": NewCheckRequest(HTTPRequest{Method: "GET", Path: "/"}).GetAttributes(),
		"full":       full,
		"pipe":       pipe,
		"named port": named,
		"zero port":  zeroPort,
		"empty":      {},
		"empty http": {Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{}}},
	}
}

func TestAttributesMatchProtoValue(t *testing.T) {
	for name, a := range attributeSamples() {
		t.Run(name, func(t *testing.T) {
			got, want := attributesValue(a), policy.ProtoValue(a)
			if ast.Compare(got, want) != 0 {
				t.Fatalf("fast path differs\n got: %v\nwant: %v", got, want)
			}
			// And both match protojson, which is what OPA-Envoy feeds its policies.
			js, err := protojson.Marshal(a)
			if err != nil {
				t.Fatal(err)
			}
			pj := ast.MustParseTerm(string(js)).Value
			if len(js) == 0 || string(js) == "{}" {
				pj = ast.NewObject()
			}
			if ast.Compare(got, pj) != 0 {
				t.Fatalf("differs from protojson\n got: %v\nwant: %v", got, pj)
			}
		})
	}
}

func FuzzAttributesValue(f *testing.F) {
	for _, a := range attributeSamples() {
		b, _ := proto.Marshal(a)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var a authv3.AttributeContext
		if err := proto.Unmarshal(b, &a); err != nil {
			return
		}
		if got, want := attributesValue(&a), policy.ProtoValue(&a); ast.Compare(got, want) != 0 {
			t.Fatalf("fast path differs\n got: %v\nwant: %v", got, want)
		}
	})
}
