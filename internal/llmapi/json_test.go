package llmapi

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestUnquote(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{`""`, ""},
		{`"plain"`, "plain"},
		{`"a\"b\\c\/d"`, `a"b\c/d`},
		{`"\b\f\n\r\t"`, "\b\f\n\r\t"},
		{`"\u00e9\u4e16"`, "é世"},
		{`"\ud83d\ude00"`, "😀"},
		{`"\ud83d"`, "\ufffd"},
		{`"\ud83dx"`, "\ufffdx"},
		{`"\ude00"`, "\ufffd"},
		{`"\ud83d\u0041"`, "\ufffdA"},
		{"\"\xff\"", "\ufffd"},
		{`x`, ""},
		{`"`, ""},
	}
	for _, tt := range tests {
		if got := unquote([]byte(tt.in)); got != tt.want {
			t.Errorf("unquote(%s) = %q, want %q", tt.in, got, tt.want)
		}
		if json.Valid([]byte(tt.in)) {
			var want string
			if err := json.Unmarshal([]byte(tt.in), &want); err == nil && want != unquote([]byte(tt.in)) {
				t.Errorf("unquote(%s) = %q, encoding/json says %q", tt.in, unquote([]byte(tt.in)), want)
			}
		}
	}
}

func TestAppendQuote(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", `""`},
		{`a"b\c`, `"a\"b\\c"`},
		{"<>&", `"<>&"`},
		{"\n\r\t\x00\x1f", `"\n\r\t\u0000\u001f"`},
		{"\u2028\u2029", `"\u2028\u2029"`},
		{"\xffok", `"\ufffdok"`},
		{"é😀", `"é😀"`},
	}
	for _, tt := range tests {
		if got := string(quote(tt.in)); got != tt.want {
			t.Errorf("quote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestValueEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int
	}{
		{`"a\"b" x`, 6},
		{`"a\\" x`, 5},
		{`"` + repeat("x", 40) + `\"y\\\\" z`, 49},
		{`"` + repeat("x", 30) + `\\\"` + repeat("y", 10) + `" z`, 46},
		{`"` + repeat("\\", 40) + `" z`, 42},
		{`{"a":[1,{"b":"}"}]} x`, 19},
		{`123,`, 3},
		{`true]`, 4},
		{`{"a":`, -1},
		{`"abc`, -1},
		{``, -1},
		{`,`, -1},
	}
	for _, tt := range tests {
		if got := valueEnd([]byte(tt.in), 0); got != tt.want {
			t.Errorf("valueEnd(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestApplyPatchesOverlap(t *testing.T) {
	t.Parallel()
	if _, err := applyPatches([]byte("abcdef"), []patch{{1, 4, nil}, {2, 3, nil}}); err == nil {
		t.Error("overlapping patches: want error")
	}
	if _, err := applyPatches([]byte("abc"), []patch{{2, 9, nil}}); err == nil {
		t.Error("out of range patch: want error")
	}
	got, err := applyPatches([]byte("abc"), []patch{{3, 3, []byte("2")}, {1, 2, []byte("X")}, {3, 3, []byte("3")}, {0, 0, []byte("0")}})
	if err != nil || string(got) != "0aXc23" {
		t.Errorf("applyPatches = %q, %v", got, err)
	}
}

func FuzzUnquote(f *testing.F) {
	for _, s := range []string{`"a"`, `"\u00e9"`, `"\ud83d\ude00"`, `"\ud83d"`, "\"\xff\"", `"\\\""`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, tok []byte) {
		sp := trimSpan(tok)
		got := unquote(tok[sp.s:sp.e])
		var want string
		if err := json.Unmarshal(tok, &want); err == nil {
			if got != want {
				t.Fatalf("unquote(%q) = %q, encoding/json %q", tok, got, want)
			}
		}
		// Quoting any text yields a token that decodes to its valid-UTF-8 form.
		s := string(tok)
		q := quote(s)
		var back string
		if err := json.Unmarshal(q, &back); err != nil {
			t.Fatalf("quote(%q) = %s: %v", s, q, err)
		}
		var viaStd string
		std, _ := json.Marshal(s)
		_ = json.Unmarshal(std, &viaStd)
		if back != viaStd || !utf8.ValidString(back) {
			t.Fatalf("quote round trip %q -> %q, encoding/json %q", s, back, viaStd)
		}
		if unquote(q) != back {
			t.Fatalf("unquote(quote(%q)) = %q, want %q", s, unquote(q), back)
		}
	})
}

func TestValidJSON(t *testing.T) {
	t.Parallel()
	deep := func(n int) string {
		return string(make([]byte, 0)) + repeat("[", n) + repeat("]", n)
	}
	tests := []string{
		``, ` `, `{}`, `[]`, `{"a":1}`, `{"a":1,}`, `[1,]`, `[,1]`, `{"a"}`, `{"a":}`, `{,}`, `{"a":1 "b":2}`,
		`"x"`, `"x`, `"\x"`, `"\u12"`, `"\u12G4"`, "\"\x01\"", "\"\xff\"", `"\ud800"`,
		`0`, `-0`, `01`, `-`, `1.`, `.5`, `1e`, `1e+`, `1E-5`, `-1.5e10`, `1e400`, `12345678901234567890`,
		`true`, `tru`, `false`, `null`, `nul`, `truex`, `[true false]`, `[true,false]`,
		`{"a":[1,{"b":null}]} `, `{"a":[1,{"b":null}]}}`, `[1]]`, ` [ 1 , 2 ] `, "\t{\n}\r",
		deep(10000), deep(10001),
	}
	for _, s := range tests {
		if got, want := validJSON([]byte(s)), json.Valid([]byte(s)); got != want {
			t.Errorf("validJSON(%.40q) = %v, json.Valid = %v", s, got, want)
		}
	}
}

func repeat(s string, n int) string {
	b := make([]byte, 0, len(s)*n)
	for range n {
		b = append(b, s...)
	}
	return string(b)
}

func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":"c\u00e9"}],"d":-1.5e3}`, `[`, `"\ud83d"`, `{"a" : true , "b":null}`, `01`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid = %v", b, got, want)
		}
		if !json.Valid(b) {
			return
		}
		// The span helpers agree with the validator on where values end.
		sp := trimSpan(b)
		if e := valueEnd(b, sp.s); e != sp.e {
			t.Fatalf("valueEnd(%q) = %d, want %d", b, e, sp.e)
		}
		var v any
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		var want []string
		var walk func(any)
		walk = func(x any) {
			switch x := x.(type) {
			case string:
				want = append(want, x)
			case []any:
				for _, e := range x {
					walk(e)
				}
			case map[string]any:
				// Map order is lost; compare counts only for objects.
				for _, e := range x {
					walk(e)
				}
			}
		}
		walk(v)
		n := 0
		eachStringValue(b, sp, func(vspan) { n++ })
		if n < len(want) { // duplicate keys make encoding/json see fewer
			t.Fatalf("eachStringValue found %d strings, encoding/json %d", n, len(want))
		}
	})
}
