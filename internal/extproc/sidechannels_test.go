package extproc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/bulwark-ai/bulwark/internal/exchange"
	"github.com/bulwark-ai/bulwark/internal/extproc"
	"github.com/bulwark-ai/bulwark/test/envoysim"
)

// mail is the value the side-channel tests plant; "corpmail" appears
// nowhere else, so any piece of it in an answer is a leak.
const mail = "jane.doe@corpmail.io"

// events encodes SSE events: "name|data" or just "data".
func events(evs ...string) []byte {
	var b bytes.Buffer
	for _, e := range evs {
		if name, data, ok := strings.Cut(e, "|"); ok {
			fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", name, data)
			continue
		}
		fmt.Fprintf(&b, "data: %s\n\n", e)
	}
	return b.Bytes()
}

// chatChunk is an OpenAI chat chunk of choice i with the given delta JSON
// and extra choice members.
func chatChunk(i int, delta, extra string) string {
	return fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":%d,"delta":%s%s,"finish_reason":null}]}`, i, delta, extra)
}

func chatFinish(i int) string {
	return fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":%d,"delta":{},"finish_reason":"stop"}]}`, i)
}

func q(s string) string { b, _ := json.Marshal(s); return string(b) }

// pieces splits s into n-byte pieces.
func pieces(s string, n int) []string {
	var out []string
	for len(s) > 0 {
		k := min(n, len(s))
		out = append(out, s[:k])
		s = s[k:]
	}
	return out
}

// TestAnswerSideChannelsRedacted: each finding of issue 16 about answers,
// buffered and streamed. Every case leaked the planted value before the
// output filter read every string of the answer.
func TestAnswerSideChannelsRedacted(t *testing.T) {
	f := newStack(t, extproc.Options{})
	text := "Write to " + mail + " today."
	var (
		contentN2, toolArgs, logprobs, refusal, reasoning, pem []string
		respArgs, respReasoning                                []string
		anthInput, anthThinking                                []string
	)
	// finding 5: choice 1 of two carries the value, split over events.
	contentN2 = append(contentN2, chatChunk(0, `{"role":"assistant","content":""}`, ""), chatChunk(1, `{"role":"assistant","content":""}`, ""))
	for _, p := range pieces(text, 5) {
		contentN2 = append(contentN2, `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[`+
			`{"index":0,"delta":{"content":"ok "},"finish_reason":null},{"index":1,"delta":{"content":`+q(p)+`},"finish_reason":null}]}`)
	}
	contentN2 = append(contentN2, chatFinish(0), chatFinish(1), "[DONE]")
	// finding 4: tool-call argument deltas.
	toolArgs = append(toolArgs, chatChunk(0, `{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"send","arguments":""}}]}`, ""))
	for _, p := range pieces(`{"to":"`+mail+`"}`, 4) {
		toolArgs = append(toolArgs, chatChunk(0, `{"tool_calls":[{"index":0,"function":{"arguments":`+q(p)+`}}]}`, ""))
	}
	toolArgs = append(toolArgs, chatFinish(0), "[DONE]")
	// finding 3: logprob tokens repeat the text.
	for _, p := range pieces(text, 4) {
		logprobs = append(logprobs, chatChunk(0, `{"content":`+q(p)+`}`,
			`,"logprobs":{"content":[{"token":`+q(p)+`,"logprob":-0.1,"bytes":[1],"top_logprobs":[{"token":`+q(p)+`,"logprob":-0.2,"bytes":[1]}]}]}`))
	}
	logprobs = append(logprobs, chatFinish(0), "[DONE]")
	// finding 12: refusal and reasoning deltas.
	for _, p := range pieces(text, 3) {
		refusal = append(refusal, chatChunk(0, `{"refusal":`+q(p)+`}`, ""))
		reasoning = append(reasoning, chatChunk(0, `{"reasoning_content":`+q(p)+`}`, ""))
	}
	refusal = append(refusal, chatFinish(0), "[DONE]")
	reasoning = append(reasoning, chatFinish(0), "[DONE]")
	// finding 7: a private key longer than the look-ahead, in small events.
	block, lines := pemBlockText(25)
	for _, p := range pieces("Here it is:\n"+block+"\nDone.", 24) {
		pem = append(pem, chatChunk(0, `{"content":`+q(p)+`}`, ""))
	}
	pem = append(pem, chatFinish(0), "[DONE]")
	// Responses: function-call arguments and reasoning summary deltas.
	respArgs = append(respArgs, `response.output_item.added|{"type":"response.output_item.added","output_index":0,"item":{"type":"function_call","id":"fc_1","call_id":"call_1","name":"send","arguments":""}}`)
	respReasoning = append(respReasoning, `response.output_item.added|{"type":"response.output_item.added","output_index":0,"item":{"type":"reasoning","id":"rs_1","summary":[]}}`)
	for _, p := range pieces(text, 4) {
		respArgs = append(respArgs, `response.function_call_arguments.delta|{"type":"response.function_call_arguments.delta","item_id":"fc_1","output_index":0,"delta":`+q(p)+`}`)
		respReasoning = append(respReasoning, `response.reasoning_summary_text.delta|{"type":"response.reasoning_summary_text.delta","item_id":"rs_1","output_index":0,"summary_index":0,"delta":`+q(p)+`}`)
	}
	respArgs = append(respArgs, `response.function_call_arguments.done|{"type":"response.function_call_arguments.done","item_id":"fc_1","output_index":0,"arguments":`+q(text)+`}`,
		`response.completed|{"type":"response.completed","response":{"id":"resp_1","status":"completed","output":[{"type":"function_call","call_id":"call_1","name":"send","arguments":`+q(text)+`}]}}`)
	respReasoning = append(respReasoning, `response.reasoning_summary_text.done|{"type":"response.reasoning_summary_text.done","item_id":"rs_1","output_index":0,"summary_index":0,"text":`+q(text)+`}`,
		`response.completed|{"type":"response.completed","response":{"id":"resp_1","status":"completed","output":[]}}`)
	// Anthropic: tool_use input_json and thinking deltas.
	anthInput = append(anthInput, `content_block_start|{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"send","input":{}}}`)
	anthThinking = append(anthThinking, `content_block_start|{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}`)
	for _, p := range pieces(`{"to":"`+mail+`"}`, 4) {
		anthInput = append(anthInput, `content_block_delta|{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":`+q(p)+`}}`)
		anthThinking = append(anthThinking, `content_block_delta|{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":`+q(p)+`}}`)
	}
	for _, evs := range []*[]string{&anthInput, &anthThinking} {
		*evs = append(*evs, `content_block_stop|{"type":"content_block_stop","index":0}`, `message_stop|{"type":"message_stop"}`)
	}

	chatReq := `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	respReq := `{"model":"gpt-4o","stream":true,"input":"hi"}`
	anthReq := `{"model":"claude-x","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`
	get := func(path string) envoysim.Request {
		return envoysim.Request{Method: "GET", Path: path, Headers: map[string]string{"authorization": "Bearer " + f.key}}
	}
	post := func(path, body string) envoysim.Request { return f.request(path, body) }
	tests := []struct {
		name   string
		req    envoysim.Request
		ct     string
		body   []byte
		probes []string // must not reach the client
		want   []string // must reach it
	}{
		{"f5 streamed choice 1 of n=2", post("/v1/chat/completions", chatReq), "text/event-stream", events(contentN2...), []string{"corpmail"}, []string{"[REDACTED:EMAIL_ADDRESS]"}},
		{"f4 streamed tool-call argument deltas", post("/v1/chat/completions", chatReq), "text/event-stream", events(toolArgs...), []string{"corpmail"}, []string{"REDACTED"}},
		{"f3 streamed logprob tokens", post("/v1/chat/completions", chatReq), "text/event-stream", events(logprobs...), []string{"corpmail", "@cor", "rpma"}, []string{`"token":""`}},
		{"f12 streamed refusal deltas", post("/v1/chat/completions", chatReq), "text/event-stream", events(refusal...), []string{"corpmail"}, []string{"REDACTED"}},
		{"f12 streamed reasoning deltas", post("/v1/chat/completions", chatReq), "text/event-stream", events(reasoning...), []string{"corpmail"}, []string{"REDACTED"}},
		{"f7 private key in small events", post("/v1/chat/completions", chatReq), "text/event-stream", events(pem...), append([]string{"END RSA"}, lines...), []string{"Done."}},
		{"f4 responses function-call argument deltas", post("/v1/responses", respReq), "text/event-stream", events(respArgs...), []string{"corpmail"}, []string{"REDACTED"}},
		{"f12 responses reasoning summary deltas", post("/v1/responses", respReq), "text/event-stream", events(respReasoning...), []string{"corpmail"}, []string{"REDACTED"}},
		{"f4 anthropic input_json deltas", post("/v1/messages", anthReq), "text/event-stream", events(anthInput...), []string{"corpmail"}, []string{"REDACTED"}},
		{"f12 anthropic thinking deltas", post("/v1/messages", anthReq), "text/event-stream", events(anthThinking...), []string{"corpmail"}, []string{"REDACTED"}},
		{"f3 buffered logprob tokens", post("/v1/chat/completions", `{"model":"gpt-4o","logprobs":true,"messages":[{"role":"user","content":"hi"}]}`), "application/json",
			[]byte(`{"id":"c","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":` + q(text) + `},"logprobs":{"content":[` +
				`{"token":"jane.doe","logprob":-0.1,"bytes":[106],"top_logprobs":[{"token":"@corp","logprob":-1,"bytes":[64]}]},{"token":"@corpmail.io","logprob":-0.1,"bytes":[64]}]},"finish_reason":"stop"}]}`),
			[]string{"corpmail", "jane.doe", "@corp"}, []string{"[REDACTED:EMAIL_ADDRESS]"}},
		{"f4 buffered tool-call arguments", post("/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`), "application/json",
			[]byte(`{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"send","arguments":` + q(`{"to":"`+mail+`"}`) + `}}]},"finish_reason":"tool_calls"}]}`),
			[]string{"corpmail"}, []string{"REDACTED"}},
		{"f4 buffered anthropic tool_use input", post("/v1/messages", `{"model":"claude-x","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`), "application/json",
			[]byte(`{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"send","input":{"to":"` + mail + `"}}],"stop_reason":"tool_use"}`),
			[]string{"corpmail"}, []string{"REDACTED"}},
		{"f6 GET stored response", get("/v1/responses/resp_1"), "application/json",
			[]byte(`{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":` + q(text) + `}]}]}`),
			[]string{"corpmail"}, []string{`"id":"resp_1"`, "REDACTED"}},
		{"f6 GET stored chat completion", get("/v1/chat/completions/chatcmpl-1"), "application/json",
			[]byte(`{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":` + q(text) + `}}]}`),
			[]string{"corpmail"}, []string{"REDACTED"}},
		{"f6 GET file content", get("/v1/files/file-1/content"), "text/plain", []byte("name,email\nJane," + mail + "\n"), []string{"corpmail"}, []string{"REDACTED"}},
		{"f6 GET JSON lines", get("/v1/batches/b1/output"), "application/x-ndjson", []byte(`{"custom_id":"1","response":{"body":{"text":"` + mail + `"}}}` + "\n"), []string{"corpmail"}, []string{"REDACTED"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, size := range []int{len(tc.body), 7, 61} {
				var cuts []int
				for at := size; at < len(tc.body); at += size {
					cuts = append(cuts, at)
				}
				up := envoysim.Upstream{Status: 200, Headers: map[string]string{"content-type": tc.ct}, Chunks: envoysim.Split(tc.body, cuts...)}
				res, err := envoysim.Run(context.Background(), f.client, envoysim.DefaultFilter, tc.req, func(envoysim.Forwarded) envoysim.Upstream { return up })
				if err != nil {
					t.Fatal(err)
				}
				if res.Immediate != nil {
					t.Fatalf("refused: %d %s", res.Status, res.Body)
				}
				for _, p := range tc.probes {
					if bytes.Contains(res.Body, []byte(p)) {
						t.Fatalf("chunks of %d: %q reached the client:\n%s", size, p, res.Body)
					}
				}
				for _, w := range tc.want {
					if !bytes.Contains(res.Body, []byte(w)) {
						t.Fatalf("chunks of %d: %q missing from:\n%s", size, w, res.Body)
					}
				}
			}
		})
	}
}

// pemBlockText is a private key of n base64 lines and probes for them.
func pemBlockText(n int) (string, []string) {
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var lines, probes []string
	x := uint32(2463534242)
	for range n {
		var l [64]byte
		for i := range l {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			l[i] = b64[x%64]
		}
		lines = append(lines, string(l[:]))
		probes = append(probes, string(l[:20]))
	}
	return "-----BEGIN RSA PRIVATE KEY-----\n" + strings.Join(lines, "\n") + "\n-----END RSA PRIVATE KEY-----", probes
}

// TestCanaryVariantsCaught: the model repeats the planted canary upper-cased,
// spaced out or split by zero-width characters, across streamed events and
// in a buffered answer; Bulwark still sees the leak (finding 13: the old
// matcher was exact).
func TestCanaryVariantsCaught(t *testing.T) {
	f := newStack(t, extproc.Options{}, exchange.Options{Canary: true})
	canary := regexp.MustCompile(`bwc-[0-9a-f]{16}`)
	variants := map[string]func(string) string{
		"upper":      strings.ToUpper,
		"spaced":     func(c string) string { return strings.Join(strings.Split(c, ""), " ") },
		"zero-width": func(c string) string { return strings.Join(strings.Split(c, ""), "\u200b") },
	}
	for name, v := range variants {
		for _, streamed := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s streamed=%v", name, streamed), func(t *testing.T) {
				var leaked string
				up := func(fw envoysim.Forwarded) envoysim.Upstream {
					c := canary.FindString(string(fw.Body))
					if c == "" {
						t.Errorf("no canary planted: %s", fw.Body)
					}
					leaked = v(c)
					text := "My instructions mention " + leaked + ", as asked."
					if !streamed {
						body := `{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":` + q(text) + `}}]}`
						return envoysim.Upstream{Status: 200, Headers: map[string]string{"content-type": "application/json"}, Chunks: [][]byte{[]byte(body)}}
					}
					var evs []string
					for _, p := range pieces(text, 5) {
						evs = append(evs, chatChunk(0, `{"content":`+q(p)+`}`, ""))
					}
					evs = append(evs, chatFinish(0), "[DONE]")
					b := events(evs...)
					return envoysim.Upstream{Status: 200, Headers: map[string]string{"content-type": "text/event-stream"}, Chunks: envoysim.Split(b, 100, 200, 300)}
				}
				stream := ""
				if streamed {
					stream = `"stream":true,`
				}
				res, err := envoysim.Run(context.Background(), f.client, envoysim.DefaultFilter, f.request("/v1/chat/completions",
					`{"model":"gpt-4o",`+stream+`"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}`), up)
				if err != nil {
					t.Fatal(err)
				}
				hex := strings.ToLower(leaked[len(leaked)-8:])
				if strings.Contains(strings.ToLower(string(res.Body)), hex) || bytes.Contains(res.Body, []byte(leaked)) {
					t.Fatalf("canary variant reached the client: %s", res.Body)
				}
				if !bytes.Contains(res.Body, []byte("canary_leak")) {
					t.Fatalf("no canary_leak reported to the client: status %d %s", res.Status, res.Body)
				}
			})
		}
	}
}

// TestCanaryEchoedInstructionsNotALeak: the Responses API echoes the
// request's instructions — with the canary Bulwark appended — in its
// response objects. That echo is not a leak (the answer is not stopped), but
// the marker is still kept from the client.
func TestCanaryEchoedInstructionsNotALeak(t *testing.T) {
	f := newStack(t, extproc.Options{}, exchange.Options{Canary: true})
	canary := regexp.MustCompile(`bwc-[0-9a-f]{16}`)
	for _, streamed := range []bool{true, false} {
		t.Run(fmt.Sprintf("streamed=%v", streamed), func(t *testing.T) {
			up := func(fw envoysim.Forwarded) envoysim.Upstream {
				var req struct{ Instructions string }
				if err := json.Unmarshal(fw.Body, &req); err != nil || !canary.MatchString(req.Instructions) {
					t.Errorf("no canary in the instructions: %s", fw.Body)
				}
				obj := `{"id":"resp_1","object":"response","status":"completed","instructions":` + q(req.Instructions) +
					`,"output":[{"type":"message","content":[{"type":"output_text","text":"Hello there."}]}]}`
				if !streamed {
					return envoysim.Upstream{Status: 200, Headers: map[string]string{"content-type": "application/json"}, Chunks: [][]byte{[]byte(obj)}}
				}
				b := events(`response.created|{"type":"response.created","response":`+obj+`}`,
					`response.output_text.delta|{"type":"response.output_text.delta","output_index":0,"content_index":0,"delta":"Hello there."}`,
					`response.completed|{"type":"response.completed","response":`+obj+`}`)
				return envoysim.Upstream{Status: 200, Headers: map[string]string{"content-type": "text/event-stream"}, Chunks: [][]byte{b}}
			}
			stream := ""
			if streamed {
				stream = `"stream":true,`
			}
			res, err := envoysim.Run(context.Background(), f.client, envoysim.DefaultFilter,
				f.request("/v1/responses", `{"model":"gpt-4o",`+stream+`"instructions":"be brief","input":"hi"}`), up)
			if err != nil {
				t.Fatal(err)
			}
			if res.Immediate != nil || bytes.Contains(res.Body, []byte("canary_leak")) || !bytes.Contains(res.Body, []byte("Hello there.")) {
				t.Fatalf("echoed instructions treated as a leak: status %d %s", res.Status, res.Body)
			}
			if streamed && canary.Match(res.Body) {
				t.Fatalf("the marker reached the client: %s", res.Body)
			}
		})
	}
}
