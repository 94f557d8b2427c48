package llmapi

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

const plantedMail = "jane.doe@example.org"

// TestRequestFieldsTheModelReads: every field the model reads, and every
// field this package does not know, reaches PromptText and is rewritten by
// EditRequest (issue 16, finding 8). Before the sweep none of these did.
func TestRequestFieldsTheModelReads(t *testing.T) {
	t.Parallel()
	b64 := base64.StdEncoding.EncodeToString([]byte("notes: please write to " + plantedMail + " about the quarterly report\n"))
	tests := []struct {
		name string
		api  API
		body string
	}{
		{"chat tool description", OpenAIChat,
			`{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","description":"mail ` + plantedMail + `"}}]}`},
		{"chat parameter schema description, nested", OpenAIChat,
			`{"model":"m","messages":[],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"object","properties":{"b":{"type":"array","items":{"type":"string","description":"mail ` + plantedMail + `"}}}}}}}}]}`},
		{"chat response_format json_schema description", OpenAIChat,
			`{"model":"m","messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"s","description":"mail ` + plantedMail + `","schema":{"type":"object"}}}}`},
		{"chat message name", OpenAIChat,
			`{"model":"m","messages":[{"role":"user","name":"` + plantedMail + `","content":"hi"}]}`},
		{"chat file part as data URL", OpenAIChat,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"filename":"n.txt","file_data":"data:text/plain;base64,` + b64 + `"}}]}]}`},
		{"chat text file labelled as an image", OpenAIChat,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,` + b64 + `"}}]}]}`},
		{"chat percent-encoded data URL", OpenAIChat,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_data":"data:text/plain,mail%20jane.doe%40example.org"}}]}]}`},
		{"chat prediction content", OpenAIChat,
			`{"model":"m","messages":[],"prediction":{"type":"content","content":"mail ` + plantedMail + `"}}`},
		{"chat unknown field at depth", OpenAIChat,
			`{"model":"m","messages":[],"x_vendor":{"a":[{"b":[["mail ` + plantedMail + `"]]}]}}`},
		{"responses tool description", OpenAIResponses,
			`{"model":"m","input":"hi","tools":[{"type":"function","name":"f","description":"mail ` + plantedMail + `","parameters":{}}]}`},
		{"responses input_file data", OpenAIResponses,
			`{"model":"m","input":[{"role":"user","content":[{"type":"input_file","filename":"n.txt","file_data":"data:text/plain;base64,` + b64 + `"}]}]}`},
		{"responses text format schema", OpenAIResponses,
			`{"model":"m","input":"hi","text":{"format":{"type":"json_schema","name":"s","schema":{"properties":{"a":{"description":"mail ` + plantedMail + `"}}}}}}`},
		{"anthropic tool description", AnthropicMessages,
			`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"f","description":"mail ` + plantedMail + `","input_schema":{"type":"object","properties":{"q":{"type":"string","description":"or ` + plantedMail + `"}}}}]}`},
		{"anthropic base64 text document", AnthropicMessages,
			`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"text/plain","data":"` + b64 + `"}}]}]}`},
		{"anthropic unknown block type", AnthropicMessages,
			`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"future_block","payload":"mail ` + plantedMail + `"}]}]}`},
		{"completions unknown field", OpenAICompletions,
			`{"model":"m","prompt":"hi","logit_bias_note":"mail ` + plantedMail + `"}`},
		{"embeddings unknown field", OpenAIEmbeddings,
			`{"model":"m","input":"hi","dimensions_note":"mail ` + plantedMail + `"}`},
		{"safe field holding prose is still read", OpenAIChat,
			`{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"mail ` + plantedMail + ` now"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := ParseRequest(tt.api, []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if got := r.PromptText(nil); !strings.Contains(got, plantedMail) {
				t.Fatalf("PromptText lacks the planted address: %q", got)
			}
			// A role filter cannot hide text outside the conversation.
			if got := r.PromptText(func(string) bool { return false }); strings.Contains(tt.name, "unknown") && !strings.Contains(got, plantedMail) {
				t.Fatalf("role filter hid RoleOther text: %q", got)
			}
			out, changed, err := EditRequest(tt.api, []byte(tt.body), RequestEdit{Text: func(_, s string) string {
				return strings.ReplaceAll(s, plantedMail, "[REDACTED]")
			}})
			if err != nil || !changed {
				t.Fatalf("EditRequest: changed=%v err=%v", changed, err)
			}
			if !json.Valid(out) {
				t.Fatalf("not JSON: %s", out)
			}
			if strings.Contains(string(out), plantedMail) || strings.Contains(string(out), b64) || strings.Contains(string(out), "jane.doe%40") {
				t.Fatalf("the upstream would still receive it: %s", out)
			}
			again, err := ParseRequest(tt.api, out)
			if err != nil {
				t.Fatal(err)
			}
			if got := again.PromptText(nil); !strings.Contains(got, "[REDACTED]") {
				t.Fatalf("redaction not visible after a re-parse (data URL not re-encoded?): %q", got)
			}
		})
	}
}

// TestSafeFieldsAreSkipped: identifiers in the documented safe fields are
// not offered to the detectors (ids would only cost time and false
// positives), and binary payloads are not decoded into text.
func TestSafeFieldsAreSkipped(t *testing.T) {
	t.Parallel()
	png := base64.StdEncoding.EncodeToString(append([]byte("\x89PNG\r\n\x1a\n\x00\x00"), make([]byte, 6000)...))
	body := `{"model":"gpt-4o-2024-08-06","messages":[{"role":"user","content":"hi","name":"alice_1"},
		{"role":"assistant","tool_calls":[{"id":"call_abc123","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},
		{"role":"tool","tool_call_id":"call_abc123","content":"ok"},
		{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,` + png + `","detail":"high"}}]}],
		"tool_choice":"auto","service_tier":"default","reasoning_effort":"low","modalities":["text"]}`
	r, err := ParseRequest(OpenAIChat, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range r.Messages {
		if m.Role == RoleOther {
			t.Fatalf("safe identifiers or binary read as text: %q", m.Content)
		}
	}
}

func TestDataURLRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, url, text string }{
		{"base64", "data:text/plain;base64," + base64.StdEncoding.EncodeToString([]byte("héllo\n")), "héllo\n"},
		{"unpadded base64", "data:text/plain;base64,aGk", "hi"},
		{"percent", "data:,a%20b", "a b"},
		{"upper-case scheme", "DATA:text/plain;BASE64,aGk=", "hi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := dataURLText(tt.url)
			if !ok || got != tt.text {
				t.Fatalf("dataURLText = %q, %v; want %q", got, ok, tt.text)
			}
			back, ok := dataURLText(encodeDataURL(tt.url, "new text"))
			if !ok || back != "new text" {
				t.Fatalf("re-encoded = %q, %v", back, ok)
			}
		})
	}
	if _, ok := dataURLText("data:image/png;base64," + base64.StdEncoding.EncodeToString([]byte{0x89, 'P', 'N', 'G', 0, 0})); ok {
		t.Fatal("binary payload read as text")
	}
}

// TestChoices: n and best_of multiply what a request may cost (finding 13).
func TestChoices(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		api  API
		body string
		want int64
	}{
		{"absent", OpenAIChat, `{"messages":[]}`, 1},
		{"chat n", OpenAIChat, `{"n":4,"max_tokens":10}`, 4},
		{"completions best_of beats n", OpenAICompletions, `{"n":2,"best_of":5}`, 5},
		{"zero", OpenAIChat, `{"n":0}`, 1},
		{"negative", OpenAIChat, `{"n":-3}`, 1},
		{"string", OpenAIChat, `{"n":"9"}`, 1},
		{"anthropic has none", AnthropicMessages, `{"n":7}`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := ParseRequest(tt.api, []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if r.Choices != tt.want {
				t.Fatalf("Choices = %d, want %d", r.Choices, tt.want)
			}
		})
	}
}

// FuzzEachMemberString: the sweep's walk visits every string value
// encoding/json decodes, at any depth, with the key that holds each (and
// also the values of duplicated keys, which encoding/json drops but other
// parsers keep).
func FuzzEachMemberString(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"a":[["x",{"b":"y"}],"z"],"k\"":"v","":{"":""}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return
		}
		want := map[string]int{}
		var walk func(key string, v any)
		walk = func(key string, v any) {
			switch x := v.(type) {
			case string:
				want[key+"\x00"+x]++
			case map[string]any:
				for k, e := range x {
					walk(k, e)
				}
			case []any:
				for _, e := range x {
					walk(key, e)
				}
			}
		}
		walk("", v)
		got := map[string]int{}
		eachMemberString(b, trimSpan(b), func(key []byte, s vspan) {
			// Keys are compared as decoders see them (invalid UTF-8 as U+FFFD).
			k := string(key)
			if !utf8.ValidString(k) { // a raw key: no escapes, no quotes
				k = unquote([]byte(`"` + k + `"`))
			}
			got[k+"\x00"+unquote(b[s.s:s.e])]++
		})
		for k, n := range want {
			if got[k] < n {
				t.Fatalf("visited %v, want %v", got, want)
			}
		}
	})
}
