package llmapi

import (
	"fmt"
	"testing"
)

// TestInvokeModelFamilies: the token cap of each model family's native
// InvokeModel body is read (for reservation) and capped in the family's
// own field, added only where the family is certain; a body of no known
// family is left alone and reports itself uncapped.
func TestInvokeModelFamilies(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		max        int64
		capped     bool
		want       string // after ClampMaxTokens 64
	}{
		{"titan", `{"inputText":"hi","textGenerationConfig":{"maxTokenCount":4096,"temperature":0.5}}`, 4096, true,
			`{"inputText":"hi","textGenerationConfig":{"maxTokenCount":64,"temperature":0.5}}`},
		{"titan without a cap", `{"inputText":"hi"}`, 0, true, `{"inputText":"hi","textGenerationConfig":{"maxTokenCount":64}}`},
		{"llama", `{"prompt":"hi","max_gen_len":2048,"temperature":0.5}`, 2048, true, `{"prompt":"hi","max_gen_len":64,"temperature":0.5}`},
		{"llama under the cap", `{"prompt":"hi","max_gen_len":20}`, 20, true, `{"prompt":"hi","max_gen_len":20}`},
		{"mistral prompt", `{"prompt":"<s>[INST] hi [/INST]","max_tokens":1000}`, 1000, true, `{"prompt":"<s>[INST] hi [/INST]","max_tokens":64}`},
		{"cohere command r", `{"message":"hi","max_tokens":900}`, 900, true, `{"message":"hi","max_tokens":64}`},
		{"nova", `{"schemaVersion":"messages-v1","messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"max_new_tokens":5000}}`, 5000, true,
			`{"schemaVersion":"messages-v1","messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"max_new_tokens":64}}`},
		{"nova without a cap", `{"schemaVersion":"messages-v1","messages":[{"role":"user","content":[{"text":"hi"}]}]}`, 0, true,
			`{"schemaVersion":"messages-v1","messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"max_new_tokens":64}}`},
		{"anthropic", `{"anthropic_version":"bedrock-2023-05-31","max_tokens":900,"messages":[{"role":"user","content":"hi"}]}`, 900, true,
			`{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`},
		{"unknown family", `{"prompt":"hi"}`, 0, false, `{"prompt":"hi"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRequest(BedrockInvoke, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if r.MaxTokens != tc.max || r.Capped() != tc.capped {
				t.Errorf("MaxTokens %d capped %v, want %d %v", r.MaxTokens, r.Capped(), tc.max, tc.capped)
			}
			out, _, err := EditRequest(BedrockInvoke, []byte(tc.body), RequestEdit{ClampMaxTokens: 64})
			if err != nil || string(out) != tc.want {
				t.Errorf("capped %s %v\nwant %s", out, err, tc.want)
			}
		})
	}
}

// TestInvokeModelUsage: the usage each family's answer reports, buffered
// and streamed, and Bedrock's token-count headers.
func TestInvokeModelUsage(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"titan", `{"inputTextTokenCount":7,"results":[{"tokenCount":30,"outputText":"hi","completionReason":"FINISH"}]}`, "{7 30 37 0}"},
		{"llama", `{"generation":"hi","prompt_token_count":9,"generation_token_count":41,"stop_reason":"stop"}`, "{9 41 50 0}"},
		{"nova", `{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":4,"outputTokens":8,"totalTokens":12}}`, "{4 8 12 0}"},
		{"cohere command r", `{"text":"hi","meta":{"billed_units":{"input_tokens":3,"output_tokens":5}}}`, "{3 5 8 0}"},
		{"anthropic", `{"type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":2,"output_tokens":6}}`, "{2 6 8 0}"},
		{"mistral, none in the body", `{"outputs":[{"text":"hi","stop_reason":"stop"}]}`, "<nil>"},
	} {
		r, err := ParseResponse(BedrockInvoke, []byte(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		got := "<nil>"
		if r.Usage != nil {
			got = fmt.Sprint(*r.Usage)
		}
		if got != tc.want {
			t.Errorf("%s: usage %s, want %s", tc.name, got, tc.want)
		}
	}
	// The last streamed chunk of any model: amazon-bedrock-invocationMetrics.
	ev := Event{Data: []byte(`{"outputText":"","index":0,"completionReason":"FINISH","amazon-bedrock-invocationMetrics":{"inputTokenCount":11,"outputTokenCount":22,"invocationLatency":900,"firstByteLatency":300}}`)}
	d, err := DecodeEvent(BedrockInvoke, ev)
	if err != nil || d.Usage == nil || *d.Usage != (Usage{11, 22, 33, 0}) {
		t.Errorf("stream usage %+v %v", d.Usage, err)
	}
	h := map[string]string{"x-amzn-bedrock-input-token-count": "13", "x-amzn-bedrock-output-token-count": "21"}
	if u := HeaderUsage(BedrockInvoke, h); u == nil || *u != (Usage{13, 21, 34, 0}) {
		t.Errorf("header usage %+v", u)
	}
	if u := HeaderUsage(OpenAIChat, h); u != nil {
		t.Errorf("header usage for OpenAI %+v", u)
	}
	if u := HeaderUsage(BedrockInvoke, map[string]string{"x-amzn-bedrock-input-token-count": "x"}); u != nil {
		t.Errorf("header usage from garbage %+v", u)
	}
}
