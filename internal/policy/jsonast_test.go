package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// parseJSONReference is the former parseJSON: encoding/json into any, then
// ast.InterfaceToValue. The direct decoder must give the same result and
// reject the same inputs.
func parseJSONReference(body []byte) (ast.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return nil, fmt.Errorf("invalid JSON body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("invalid JSON body: trailing data after the first value")
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		return nil, fmt.Errorf("invalid JSON body: %w", err)
	}
	return v, nil
}

// sameValue reports how got differs from want: beyond ast.Compare, the Go
// type of every value must match, numbers must keep their literal text and
// objects their size.
func sameValue(want, got ast.Value) error {
	if ast.Compare(want, got) != 0 {
		return fmt.Errorf("value %v, want %v", got, want)
	}
	return sameShape(want, got)
}

// sameShape is the structural part of sameValue; it leaves comparing whole
// subtrees to the single ast.Compare above, so deep documents stay linear.
func sameShape(want, got ast.Value) error {
	if reflect.TypeOf(want) != reflect.TypeOf(got) {
		return fmt.Errorf("type %T, want %T (value %v, want %v)", got, want, got, want)
	}
	switch w := want.(type) {
	case ast.Number:
		if string(w) != string(got.(ast.Number)) {
			return fmt.Errorf("number text %q, want %q", got, w)
		}
	case *ast.Array:
		g := got.(*ast.Array)
		if w.Len() != g.Len() {
			return fmt.Errorf("array length %d, want %d", g.Len(), w.Len())
		}
		for i := range w.Len() {
			if err := sameShape(w.Elem(i).Value, g.Elem(i).Value); err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
		}
	case ast.Object:
		g := got.(ast.Object)
		if w.Len() != g.Len() {
			return fmt.Errorf("object size %d, want %d", g.Len(), w.Len())
		}
		for _, k := range g.Keys() {
			if _, ok := k.Value.(ast.String); !ok {
				return fmt.Errorf("key %v is a %T", k, k.Value)
			}
		}
		for _, k := range w.Keys() {
			gv := g.Get(k)
			if gv == nil {
				return fmt.Errorf("missing key %v", k)
			}
			if err := sameShape(w.Get(k).Value, gv.Value); err != nil {
				return fmt.Errorf("[%v]: %w", k, err)
			}
		}
	}
	return nil
}

// checkAgainstReference decodes body both ways and reports any difference.
func checkAgainstReference(t *testing.T, body []byte) (ast.Value, error) {
	t.Helper()
	want, wantErr := parseJSONReference(body)
	got, gotErr := parseJSON(body)
	switch {
	case (wantErr == nil) != (gotErr == nil):
		t.Fatalf("body %q: err = %v, reference err = %v", body, gotErr, wantErr)
	case gotErr != nil:
		if !strings.HasPrefix(gotErr.Error(), "invalid JSON body: ") {
			t.Fatalf("body %q: error %q lacks the invalid JSON body prefix", body, gotErr)
		}
		if got != nil {
			t.Fatalf("body %q: value %v with error %v", body, got, gotErr)
		}
	default:
		if got == nil {
			t.Fatalf("body %q: nil value without error", body)
		}
		if err := sameValue(want, got); err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
	}
	return got, gotErr
}

func TestParseJSONMatchesReference(t *testing.T) {
	deep := func(n int, open, inner, close string) string {
		return strings.Repeat(open, n) + inner + strings.Repeat(close, n)
	}
	cases := []struct {
		name, body string
		wantErr    bool
		want       string // if set, the expected value as Rego
	}{
		{name: "chat", body: `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}`},
		{name: "scalars", body: `[null, true, false, "", 0, -1, 512, 513, -2, 1.5, -0, 0.0, 1e3, 1E+2, 1.0e-00, 12345678901234567890]`},
		{name: "number text kept", body: `[1.0, 1e0, 10E-1, -0.0, 100]`},
		{name: "interned ints", body: `[-1, 0, 1, 9, 10, 99, 100, 511, 512, 513, -2, -10, 1000]`},
		{name: "zero-padded int", body: `[0512]`, wantErr: true},
		{name: "huge exponent", body: `1e1000000000`, wantErr: true},
		{name: "large exponent kept", body: `[1e308, 1e-400, 123456789e-5]`},
		{name: "whitespace around", body: " \t\r\n{ \"a\" : [ 1 , 2 ] } \n\t\r "},
		{name: "only whitespace", body: " \n", wantErr: true},
		{name: "nbsp is not whitespace", body: "1\u00a0", wantErr: true},
		{name: "bom", body: "\ufeff{}", wantErr: true},
		{name: "trailing value", body: `{} {}`, wantErr: true},
		{name: "trailing number", body: `1 2`, wantErr: true},
		{name: "leading zero", body: `01`, wantErr: true},
		{name: "trailing bracket", body: `[1]]`, wantErr: true},
		{name: "trailing NUL", body: "1\x00", wantErr: true},
		{name: "trailing comma array", body: `[1,]`, wantErr: true},
		{name: "trailing comma object", body: `{"a":1,}`, wantErr: true},
		{name: "missing colon", body: `{"a" 1}`, wantErr: true},
		{name: "unquoted key", body: `{a:1}`, wantErr: true},
		{name: "single quotes", body: `['a']`, wantErr: true},
		{name: "truncated object", body: `{"a":`, wantErr: true},
		{name: "truncated string", body: `"abc`, wantErr: true},
		{name: "truncated escape", body: `"\u12`, wantErr: true},
		{name: "truncated literal", body: `tru`, wantErr: true},
		{name: "bad literal", body: `nul1`, wantErr: true},
		{name: "literal then garbage", body: `nullx`, wantErr: true},
		{name: "bad numbers", body: `[-]`, wantErr: true},
		{name: "dot without digits", body: `1.`, wantErr: true},
		{name: "exponent without digits", body: `1e+`, wantErr: true},
		{name: "plus sign", body: `+1`, wantErr: true},
		{name: "hex", body: `0x10`, wantErr: true},
		{name: "NaN", body: `NaN`, wantErr: true},
		{name: "escapes", body: `"\"\\\/\b\f\n\r\t\u0041\u00e9\u20ac\ud83d\ude00"`, want: `"\"\\/\b\f\n\r\tAé€😀"`},
		{name: "bad escape", body: `"\x"`, wantErr: true},
		{name: "bad hex", body: `"\u12G4"`, wantErr: true},
		{name: "lone high surrogate", body: `"\ud800"`, want: `"\ufffd"`},
		{name: "lone low surrogate", body: `"a\udc00b"`, want: `"a\ufffdb"`},
		{name: "high then letter", body: `"\ud800\u0041"`, want: `"\ufffdA"`},
		{name: "high high low", body: `"\ud800\ud800\udc00"`, want: `"\ufffd𐀀"`},
		{name: "low high low", body: `"\udc00\ud800\udc00"`, want: `"\ufffd𐀀"`},
		{name: "high then bad escape", body: `"\ud800\uzzzz"`, wantErr: true},
		{name: "high then other escape", body: `"\ud800\n"`, want: `"\ufffd\n"`},
		{name: "invalid utf8 byte", body: "\"a\xffb\"", want: `"a\ufffdb"`},
		{name: "encoded surrogate", body: "\"\xed\xa0\x80\"", want: `"\ufffd\ufffd\ufffd"`},
		{name: "overlong", body: "\"\xc0\x80\"", want: `"\ufffd\ufffd"`},
		{name: "beyond max rune", body: "\"\xf4\x90\x80\x80\"", want: `"\ufffd\ufffd\ufffd\ufffd"`},
		{name: "truncated rune", body: "\"\xe2\x82\"", want: `"\ufffd\ufffd"`},
		{name: "real replacement char", body: "\"\xef\xbf\xbd\"", want: `"\ufffd"`},
		{name: "invalid utf8 with escape", body: "\"\xff\\n\xfe\"", want: `"\ufffd\n\ufffd"`},
		{name: "invalid utf8 in key", body: "{\"\xff\":1,\"\\ufffd\":2}", want: `{"\ufffd": 2}`},
		{name: "invalid utf8 outside string", body: "[\xff]", wantErr: true},
		{name: "control char in string", body: "\"a\x01\"", wantErr: true},
		{name: "DEL in string", body: "\"\x7f\""},
		{name: "NUL escape in key", body: `{"a\u0000":1,"a":2}`, want: `{"a\u0000": 1, "a": 2}`},
		{name: "duplicate key", body: `{"a":1,"b":2,"a":3}`, want: `{"a": 3, "b": 2}`},
		{name: "duplicate key replaces, no merge", body: `{"a":{"x":1},"a":{"y":2}}`, want: `{"a": {"y": 2}}`},
		{name: "duplicate key via escape", body: `{"é":1,"\u00e9":2}`, want: `{"é": 2}`},
		{name: "duplicate keys in big object", body: `{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k0":"x","k16":"y","k0":"z"}`},
		{name: "empty containers", body: `[{}, [], {"a": []}, [[]]]`},
		{name: "depth 10000 arrays", body: deep(10000, "[", "", "]")},
		{name: "depth 10001 arrays", body: deep(10001, "[", "", "]"), wantErr: true},
		{name: "depth 10000 objects", body: deep(10000, `{"a":`, "1", "}")},
		{name: "depth 10001 objects", body: deep(10001, `{"a":`, "1", "}"), wantErr: true},
		{name: "depth 10000 mixed", body: deep(5000, `[{"a":`, "1", "}]")},
		{name: "depth 10001 mixed", body: deep(5000, `[{"a":`, "[]", "}]"), wantErr: true},
		{name: "unclosed deep", body: strings.Repeat("[", 20000), wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseJSONReference([]byte(tc.body)); (err != nil) != tc.wantErr {
				t.Fatalf("reference err = %v, wantErr %v", err, tc.wantErr)
			}
			got, _ := checkAgainstReference(t, []byte(tc.body))
			if tc.want != "" {
				if want := ast.MustParseTerm(tc.want).Value; got.Compare(want) != 0 {
					t.Fatalf("got %v, want %v", got, want)
				}
			}
		})
	}
}

func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi\n\"there\""}],"temperature":0.7,"max_tokens":512,"stream":false,"stop":null}`,
		`[null,true,false,"",0,-1,512,513,-0,1.5e-3,1E+2,12345678901234567890]`,
		`1e1000000000`, `0.0e-0`, `-`, `01`, `1 2`, `[1,]`, `{"a":1,}`, `{"a" 1}`,
		`"\ud800"`, `"\ud800\u0041"`, `"\ud800\ud800\udc00"`, `"\udc00"`, `"\ud83d\ude00"`, `"\ud800\uzzzz"`,
		"\"a\xffb\"", "\"\xed\xa0\x80\"", "\"\xe2\x82\"", "\"\xff\\n\"", "{\"\xff\":1,\"\\ufffd\":2}",
		`{"a":1,"a":2}`, `{"a":{"x":1},"a":{"y":2}}`, `{"é":1,"\u00e9":2}`,
		" \t\r\n[ ] \n", "1\u00a0", "\ufeff{}", "\"\x01\"", "\"\x7f\"", `"\/\b\f\n\r\t"`,
		strings.Repeat("[", 100) + strings.Repeat("]", 100), strings.Repeat(`{"a":`, 50) + "1" + strings.Repeat("}", 50),
		`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k0":"x","k16":"y"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkAgainstReference(t, body)
	})
}

// chatBody is a realistic OpenAI chat request: a system prompt and about
// 4 KiB of user prose with the usual escaped newlines and quotes.
func chatBody() []byte {
	var prose strings.Builder
	for prose.Len() < 4096 {
		prose.WriteString(`Please summarise the quarterly report below for the board. Keep it under two hundred words, highlight revenue, churn and the \"North\" region, and list open risks.\n\n`)
	}
	return []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant. Answer concisely and cite the section you used."},{"role":"user","content":"` +
		prose.String() + `"}],"temperature":0.2,"max_tokens":1024,"stream":true}`)
}

// smallValuesBody is about 4 KiB of numbers, booleans and nested arrays, the
// worst case per byte: many values, each tiny.
func smallValuesBody() []byte {
	var b strings.Builder
	b.WriteString(`{"input":[`)
	for i := 0; b.Len() < 4096; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `[%d,%d.%03d,-%d,[%t,null,%de-3]]`, i, i, i*7%1000, i*31, i%2 == 0, i)
	}
	b.WriteString(`],"dimensions":256,"encoding_format":"float"}`)
	return []byte(b.String())
}

func BenchmarkParseBody(b *testing.B) {
	bodies := []struct {
		name string
		body []byte
	}{
		{"chat", chatBody()},
		{"small-values", smallValuesBody()},
	}
	impls := []struct {
		name  string
		parse func([]byte) (ast.Value, error)
	}{
		{"reference", parseJSONReference},
		{"direct", parseJSON},
	}
	for _, body := range bodies {
		for _, impl := range impls {
			b.Run(body.name+"/"+impl.name, func(b *testing.B) {
				b.SetBytes(int64(len(body.body)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := impl.parse(body.body); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
