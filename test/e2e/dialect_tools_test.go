package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/bulwark-ai/bulwark/test/envoysim"
	"github.com/bulwark-ai/bulwark/test/fixture"
	"github.com/bulwark-ai/bulwark/test/redisserver"
)

// Tool calls of the provider dialects through the real binary (issue 21):
// Bedrock ConverseStream and InvokeModelWithResponseStream, Gemini's
// streamGenerateContent.

// esFrames frames (event type, JSON payload) pairs as Bedrock does.
func esFrames(t *testing.T, evs ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, e := range evs {
		hs := eventstream.Headers{
			{Name: ":event-type", Value: eventstream.StringValue(e[0])},
			{Name: ":content-type", Value: eventstream.StringValue("application/json")},
			{Name: ":message-type", Value: eventstream.StringValue("event")},
		}
		if err := eventstream.NewEncoder().Encode(&buf, eventstream.Message{Headers: hs, Payload: []byte(e[1])}); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// esDecode decodes what the client received, failing on any frame whose
// CRCs do not check out: each frame as "type payload" (InvokeModel's
// base64 unwrapped), the last frame's message type, and the frames
// rendered with decision ids masked, to compare runs.
func esDecode(t *testing.T, b []byte) (events []string, lastType string, norm string) {
	t.Helper()
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		m, err := eventstream.NewDecoder().Decode(r, nil)
		if err != nil {
			t.Fatalf("the client received an invalid frame (#%d): %v", len(events), err)
		}
		typ, _ := m.Headers.Get(":event-type").(eventstream.StringValue)
		exc, _ := m.Headers.Get(":exception-type").(eventstream.StringValue)
		mt, _ := m.Headers.Get(":message-type").(eventstream.StringValue)
		lastType = string(mt)
		payload := m.Payload
		var w struct{ Bytes []byte }
		if json.Unmarshal(payload, &w) == nil && w.Bytes != nil {
			payload = w.Bytes
		}
		events = append(events, string(typ)+string(exc)+" "+string(payload))
	}
	return events, lastType, decisionRef.ReplaceAllString(strings.Join(events, "\n"), "decision ID")
}

// randomCuts: every byte (round 1), none (round 0), or random cuts.
func randomCuts(rng *rand.Rand, round, n int) []int {
	var cuts []int
	switch round {
	case 0:
	case 1:
		for i := 1; i < n; i++ {
			cuts = append(cuts, i)
		}
	default:
		for range 1 + rng.IntN(30) {
			cuts = append(cuts, 1+rng.IntN(n-1))
		}
		slices.Sort(cuts)
		cuts = slices.Compact(cuts)
	}
	return cuts
}

// TestExtProcDialectToolCallDenied: a streamed Bedrock or Gemini answer
// whose call to a tool the role may not use is split over events (the
// arguments a few bytes a frame) never delivers any byte of the call; the
// text before it arrives and the stream ends with the API's own error:
// for Bedrock a correctly framed exception (every frame's CRCs check out),
// for Gemini Google's error shape, for Azure OpenAI OpenAI's. The output
// does not depend on the chunking. The same stream calling an allowed tool passes whole.
func TestExtProcDialectToolCallDenied(t *testing.T) {
	p, key := toolsProc(t)
	args := `{"repo":"acme/payroll","confirm":true}`
	q := func(s string) string { j, _ := json.Marshal(s); return string(j) }
	converse := func(name string) []byte {
		evs := [][2]string{
			{"messageStart", `{"role":"assistant","p":"abcdef"}`},
			{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"Sure, one moment."},"p":"abc"}`},
			{"contentBlockStop", `{"contentBlockIndex":0}`},
			{"contentBlockStart", `{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_Q1","name":` + q(name) + `}}}`},
		}
		for i := 0; i < len(args); i += 3 {
			evs = append(evs, [2]string{"contentBlockDelta", `{"contentBlockIndex":1,"delta":{"toolUse":{"input":` + q(args[i:min(i+3, len(args))]) + `}},"p":"ab"}`})
		}
		evs = append(evs, [2]string{"contentBlockStop", `{"contentBlockIndex":1}`}, [2]string{"messageStop", `{"stopReason":"tool_use"}`},
			[2]string{"metadata", `{"usage":{"inputTokens":20,"outputTokens":15,"totalTokens":35}}`})
		return esFrames(t, evs...)
	}
	invoke := func(name string) []byte {
		inner := []string{
			`{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":20,"output_tokens":1}}}`,
			`{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
			`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Sure, one moment."}}`,
			`{"type":"content_block_stop","index":0}`,
			`{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_Q1","name":` + q(name) + `,"input":{}}}`,
		}
		for i := 0; i < len(args); i += 3 {
			inner = append(inner, `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":`+q(args[i:min(i+3, len(args))])+`}}`)
		}
		inner = append(inner, `{"type":"content_block_stop","index":1}`, `{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":15}}`, `{"type":"message_stop"}`)
		var evs [][2]string
		for _, s := range inner {
			evs = append(evs, [2]string{"chunk", `{"bytes":"` + base64.StdEncoding.EncodeToString([]byte(s)) + `"}`})
		}
		return esFrames(t, evs...)
	}
	gemini := func(name string) []byte {
		return []byte(`data: {"candidates":[{"content":{"parts":[{"text":"Sure, one moment."}],"role":"model"},"index":0}],"modelVersion":"gemini-2.5-flash"}` + "\n\n" +
			`data: {"candidates":[{"content":{"parts":[{"functionCall":{"id":"call_Q1","name":` + q(name) + `,"args":` + args + `}}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":15,"totalTokenCount":35},"modelVersion":"gemini-2.5-flash"}` + "\n\n")
	}
	azure := func(name string) []byte {
		b := toolCallStream(name, args)
		return bytes.ReplaceAll(b, []byte(`"call_1"`), []byte(`"call_Q1"`))
	}
	const es = "application/vnd.amazon.eventstream"
	for _, tc := range []struct {
		name, path, body, ct string
		stream               func(string) []byte
	}{
		{"azure openai", "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21", `{"stream":true,"messages":[{"role":"user","content":"clean up my repos"}]}`, "text/event-stream", azure},
		{"bedrock converse", "/model/amazon.nova-pro-v1:0/converse-stream", `{"messages":[{"role":"user","content":[{"text":"clean up my repos"}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"get_weather","inputSchema":{"json":{}}}}]}}`, es, converse},
		{"bedrock invoke", "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke-with-response-stream", `{"anthropic_version":"bedrock-2023-05-31","max_tokens":200,"messages":[{"role":"user","content":"clean up my repos"}]}`, es, invoke},
		{"gemini", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", `{"contents":[{"role":"user","parts":[{"text":"clean up my repos"}]}]}`, "text/event-stream", gemini},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := chatRequest(key, tc.path, tc.body)
			rng := rand.New(rand.NewPCG(21, 5))
			stream := tc.stream("delete_repo")
			var first string
			for round := range 5 {
				cuts := randomCuts(rng, round, len(stream))
				res := run(t, p, envoysim.DefaultFilter, req, func(envoysim.Forwarded) envoysim.Upstream {
					return envoysim.Upstream{Status: 200, Headers: map[string]string{"content-type": tc.ct}, Chunks: envoysim.Split(stream, cuts...)}
				})
				if res.Immediate != nil {
					t.Fatalf("round %d: refused before the answer: %d %s", round, res.Status, res.Body)
				}
				var text, norm string
				if tc.ct == es {
					events, last, n := esDecode(t, res.Body)
					text, norm = strings.Join(events, "\n"), n
					if last != "exception" || !strings.Contains(events[len(events)-1], `"reason":"tool_not_allowed"`) {
						t.Fatalf("round %d: the stream does not end with an exception frame: %q", round, events[len(events)-1])
					}
				} else {
					text, norm = string(res.Body), decisionRef.ReplaceAllString(string(res.Body), "decision ID")
					evs := strings.Split(strings.TrimSpace(text), "\n\n")
					last := strings.TrimPrefix(evs[len(evs)-1], "data: ")
					var e struct {
						Error struct {
							Code    int
							Status  string
							Details []struct{ Reason string }
						}
					}
					if tc.name == "azure openai" {
						var o struct{ Error struct{ Code string } }
						if json.Unmarshal([]byte(last), &o) != nil || o.Error.Code != "tool_not_allowed" {
							t.Fatalf("round %d: the stream does not end with OpenAI's error: %q", round, last)
						}
					} else if json.Unmarshal([]byte(last), &e) != nil || e.Error.Code != 403 || e.Error.Status != "PERMISSION_DENIED" || len(e.Error.Details) == 0 || e.Error.Details[0].Reason != "tool_not_allowed" {
						t.Fatalf("round %d: the stream does not end with Google's error: %q", round, last)
					}
				}
				for _, leak := range []string{"delete_repo", "Q1", "payroll", `"repo"`, "confirm"} {
					if strings.Contains(text, leak) || bytes.Contains(res.Body, []byte(leak)) {
						t.Fatalf("round %d: %q reached the client:\n%s", round, leak, text)
					}
				}
				if !strings.Contains(strings.ReplaceAll(text, `""`, ""), "one moment.") {
					t.Fatalf("round %d: the text before the call is missing:\n%s", round, text)
				}
				if first == "" {
					first = norm
				} else if norm != first {
					t.Fatalf("round %d: output depends on the chunking:\n%s\n---\n%s", round, first, norm)
				}
			}
			allowed := tc.stream("get_weather")
			res := run(t, p, envoysim.DefaultFilter, req, func(envoysim.Forwarded) envoysim.Upstream {
				return envoysim.Upstream{Status: 200, Headers: map[string]string{"content-type": tc.ct}, Chunks: envoysim.Split(allowed, 17, 99, 200)}
			})
			text := string(res.Body)
			if tc.ct == es {
				events, last, _ := esDecode(t, res.Body)
				text = strings.Join(events, "\n")
				if last == "exception" {
					t.Fatalf("allowed call cut: %s", text)
				}
			}
			if res.Immediate != nil || !strings.Contains(text, "get_weather") || strings.Contains(text, "tool_not_allowed") || !strings.Contains(text, "Q1") {
				t.Fatalf("allowed call not delivered:\n%s", text)
			}
		})
	}
}

// TestExtProcDialectToolResultInjectionDenied: instructions planted in a
// tool result (Converse toolResult, Anthropic-on-Bedrock tool_result,
// Gemini functionResponse) are denied tool_result_injection before the
// model, in the API's error shape; the model is never called.
func TestExtProcDialectToolResultInjectionDenied(t *testing.T) {
	p, key := llmProc(t)
	q := func(s string) string { j, _ := json.Marshal(s); return string(j) }
	for _, tc := range []struct{ path, body, shape string }{
		{"/model/amazon.nova-pro-v1:0/converse", `{"messages":[{"role":"user","content":[{"text":"What is the weather in Paris?"}]},` +
			`{"role":"assistant","content":[{"toolUse":{"toolUseId":"t1","name":"get_weather","input":{"city":"Paris"}}}]},` +
			`{"role":"user","content":[{"toolResult":{"toolUseId":"t1","content":[{"text":` + q(plantedInToolResult) + `}]}}]}]}`, `"reason":"tool_result_injection"`},
		{"/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke", `{"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"messages":[{"role":"user","content":"What is the weather in Paris?"},` +
			`{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"get_weather","input":{"city":"Paris"}}]},` +
			`{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":` + q(plantedInToolResult) + `}]}]}`, `"reason":"tool_result_injection"`},
		{"/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent", `{"contents":[{"role":"user","parts":[{"text":"What is the weather in Paris?"}]},` +
			`{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}}}]},` +
			`{"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"result":` + q(plantedInToolResult) + `}}}]}]}`, `"reason":"tool_result_injection"`},
	} {
		res := run(t, p, envoysim.DefaultFilter, chatRequest(key, tc.path, tc.body), jsonUpstream(`{}`))
		if res.Immediate == nil || res.Status != 403 || res.UpstreamCalled || !bytes.Contains(res.Body, []byte(tc.shape)) {
			t.Fatalf("%s: status %d upstream %v body %s", tc.path, res.Status, res.UpstreamCalled, res.Body)
		}
	}
}

// TestExtProcInvokeModelFamiliesQuota (issue 21 item 3): InvokeModel
// bodies of Titan, Llama and Mistral reserve token quota at their own cap
// fields (maxTokenCount, max_gen_len, max_tokens) and settle to the usage
// their answers report (Titan's and Llama's bodies, Bedrock's token-count
// headers for Mistral, whose body has none). Against a 2,000-token quota
// each 1,500-token reservation fits only because the one before it was
// settled to 40; a Titan request capped at 2,500 is refused 429 up front
// (read as uncapped, it would reserve the 1,024 default and pass).
func TestExtProcInvokeModelFamiliesQuota(t *testing.T) {
	rs := redisserver.Start(t)
	dir := fixture.PolicyDir(t, "tokens_per_day: 2000000", "tokens_per_day: 2000")
	p, key := llmProc(t, "--policy-dir", dir, "--redis-url", "redis://"+rs.Addr)
	answer := func(body string, headers map[string]string) func(envoysim.Forwarded) envoysim.Upstream {
		return func(envoysim.Forwarded) envoysim.Upstream {
			h := map[string]string{"content-type": "application/json"}
			maps.Copy(h, headers)
			return envoysim.Upstream{Status: 200, Headers: h, Chunks: [][]byte{[]byte(body)}}
		}
	}
	for _, tc := range []struct {
		model, body string
		upstream    func(envoysim.Forwarded) envoysim.Upstream
	}{
		{"amazon.titan-text-express-v1", `{"inputText":"hi","textGenerationConfig":{"maxTokenCount":1500}}`,
			answer(`{"inputTextTokenCount":10,"results":[{"tokenCount":30,"outputText":"Hello","completionReason":"FINISH"}]}`, nil)},
		{"meta.llama3-8b-instruct-v1:0", `{"prompt":"hi","max_gen_len":1500}`,
			answer(`{"generation":"Hello","prompt_token_count":10,"generation_token_count":30,"stop_reason":"stop"}`, nil)},
		{"mistral.mistral-7b-instruct-v0:2", `{"prompt":"hi","max_tokens":1500}`,
			answer(`{"outputs":[{"text":"Hello","stop_reason":"stop"}]}`, map[string]string{"x-amzn-bedrock-input-token-count": "10", "x-amzn-bedrock-output-token-count": "30"})},
	} {
		res := run(t, p, envoysim.DefaultFilter, chatRequest(key, "/model/"+tc.model+"/invoke", tc.body), tc.upstream)
		if res.Immediate != nil || !res.UpstreamCalled {
			t.Fatalf("%s: denied (%d %s): the reservation before it was not settled", tc.model, res.Status, res.Body)
		}
	}
	_, metrics := p.get(t, "/metrics")
	if !strings.Contains(metrics, `bulwark_token_reconciliations_total{result="ok"} 3`) {
		t.Fatalf("settlements not counted:\n%s", grepLines(metrics, "reconcil"))
	}
	res := run(t, p, envoysim.DefaultFilter, chatRequest(key, "/model/amazon.titan-text-express-v1/invoke",
		`{"inputText":"hi","textGenerationConfig":{"maxTokenCount":2500}}`), jsonUpstream(`{}`))
	if res.Immediate == nil || res.Status != 429 || res.UpstreamCalled {
		t.Fatalf("a 2,500-token cap over the quota was not refused: %d %s", res.Status, res.Body)
	}
}
