package policy

import (
	"encoding/base64"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// ProtoValue converts a protobuf message to the ast.Value that protojson
// (with default options) followed by a JSON decode would produce: lowerCamel
// JSON names, 64-bit integers as strings, bytes as standard base64, enums by
// name, and the well-known types in their JSON forms. Building the value
// directly skips the marshal/parse round trip OPA-Envoy pays on every Check
// while keeping its input encoding, so its policies run unchanged.
//
// The one deliberate difference: an Any whose type is not linked into the
// binary becomes {"@type": url, "value": base64} where protojson would fail.
func ProtoValue(m proto.Message) ast.Value {
	if m == nil {
		return ast.NewObject()
	}
	return messageValue(m.ProtoReflect())
}

func messageValue(m protoreflect.Message) ast.Value {
	if !m.IsValid() {
		return ast.NewObject()
	}
	if v, ok := wellKnown(m); ok {
		return v
	}
	// Small messages (nearly all of Envoy's) build their pairs on the stack.
	var buf [12][2]*ast.Term
	terms := buf[:0]
	fields := m.Descriptor().Fields()
	for i, n := 0, fields.Len(); i < n; i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		terms = append(terms, [2]*ast.Term{fieldKey(fd), ast.NewTerm(fieldValue(fd, m.Get(fd)))})
	}
	return ast.NewObject(terms...)
}

func fieldValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) ast.Value {
	switch {
	case fd.IsMap():
		mv := v.Map()
		kvs := make([][2]*ast.Term, 0, mv.Len())
		valFD := fd.MapValue()
		mv.Range(func(k protoreflect.MapKey, e protoreflect.Value) bool {
			kvs = append(kvs, [2]*ast.Term{StringTerm(k.String()), ast.NewTerm(singular(valFD, e))})
			return true
		})
		return ast.NewObject(kvs...)
	case fd.IsList():
		l := v.List()
		elems := make([]*ast.Term, l.Len())
		for i := range elems {
			elems[i] = ast.NewTerm(singular(fd, l.Get(i)))
		}
		return ast.NewArray(elems...)
	default:
		return singular(fd, v)
	}
}

func singular(fd protoreflect.FieldDescriptor, v protoreflect.Value) ast.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return ast.Boolean(v.Bool())
	case protoreflect.StringKind:
		return StringTerm(v.String()).Value
	case protoreflect.BytesKind:
		return ast.String(base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return ast.Number(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return ast.Number(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.String(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.String(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.FloatKind:
		return floatValue(v.Float(), 32)
	case protoreflect.DoubleKind:
		return floatValue(v.Float(), 64)
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == "google.protobuf.NullValue" {
			return ast.Null{}
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return ast.String(ev.Name())
		}
		return ast.Number(strconv.FormatInt(int64(v.Enum()), 10))
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageValue(v.Message())
	default:
		return ast.Null{}
	}
}

func floatValue(f float64, bits int) ast.Value {
	switch {
	case math.IsNaN(f):
		return ast.String("NaN")
	case math.IsInf(f, 1):
		return ast.String("Infinity")
	case math.IsInf(f, -1):
		return ast.String("-Infinity")
	}
	return ast.Number(strconv.FormatFloat(f, 'g', -1, bits))
}

// wellKnown renders the google.protobuf types that protojson special-cases.
func wellKnown(m protoreflect.Message) (ast.Value, bool) {
	d := m.Descriptor()
	if d.ParentFile() == nil || d.ParentFile().Package() != "google.protobuf" {
		return nil, false
	}
	fields := d.Fields()
	switch d.Name() {
	case "Struct":
		return fieldValue(fields.ByNumber(1), m.Get(fields.ByNumber(1))), true
	case "ListValue":
		return fieldValue(fields.ByNumber(1), m.Get(fields.ByNumber(1))), true
	case "Value":
		od := m.WhichOneof(d.Oneofs().ByName("kind"))
		if od == nil {
			return ast.Null{}, true
		}
		return singular(od, m.Get(od)), true
	case "BoolValue", "StringValue", "BytesValue", "Int32Value", "UInt32Value",
		"Int64Value", "UInt64Value", "FloatValue", "DoubleValue":
		fd := fields.ByNumber(1)
		return singular(fd, m.Get(fd)), true
	case "Timestamp":
		sec := m.Get(fields.ByNumber(1)).Int()
		nanos := m.Get(fields.ByNumber(2)).Int()
		var b [40]byte
		out := time.Unix(sec, nanos).UTC().AppendFormat(b[:0], "2006-01-02T15:04:05")
		out = append(out, fracNanos(int32(nanos))...) // #nosec G115 -- Timestamp.nanos is an int32 field
		out = append(out, 'Z')
		return ast.String(out), true
	case "Duration":
		sec := m.Get(fields.ByNumber(1)).Int()
		nanos := int32(m.Get(fields.ByNumber(2)).Int()) // #nosec G115 -- Duration.nanos is an int32 field
		sign := ""
		if sec < 0 || nanos < 0 {
			sign = "-"
			if sec < 0 {
				sec = -sec
			}
			if nanos < 0 {
				nanos = -nanos
			}
		}
		return ast.String(sign + strconv.FormatInt(sec, 10) + fracNanos(nanos) + "s"), true
	case "FieldMask":
		l := m.Get(fields.ByNumber(1)).List()
		parts := make([]string, l.Len())
		for i := range parts {
			parts[i] = lowerCamel(l.Get(i).String())
		}
		return ast.String(strings.Join(parts, ",")), true
	case "Empty":
		return ast.NewObject(), true
	case "Any":
		return anyValue(m), true
	}
	return nil, false
}

// fracNanos formats nanoseconds the way protojson does: 0, 3, 6 or 9 digits.
func fracNanos(n int32) string {
	if n == 0 {
		return ""
	}
	digits := 9
	switch {
	case n%1_000_000 == 0:
		n, digits = n/1_000_000, 3
	case n%1_000 == 0:
		n, digits = n/1_000, 6
	}
	var b [10]byte
	b[0] = '.'
	for i := digits; i >= 1; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[:digits+1])
}

func lowerCamel(s string) string {
	var b strings.Builder
	up := false
	for _, r := range s {
		if r == '_' {
			up = true
			continue
		}
		if up && 'a' <= r && r <= 'z' {
			r -= 'a' - 'A'
		}
		up = false
		b.WriteRune(r)
	}
	return b.String()
}

func anyValue(m protoreflect.Message) ast.Value {
	fields := m.Descriptor().Fields()
	url := m.Get(fields.ByNumber(1)).String()
	raw := m.Get(fields.ByNumber(2)).Bytes()
	typeTerm := [2]*ast.Term{ast.StringTerm("@type"), ast.StringTerm(url)}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if err != nil {
		return ast.NewObject(typeTerm, [2]*ast.Term{ast.StringTerm("value"), ast.StringTerm(base64.StdEncoding.EncodeToString(raw))})
	}
	inner := mt.New()
	if err := proto.Unmarshal(raw, inner.Interface()); err != nil {
		return ast.NewObject(typeTerm, [2]*ast.Term{ast.StringTerm("value"), ast.StringTerm(base64.StdEncoding.EncodeToString(raw))})
	}
	v := messageValue(inner)
	if obj, ok := v.(ast.Object); ok {
		if _, special := wellKnown(inner); !special {
			obj.Insert(typeTerm[0], typeTerm[1])
			return obj
		}
	}
	// Well-known types inside Any are wrapped as {"@type": ..., "value": <json>}.
	return ast.NewObject(typeTerm, [2]*ast.Term{ast.StringTerm("value"), ast.NewTerm(v)})
}

// fieldKeys memoises the key term of each field (its JSON name). Terms are
// never mutated once built, so sharing them across inputs is safe, as OPA's
// own interned terms are; it saves two allocations per field per request.
var fieldKeys sync.Map // protoreflect.FieldDescriptor -> *ast.Term

func fieldKey(fd protoreflect.FieldDescriptor) *ast.Term {
	if t, ok := fieldKeys.Load(fd); ok {
		return t.(*ast.Term)
	}
	t := ast.StringTerm(fd.JSONName())
	fieldKeys.Store(fd, t)
	return t
}

// commonStrings are header names and attribute values that appear in almost
// every request; their terms are built once.
var commonStrings = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	for _, s := range []string{
		":authority", ":method", ":path", ":scheme", "accept", "accept-encoding", "accept-language",
		"authorization", "cache-control", "connection", "content-length", "content-type", "cookie",
		"host", "origin", "referer", "user-agent", "x-api-key", "x-b3-sampled", "x-b3-spanid",
		"x-b3-traceid", "x-b3-parentspanid", "traceparent", "tracestate", "x-envoy-auth-partial-body",
		"x-envoy-expected-rq-timeout-ms", "x-envoy-internal", "x-forwarded-client-cert", "x-forwarded-for",
		"x-forwarded-proto", "x-request-id", "x-envoy-attempt-count", "x-envoy-decorator-operation",
		"x-envoy-peer-metadata", "x-envoy-peer-metadata-id", "true", "false", "",
		"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "http", "https",
		"HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3", "application/json", "*/*",
	} {
		m[s] = ast.StringTerm(s)
	}
	return m
}()

// StringTerm is ast.StringTerm that reuses one shared term for strings found
// in almost every request (common header names, methods, schemes).
func StringTerm(s string) *ast.Term {
	if t, ok := commonStrings[s]; ok {
		return t
	}
	return ast.StringTerm(s)
}
