package llmapi

import (
	"encoding/json"
	"fmt"
	"net/url"
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

// TestInvokeFamilyOfModel: the family a path's model id names, from
// foundation model ids, cross-region inference profiles and ARNs of either
// (as the path decodes them); provisioned throughput, application
// inference profiles, embedding models and unknown ids name none.
func TestInvokeFamilyOfModel(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want invokeFamily
	}{
		{"meta.llama3-1-70b-instruct-v1:0", familyLlama},
		{"meta.llama2-13b-chat-v1", familyLlama},
		{"mistral.mistral-large-2407-v1:0", familyMaxTokens},
		{"mistral.mixtral-8x7b-instruct-v0:1", familyMaxTokens},
		{"cohere.command-r-plus-v1:0", familyMaxTokens},
		{"cohere.command-text-v14", familyMaxTokens},
		{"ai21.jamba-1-5-large-v1:0", familyMaxTokens},
		{"deepseek.r1-v1:0", familyMaxTokens},
		{"us.meta.llama3-2-11b-instruct-v1:0", familyLlama},
		{"eu.mistral.pixtral-large-2502-v1:0", familyMaxTokens},
		{"apac.meta.llama3-2-90b-instruct-v1:0", familyLlama},
		{"us-gov.meta.llama3-8b-instruct-v1:0", familyLlama},
		{"arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-1-70b-instruct-v1:0", familyLlama},
		{"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-2-11b-instruct-v1:0", familyLlama},
		{"arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.mistral.pixtral-large-2502-v1:0", familyMaxTokens},
		{"arn:aws-us-gov:bedrock:us-gov-west-1::foundation-model/cohere.command-r-v1:0", familyMaxTokens},
		// No family named.
		{"arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123xyz", familyUnknown},
		{"arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/meta.llama3", familyUnknown},
		{"arn:aws:bedrock:us-east-1:123456789012:custom-model/meta.llama3-8b-instruct-v1:0/abc", familyUnknown},
		{"arn:aws:bedrock:us-east-1", familyUnknown},
		{"arn:aws:bedrock:us-east-1:123:foundation-model", familyUnknown},
		{"cohere.embed-english-v3", familyUnknown},
		{"amazon.titan-embed-text-v2:0", familyUnknown},
		{"anthropic.claude-v2", familyUnknown},
		{"ai21.j2-ultra-v1", familyUnknown},
		{"us.us.meta.llama3", familyUnknown},
		{"llama3", familyUnknown},
		{"", familyUnknown},
	} {
		if got := invokeFamilyOfModel(tc.id); got != tc.want {
			t.Errorf("%q: family %d, want %d", tc.id, got, tc.want)
		}
	}
}

// TestInvokeModelPathFamily: a Llama or Mistral body without its cap field
// gets the cap added in its own field when the path's model id names the
// family (encoded ARNs too), and is reported capped so that reservation
// uses it; when the path names no family it stays uncapped and unedited;
// the body's explicit shape wins over the path.
func TestInvokeModelPathFamily(t *testing.T) {
	for _, tc := range []struct {
		name, path, body string
		capped           bool
		want             string // after ClampMaxTokens 64
	}{
		{"llama", "/model/meta.llama3-1-70b-instruct-v1:0/invoke", `{"prompt":"hi","temperature":0.5}`, true,
			`{"prompt":"hi","temperature":0.5,"max_gen_len":64}`},
		{"llama profile streamed", "/model/us.meta.llama3-2-11b-instruct-v1:0/invoke-with-response-stream", `{"prompt":"hi"}`, true,
			`{"prompt":"hi","max_gen_len":64}`},
		{"llama encoded arn", "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fmeta.llama3-8b-instruct-v1%3A0/invoke", `{"prompt":"hi"}`, true,
			`{"prompt":"hi","max_gen_len":64}`},
		{"mistral", "/model/mistral.mistral-7b-instruct-v0:2/invoke", `{"prompt":"<s>[INST] hi [/INST]"}`, true,
			`{"prompt":"<s>[INST] hi [/INST]","max_tokens":64}`},
		{"mistral profile arn", "/model/arn:aws:bedrock:eu-west-1:123456789012:inference-profile%2Feu.mistral.pixtral-large-2502-v1:0/invoke", `{"prompt":"hi"}`, true,
			`{"prompt":"hi","max_tokens":64}`},
		{"cohere", "/model/cohere.command-r-plus-v1:0/invoke", `{"message":"hi"}`, true, `{"message":"hi","max_tokens":64}`},
		{"empty llama body", "/model/meta.llama3-8b-instruct-v1:0/invoke", `{}`, true, `{"max_gen_len":64}`},
		{"provisioned", "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprovisioned-model%2Fabc123/invoke", `{"prompt":"hi"}`, false, `{"prompt":"hi"}`},
		{"application profile", "/model/arn:aws:bedrock:us-east-1:123456789012:application-inference-profile%2Fxyz/invoke", `{"prompt":"hi"}`, false, `{"prompt":"hi"}`},
		{"embedding", "/model/cohere.embed-english-v3/invoke", `{"texts":["hi"]}`, false, `{"texts":["hi"]}`},
		// The shape wins: a Llama body under a Mistral id keeps max_gen_len.
		{"shape wins", "/model/mistral.mistral-7b-instruct-v0:2/invoke", `{"prompt":"hi","max_gen_len":500}`, true,
			`{"prompt":"hi","max_gen_len":64}`},
		{"anthropic shape under llama id", "/model/meta.llama3-8b-instruct-v1:0/invoke", `{"anthropic_version":"bedrock-2023-05-31","messages":[]}`, true,
			`{"anthropic_version":"bedrock-2023-05-31","messages":[],"max_tokens":64}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRequest(BedrockInvoke, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			shaped := r.Capped()
			r.ApplyPath(tc.path)
			if r.Capped() != tc.capped {
				t.Errorf("capped %v, want %v (model %q)", r.Capped(), tc.capped, r.Model)
			}
			out, _, err := EditRequest(BedrockInvoke, []byte(tc.body), RequestEdit{ClampMaxTokens: 64, Model: r.Model})
			if err != nil || string(out) != tc.want {
				t.Errorf("capped %s %v\nwant %s", out, err, tc.want)
			}
			// Without the path's model, the body's shape alone decides.
			if !shaped {
				if out, _, _ := EditRequest(BedrockInvoke, []byte(tc.body), RequestEdit{ClampMaxTokens: 64}); string(out) != tc.body {
					t.Errorf("edited without a model: %s", out)
				}
			}
		})
	}
}

// FuzzInvokeModelPathCap: any model id in the path and any body: parsing
// with the path and clamping with its model never fails on a JSON object
// and keeps it valid JSON; a capped request's edited body holds the cap,
// and one capped only by the path's family carries exactly the cap.
func FuzzInvokeModelPathCap(f *testing.F) {
	f.Add("meta.llama3-1-70b-instruct-v1:0", []byte(`{"prompt":"hi"}`), int64(64))
	f.Add("us.mistral.mistral-large-2407-v1:0", []byte(`{"prompt":"hi","temperature":1}`), int64(9))
	f.Add("arn:aws:bedrock:us-east-1::foundation-model/cohere.command-r-v1:0", []byte(`{"message":"hi"}`), int64(9))
	f.Add("arn:aws:bedrock:us-east-1:1:inference-profile/eu.meta.llama3", []byte(`{}`), int64(1))
	f.Add("arn:aws:bedrock:us-east-1:1:provisioned-model/x", []byte(`{"prompt":"hi"}`), int64(5))
	f.Add("mistral.x", []byte(`{"prompt":"hi","max_gen_len":null}`), int64(5))
	f.Fuzz(func(t *testing.T, model string, body []byte, clamp int64) {
		if !json.Valid(body) {
			return
		}
		path := "/model/" + url.PathEscape(model) + "/invoke"
		r, err := ParseRequest(BedrockInvoke, body)
		if err != nil {
			return // not an object
		}
		shaped := r.Capped()
		r.ApplyPath(path)
		out, _, err := EditRequest(BedrockInvoke, body, RequestEdit{ClampMaxTokens: clamp, Model: r.Model})
		if err != nil {
			t.Fatalf("edit: %v", err)
		}
		if !json.Valid(out) {
			t.Fatalf("edit broke JSON: %s", out)
		}
		if clamp <= 0 || !r.Capped() {
			return
		}
		r2, err := ParseRequest(BedrockInvoke, out)
		if err != nil {
			t.Fatalf("reparse: %v", err)
		}
		r2.ApplyPath(path)
		if !r2.Capped() || r2.MaxTokens > clamp || (!shaped && r2.MaxTokens != clamp) {
			t.Fatalf("clamp %d (shaped %v): capped %v max %d in %s", clamp, shaped, r2.Capped(), r2.MaxTokens, out)
		}
	})
}
