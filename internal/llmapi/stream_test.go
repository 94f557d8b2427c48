package llmapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func fixtureEvents(t testing.TB, name string) []Event {
	t.Helper()
	evs, _, err := feedAll(t, 0, readFixture(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestDecodeEventFixtures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file      string
		api       API
		text      string
		finish    string
		usage     Usage
		toolName  string
		toolArgs  string
		doneCount int
	}{
		{"openai_chat_stream.txt", OpenAIChat, "Hello! Grüße, 世界 🌍 Line one\nline \"two\".", "stop", Usage{19, 11, 30}, "", "", 1},
		{"openai_chat_tools_stream.txt", OpenAIChat, "", "tool_calls", Usage{}, "get_weather", `{"location":"Paris"}`, 1},
		{"openai_completions_stream.txt", OpenAICompletions, "Once upon a time", "length", Usage{5, 4, 9}, "", "", 1},
		{"anthropic_stream.txt", AnthropicMessages, "Hello, wörld — ☃ 𝄞!", "tool_use", Usage{25, 89, 114}, "get_weather", `{"location": "San Francisco, CA"}`, 1},
		{"openai_responses_stream.txt", OpenAIResponses, "Hi there — ünïcödé", "completed", Usage{37, 11, 48}, "lookup", `{"q":1}`, 1},
		// Generic recognises each shape.
		{"openai_chat_stream.txt", Generic, "Hello! Grüße, 世界 🌍 Line one\nline \"two\".", "stop", Usage{19, 11, 30}, "", "", 1},
		{"anthropic_stream.txt", Generic, "Hello, wörld — ☃ 𝄞!", "tool_use", Usage{25, 89, 114}, "get_weather", `{"location": "San Francisco, CA"}`, 1},
		{"openai_responses_stream.txt", Generic, "Hi there — ünïcödé", "completed", Usage{37, 11, 48}, "lookup", `{"q":1}`, 1},
	}
	for _, tt := range tests {
		t.Run(string(tt.api)+"/"+tt.file, func(t *testing.T) {
			t.Parallel()
			var text strings.Builder
			var usage Usage
			var finish, toolName, toolArgs string
			done := 0
			for i, ev := range fixtureEvents(t, tt.file) {
				d, err := DecodeEvent(tt.api, ev)
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				if d.HasText {
					text.WriteString(d.Text)
				}
				if d.FinishReason != "" {
					finish = d.FinishReason
				}
				usage.Merge(d.Usage)
				if d.ToolCall != nil {
					if d.ToolCall.Name != "" {
						toolName = d.ToolCall.Name
					}
					toolArgs += d.ToolCall.Arguments
				}
				if d.Done {
					done++
				}
				if d.Error {
					t.Errorf("event %d: unexpected Error", i)
				}
			}
			if text.String() != tt.text {
				t.Errorf("text = %q, want %q", text.String(), tt.text)
			}
			if finish != tt.finish {
				t.Errorf("finish = %q, want %q", finish, tt.finish)
			}
			if usage != tt.usage {
				t.Errorf("usage = %+v, want %+v", usage, tt.usage)
			}
			if toolName != tt.toolName || toolArgs != tt.toolArgs {
				t.Errorf("tool = %q %q, want %q %q", toolName, toolArgs, tt.toolName, tt.toolArgs)
			}
			if done != tt.doneCount {
				t.Errorf("done events = %d, want %d", done, tt.doneCount)
			}
		})
	}
}

func ev(name, data string) Event { return Event{Name: name, Data: []byte(data)} }

func TestDecodeEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		api     API
		ev      Event
		want    Delta
		wantErr error
	}{
		{"chat done", OpenAIChat, ev("", "[DONE]"), Delta{Done: true}, nil},
		{"chat done with spaces", OpenAIChat, ev("", " [DONE] "), Delta{Done: true}, nil},
		{"chat error chunk", OpenAIChat, ev("", `{"error":{"message":"boom","type":"server_error"}}`), Delta{Error: true}, nil},
		{"chat null error", OpenAIChat, ev("", `{"error":null,"choices":[]}`), Delta{}, nil},
		{"chat index", OpenAIChat, ev("", `{"choices":[{"index":2,"delta":{"content":"x"}}]}`), Delta{Text: "x", HasText: true, Index: 2}, nil},
		{"chat empty content counts", OpenAIChat, ev("", `{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`), Delta{HasText: true}, nil},
		{"chat null content", OpenAIChat, ev("", `{"choices":[{"delta":{"content":null}}]}`), Delta{}, nil},
		{"chat legacy function_call", OpenAIChat, ev("", `{"choices":[{"delta":{"function_call":{"name":"f","arguments":""}}}]}`), Delta{ToolCall: &ToolCall{Name: "f"}}, nil},
		{"chat usage chunk", OpenAIChat, ev("", `{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}`),
			Delta{Usage: &Usage{3, 5, 8}, UsageOnly: true}, nil},
		{"chat usage beside a choice is not usage-only", OpenAIChat,
			ev("", `{"choices":[{"index":0,"delta":{"content":"x"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`),
			Delta{Text: "x", HasText: true, Usage: &Usage{1, 1, 2}}, nil},
		{"chat null usage", OpenAIChat, ev("", `{"choices":[],"usage":null}`), Delta{}, nil},
		{"chat malformed", OpenAIChat, ev("", `{"choices":[`), Delta{}, ErrMalformed},
		{"chat no data", OpenAIChat, Event{}, Delta{}, nil},
		{"chat non-object", OpenAIChat, ev("", `[1]`), Delta{}, nil},
		{"chat wrong types", OpenAIChat, ev("", `{"choices":5,"usage":"x"}`), Delta{}, nil},
		{"completions text", OpenAICompletions, ev("", `{"choices":[{"text":"t","index":0,"finish_reason":"stop"}]}`), Delta{Text: "t", HasText: true, FinishReason: "stop"}, nil},
		{"anthropic error", AnthropicMessages, ev("error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`), Delta{Error: true}, nil},
		{"anthropic ping", AnthropicMessages, ev("ping", `{"type":"ping"}`), Delta{}, nil},
		{"anthropic type from event name", AnthropicMessages, ev("content_block_delta", `{"index":3,"delta":{"type":"text_delta","text":"n"}}`), Delta{Text: "n", HasText: true, Index: 3}, nil},
		{"anthropic stop without data", AnthropicMessages, Event{Name: "message_stop"}, Delta{Done: true}, nil},
		{"anthropic thinking delta is not text", AnthropicMessages, ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}`), Delta{}, nil},
		{"anthropic message_delta usage", AnthropicMessages, ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}`), Delta{FinishReason: "end_turn", Usage: &Usage{0, 15, 15}}, nil},
		{"responses error", OpenAIResponses, ev("error", `{"type":"error","code":"ERR","message":"bad","param":null,"sequence_number":1}`), Delta{Error: true}, nil},
		{"responses failed", OpenAIResponses, ev("response.failed", `{"type":"response.failed","response":{"status":"failed","usage":null}}`), Delta{Done: true, Error: true, FinishReason: "failed"}, nil},
		{"responses incomplete", OpenAIResponses, ev("response.incomplete", `{"type":"response.incomplete","response":{"status":"incomplete","usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3}}}`), Delta{Done: true, FinishReason: "incomplete", Usage: &Usage{1, 2, 3}}, nil},
		{"embeddings has no stream", OpenAIEmbeddings, ev("", `{"choices":[{"delta":{"content":"x"}}]}`), Delta{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := DecodeEvent(tt.api, tt.ev)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// jsonEqual reports whether a and b are the same JSON value.
func jsonEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("unmarshal %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func TestWithTextFixtures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file string
		api  API
	}{
		{"openai_chat_stream.txt", OpenAIChat},
		{"openai_completions_stream.txt", OpenAICompletions},
		{"anthropic_stream.txt", AnthropicMessages},
		{"openai_responses_stream.txt", OpenAIResponses},
		{"openai_chat_tools_stream.txt", OpenAIChat},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			const repl = "[REDACTED \"x\" ☃\n]"
			for i, e := range fixtureEvents(t, tc.file) {
				before, err := DecodeEvent(tc.api, e)
				if err != nil {
					t.Fatal(err)
				}
				got, err := WithText(tc.api, e, repl)
				if !before.HasText {
					if !errors.Is(err, ErrNoText) {
						t.Errorf("event %d: WithText on a textless event: err = %v, want ErrNoText", i, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				after, err := DecodeEvent(tc.api, got)
				if err != nil {
					t.Fatal(err)
				}
				want := before
				want.Text = repl
				if !reflect.DeepEqual(after, want) {
					t.Errorf("event %d: decoded %+v, want %+v", i, after, want)
				}
				if got.Name != e.Name || got.ID != e.ID {
					t.Errorf("event %d: name/id changed", i)
				}
				if !bytes.Equal(got.Raw, got.Encode()) {
					t.Errorf("event %d: Raw is not the encoding", i)
				}
				// Putting the old text back gives the original JSON.
				back, err := WithText(tc.api, got, before.Text)
				if err != nil {
					t.Fatal(err)
				}
				if !jsonEqual(t, back.Data, e.Data) {
					t.Errorf("event %d: round trip changed JSON:\n%s\n%s", i, back.Data, e.Data)
				}
				// Re-parsing Raw yields the same event.
				re, _, err := feedAll(t, 0, got.Raw)
				if err != nil || len(re) != 1 || !bytes.Equal(re[0].Data, got.Data) || re[0].Name != got.Name {
					t.Errorf("event %d: Raw does not re-parse: %v %+q", i, err, re)
				}
			}
		})
	}
}

func TestWithTextErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		api  API
		ev   Event
		want error
	}{
		{"done", OpenAIChat, ev("", "[DONE]"), ErrNoText},
		{"malformed", OpenAIChat, ev("", "{"), ErrMalformed},
		{"no data", AnthropicMessages, Event{Name: "ping"}, ErrNoText},
		{"null content", OpenAIChat, ev("", `{"choices":[{"delta":{"content":null}}]}`), ErrNoText},
		{"array data", OpenAIChat, ev("", `[]`), ErrNoText},
		{"input_json_delta", AnthropicMessages, ev("content_block_delta", `{"type":"content_block_delta","delta":{"type":"input_json_delta","partial_json":"{"}}`), ErrNoText},
	}
	for _, tt := range tests {
		if _, err := WithText(tt.api, tt.ev, "x"); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestTextEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		api      API
		template Event
		want     Event
	}{
		{
			name:     "chat",
			api:      OpenAIChat,
			template: ev("", `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}`),
			want:     ev("", `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"held \"back\""},"finish_reason":null}],"usage":null}`),
		},
		{
			name:     "chat from usage chunk",
			api:      OpenAIChat,
			template: ev("", `{"id":"c","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":1}}`),
			want:     ev("", `{"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"held \"back\""},"finish_reason":null}],"usage":null}`),
		},
		{
			name:     "chat template without choices",
			api:      OpenAIChat,
			template: ev("", `{"id":"c"}`),
			want:     ev("", `{"id":"c","choices":[{"index":0,"delta":{"content":"held \"back\""},"finish_reason":null}]}`),
		},
		{
			name:     "completions",
			api:      OpenAICompletions,
			template: ev("", `{"id":"cmpl-1","object":"text_completion","created":5,"choices":[{"text":"x","index":1,"logprobs":null,"finish_reason":null}],"model":"i"}`),
			want:     ev("", `{"id":"cmpl-1","object":"text_completion","created":5,"choices":[{"index":1,"text":"held \"back\"","logprobs":null,"finish_reason":null}],"model":"i"}`),
		},
		{
			name:     "responses",
			api:      OpenAIResponses,
			template: Event{Name: "response.output_text.delta", ID: "9", Data: []byte(`{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi","logprobs":[{"token":"Hi"}]}`)},
			want:     Event{Name: "response.output_text.delta", ID: "9", Data: []byte(`{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"held \"back\"","logprobs":[]}`)},
		},
		{
			name:     "anthropic",
			api:      AnthropicMessages,
			template: ev("content_block_delta", `{"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"Hi"}}`),
			want:     ev("content_block_delta", `{"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"held \"back\""}}`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := TextEvent(tt.api, tt.template, `held "back"`)
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tt.want.Name || got.ID != tt.want.ID || string(got.Data) != string(tt.want.Data) {
				t.Errorf("got  %q %q %s\nwant %q %q %s", got.Name, got.ID, got.Data, tt.want.Name, tt.want.ID, tt.want.Data)
			}
			if !bytes.Equal(got.Raw, got.Encode()) {
				t.Error("Raw is not the encoding")
			}
			d, err := DecodeEvent(tt.api, got)
			if err != nil || !d.HasText || d.Text != `held "back"` {
				t.Errorf("decoded %+v, %v", d, err)
			}
		})
	}
	for _, bad := range []struct {
		api API
		ev  Event
	}{
		{OpenAIChat, ev("", "[DONE]")},
		{OpenAIChat, ev("", "{")},
		{OpenAIResponses, ev("response.completed", `{"type":"response.completed"}`)},
		{OpenAIEmbeddings, ev("", `{}`)},
	} {
		if _, err := TextEvent(bad.api, bad.ev, "x"); err == nil {
			t.Errorf("TextEvent(%s, %q): want error", bad.api, bad.ev.Data)
		}
	}
}

func TestEditEvent(t *testing.T) {
	t.Parallel()
	up := strings.ToUpper
	// Every Responses event that repeats the text must be rewritten.
	for i, e := range fixtureEvents(t, "openai_responses_stream.txt") {
		got, _, err := EditEvent(OpenAIResponses, e, up)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if bytes.Contains(got.Data, []byte("Hi there")) || bytes.Contains(got.Data, []byte(`"Hi"`)) {
			t.Errorf("event %d still carries original text: %s", i, got.Data)
		}
		if !bytes.Contains(e.Data, []byte(`"delta":"{\"q\":1}"`)) {
			continue
		}
		if !bytes.Equal(got.Data, e.Data) {
			t.Errorf("event %d: tool arguments must not be edited: %s", i, got.Data)
		}
	}
	tests := []struct {
		name    string
		api     API
		ev      Event
		want    string
		changed bool
	}{
		{"chat all choices", OpenAIChat, ev("", `{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}`),
			`{"choices":[{"index":0,"delta":{"content":"A"}},{"index":1,"delta":{"content":"B"}}]}`, true},
		{"chat done", OpenAIChat, ev("", `[DONE]`), `[DONE]`, false},
		{"completions", OpenAICompletions, ev("", `{"choices":[{"text":"a"}]}`), `{"choices":[{"text":"A"}]}`, true},
		{"anthropic delta", AnthropicMessages, ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}`),
			`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"A"}}`, true},
		{"anthropic block start", AnthropicMessages, ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"pre"}}`),
			`{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"PRE"}}`, true},
		{"anthropic message start", AnthropicMessages, ev("message_start", `{"type":"message_start","message":{"content":[{"type":"text","text":"x"}]}}`),
			`{"type":"message_start","message":{"content":[{"type":"text","text":"X"}]}}`, true},
		{"anthropic input json untouched", AnthropicMessages, ev("content_block_delta", `{"type":"content_block_delta","delta":{"type":"input_json_delta","partial_json":"a"}}`),
			`{"type":"content_block_delta","delta":{"type":"input_json_delta","partial_json":"a"}}`, false},
	}
	for _, tt := range tests {
		got, changed, err := EditEvent(tt.api, tt.ev, up)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if changed != tt.changed || string(got.Data) != tt.want {
			t.Errorf("%s: got %s (changed %v), want %s (%v)", tt.name, got.Data, changed, tt.want, tt.changed)
		}
		if changed && !bytes.Equal(got.Raw, got.Encode()) {
			t.Errorf("%s: Raw not re-encoded", tt.name)
		}
		if !changed && !bytes.Equal(got.Raw, tt.ev.Raw) {
			t.Errorf("%s: unchanged event lost its Raw", tt.name)
		}
	}
}

func TestGenericTextStream(t *testing.T) {
	t.Parallel()
	e := ev("", "plain token")
	d, err := DecodeEvent(Generic, e)
	if err != nil || !d.HasText || d.Text != "plain token" {
		t.Fatalf("DecodeEvent = %+v, %v", d, err)
	}
	w, err := WithText(Generic, e, "X\nY")
	if err != nil || string(w.Raw) != "data: X\ndata: Y\n\n" {
		t.Fatalf("WithText = %q, %v", w.Raw, err)
	}
	te, err := TextEvent(Generic, e, "Z")
	if err != nil || string(te.Data) != "Z" {
		t.Fatalf("TextEvent = %q, %v", te.Data, err)
	}
	out, changed, err := EditEvent(Generic, e, strings.ToUpper)
	if err != nil || !changed || string(out.Data) != "PLAIN TOKEN" {
		t.Fatalf("EditEvent = %q %v %v", out.Data, changed, err)
	}
	if _, err := DecodeEvent(OpenAIChat, e); !errors.Is(err, ErrMalformed) {
		t.Errorf("OpenAIChat plain data: err = %v, want ErrMalformed", err)
	}
	if d, err := DecodeEvent(Generic, ev("", "[DONE]")); err != nil || !d.Done {
		t.Errorf("Generic [DONE] = %+v, %v", d, err)
	}
}

func TestSequenceNumber(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		data    string
		n       int64
		want    string // after WithSequenceNumber(n); empty: it fails
		wantSeq int64
		ok      bool
	}{
		{"delta", `{"type":"response.output_text.delta","sequence_number":9,"delta":"x"}`, 12, `{"type":"response.output_text.delta","sequence_number":12,"delta":"x"}`, 9, true},
		{"spaced", `{ "sequence_number" : 0 , "type":"response.created"}`, 1, `{ "sequence_number" : 1 , "type":"response.created"}`, 0, true},
		{"nested only", `{"type":"x","response":{"sequence_number":3}}`, 4, "", 0, false},
		{"not a number", `{"sequence_number":"3"}`, 4, "", 0, false},
		{"none", `{"type":"response.output_text.delta","delta":"x"}`, 1, "", 0, false},
		{"not JSON", `{"sequence_number":3`, 4, "", 0, false},
		{"done", `[DONE]`, 4, "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev := Event{Name: "response.output_text.delta", ID: "7", Data: []byte(tt.data)}
			n, ok := SequenceNumber(ev)
			if ok != tt.ok || n != tt.wantSeq {
				t.Errorf("SequenceNumber = %d, %v; want %d, %v", n, ok, tt.wantSeq, tt.ok)
			}
			got, err := WithSequenceNumber(ev, tt.n)
			if tt.want == "" {
				if !errors.Is(err, ErrMalformed) {
					t.Errorf("WithSequenceNumber error = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil || string(got.Data) != tt.want || got.Name != ev.Name || got.ID != ev.ID {
				t.Errorf("WithSequenceNumber = %q (%s, %s), %v; want %q", got.Data, got.Name, got.ID, err, tt.want)
			}
			if n, ok := SequenceNumber(got); !ok || n != tt.n {
				t.Errorf("renumbered event reads %d, %v", n, ok)
			}
			if !strings.Contains(string(got.Raw), "data: "+tt.want) {
				t.Errorf("Raw %q not re-encoded", got.Raw)
			}
		})
	}
}
