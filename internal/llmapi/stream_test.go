package llmapi

import (
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
		{"openai_chat_stream.txt", OpenAIChat, "Hello! Grüße, 世界 🌍 Line one\nline \"two\".", "stop", Usage{19, 11, 30, 0}, "", "", 1},
		{"openai_chat_tools_stream.txt", OpenAIChat, "", "tool_calls", Usage{}, "get_weather", `{"location":"Paris"}`, 1},
		{"openai_completions_stream.txt", OpenAICompletions, "Once upon a time", "length", Usage{5, 4, 9, 0}, "", "", 1},
		{"anthropic_stream.txt", AnthropicMessages, "Hello, wörld — ☃ 𝄞!", "tool_use", Usage{25, 89, 114, 0}, "get_weather", `{"location": "San Francisco, CA"}`, 1},
		{"openai_responses_stream.txt", OpenAIResponses, "Hi there — ünïcödé", "completed", Usage{37, 11, 48, 0}, "lookup", `{"q":1}`, 1},
		// Generic recognises each shape.
		{"openai_chat_stream.txt", Generic, "Hello! Grüße, 世界 🌍 Line one\nline \"two\".", "stop", Usage{19, 11, 30, 0}, "", "", 1},
		{"anthropic_stream.txt", Generic, "Hello, wörld — ☃ 𝄞!", "tool_use", Usage{25, 89, 114, 0}, "get_weather", `{"location": "San Francisco, CA"}`, 1},
		{"openai_responses_stream.txt", Generic, "Hi there — ünïcödé", "completed", Usage{37, 11, 48, 0}, "lookup", `{"q":1}`, 1},
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
			Delta{Usage: &Usage{3, 5, 8, 0}, UsageOnly: true}, nil},
		{"chat usage beside a choice is not usage-only", OpenAIChat,
			ev("", `{"choices":[{"index":0,"delta":{"content":"x"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`),
			Delta{Text: "x", HasText: true, Usage: &Usage{1, 1, 2, 0}}, nil},
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
		{"anthropic message_delta usage", AnthropicMessages, ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}`), Delta{FinishReason: "end_turn", Usage: &Usage{0, 15, 15, 0}}, nil},
		{"responses error", OpenAIResponses, ev("error", `{"type":"error","code":"ERR","message":"bad","param":null,"sequence_number":1}`), Delta{Error: true}, nil},
		{"responses failed", OpenAIResponses, ev("response.failed", `{"type":"response.failed","response":{"status":"failed","usage":null}}`), Delta{Done: true, Error: true, FinishReason: "failed"}, nil},
		{"responses incomplete", OpenAIResponses, ev("response.incomplete", `{"type":"response.incomplete","response":{"status":"incomplete","usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3}}}`), Delta{Done: true, FinishReason: "incomplete", Usage: &Usage{1, 2, 3, 0}}, nil},
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
