package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestParsePath(t *testing.T) {
	cases := []struct {
		path, wantPath, wantQuery string
		wantErr                   bool
	}{
		{"/", `[""]`, `{}`, false},
		{"", `[""]`, `{}`, false},
		{"/v1/chat/completions", `["v1", "chat", "completions"]`, `{}`, false},
		{"/people?name=a&name=b&x=", `["people"]`, `{"name": ["a", "b"], "x": [""]}`, false},
		{"//double//slash/", `["double", "", "slash", ""]`, `{}`, false},
		{"/a%20b/c", `["a b", "c"]`, `{}`, false},
		{"/bad%zz", `[]`, `{}`, true},
		{"/q?a=%zz&b=1", `["q"]`, `{"b": ["1"]}`, true},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			p, q, err := ParsePath(tc.path)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if want := ast.MustParseTerm(tc.wantPath).Value; p.Compare(want) != 0 {
				t.Errorf("parsed_path = %v, want %v", p, want)
			}
			if want := ast.MustParseTerm(tc.wantQuery).Value; q.Compare(want) != 0 {
				t.Errorf("parsed_query = %v, want %v", q, want)
			}
		})
	}
}

func TestParseBody(t *testing.T) {
	cases := []struct {
		name, ct, body, want string
		notParsed            bool
		wantErr              string
	}{
		{name: "json", ct: "application/json", body: `{"model": "gpt", "n": 1.5, "m": [1]}`, want: `{"model": "gpt", "n": 1.5, "m": [1]}`},
		{name: "json charset", ct: "application/json; charset=utf-8", body: `[1]`, want: `[1]`},
		{name: "vendor json", ct: "application/vnd.api+json", body: `{"a": null}`, want: `{"a": null}`},
		{name: "big int kept exact", ct: "application/json", body: `{"id": 12345678901234567890}`, want: `{"id": 12345678901234567890}`},
		{name: "form", ct: "application/x-www-form-urlencoded", body: "a=1&a=2&b=x+y", want: `{"a": ["1", "2"], "b": ["x y"]}`},
		{name: "malformed json", ct: "application/json", body: `{"a":`, wantErr: "invalid JSON"},
		{name: "trailing data", ct: "application/json", body: `{} {}`, wantErr: "trailing"},
		{name: "bad form", ct: "application/x-www-form-urlencoded", body: "a=%zz", wantErr: "invalid form"},
		{name: "text", ct: "text/plain", body: "hello", notParsed: true},
		{name: "multipart", ct: "multipart/form-data; boundary=XyZ",
			body: "--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n" +
				"--XyZ\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"a\": [1]}\r\n" +
				"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nagain\r\n" +
				"--XyZ\r\nContent-Disposition: form-data\r\n\r\nnameless\r\n--XyZ--\r\n",
			want: `{"meta": [{"a": [1]}], "purpose": ["batch", "again"]}`},
		{name: "multipart media type in capitals", ct: "Multipart/Form-Data; boundary=b",
			body: "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--", want: `{"x": ["1"]}`},
		{name: "multipart without boundary", ct: "multipart/form-data", body: "--b\r\n", wantErr: "no boundary"},
		{name: "multipart truncated", ct: "multipart/form-data; boundary=b",
			body: "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1", wantErr: "invalid multipart"},
		{name: "multipart bad JSON part", ct: "multipart/form-data; boundary=b",
			body: "--b\r\nContent-Disposition: form-data; name=\"x\"\r\nContent-Type: application/json\r\n\r\n{\r\n--b--", wantErr: "invalid JSON"},
		{name: "no type", ct: "", body: `{}`, notParsed: true},
		{name: "empty", ct: "application/json", body: "", notParsed: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ParseBody(tc.ct, []byte(tc.body))
			switch {
			case tc.notParsed:
				if !errors.Is(err, ErrBodyNotParsed) {
					t.Fatalf("err = %v, want ErrBodyNotParsed", err)
				}
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if want := ast.MustParseTerm(tc.want).Value; v.Compare(want) != 0 {
					t.Fatalf("got %v, want %v", v, want)
				}
			}
		})
	}
}

func FuzzParseBody(f *testing.F) {
	f.Add("application/json", []byte(`{"messages": [{"role": "user", "content": "hi"}]}`))
	f.Add("application/x-www-form-urlencoded", []byte("a=1&b=%20"))
	f.Add("application/json; charset=utf-8", []byte(`[[[[[]]]]]`))
	f.Add("application/json", []byte("\xff\xfe"))
	f.Add("multipart/form-data; boundary=b", []byte("--b\r\nContent-Disposition: form-data; name=\"x\"\r\nContent-Type: application/json\r\n\r\n{\"a\":1}\r\n--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.jsonl\"\r\n\r\n{}\n{}\r\n--b--\r\n"))
	f.Add("multipart/form-data; boundary=\"q q\"", []byte("preamble\r\n--q q\r\n\r\n--q q--"))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		v, err := ParseBody(ct, body)
		if err == nil && v == nil {
			t.Fatal("nil value without error")
		}
	})
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/", "/v1/chat?x=1&x=2", "/%zz", "?", "http://h/p?q#f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, q, _ := ParsePath(s)
		if p == nil || q == nil {
			t.Fatal("nil parsed values")
		}
	})
}
