package llmapi

import (
	"errors"
	"math"
	"reflect"
	"testing"
)

func TestDetectAPI(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		want API
	}{
		{"/v1/chat/completions", OpenAIChat},
		{"/openai/v1/chat/completions", OpenAIChat},
		{"/openai/deployments/gpt4/chat/completions", OpenAIChat},
		{"/v1/chat/completions/", OpenAIChat},
		{"/v1/completions", OpenAICompletions},
		{"/openai/deployments/x/completions", OpenAICompletions},
		{"/v1/responses", OpenAIResponses},
		{"/openai/v1/responses", OpenAIResponses},
		{"/v1/embeddings", OpenAIEmbeddings},
		{"/openai/deployments/emb/embeddings", OpenAIEmbeddings},
		{"/v1/messages", AnthropicMessages},
		{"/anthropic/v1/messages", AnthropicMessages},
		{"/messages", AnthropicMessages},
		{"/v1/threads/t_1/messages", Generic},
		{"/v1/messages/count_tokens", Generic},
		{"/v1/responses/resp_1", Generic},
		{"/v1/models", Generic},
		{"", Generic},
		{"/", Generic},
	}
	for _, tt := range tests {
		if got := DetectAPI(tt.path); got != tt.want {
			t.Errorf("DetectAPI(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestParseRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		api     API
		body    string
		want    *Request
		wantErr error
	}{
		{
			name: "chat string content",
			api:  OpenAIChat,
			body: `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":256,
				"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}`,
			want: &Request{API: OpenAIChat, Model: "gpt-4o", Stream: true, IncludeUsage: true, MaxTokens: 256,
				Messages: []Message{{"system", "Be brief."}, {"user", "Hi"}}},
		},
		{
			name: "chat multi-part content, tools and tool calls",
			api:  OpenAIChat,
			body: `{"model":"gpt-4o","max_completion_tokens":100,
				"messages":[
					{"role":"developer","content":[{"type":"text","text":"Rule one"},{"type":"text","text":"Rule two"}]},
					{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAA"}}]},
					{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"x\"}"}}]},
					{"role":"tool","tool_call_id":"call_1","content":"result text"},
					{"role":"assistant","content":[{"type":"refusal","refusal":"I can't."}]}
				],
				"tools":[{"type":"function","function":{"name":"lookup","parameters":{}}},{"type":"custom","custom":{"name":"grammar"}}]}`,
			want: &Request{API: OpenAIChat, Model: "gpt-4o", MaxTokens: 100,
				Messages: []Message{
					{"developer", "Rule one\nRule two"},
					{"user", "What is this?"},
					{"assistant", `{"q":"x"}`},
					{"tool", "result text"},
					{"assistant", "I can't."},
					{RoleOther, "data:image/png;base64,AAA"}, // binary, short: scanned as it stands
				},
				Tools:     []Tool{{Name: "lookup", Type: "function"}, {Name: "grammar", Type: "custom"}},
				ToolCalls: []ToolCall{{ID: "call_1", Name: "lookup", Arguments: `{"q":"x"}`}},
			},
		},
		{
			name: "chat legacy functions and function_call",
			api:  OpenAIChat,
			body: `{"messages":[{"role":"assistant","function_call":{"name":"f","arguments":"{}"}}],"functions":[{"name":"f"}]}`,
			want: &Request{API: OpenAIChat, Messages: []Message{{"assistant", "{}"}}, Tools: []Tool{{Name: "f"}},
				ToolCalls: []ToolCall{{Name: "f", Arguments: "{}"}}},
		},
		{
			name: "chat escapes decoded",
			api:  OpenAIChat,
			body: `{"messages":[{"role":"user","content":"line\nnext \u00e9 \ud83d\ude00 \"q\""}]}`,
			want: &Request{API: OpenAIChat, Messages: []Message{{"user", "line\nnext é 😀 \"q\""}}},
		},
		{
			name: "chat keys match exactly: Messages is not messages",
			api:  OpenAIChat,
			body: `{"Messages":[{"role":"user","content":"hidden"}],"messages":[{"role":"user","content":"seen"}]}`,
			want: &Request{API: OpenAIChat, Messages: []Message{{"user", "seen"}, {RoleOther, "hidden"}}},
		},
		{
			name: "chat escaped key is the same key",
			api:  OpenAIChat,
			body: `{"m\u0065ssages":[{"role":"user","content":"escaped"}]}`,
			want: &Request{API: OpenAIChat, Messages: []Message{{"user", "escaped"}}},
		},
		{
			name: "chat duplicate messages keys are both read",
			api:  OpenAIChat,
			body: `{"messages":[{"role":"user","content":"first"}],"messages":[{"role":"user","content":"second"}]}`,
			want: &Request{API: OpenAIChat, Messages: []Message{{"user", "first"}, {"user", "second"}}},
		},
		{
			name: "chat wrong types are ignored",
			api:  OpenAIChat,
			body: `{"model":5,"stream":"yes","max_tokens":"9","messages":5,"tools":{"a":1}}`,
			want: &Request{API: OpenAIChat, Messages: []Message{{RoleOther, "yes\n9"}}},
		},
		{
			name: "chat wrong element types",
			api:  OpenAIChat,
			body: `{"messages":[5,"str",null,{"role":7,"content":{"x":1}},{"role":"user","content":[1,null,{"text":5}]}]}`,
			want: &Request{API: OpenAIChat, Messages: []Message{{RoleOther, "str"}}},
		},
		{
			name: "chat huge max_tokens saturates",
			api:  OpenAIChat,
			body: `{"max_tokens":1e400,"messages":[]}`,
			want: &Request{API: OpenAIChat, MaxTokens: math.MaxInt64},
		},
		{
			name: "chat negative max_tokens is zero",
			api:  OpenAIChat,
			body: `{"max_tokens":-5}`,
			want: &Request{API: OpenAIChat},
		},
		{
			name:    "chat malformed",
			api:     OpenAIChat,
			body:    `{"messages":[`,
			wantErr: ErrMalformed,
		},
		{
			name:    "chat not an object",
			api:     OpenAIChat,
			body:    `[1,2]`,
			wantErr: ErrMalformed,
		},
		{
			name:    "chat empty body",
			api:     OpenAIChat,
			body:    ``,
			wantErr: ErrMalformed,
		},
		{
			name: "completions prompt string and suffix",
			api:  OpenAICompletions,
			body: `{"model":"gpt-3.5-turbo-instruct","prompt":"Once upon","suffix":"the end","max_tokens":7}`,
			want: &Request{API: OpenAICompletions, Model: "gpt-3.5-turbo-instruct", MaxTokens: 7,
				Messages: []Message{{"user", "Once upon"}, {"user", "the end"}}},
		},
		{
			name: "completions prompt array with token arrays skipped",
			api:  OpenAICompletions,
			body: `{"prompt":["a","b",[1,2,3],4]}`,
			want: &Request{API: OpenAICompletions, Messages: []Message{{"user", "a"}, {"user", "b"}}},
		},
		{
			name: "completions token prompt",
			api:  OpenAICompletions,
			body: `{"prompt":[[1,2],[3]]}`,
			want: &Request{API: OpenAICompletions},
		},
		{
			name: "embeddings input array",
			api:  OpenAIEmbeddings,
			body: `{"model":"text-embedding-3-small","input":["alpha","beta"],"max_tokens":3}`,
			want: &Request{API: OpenAIEmbeddings, Model: "text-embedding-3-small",
				Messages: []Message{{"user", "alpha"}, {"user", "beta"}}},
		},
		{
			name: "embeddings token input skipped",
			api:  OpenAIEmbeddings,
			body: `{"input":[1,2,3]}`,
			want: &Request{API: OpenAIEmbeddings},
		},
		{
			name: "responses instructions and string input",
			api:  OpenAIResponses,
			body: `{"model":"gpt-4.1","instructions":"Be nice.","input":"Hello","max_output_tokens":50,"stream":true}`,
			want: &Request{API: OpenAIResponses, Model: "gpt-4.1", MaxTokens: 50, Stream: true,
				Messages: []Message{{"system", "Be nice."}, {"user", "Hello"}}},
		},
		{
			name: "responses items",
			api:  OpenAIResponses,
			body: `{"input":[
				{"role":"user","content":"plain"},
				{"type":"message","role":"user","content":[{"type":"input_text","text":"part one"},{"type":"input_image","image_url":"x"},{"type":"input_text","text":"part two"}]},
				{"type":"message","role":"assistant","content":[{"type":"output_text","text":"answer"}]},
				{"type":"function_call","id":"fc_1","call_id":"call_1","name":"lookup","arguments":"{\"a\":1}"},
				{"type":"function_call_output","call_id":"call_1","output":"tool says"},
				{"type":"reasoning","summary":[{"type":"summary_text","text":"skip me"}]}
			],"tools":[{"type":"function","name":"lookup"},{"type":"web_search_preview"}],
			"prompt":{"id":"pmpt_1","variables":{"city":"Paris","doc":{"type":"input_text","text":"var text"}}}}`,
			want: &Request{API: OpenAIResponses,
				Messages: []Message{
					{"user", "Paris"}, {"user", "var text"},
					{"user", "plain"},
					{"user", "part one\npart two"},
					{"assistant", "answer"},
					{"assistant", `{"a":1}`},
					{"tool", "tool says"},
					{RoleOther, "x\nskip me"}, // fields the walk does not know: inspected by default
				},
				Tools:     []Tool{{Name: "lookup", Type: "function"}, {Name: "web_search_preview", Type: "web_search_preview"}},
				ToolCalls: []ToolCall{{ID: "call_1", Name: "lookup", Arguments: `{"a":1}`}},
			},
		},
		{
			name: "responses wrong input type",
			api:  OpenAIResponses,
			body: `{"input":5,"instructions":["x"]}`,
			want: &Request{API: OpenAIResponses, Messages: []Message{{"system", "x"}}},
		},
		{
			name: "anthropic system string and blocks",
			api:  AnthropicMessages,
			body: `{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,
				"messages":[{"role":"user","content":"Hello"}],"system":"You are Claude."}`,
			want: &Request{API: AnthropicMessages, Model: "claude-sonnet-4-5", MaxTokens: 1024, Stream: true,
				Messages: []Message{{"system", "You are Claude."}, {"user", "Hello"}}},
		},
		{
			name: "anthropic content blocks, tool use and results",
			api:  AnthropicMessages,
			body: `{"system":[{"type":"text","text":"S1","cache_control":{"type":"ephemeral"}},{"type":"text","text":"S2"}],
				"messages":[
					{"role":"user","content":[{"type":"text","text":"Q1"},{"type":"image","source":{"type":"base64","data":"AAA"}},{"type":"text","text":"Q2"}]},
					{"role":"assistant","content":[{"type":"text","text":"Calling"},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city": "Paris", "n": 12345678901234567890}}]},
					{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"18C"}]},{"type":"tool_result","tool_use_id":"toolu_2","content":"plain result"},{"type":"text","text":"thanks"}]},
					{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"doc body"}}]},
					{"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"sig"}]}
				],
				"tools":[{"name":"get_weather","input_schema":{}},{"type":"web_search_20250305","name":"web_search"}]}`,
			want: &Request{API: AnthropicMessages,
				Messages: []Message{
					{"system", "S1\nS2"},
					{"user", "Q1\nQ2"},
					{"assistant", "Calling\n{\"city\":\"Paris\",\"n\":12345678901234567890}"},
					{"tool", "18C\nplain result"},
					{"user", "thanks"},
					{"user", "doc body"},
					{RoleOther, "AAA\nhmm\nsig"},
				},
				Tools:     []Tool{{Name: "get_weather"}, {Name: "web_search", Type: "web_search_20250305"}},
				ToolCalls: []ToolCall{{ID: "toolu_1", Name: "get_weather", Arguments: `{"city":"Paris","n":12345678901234567890}`}},
			},
		},
		{
			name: "anthropic wrong types",
			api:  AnthropicMessages,
			body: `{"system":5,"messages":{"role":"user"},"max_tokens":null}`,
			want: &Request{API: AnthropicMessages},
		},
		{
			name:    "anthropic malformed",
			api:     AnthropicMessages,
			body:    `{"system":"x",}`,
			wantErr: ErrMalformed,
		},
		{
			name: "generic JSON: every string value",
			api:  Generic,
			body: `{"model":"m","query":{"text":"find me","tags":["a",1,true]},"n":3,"max_tokens":9}`,
			want: &Request{API: Generic, Model: "m", MaxTokens: 9, Choices: 3,
				Messages: []Message{{"user", "m"}, {"user", "find me"}, {"user", "a"}}},
		},
		{
			name: "generic text body",
			api:  Generic,
			body: "plain prompt text\n",
			want: &Request{API: Generic, Messages: []Message{{"user", "plain prompt text\n"}}},
		},
		{
			name: "generic malformed JSON is text",
			api:  Generic,
			body: `{"a":`,
			want: &Request{API: Generic, Messages: []Message{{"user", `{"a":`}}},
		},
		{
			name: "generic empty",
			api:  Generic,
			body: "  ",
			want: &Request{API: Generic},
		},
		{
			name: "unknown API value is read as generic",
			api:  API("bogus"),
			body: `["x"]`,
			want: &Request{API: API("bogus"), Messages: []Message{{"user", "x"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRequest(tt.api, []byte(tt.body))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if tt.want.Choices == 0 {
				tt.want.Choices = 1 // the default: one answer
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseRequestDeepNesting(t *testing.T) {
	t.Parallel()
	deep := make([]byte, 0, 20020)
	for range 5000 {
		deep = append(deep, '[')
	}
	deep = append(deep, `"x"`...)
	for range 5000 {
		deep = append(deep, ']')
	}
	for _, api := range []API{OpenAIChat, Generic, AnthropicMessages} {
		body := append(append([]byte(`{"messages":`), deep...), '}')
		if _, err := ParseRequest(api, body); err != nil {
			t.Errorf("%s: %v", api, err)
		}
	}
}
