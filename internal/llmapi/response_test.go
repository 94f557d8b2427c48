package llmapi

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseResponse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		api     API
		body    string
		want    *Response
		wantErr error
	}{
		{
			name: "chat",
			api:  OpenAIChat,
			body: `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o",
				"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there","refusal":null},"logprobs":null,"finish_reason":"stop"}],
				"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"completion_tokens_details":{"reasoning_tokens":0}}}`,
			want: &Response{Model: "gpt-4o", ID: "chatcmpl-1", Text: "Hello there", FinishReason: "stop", Usage: &Usage{9, 12, 21, 0}},
		},
		{
			name: "chat tool calls and several choices",
			api:  OpenAIChat,
			body: `{"model":"gpt-4o","choices":[
				{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},"finish_reason":"tool_calls"},
				{"index":1,"message":{"role":"assistant","content":"second"},"finish_reason":"stop"},
				{"index":2,"message":{"role":"assistant","content":[{"type":"text","text":"third"}]},"finish_reason":"stop"}]}`,
			want: &Response{Model: "gpt-4o", Text: "second\nthird", FinishReason: "tool_calls",
				ToolCalls: []ToolCall{{ID: "call_1", Name: "f", Arguments: `{"x":1}`}}},
		},
		{
			name: "chat missing fields",
			api:  OpenAIChat,
			body: `{}`,
			want: &Response{},
		},
		{
			name: "chat wrong types",
			api:  OpenAIChat,
			body: `{"model":1,"choices":{"a":1},"usage":"many"}`,
			want: &Response{},
		},
		{
			name: "chat wrong element types",
			api:  OpenAIChat,
			body: `{"choices":[1,"x",{"message":5},{"message":{"content":7}}]}`,
			want: &Response{},
		},
		{
			name:    "chat malformed",
			api:     OpenAIChat,
			body:    `{"choices":[}`,
			wantErr: ErrMalformed,
		},
		{
			name: "completions",
			api:  OpenAICompletions,
			body: `{"id":"cmpl-1","object":"text_completion","model":"gpt-3.5-turbo-instruct",
				"choices":[{"text":"\n\nThis is a test.","index":0,"logprobs":null,"finish_reason":"length"}],
				"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`,
			want: &Response{Model: "gpt-3.5-turbo-instruct", ID: "cmpl-1", Text: "\n\nThis is a test.", FinishReason: "length", Usage: &Usage{5, 7, 12, 0}},
		},
		{
			name: "responses",
			api:  OpenAIResponses,
			body: `{"id":"resp_1","object":"response","status":"completed","model":"gpt-4.1",
				"output":[
					{"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"thinking"}]},
					{"type":"message","id":"msg_1","role":"assistant","content":[{"type":"output_text","text":"Part A","annotations":[]},{"type":"refusal","refusal":"no"},{"type":"output_text","text":"Part B"}]},
					{"type":"function_call","id":"fc_1","call_id":"call_1","name":"lookup","arguments":"{}"}],
				"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"total_tokens":123}}`,
			want: &Response{Model: "gpt-4.1", ID: "resp_1", Text: "Part A\nPart B", FinishReason: "completed",
				ToolCalls: []ToolCall{{ID: "call_1", Name: "lookup", Arguments: "{}"}}, Usage: &Usage{36, 87, 123, 0}},
		},
		{
			name: "responses incomplete",
			api:  OpenAIResponses,
			body: `{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[]}`,
			want: &Response{FinishReason: "incomplete"},
		},
		{
			name: "embeddings usage only",
			api:  OpenAIEmbeddings,
			body: `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023,-0.009]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}`,
			want: &Response{Model: "text-embedding-3-small", Usage: &Usage{8, 0, 8, 0}},
		},
		{
			name: "anthropic",
			api:  AnthropicMessages,
			body: `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5",
				"content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris", "big": 1e400}},{"type":"text","text":"Done."}],
				"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":2095,"output_tokens":503,"cache_read_input_tokens":0}}`,
			want: &Response{Model: "claude-sonnet-4-5", ID: "msg_1", Text: "Let me check.\nDone.", FinishReason: "tool_use",
				ToolCalls: []ToolCall{{ID: "toolu_1", Name: "get_weather", Arguments: `{"city":"Paris","big":1e400}`}},
				Usage:     &Usage{2095, 503, 2598, 0}},
		},
		{
			name: "anthropic wrong types",
			api:  AnthropicMessages,
			body: `{"content":"x","stop_reason":3,"usage":[1]}`,
			want: &Response{},
		},
		{
			name:    "anthropic not object",
			api:     AnthropicMessages,
			body:    `"hi"`,
			wantErr: ErrMalformed,
		},
		{
			name: "generic JSON",
			api:  Generic,
			body: `{"model":"local","result":{"text":"out"},"usage":{"input_tokens":1,"output_tokens":2}}`,
			want: &Response{Model: "local", Text: "local\nout", Usage: &Usage{1, 2, 3, 0}},
		},
		{
			name: "generic text",
			api:  Generic,
			body: `plain answer`,
			want: &Response{Text: "plain answer"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseResponse(tt.api, []byte(tt.body))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseResponse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v (usage %+v)\nwant %+v (usage %+v)", got, got.Usage, tt.want, tt.want.Usage)
			}
		})
	}
}

func TestUsageMerge(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		events []*Usage
		want   Usage
	}{
		{"anthropic start then cumulative deltas", []*Usage{{25, 1, 26, 0}, nil, {0, 10, 10, 0}, {0, 15, 15, 0}}, Usage{25, 15, 40, 0}},
		{"openai final chunk", []*Usage{nil, {19, 11, 30, 0}}, Usage{19, 11, 30, 0}},
		{"reported total larger than sum", []*Usage{{10, 5, 20, 0}}, Usage{10, 5, 20, 0}},
		{"nothing", nil, Usage{}},
	}
	for _, tt := range tests {
		var u Usage
		for _, d := range tt.events {
			u.Merge(d)
		}
		if u != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, u, tt.want)
		}
	}
	var nilU *Usage
	nilU.Merge(&Usage{1, 2, 3, 0}) // must not panic
}
