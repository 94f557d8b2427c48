package llmapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var fuzzAPIs = []API{OpenAIChat, OpenAICompletions, OpenAIResponses, OpenAIEmbeddings, AnthropicMessages, Generic}

func fuzzAPI(i uint8) API { return fuzzAPIs[int(i)%len(fuzzAPIs)] }

// requestSeeds are request bodies of every API, from the tests' shapes.
var requestSeeds = []string{
	`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false},"max_tokens":256,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image_url","image_url":{"url":"x"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},{"role":"tool","content":"r"}],"tools":[{"type":"function","function":{"name":"f"}}]}`,
	`{"prompt":["a","b",[1,2]],"suffix":"s","max_tokens":1e400,"stream":true}`,
	`{"input":["x",1],"model":"e"}`,
	`{"instructions":"I","input":[{"role":"user","content":[{"type":"input_text","text":"t"}]},{"type":"function_call","call_id":"c","name":"n","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"o"}],"max_output_tokens":12345678901234567890}`,
	`{"system":[{"type":"text","text":"S"}],"max_tokens":1024,"messages":[{"role":"user","content":"u"},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":{"k":"v","n":1.5e3}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"r"}]}]}]}`,
	`{"messages":5,"system":null,"m\u0065ssages":[{"role":"system"}],"messages":[{"role":"developer","content":[]}]}`,
	"plain text body",
	`{"a":"\ud83d","b":"\u2028<>&"}`,
	`{"messages":[{"role":"user","name":"a b","content":[{"type":"file","file":{"file_data":"data:text/plain;base64,aGkgdGhlcmU="}},{"type":"image_url","image_url":{"url":"data:,a%20b"}}]}],"tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"properties":{"x":{"description":"deep"}}}}}],"x":{"data":"aGVsbG8gd29ybGQgYWdhaW4="}}`,
	`{}`,
	``,
}

func FuzzParseRequest(f *testing.F) {
	for i, s := range requestSeeds {
		f.Add(uint8(i), []byte(s))
	}
	f.Fuzz(func(t *testing.T, apiIdx uint8, body []byte) {
		api := fuzzAPI(apiIdx)
		req, err := ParseRequest(api, body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			if api == Generic {
				t.Fatalf("Generic failed: %v", err)
			}
			if sp := trimSpan(body); json.Valid(body) && body[sp.s] == '{' {
				t.Fatalf("valid object rejected: %v", err)
			}
			return
		}
		if req.MaxTokens < 0 {
			t.Fatalf("negative MaxTokens %d", req.MaxTokens)
		}
		// Identity editing leaves the body alone.
		out, changed, err := EditRequest(api, body, RequestEdit{Text: func(_, s string) string { return s }})
		if err != nil || changed || !bytes.Equal(out, body) {
			t.Fatalf("identity EditRequest: changed=%v err=%v", changed, err)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	seeds := []string{
		`{"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`,
		`{"choices":[{"text":"t","index":0}]}`,
		`{"status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"o"}]},{"type":"function_call","call_id":"c","name":"n","arguments":"{}"}],"usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3}}`,
		`{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":8,"total_tokens":8}}`,
		`{"content":[{"type":"text","text":"a"},{"type":"tool_use","id":"t","name":"n","input":{}}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":2}}`,
		`not json`,
		`{"choices":5}`,
	}
	for i, s := range seeds {
		f.Add(uint8(i), []byte(s))
	}
	f.Fuzz(func(t *testing.T, apiIdx uint8, body []byte) {
		api := fuzzAPI(apiIdx)
		resp, err := ParseResponse(api, body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || api == Generic {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		up := func(s string) string { return strings.ToUpper(s) }
		out, changed, err := EditResponse(api, body, up)
		if err != nil {
			t.Fatalf("EditResponse: %v", err)
		}
		if json.Valid(body) && !json.Valid(out) {
			t.Fatalf("EditResponse broke JSON: %s", out)
		}
		if changed {
			again, err := ParseResponse(api, out)
			if err != nil {
				t.Fatalf("re-parse: %v", err)
			}
			if want := strings.ToUpper(resp.Text); api != Generic && again.Text != want {
				t.Fatalf("edited text %q, want %q", again.Text, want)
			}
		}
		if out, changed, err := EditResponse(api, body, func(s string) string { return s }); err != nil || changed || !bytes.Equal(out, body) {
			t.Fatalf("identity EditResponse: changed=%v err=%v", changed, err)
		}
	})
}

func FuzzEditRequest(f *testing.F) {
	for i, s := range requestSeeds {
		f.Add(uint8(i), []byte(s), int64(100), uint8(i))
	}
	f.Fuzz(func(t *testing.T, apiIdx uint8, body []byte, clamp int64, flags uint8) {
		api := fuzzAPI(apiIdx)
		// Identity with no other edit: unchanged, or the same JSON.
		out, changed, err := EditRequest(api, body, RequestEdit{Text: func(_, s string) string { return s }})
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if changed && !jsonEqual(t, out, body) {
			t.Fatalf("identity edit changed the JSON: %s -> %s", body, out)
		}
		wasJSON := json.Valid(body)
		e := RequestEdit{
			IncludeUsage: flags&1 != 0,
			SystemSuffix: map[bool]string{true: "\n\"policy\" <x>", false: ""}[flags&2 != 0],
		}
		if flags&4 != 0 {
			e.ClampMaxTokens = clamp
		}
		if flags&8 != 0 {
			e.Text = func(_, s string) string { return strings.ReplaceAll(s, "a", "[A]") }
		}
		if flags&16 != 0 {
			e.Text = func(_, s string) string { return "x\"}" + s } // breaks tool_use JSON on purpose
		}
		out, _, err = EditRequest(api, body, e)
		if err != nil {
			t.Fatalf("EditRequest: %v", err)
		}
		if wasJSON && !json.Valid(out) {
			t.Fatalf("output is not JSON: %s", out)
		}
		// Redaction reaches every text ParseRequest reports (tool_use input
		// keys are JSON structure, so Anthropic is exempt).
		if flags&8 != 0 && flags&16 == 0 && api != AnthropicMessages {
			req, err := ParseRequest(api, out)
			if err != nil {
				t.Fatalf("re-parse: %v", err)
			}
			for _, m := range req.Messages {
				if strings.Contains(m.Content, "a") {
					t.Fatalf("unredacted text %q in %s", m.Content, out)
				}
			}
		}
		if e.ClampMaxTokens > 0 && api != Generic && api != OpenAIEmbeddings {
			req, err := ParseRequest(api, out)
			if err != nil {
				t.Fatalf("re-parse: %v", err)
			}
			if req.MaxTokens > e.ClampMaxTokens {
				t.Fatalf("MaxTokens %d after clamp %d: %s", req.MaxTokens, e.ClampMaxTokens, out)
			}
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	for _, name := range streamFixtures {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		evs, _, _ := feedAll(f, 0, b)
		for i, e := range evs {
			f.Add(uint8(i), e.Name, e.Data)
		}
	}
	f.Add(uint8(0), "", []byte("[DONE]"))
	f.Add(uint8(4), "error", []byte(`{"type":"error"}`))
	f.Fuzz(func(t *testing.T, apiIdx uint8, name string, data []byte) {
		api := fuzzAPI(apiIdx)
		e := Event{Name: name, Data: data}
		d, err := DecodeEvent(api, e)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		// The meta read the stream path uses agrees with the full one on
		// everything but the text and the tool call it leaves out.
		p := ParseEvent(api, e)
		m, err := p.Meta()
		if err != nil {
			t.Fatalf("Meta fails where DecodeEvent did not: %v", err)
		}
		if m.Text != "" || m.ToolCall != nil {
			t.Fatalf("Meta read the text: %+v", m)
		}
		d.Text, d.ToolCall = "", nil
		if !reflect.DeepEqual(d, m) {
			t.Fatalf("Meta = %+v, DecodeEvent = %+v", m, d)
		}
	})
}

func FuzzSSEParser(f *testing.F) {
	for _, name := range streamFixtures {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint16(len(b)/2), uint16(0))
		f.Add(bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")), uint16(len(b)/3), uint16(64))
		f.Add(bytes.ReplaceAll(b, []byte("\n"), []byte("\r")), uint16(7), uint16(0))
	}
	f.Add([]byte("data: a\r\r\ndata: b\n\n: c\n\nevent: x\ndata\n\n"), uint16(8), uint16(5))
	f.Fuzz(func(t *testing.T, data []byte, split uint16, max uint16) {
		limit := int(max) % 4096
		i := int(split) % (len(data) + 1)
		whole, wp, werr := feedAll(t, limit, data)
		parts, pp, perr := feedAll(t, limit, data[:i], data[i:])
		if (werr == nil) != (perr == nil) {
			t.Fatalf("split at %d: errors differ: %v vs %v", i, werr, perr)
		}
		if werr != nil {
			if !errors.Is(werr, ErrEventTooLarge) || !errors.Is(perr, ErrEventTooLarge) {
				t.Fatalf("unexpected errors %v, %v", werr, perr)
			}
		}
		if err := sameEvents(parts, whole); err != nil {
			t.Fatalf("split at %d: %v", i, err)
		}
		if werr != nil {
			return
		}
		if !bytes.Equal(wp, pp) {
			t.Fatalf("split at %d: pending %q vs %q", i, pp, wp)
		}
		var all []byte
		for _, e := range whole {
			all = append(all, e.Raw...)
			// Re-encoding and re-parsing keeps the fields.
			re, _, err := feedAll(t, 0, e.Encode())
			if err != nil || len(re) != 1 {
				t.Fatalf("re-parse %q: %v %d", e.Encode(), err, len(re))
			}
			if re[0].Name != e.Name || re[0].ID != e.ID || !bytes.Equal(re[0].Data, e.Data) {
				t.Fatalf("re-encode %+q -> %+q", e, re[0])
			}
		}
		if !bytes.Equal(append(all, wp...), data) {
			t.Fatalf("Raw + Pending != input")
		}
	})
}

// FuzzSequenceNumber checks the renumbering of Responses events on any
// data: no panic, and a renumbered event is valid JSON that reads back the
// new number, with the rest of its bytes kept.
func FuzzSequenceNumber(f *testing.F) {
	for _, s := range []string{
		`{"type":"response.output_text.delta","sequence_number":9,"delta":"x"}`,
		`{ "sequence_number" : 0 }`,
		`{"sequence_number":-1,"sequence_number":2}`,
		`{"sequence_number":1e3}`,
		`{"a":{"sequence_number":3}}`,
		`[DONE]`,
		``,
	} {
		f.Add(s, int64(42))
	}
	f.Fuzz(func(t *testing.T, data string, n int64) {
		ev := Event{Name: "response.output_text.delta", Data: []byte(data)}
		SequenceNumber(ev)
		got, err := WithSequenceNumber(ev, n)
		if err != nil {
			return
		}
		if !json.Valid(got.Data) {
			t.Fatalf("renumbered %q to %q: not JSON", data, got.Data)
		}
		if m, ok := SequenceNumber(got); !ok || m != n {
			t.Fatalf("renumbered %q to %q: reads %d, %v; want %d", data, got.Data, m, ok, n)
		}
	})
}
