package llmapi

import "testing"

// TestCachedTokens: the cached input each API reports becomes CachedTokens,
// counted in PromptTokens (Anthropic's cache reads and writes are added to
// its input_tokens, which leave them out).
func TestCachedTokens(t *testing.T) {
	cases := []struct {
		name string
		api  API
		body string
		want Usage
	}{
		{"openai chat", OpenAIChat, `{"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920}}}`,
			Usage{2006, 300, 2306, 1920}},
		{"responses", OpenAIResponses, `{"id":"r","output":[],"usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":64},"output_tokens":5,"total_tokens":105}}`,
			Usage{100, 5, 105, 64}},
		{"anthropic", AnthropicMessages, `{"id":"m","content":[],"usage":{"input_tokens":50,"cache_read_input_tokens":1000,"cache_creation_input_tokens":200,"output_tokens":7}}`,
			Usage{1250, 7, 1257, 1000}},
		{"details not an object", OpenAIChat, `{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":7}}`,
			Usage{3, 1, 4, 0}},
	}
	for _, c := range cases {
		r, err := ParseResponse(c.api, []byte(c.body))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if r.Usage == nil || *r.Usage != c.want {
			t.Errorf("%s: usage %+v, want %+v", c.name, r.Usage, c.want)
		}
	}
}

func TestEventIdent(t *testing.T) {
	cases := []struct {
		name      string
		api       API
		ev        Event
		model, id string
	}{
		{"chat chunk", OpenAIChat, Event{Data: []byte(`{"id":"chatcmpl-1","model":"gpt-4o-mini","choices":[]}`)}, "gpt-4o-mini", "chatcmpl-1"},
		{"responses created", OpenAIResponses, Event{Name: "response.created", Data: []byte(`{"type":"response.created","response":{"id":"resp_9","model":"gpt-4.1"}}`)}, "gpt-4.1", "resp_9"},
		{"responses delta", OpenAIResponses, Event{Data: []byte(`{"type":"response.output_text.delta","delta":"x"}`)}, "", ""},
		{"anthropic start", AnthropicMessages, Event{Name: "message_start", Data: []byte(`{"type":"message_start","message":{"id":"msg_1","model":"claude-3-5-haiku"}}`)}, "claude-3-5-haiku", "msg_1"},
		{"done", OpenAIChat, Event{Data: []byte(`[DONE]`)}, "", ""},
		{"not json", OpenAIChat, Event{Data: []byte(`{"id":`)}, "", ""},
	}
	for _, c := range cases {
		pe := ParseEvent(c.api, c.ev)
		if m, id := pe.Ident(); m != c.model || id != c.id {
			t.Errorf("%s: Ident = %q, %q; want %q, %q", c.name, m, id, c.model, c.id)
		}
	}
}
