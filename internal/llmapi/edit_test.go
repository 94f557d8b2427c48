package llmapi

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// redactSecret is a typical redaction callback: it replaces one marker.
func redactSecret(_, s string) string { return strings.ReplaceAll(s, "SECRET", "[R]") }

func TestEditRequestTextEveryFieldAndOnlyThose(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		api  API
		body string
		keep int // SECRETs in identifier-shaped values of safe fields, which must survive
	}{
		{
			name: "chat",
			api:  OpenAIChat,
			body: `{"model":"SECRET-model","user":"SECRET-user","metadata":{"k":"SECRET"},
				"messages":[
					{"role":"system","content":"sys SECRET"},
					{"role":"user","name":"SECRET-name","content":[{"type":"text","text":"a SECRET"},{"type":"image_url","image_url":{"url":"https://x/SECRET.png"}},{"type":"text","text":"b SECRET"}]},
					{"role":"assistant","content":null,"tool_calls":[{"id":"SECRET-id","type":"function","function":{"name":"SECRET_fn","arguments":"{\"q\":\"SECRET\"}"}}]},
					{"role":"tool","tool_call_id":"SECRET-id","content":"tool SECRET"}],
				"tools":[{"type":"function","function":{"name":"SECRET_fn","description":"SECRET desc"}}]}`,
			keep: 6, // model, message name, call id twice, function name twice

		},
		{
			name: "completions",
			api:  OpenAICompletions,
			body: `{"model":"SECRET","prompt":["p SECRET","q SECRET"],"suffix":"s SECRET","user":"SECRET"}`,
			keep: 1,
		},
		{
			name: "embeddings",
			api:  OpenAIEmbeddings,
			body: `{"model":"SECRET","input":"e SECRET","encoding_format":"float"}`,
			keep: 1,
		},
		{
			name: "responses",
			api:  OpenAIResponses,
			body: `{"model":"SECRET","instructions":"i SECRET","previous_response_id":"SECRET",
				"input":[{"role":"user","content":[{"type":"input_text","text":"t SECRET"},{"type":"input_file","file_id":"SECRET"}]},
					{"type":"function_call","call_id":"SECRET","name":"SECRET","arguments":"{\"a\":\"SECRET\"}"},
					{"type":"function_call_output","call_id":"SECRET","output":"o SECRET"}]}`,
			keep: 6,
		},
		{
			name: "anthropic",
			api:  AnthropicMessages,
			body: `{"model":"SECRET","system":[{"type":"text","text":"sys SECRET"}],"metadata":{"user_id":"SECRET"},
				"messages":[{"role":"user","content":"u SECRET"},
					{"role":"assistant","content":[{"type":"tool_use","id":"SECRET","name":"SECRET","input":{"city":"SECRET","n":[1,"SECRET"]}}]},
					{"role":"user","content":[{"type":"tool_result","tool_use_id":"SECRET","content":[{"type":"text","text":"r SECRET"}]},
						{"type":"image","source":{"type":"url","url":"https://x/SECRET"}}]}]}`,
			keep: 4, // model, tool_use id and name, tool_use_id

		},
		{
			name: "generic",
			api:  Generic,
			body: `{"SECRET":"v SECRET","n":1}`,
			keep: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, changed, err := EditRequest(tt.api, []byte(tt.body), RequestEdit{Text: redactSecret})
			if err != nil || !changed {
				t.Fatalf("EditRequest: changed=%v err=%v", changed, err)
			}
			if !json.Valid(out) {
				t.Fatalf("output is not JSON: %s", out)
			}
			if n := strings.Count(string(out), "SECRET"); n != tt.keep {
				t.Errorf("%d SECRETs left, want %d (outside model text): %s", n, tt.keep, out)
			}
			req, err := ParseRequest(tt.api, out)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range req.Messages {
				if strings.Contains(m.Content, "SECRET") {
					t.Errorf("message %+v still has SECRET", m)
				}
			}
			// The texts the callback saw are the texts ParseRequest reports.
			before, _ := ParseRequest(tt.api, []byte(tt.body))
			if len(before.Messages) != len(req.Messages) {
				t.Fatalf("message count changed: %d -> %d", len(before.Messages), len(req.Messages))
			}
			for i, m := range before.Messages {
				if want := strings.ReplaceAll(m.Content, "SECRET", "[R]"); req.Messages[i].Content != want || req.Messages[i].Role != m.Role {
					t.Errorf("message %d = %+v, want %q", i, req.Messages[i], want)
				}
			}
		})
	}
}

func TestEditRequestCallbackRoles(t *testing.T) {
	t.Parallel()
	body := `{"system":"S","messages":[{"role":"user","content":[{"type":"text","text":"U1"},{"type":"text","text":"U2"}]},
		{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":{"a":"b"}}]},
		{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"R"}]}]}`
	var got []string
	_, changed, err := EditRequest(AnthropicMessages, []byte(body), RequestEdit{Text: func(role, s string) string {
		got = append(got, role+":"+s)
		return s
	}})
	if err != nil || changed {
		t.Fatalf("identity edit: changed=%v err=%v", changed, err)
	}
	want := []string{"system:S", "user:U1", "user:U2", `assistant:{"a":"b"}`, "tool:R"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("callback saw %q, want %q", got, want)
	}
}

func TestEditRequestToolUseInput(t *testing.T) {
	t.Parallel()
	body := `{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":{"email":"a@b.c","n":12345678901234567890}}]}]}`
	tests := []struct {
		name string
		fn   func(role, s string) string
		want string
	}{
		{
			name: "result still JSON replaces the input",
			fn:   func(_, s string) string { return strings.ReplaceAll(s, "a@b.c", "[EMAIL]") },
			want: `{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":{"email":"[EMAIL]","n":12345678901234567890}}]}]}`,
		},
		{
			name: "result not JSON falls back to each string",
			fn: func(_, s string) string {
				if strings.HasPrefix(s, "{") {
					return "broken " + s
				}
				return strings.ToUpper(s)
			},
			want: `{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":{"email":"A@B.C","n":12345678901234567890}}]}]}`,
		},
	}
	for _, tt := range tests {
		out, changed, err := EditRequest(AnthropicMessages, []byte(body), RequestEdit{Text: tt.fn})
		if err != nil || !changed {
			t.Fatalf("%s: changed=%v err=%v", tt.name, changed, err)
		}
		if string(out) != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, out, tt.want)
		}
	}
}

func TestEditRequestPreservesUnknownAndNumbers(t *testing.T) {
	t.Parallel()
	body := `{
  "model": "gpt-4o",
  "temperature": 1e400,
  "seed": 12345678901234567890,
  "logit_bias": {"50256": -100, "1": 0.10000000000000000555},
  "x_vendor": {"nested": [1.0E+2, -0.0, "a\u00e9<>&"], "flag": null},
  "messages": [{"role": "user", "content": "hide SECRET please", "x_extra": true}]
}`
	out, changed, err := EditRequest(OpenAIChat, []byte(body), RequestEdit{Text: redactSecret})
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	want := strings.Replace(body, "hide SECRET please", "hide [R] please", 1)
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	// Deterministic.
	out2, _, _ := EditRequest(OpenAIChat, []byte(body), RequestEdit{Text: redactSecret})
	if string(out2) != string(out) {
		t.Error("two edits of the same input differ")
	}
}

func TestEditRequestStructural(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		api         API
		body        string
		edit        RequestEdit
		want        string // "" means unchanged
		wantErr     error
		wantChanged bool
	}{
		// Clamp.
		{name: "chat clamp lowers", api: OpenAIChat, body: `{"max_tokens":5000,"messages":[]}`,
			edit: RequestEdit{ClampMaxTokens: 1000}, want: `{"max_tokens":1000,"messages":[]}`},
		{name: "chat clamp keeps smaller", api: OpenAIChat, body: `{"max_tokens":10,"messages":[]}`,
			edit: RequestEdit{ClampMaxTokens: 1000}},
		{name: "chat clamp equal", api: OpenAIChat, body: `{"max_tokens":1000}`,
			edit: RequestEdit{ClampMaxTokens: 1000}},
		{name: "chat clamp adds max_tokens", api: OpenAIChat, body: `{"model":"m","messages":[]}`,
			edit: RequestEdit{ClampMaxTokens: 64}, want: `{"model":"m","messages":[],"max_tokens":64}`},
		{name: "chat clamp empty object", api: OpenAIChat, body: `{}`,
			edit: RequestEdit{ClampMaxTokens: 64}, want: `{"max_tokens":64}`},
		{name: "chat clamp whitespace before brace", api: OpenAIChat, body: "{\"a\":1\n}\n",
			edit: RequestEdit{ClampMaxTokens: 64}, want: "{\"a\":1\n,\"max_tokens\":64}\n"},
		{name: "chat clamp max_completion_tokens", api: OpenAIChat, body: `{"max_completion_tokens":9999}`,
			edit: RequestEdit{ClampMaxTokens: 100}, want: `{"max_completion_tokens":100}`},
		{name: "chat clamp both present", api: OpenAIChat, body: `{"max_tokens":50,"max_completion_tokens":9999}`,
			edit: RequestEdit{ClampMaxTokens: 100}, want: `{"max_tokens":50,"max_completion_tokens":100}`},
		{name: "chat clamp null", api: OpenAIChat, body: `{"max_tokens":null}`,
			edit: RequestEdit{ClampMaxTokens: 100}, want: `{"max_tokens":100}`},
		{name: "chat clamp string", api: OpenAIChat, body: `{"max_tokens":"99999"}`,
			edit: RequestEdit{ClampMaxTokens: 100}, want: `{"max_tokens":100}`},
		{name: "chat clamp fraction", api: OpenAIChat, body: `{"max_tokens":100.5}`,
			edit: RequestEdit{ClampMaxTokens: 100}, want: `{"max_tokens":100}`},
		{name: "chat clamp exponent within", api: OpenAIChat, body: `{"max_tokens":1e2}`,
			edit: RequestEdit{ClampMaxTokens: 100}},
		{name: "chat clamp huge", api: OpenAIChat, body: `{"max_tokens":1e400}`,
			edit: RequestEdit{ClampMaxTokens: 100}, want: `{"max_tokens":100}`},
		{name: "chat clamp duplicates", api: OpenAIChat, body: `{"max_tokens":5,"max_tokens":500}`,
			edit: RequestEdit{ClampMaxTokens: 100}, want: `{"max_tokens":5,"max_tokens":100}`},
		{name: "anthropic clamp", api: AnthropicMessages, body: `{"max_tokens":8192,"messages":[]}`,
			edit: RequestEdit{ClampMaxTokens: 1024}, want: `{"max_tokens":1024,"messages":[]}`},
		{name: "responses clamp adds", api: OpenAIResponses, body: `{"input":"x"}`,
			edit: RequestEdit{ClampMaxTokens: 256}, want: `{"input":"x","max_output_tokens":256}`},
		{name: "responses clamp lowers", api: OpenAIResponses, body: `{"max_output_tokens":300}`,
			edit: RequestEdit{ClampMaxTokens: 256}, want: `{"max_output_tokens":256}`},
		{name: "completions clamp", api: OpenAICompletions, body: `{"prompt":"p","max_tokens":16}`,
			edit: RequestEdit{ClampMaxTokens: 8}, want: `{"prompt":"p","max_tokens":8}`},
		{name: "embeddings no clamp", api: OpenAIEmbeddings, body: `{"input":"x"}`,
			edit: RequestEdit{ClampMaxTokens: 8}},
		{name: "generic no clamp", api: Generic, body: `{"max_tokens":99}`,
			edit: RequestEdit{ClampMaxTokens: 8}},

		// Include usage.
		{name: "include usage added", api: OpenAIChat, body: `{"stream":true,"messages":[]}`,
			edit: RequestEdit{IncludeUsage: true}, want: `{"stream":true,"messages":[],"stream_options":{"include_usage":true}}`},
		{name: "include usage keeps other options", api: OpenAIChat, body: `{"stream":true,"stream_options":{"include_obfuscation":false}}`,
			edit: RequestEdit{IncludeUsage: true}, want: `{"stream":true,"stream_options":{"include_obfuscation":false,"include_usage":true}}`},
		{name: "include usage false to true", api: OpenAIChat, body: `{"stream":true,"stream_options":{"include_usage":false}}`,
			edit: RequestEdit{IncludeUsage: true}, want: `{"stream":true,"stream_options":{"include_usage":true}}`},
		{name: "include usage empty options", api: OpenAIChat, body: `{"stream":true,"stream_options":{}}`,
			edit: RequestEdit{IncludeUsage: true}, want: `{"stream":true,"stream_options":{"include_usage":true}}`},
		{name: "include usage null options", api: OpenAICompletions, body: `{"stream":true,"stream_options":null}`,
			edit: RequestEdit{IncludeUsage: true}, want: `{"stream":true,"stream_options":{"include_usage":true}}`},
		{name: "include usage already", api: OpenAIChat, body: `{"stream":true,"stream_options":{"include_usage":true}}`,
			edit: RequestEdit{IncludeUsage: true}},
		{name: "include usage not streaming", api: OpenAIChat, body: `{"stream":false}`,
			edit: RequestEdit{IncludeUsage: true}},
		{name: "include usage not for anthropic", api: AnthropicMessages, body: `{"stream":true}`,
			edit: RequestEdit{IncludeUsage: true}},
		{name: "include usage not for responses", api: OpenAIResponses, body: `{"stream":true}`,
			edit: RequestEdit{IncludeUsage: true}},

		// System suffix.
		{name: "chat suffix to system string", api: OpenAIChat,
			body: `{"messages":[{"role":"user","content":"u"},{"role":"system","content":"Be brief."}]}`,
			edit: RequestEdit{SystemSuffix: "\nNo secrets."},
			want: `{"messages":[{"role":"user","content":"u"},{"role":"system","content":"Be brief.\nNo secrets."}]}`},
		{name: "chat suffix to developer parts", api: OpenAIChat,
			body: `{"messages":[{"role":"developer","content":[{"type":"text","text":"D"}]}]}`,
			edit: RequestEdit{SystemSuffix: "X"},
			want: `{"messages":[{"role":"developer","content":[{"type":"text","text":"D"},{"type":"text","text":"X"}]}]}`},
		{name: "chat suffix inserts system", api: OpenAIChat,
			body: `{"messages":[{"role":"user","content":"u"}]}`,
			edit: RequestEdit{SystemSuffix: "X"},
			want: `{"messages":[{"role":"system","content":"X"},{"role":"user","content":"u"}]}`},
		{name: "chat suffix inserts into empty messages", api: OpenAIChat,
			body: `{"messages":[]}`,
			edit: RequestEdit{SystemSuffix: "X"},
			want: `{"messages":[{"role":"system","content":"X"}]}`},
		{name: "chat suffix null content", api: OpenAIChat,
			body: `{"messages":[{"role":"system","content":null}]}`,
			edit: RequestEdit{SystemSuffix: "X"},
			want: `{"messages":[{"role":"system","content":"X"}]}`},
		{name: "chat suffix missing content", api: OpenAIChat,
			body: `{"messages":[{"role":"system"}]}`,
			edit: RequestEdit{SystemSuffix: "X"},
			want: `{"messages":[{"role":"system","content":"X"}]}`},
		{name: "chat suffix after redaction", api: OpenAIChat,
			body: `{"messages":[{"role":"system","content":"key SECRET"}]}`,
			edit: RequestEdit{SystemSuffix: " SECRET-suffix", Text: redactSecret},
			want: `{"messages":[{"role":"system","content":"key [R] SECRET-suffix"}]}`},
		{name: "chat suffix escaped", api: OpenAIChat,
			body: `{"messages":[{"role":"system","content":"a"}]}`,
			edit: RequestEdit{SystemSuffix: "\"q\" <b>"},
			want: `{"messages":[{"role":"system","content":"a\"q\" <b>"}]}`},
		{name: "anthropic suffix string", api: AnthropicMessages,
			body: `{"system":"S","messages":[]}`,
			edit: RequestEdit{SystemSuffix: " X"},
			want: `{"system":"S X","messages":[]}`},
		{name: "anthropic suffix blocks", api: AnthropicMessages,
			body: `{"system":[{"type":"text","text":"S","cache_control":{"type":"ephemeral"}}]}`,
			edit: RequestEdit{SystemSuffix: "X"},
			want: `{"system":[{"type":"text","text":"S","cache_control":{"type":"ephemeral"}},{"type":"text","text":"X"}]}`},
		{name: "anthropic suffix absent", api: AnthropicMessages,
			body: `{"messages":[]}`,
			edit: RequestEdit{SystemSuffix: "X"},
			want: `{"messages":[],"system":"X"}`},
		{name: "anthropic suffix null", api: AnthropicMessages,
			body: `{"system":null}`,
			edit: RequestEdit{SystemSuffix: "X"},
			want: `{"system":"X"}`},
		{name: "responses suffix instructions", api: OpenAIResponses,
			body: `{"instructions":"I","input":"x"}`,
			edit: RequestEdit{SystemSuffix: " X"},
			want: `{"instructions":"I X","input":"x"}`},
		{name: "responses suffix absent", api: OpenAIResponses,
			body: `{"input":"x"}`,
			edit: RequestEdit{SystemSuffix: "X"},
			want: `{"input":"x","instructions":"X"}`},
		{name: "completions ignore suffix", api: OpenAICompletions, body: `{"prompt":"p"}`,
			edit: RequestEdit{SystemSuffix: "X"}},
		{name: "embeddings ignore suffix", api: OpenAIEmbeddings, body: `{"input":"p"}`,
			edit: RequestEdit{SystemSuffix: "X"}},

		// Combined.
		{name: "all at once", api: OpenAIChat,
			body: `{"model":"m","stream":true,"max_tokens":4096,"messages":[{"role":"user","content":"SECRET"}]}`,
			edit: RequestEdit{Text: redactSecret, ClampMaxTokens: 512, IncludeUsage: true, SystemSuffix: "P"},
			want: `{"model":"m","stream":true,"max_tokens":512,"messages":[{"role":"system","content":"P"},{"role":"user","content":"[R]"}],"stream_options":{"include_usage":true}}`},

		// Errors and no-ops.
		{name: "malformed", api: OpenAIChat, body: `{"messages":`, edit: RequestEdit{ClampMaxTokens: 1}, wantErr: ErrMalformed},
		{name: "zero edit", api: OpenAIChat, body: `{"messages":[{"role":"user","content":"x"}]}`},
		{name: "generic text body", api: Generic, body: `free SECRET text`, edit: RequestEdit{Text: redactSecret},
			want: `free [R] text`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, changed, err := EditRequest(tt.api, []byte(tt.body), tt.edit)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("EditRequest: %v", err)
			}
			want := tt.want
			if want == "" {
				want = tt.body
				if changed {
					t.Errorf("changed = true, want false (out %s)", out)
				}
			} else if !changed {
				t.Errorf("changed = false, want true")
			}
			if string(out) != want {
				t.Errorf("got  %s\nwant %s", out, want)
			}
		})
	}
}

func TestEditResponse(t *testing.T) {
	t.Parallel()
	upper := strings.ToUpper
	tests := []struct {
		name string
		api  API
		body string
		want string
	}{
		{
			name: "chat",
			api:  OpenAIChat,
			body: `{"id":"c","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hi","tool_calls":[{"id":"x","function":{"name":"f","arguments":"{\"a\":\"b\"}"}}]}},{"index":1,"message":{"content":"yo"}}],"usage":{"total_tokens":1e400}}`,
			want: `{"id":"c","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"HI","tool_calls":[{"id":"x","function":{"name":"F","arguments":"{\"A\":\"B\"}"}}]}},{"index":1,"message":{"content":"YO"}}],"usage":{"total_tokens":1e400}}`,
		},
		{
			name: "completions",
			api:  OpenAICompletions,
			body: `{"choices":[{"text":"abc","index":0}],"model":"m"}`,
			want: `{"choices":[{"text":"ABC","index":0}],"model":"m"}`,
		},
		{
			name: "responses",
			api:  OpenAIResponses,
			body: `{"model":"m","output":[{"type":"message","content":[{"type":"output_text","text":"one"},{"type":"refusal","refusal":"no"}]},{"type":"function_call","arguments":"args"}]}`,
			want: `{"model":"m","output":[{"type":"message","content":[{"type":"output_text","text":"ONE"},{"type":"refusal","refusal":"NO"}]},{"type":"function_call","arguments":"ARGS"}]}`,
		},
		{
			name: "anthropic",
			api:  AnthropicMessages,
			body: `{"model":"c","content":[{"type":"text","text":"a"},{"type":"tool_use","id":"t","name":"n","input":{"k":"v"}},{"type":"text","text":"b"}],"stop_reason":"end_turn"}`,
			want: `{"model":"c","content":[{"type":"text","text":"A"},{"type":"tool_use","id":"t","name":"N","input":{"k":"V"}},{"type":"text","text":"B"}],"stop_reason":"end_turn"}`,
		},
		{
			name: "embeddings unchanged",
			api:  OpenAIEmbeddings,
			body: `{"data":[{"embedding":[0.1]}],"model":"e"}`,
		},
		{
			name: "generic",
			api:  Generic,
			body: `{"answer":"x","n":1}`,
			want: `{"answer":"X","n":1}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, changed, err := EditResponse(tt.api, []byte(tt.body), upper)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			if want == "" {
				want = tt.body
			}
			if changed != (tt.want != "") {
				t.Errorf("changed = %v", changed)
			}
			if string(out) != want {
				t.Errorf("got  %s\nwant %s", out, want)
			}
		})
	}
	if _, _, err := EditResponse(OpenAIChat, []byte(`nope`), upper); !errors.Is(err, ErrMalformed) {
		t.Errorf("malformed: err = %v", err)
	}
	if out, changed, err := EditResponse(OpenAIChat, []byte(`{"choices":[]}`), nil); err != nil || changed || string(out) != `{"choices":[]}` {
		t.Errorf("nil fn: %s %v %v", out, changed, err)
	}
}

func TestEditRequestSeveralInsertions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		api  API
		body string
		want string
	}{
		{OpenAIResponses, `{}`, `{"max_output_tokens":100,"instructions":"P"}`},
		{AnthropicMessages, `{}`, `{"max_tokens":100,"system":"P"}`},
		{OpenAIChat, `{"stream":true}`, `{"stream":true,"max_tokens":100,"stream_options":{"include_usage":true}}`},
	}
	for _, tt := range tests {
		out, _, err := EditRequest(tt.api, []byte(tt.body), RequestEdit{ClampMaxTokens: 100, IncludeUsage: true, SystemSuffix: "P"})
		if err != nil || string(out) != tt.want {
			t.Errorf("%s: got %s, %v; want %s", tt.api, out, err, tt.want)
		}
	}
}
