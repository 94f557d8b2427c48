package mcp

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzParse: any request body gives a Request (or ErrBatch), whose input
// value builds and whose denial body is valid JSON carrying its id.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}`,
		`{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///x"}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s","arguments":"{}"}}`,
		`{"jsonrpc":"2.0","id":1e400,"method":"x"}`,
		`{"jsonrpc":"2.0","id":1,"result":{}}`,
		`{"jsonrpc":"2.0","id":"\ud800","method":"prompts/get","params":{"name":"p","arguments":{"a":"b"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := Parse(body, map[string]string{SessionHeader: "s"})
		if err == ErrBatch {
			return
		}
		if err != nil || r == nil {
			t.Fatalf("Parse: %v", err)
		}
		if r.Error == "" && r.Kind == KindRequest && r.ID == nil {
			t.Fatalf("a valid request without an id: %s", body)
		}
		if _, err := r.Value(); err != nil {
			t.Fatalf("Value: %v", err)
		}
		out := ErrorBody(r.ID, CodeDenied, "denied", "tool_not_allowed", "d")
		var doc struct {
			ID json.RawMessage `json:"id"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("error body %s: %v", out, err)
		}
		if r.ID != nil && !SameID(doc.ID, r.ID) && string(doc.ID) != "null" {
			t.Fatalf("error body id %s, request id %s", doc.ID, r.ID)
		}
	})
}

// FuzzAnswer: any server message is read or refused; a tools/list answer
// filtered is valid JSON without the removed tools, a tools/call result
// rewritten is valid JSON.
func FuzzAnswer(f *testing.F) {
	f.Add([]byte(listBody(3, `,{"name":"add","description":`+quoteJSON(poisonDesc)+`}`)))
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a\u0000","x":"\"\\"},{"name":"a"}],"nextCursor":null}}`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":"c","result":{"content":[{"type":"text","text":"key AKIA"}],"isError":false}}`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"inputSchema":{"name":"inner"},"name":"outer"}]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseResponse(body)
		if err != nil {
			return
		}
		if l, err := ParseToolsList(r); err == nil {
			for _, tl := range l.Tools {
				PoisonRules(tl.Text)
			}
			out, n, err := l.Encode(func(name string) bool { return len(name)%2 == 0 })
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if n > 0 {
				var doc struct {
					Result struct {
						Tools []struct{ Name string } `json:"tools"`
					} `json:"result"`
				}
				if err := json.Unmarshal(out, &doc); err != nil {
					t.Fatalf("filtered answer %s: %v", out, err)
				}
				if len(doc.Result.Tools) != len(l.Tools)-n {
					t.Fatalf("kept %d of %d less %d", len(doc.Result.Tools), len(l.Tools), n)
				}
			}
		}
		if c, err := ParseCallResult(r); err == nil {
			_ = c.Text()
			out, changed, err := c.Edit(func(s string) string { return s + "!" })
			if err != nil {
				t.Fatalf("Edit: %v", err)
			}
			if changed && !json.Valid(out) {
				t.Fatalf("edited result %s", out)
			}
		}
	})
}

// FuzzScanValid: on valid JSON the single-pass splitter agrees with a
// validating decode (members and elements, compacted alike), and on any
// bytes it returns, never panics.
func FuzzScanValid(f *testing.F) {
	for _, s := range []string{`{"tools":[{"name":"a","x":[1,{"y":"\"]"}]}],"nextCursor":"c"}`, `[1, "a\\", {"b": null}, true]`,
		`{"a\u00e9":1,"a\u00e9":2}`, ` { } `, `[ ]`, `{"a":1,}`, `["a`, `{"a" 1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var members map[string]json.RawMessage
		gotMembers := map[string]string{}
		errM := eachMember(b, func(k string, v []byte) error { gotMembers[k] = string(compactValid(nil, v)); return nil })
		var elems []json.RawMessage
		var gotElems []string
		errE := eachElement(b, func(v []byte) error { gotElems = append(gotElems, string(compactValid(nil, v))); return nil })
		if !json.Valid(b) {
			return
		}
		var want bytes.Buffer
		if err := json.Compact(&want, b); err != nil || string(compactValid(nil, b)) != want.String() {
			t.Fatalf("compactValid(%q) = %q, json.Compact %q", b, compactValid(nil, b), want.String())
		}
		if json.Unmarshal(b, &members) == nil && members != nil {
			if errM != nil || len(gotMembers) != len(members) {
				t.Fatalf("%q: members %v (%v), want %d", b, gotMembers, errM, len(members))
			}
			for k, v := range members {
				var c bytes.Buffer
				_ = json.Compact(&c, v)
				if gotMembers[k] != c.String() {
					t.Fatalf("%q: member %q = %q, want %q", b, k, gotMembers[k], c.String())
				}
			}
		}
		if json.Unmarshal(b, &elems) == nil && elems != nil {
			if errE != nil || len(gotElems) != len(elems) {
				t.Fatalf("%q: elements %v (%v), want %d", b, gotElems, errE, len(elems))
			}
		}
	})
}
