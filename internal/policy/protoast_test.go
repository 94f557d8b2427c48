package policy

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// viaProtojson is what OPA-Envoy does: protojson, then JSON into OPA's AST.
func viaProtojson(t testing.TB, m proto.Message) ast.Value {
	t.Helper()
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatalf("protojson: %v", err)
	}
	v, err := ast.ValueFromReader(bytesReader(b))
	if err != nil {
		t.Fatalf("parse protojson output: %v", err)
	}
	return v
}

func sampleCheckRequests() map[string]*authv3.CheckRequest {
	md, _ := structpb.NewStruct(map[string]any{
		"jwt": map[string]any{"sub": "alice", "scopes": []any{"read", "write"}, "n": 3.5, "ok": true, "none": nil},
	})
	anyTS, _ := anypb.New(timestamppb.New(time.Unix(5, 0)))
	anyWrap, _ := anypb.New(wrapperspb.String("inner"))
	anyMsg, _ := anypb.New(&corev3.SocketAddress{Address: "1.2.3.4", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 9}})
	return map[string]*authv3.CheckRequest{
		"empty": {},
		"typical": {Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 5555}}}},
				Principal:   "spiffe://cluster.local/ns/default/sa/client",
				Labels:      map[string]string{"app": "web"},
				Certificate: "-----BEGIN CERTIFICATE-----",
			},
			Request: &authv3.AttributeContext_Request{
				Time: &timestamppb.Timestamp{Seconds: 1700000000, Nanos: 120000000},
				Http: &authv3.AttributeContext_HttpRequest{
					Id: "42", Method: "POST", Path: "/v1/chat?x=1", Host: "h", Scheme: "https",
					Headers:  map[string]string{":path": "/v1/chat?x=1", "content-type": "application/json", "x": ""},
					Size:     -1,
					Protocol: "HTTP/1.1",
					Body:     `{"a":1}`,
					RawBody:  []byte{0, 1, 2, 0xff},
					HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
						{Key: "a", Value: "b"}, {Key: "raw", RawValue: []byte("rv")}}},
				},
			},
			ContextExtensions: map[string]string{"route": "llm"},
			MetadataContext: &corev3.Metadata{
				FilterMetadata:      map[string]*structpb.Struct{"envoy.filters.http.jwt_authn": md},
				TypedFilterMetadata: map[string]*anypb.Any{"ts": anyTS, "wrap": anyWrap, "msg": anyMsg},
			},
			TlsSession: &authv3.AttributeContext_TLSSession{Sni: "api.example.com"},
		}},
		"nanos": {Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Time: &timestamppb.Timestamp{Seconds: 1, Nanos: 1}}}},
		"micros": {Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Time: &timestamppb.Timestamp{Seconds: -62135596800, Nanos: 123456000}}}},
	}
}

func TestProtoValueMatchesProtojson(t *testing.T) {
	for name, req := range sampleCheckRequests() {
		t.Run(name, func(t *testing.T) {
			want := viaProtojson(t, req)
			got := ProtoValue(req)
			if ast.Compare(got, want) != 0 {
				t.Fatalf("ProtoValue differs from protojson\n got: %v\nwant: %v", got, want)
			}
		})
	}
}

func TestProtoValueWellKnown(t *testing.T) {
	cases := map[string]proto.Message{
		"duration":     durationpb.New(-1500 * time.Millisecond),
		"duration_big": durationpb.New(3*time.Hour + 7*time.Nanosecond),
		"int64":        wrapperspb.Int64(-9007199254740993),
		"uint64":       wrapperspb.UInt64(18446744073709551615),
		"float":        wrapperspb.Float(0.1),
		"double":       wrapperspb.Double(1e300),
		"bytes":        wrapperspb.Bytes([]byte("hi?")),
		"list":         must(structpb.NewList([]any{1.0, "a", nil, false})),
		"value_null":   structpb.NewNullValue(),
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			want := viaProtojson(t, m)
			if got := ProtoValue(m); ast.Compare(got, want) != 0 {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// FuzzProtoValue checks, on arbitrary wire bytes, that ProtoValue never panics
// and agrees with protojson wherever protojson can encode the message.
func FuzzProtoValue(f *testing.F) {
	for _, req := range sampleCheckRequests() {
		b, _ := proto.Marshal(req)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req authv3.CheckRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			return
		}
		got := ProtoValue(&req)
		js, err := protojson.Marshal(&req)
		if err != nil {
			return // e.g. an Any of an unknown type: ProtoValue still produced a value
		}
		want, err := ast.ValueFromReader(bytesReader(js))
		if err != nil {
			t.Fatalf("protojson output does not parse: %v", err)
		}
		if ast.Compare(got, want) != 0 {
			t.Fatalf("mismatch\n got: %v\nwant: %v", got, want)
		}
	})
}
