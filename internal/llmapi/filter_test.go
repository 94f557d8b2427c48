package llmapi

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// hide replaces every "SECRET" with "[X]", as a redactor would a finding.
func hide(s string) string { return strings.ReplaceAll(s, "SECRET", "[X]") }

func TestEditResponseFiltersEveryField(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		api  API
		body string
		want string // "" means unchanged
	}{
		{
			name: "chat logprobs blanked when the text is redacted",
			api:  OpenAIChat,
			body: `{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"a SECRET b"},"logprobs":{"content":[{"token":"SEC","logprob":-0.1,"bytes":[83,69,67],"top_logprobs":[{"token":"RET","logprob":-2,"bytes":[82]}]}]},"finish_reason":"stop"}]}`,
			want: `{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"a [X] b"},"logprobs":{"content":[{"token":"","logprob":-0.1,"bytes":[],"top_logprobs":[{"token":"","logprob":-2,"bytes":[]}]}]},"finish_reason":"stop"}]}`,
		},
		{
			name: "chat logprobs kept when nothing is redacted",
			api:  OpenAIChat,
			body: `{"choices":[{"message":{"content":"fine"},"logprobs":{"content":[{"token":"fine","logprob":-0.1,"bytes":[102]}]}}]}`,
		},
		{
			name: "completions legacy logprobs blanked",
			api:  OpenAICompletions,
			body: `{"choices":[{"text":"SECRET","logprobs":{"tokens":["SEC","RET"],"token_logprobs":[-1,-2],"top_logprobs":[{"SEC":-1},{"RET":-2}],"text_offset":[0,3]}}]}`,
			want: `{"choices":[{"text":"[X]","logprobs":{"tokens":["",""],"token_logprobs":[-1,-2],"top_logprobs":[{},{}],"text_offset":[0,3]}}]}`,
		},
		{
			name: "chat tool-call arguments, refusal and reasoning",
			api:  OpenAIChat,
			body: `{"choices":[{"message":{"content":null,"refusal":"no SECRET","reasoning_content":"think SECRET","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"to\":\"SECRET\"}"}}]}}]}`,
			want: `{"choices":[{"message":{"content":null,"refusal":"no [X]","reasoning_content":"think [X]","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"to\":\"[X]\"}"}}]}}]}`,
		},
		{
			name: "unknown fields at any depth",
			api:  OpenAIChat,
			body: `{"x_extra":{"deep":[{"note":"SECRET"}]},"choices":[]}`,
			want: `{"x_extra":{"deep":[{"note":"[X]"}]},"choices":[]}`,
		},
		{
			name: "safe fields pass",
			api:  OpenAIChat,
			body: `{"id":"SECRET","object":"SECRET","model":"SECRET","system_fingerprint":"SECRET","choices":[{"finish_reason":"SECRET"}]}`,
		},
		{
			name: "the safe list stops at a tool_use input",
			api:  AnthropicMessages,
			body: `{"id":"msg","content":[{"type":"tool_use","id":"tu","name":"n","input":{"id":"SECRET","nested":{"type":"SECRET"}}},{"type":"thinking","thinking":"SECRET","signature":"SECRET"}]}`,
			want: `{"id":"msg","content":[{"type":"tool_use","id":"tu","name":"n","input":{"id":"[X]","nested":{"type":"[X]"}}},{"type":"thinking","thinking":"[X]","signature":"SECRET"}]}`,
		},
		{
			name: "responses reasoning summary and function call",
			api:  OpenAIResponses,
			body: `{"id":"resp","output":[{"type":"reasoning","id":"rs","summary":[{"type":"summary_text","text":"SECRET"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"SECRET"}]}`,
			want: `{"id":"resp","output":[{"type":"reasoning","id":"rs","summary":[{"type":"summary_text","text":"[X]"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"[X]"}]}`,
		},
		{
			name: "generic JSON: every string, ids too",
			api:  Generic,
			body: `{"id":"SECRET","data":["SECRET"]}`,
			want: `{"id":"[X]","data":["[X]"]}`,
		},
		{
			name: "generic text",
			api:  Generic,
			body: `line SECRET`,
			want: `line [X]`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, changed, err := EditResponse(tt.api, []byte(tt.body), hide)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			if want == "" {
				want = tt.body
			}
			if changed != (tt.want != "") || string(out) != want {
				t.Errorf("changed %v\ngot  %s\nwant %s", changed, out, want)
			}
		})
	}
}

func TestFilteredText(t *testing.T) {
	t.Parallel()
	got, err := FilteredText(OpenAIChat, []byte(`{"id":"i","choices":[{"message":{"content":"a","tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}}],"extra":"e"}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "a\nf\n{}\ne"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := FilteredText(OpenAIChat, []byte(`[1]`)); err == nil {
		t.Error("a chat answer that is not an object must be malformed")
	}
}

// filterEvent runs FilterEvent with hide and records what it saw.
func filterEvent(t *testing.T, api API, name, data string) (string, []Channel) {
	t.Helper()
	var seen []Channel
	ev := Event{Name: name, Data: []byte(data)}
	out, _, err := FilterEvent(api, ev, true, func(ch Channel, s string) string {
		seen = append(seen, ch)
		return hide(s)
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(out.Data), seen
}

func TestFilterEventChannels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, api, ev, data string
		want                string // "" means unchanged
		channels            []Channel
	}{
		{
			name:     "chat: every choice (n=2)",
			api:      string(OpenAIChat),
			data:     `{"id":"c","choices":[{"index":0,"delta":{"content":"a SECRET"}},{"index":1,"delta":{"content":"b SECRET"}}]}`,
			want:     `{"id":"c","choices":[{"index":0,"delta":{"content":"a [X]"}},{"index":1,"delta":{"content":"b [X]"}}]}`,
			channels: []Channel{{Field: FieldContent, Index: 0}, {Field: FieldContent, Index: 1}},
		},
		{
			name:     "chat: tool-call argument deltas, one channel per call",
			api:      string(OpenAIChat),
			data:     `{"choices":[{"index":1,"delta":{"tool_calls":[{"index":2,"id":"call","function":{"name":"f","arguments":"SECRET"}}]}}]}`,
			want:     `{"choices":[{"index":1,"delta":{"tool_calls":[{"index":2,"id":"call","function":{"name":"f","arguments":"[X]"}}]}}]}`,
			channels: []Channel{{}, {Field: FieldArguments, Index: 1, Sub: 2}},
		},
		{
			name:     "chat: refusal and reasoning deltas",
			api:      string(OpenAIChat),
			data:     `{"choices":[{"index":0,"delta":{"refusal":"SECRET","reasoning_content":"SECRET","reasoning":"SECRET"}}]}`,
			want:     `{"choices":[{"index":0,"delta":{"refusal":"[X]","reasoning_content":"[X]","reasoning":"[X]"}}]}`,
			channels: []Channel{{Field: FieldRefusal}, {Field: FieldReasoningContent}, {Field: FieldReasoning}},
		},
		{
			name:     "chat: logprob tokens blanked, unknown fields whole",
			api:      string(OpenAIChat),
			data:     `{"choices":[{"index":0,"delta":{"content":"x"},"logprobs":{"content":[{"token":"x","logprob":-1,"bytes":[120],"top_logprobs":[{"token":"y","logprob":-2,"bytes":[121]}]}]}}],"x_note":"SECRET"}`,
			want:     `{"choices":[{"index":0,"delta":{"content":"x"},"logprobs":{"content":[{"token":"","logprob":-1,"bytes":[],"top_logprobs":[{"token":"","logprob":-2,"bytes":[]}]}]}}],"x_note":"[X]"}`,
			channels: []Channel{{Field: FieldContent}, {}},
		},
		{
			name:     "responses: reasoning summary delta",
			api:      string(OpenAIResponses),
			data:     `{"type":"response.reasoning_summary_text.delta","item_id":"rs","output_index":3,"summary_index":1,"delta":"SECRET"}`,
			want:     `{"type":"response.reasoning_summary_text.delta","item_id":"rs","output_index":3,"summary_index":1,"delta":"[X]"}`,
			channels: []Channel{{Field: "response.reasoning_summary_text.delta", Index: 3, Sub: 1}},
		},
		{
			name:     "responses: function-call argument delta",
			api:      string(OpenAIResponses),
			data:     `{"type":"response.function_call_arguments.delta","output_index":1,"delta":"SECRET"}`,
			want:     `{"type":"response.function_call_arguments.delta","output_index":1,"delta":"[X]"}`,
			channels: []Channel{{Field: "response.function_call_arguments.delta", Index: 1}},
		},
		{
			name:     "responses: done event filtered whole",
			api:      string(OpenAIResponses),
			data:     `{"type":"response.function_call_arguments.done","output_index":1,"arguments":"SECRET"}`,
			want:     `{"type":"response.function_call_arguments.done","output_index":1,"arguments":"[X]"}`,
			channels: []Channel{{}},
		},
		{
			name:     "anthropic: thinking delta",
			api:      string(AnthropicMessages),
			data:     `{"type":"content_block_delta","index":2,"delta":{"type":"thinking_delta","thinking":"SECRET"}}`,
			want:     `{"type":"content_block_delta","index":2,"delta":{"type":"thinking_delta","thinking":"[X]"}}`,
			channels: []Channel{{Field: FieldThinking, Index: 2}},
		},
		{
			name:     "anthropic: input_json delta",
			api:      string(AnthropicMessages),
			data:     `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"to\":\"SECRET"}}`,
			want:     `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"to\":\"[X]"}}`,
			channels: []Channel{{Field: FieldPartialJSON, Index: 1}},
		},
		{
			name: "anthropic: signature passes",
			api:  string(AnthropicMessages),
			data: `{"type":"content_block_delta","index":1,"delta":{"type":"signature_delta","signature":"SECRET"}}`,
		},
		{
			name:     "generic plain text",
			api:      string(Generic),
			data:     `SECRET`,
			want:     `[X]`,
			channels: []Channel{{Field: FieldData}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, seen := filterEvent(t, API(tt.api), tt.ev, tt.data)
			want := tt.want
			if want == "" {
				want = tt.data
			}
			if got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			if !slices.Equal(seen, tt.channels) {
				t.Errorf("channels %+v, want %+v", seen, tt.channels)
			}
			if json.Valid([]byte(tt.data)) && !json.Valid([]byte(got)) {
				t.Errorf("output is not JSON: %s", got)
			}
		})
	}
}

func TestEventEnds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, api, ev, data string
		all                 bool
		idx                 []int
	}{
		{"done", string(OpenAIChat), "", "[DONE]", true, nil},
		{"chat second choice finishes", string(OpenAIChat), "", `{"choices":[{"index":1,"delta":{},"finish_reason":"stop"}]}`, false, []int{1}},
		{"chat delta", string(OpenAIChat), "", `{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}`, false, nil},
		{"responses item done", string(OpenAIResponses), "", `{"type":"response.output_item.done","output_index":2}`, false, []int{2}},
		{"responses completed", string(OpenAIResponses), "", `{"type":"response.completed"}`, true, nil},
		{"anthropic block stop", string(AnthropicMessages), "content_block_stop", `{"type":"content_block_stop","index":3}`, false, []int{3}},
		{"anthropic message stop", string(AnthropicMessages), "message_stop", `{"type":"message_stop"}`, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			all, idx := EventEnds(API(tt.api), Event{Name: tt.ev, Data: []byte(tt.data)})
			if all != tt.all || !slices.Equal(idx, tt.idx) {
				t.Errorf("got %v %v, want %v %v", all, idx, tt.all, tt.idx)
			}
		})
	}
}

func TestChannelEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, api, ev, template string
		ch                      Channel
		want                    string
	}{
		{
			name:     "chat tool arguments: no id or name repeated",
			api:      string(OpenAIChat),
			template: `{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","x":"SECRET","choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"id":"call","function":{"name":"f","arguments":"{"}}]}}]}`,
			ch:       Channel{Field: FieldArguments, Index: 1, Sub: 0},
			want:     `{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"held"}}]},"finish_reason":null}]}`,
		},
		{
			name:     "chat reasoning",
			api:      string(OpenAIChat),
			template: `{"id":"c","choices":[{"index":0,"delta":{"reasoning_content":"x"}}]}`,
			ch:       Channel{Field: FieldReasoningContent},
			want:     `{"id":"c","choices":[{"index":0,"delta":{"reasoning_content":"held"},"finish_reason":null}]}`,
		},
		{
			name:     "responses: other strings blanked",
			api:      string(OpenAIResponses),
			template: `{"type":"response.output_text.delta","item_id":"m","output_index":0,"content_index":0,"delta":"x","x_note":"SECRET","logprobs":[{"token":"x"}]}`,
			ch:       Channel{Field: "response.output_text.delta"},
			want:     `{"type":"response.output_text.delta","item_id":"m","output_index":0,"content_index":0,"delta":"held","x_note":"","logprobs":[]}`,
		},
		{
			name:     "anthropic thinking",
			api:      string(AnthropicMessages),
			ev:       "content_block_delta",
			template: `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"x"}}`,
			ch:       Channel{Field: FieldThinking},
			want:     `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"held"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev, err := ChannelEvent(API(tt.api), Event{Name: tt.ev, Data: []byte(tt.template)}, tt.ch, "held")
			if err != nil {
				t.Fatal(err)
			}
			if string(ev.Data) != tt.want {
				t.Errorf("got  %s\nwant %s", ev.Data, tt.want)
			}
		})
	}
}

func TestResponseAPI(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]API{
		"/v1/responses/resp_123":               OpenAIResponses,
		"/v1/chat/completions/chatcmpl-1":      OpenAIChat,
		"/v1/responses/resp_123/input_items":   Generic,
		"/v1/files/file-1/content":             Generic,
		"/v1/chat/completions":                 OpenAIChat,
		"/v1/chat/completions/chatcmpl-1/msgs": Generic,
	} {
		if got := ResponseAPI(path); got != want {
			t.Errorf("ResponseAPI(%q) = %q, want %q", path, got, want)
		}
	}
}

func FuzzFilterEvent(f *testing.F) {
	for _, s := range []string{
		`{"choices":[{"index":0,"delta":{"content":"a","tool_calls":[{"index":0,"function":{"arguments":"b"}}]},"logprobs":{"content":[{"token":"a","bytes":[97]}]}}]}`,
		`{"type":"response.output_text.delta","output_index":0,"delta":"x","logprobs":[{"token":"x"}]}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{"}}`,
		`{"choices":[{"text":"t","logprobs":{"tokens":["t"],"top_logprobs":[{"t":-1}]}}]}`,
	} {
		f.Add(s, uint8(0))
	}
	apis := []API{OpenAIChat, OpenAICompletions, OpenAIResponses, AnthropicMessages, Generic}
	f.Fuzz(func(t *testing.T, data string, which uint8) {
		api := apis[int(which)%len(apis)]
		ev := Event{Data: []byte(data)}
		out, changed, err := FilterEvent(api, ev, which&8 != 0, func(_ Channel, s string) string { return "<" + s + ">" })
		if err != nil {
			return
		}
		if changed && json.Valid([]byte(data)) && !json.Valid(out.Data) {
			t.Fatalf("valid JSON became invalid: %s -> %s", data, out.Data)
		}
		if all, idx := EventEnds(api, ev); all && len(idx) > 0 {
			t.Fatalf("EventEnds reports both all and indexes")
		}
		body, ch, err := EditResponse(api, []byte(data), func(s string) string { return fmt.Sprint(len(s)) })
		if err == nil && ch && json.Valid([]byte(data)) && !json.Valid(body) {
			t.Fatalf("EditResponse made invalid JSON: %s -> %s", data, body)
		}
	})
}
