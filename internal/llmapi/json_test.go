package llmapi

import (
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
		got := unquote(tok)
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
