package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/bulwark-ai/bulwark/test/envoysim"
)

// TestExtProcStreamedSideChannelsRedacted: through the real binary, an n=2
// chat stream whose chunks carry both choices — choice 0 text with logprobs,
// choice 1 a tool call whose arguments arrive in small deltas — with an
// e-mail address split over choice 0's deltas and a GitHub token split over
// choice 1's arguments. The client assembles both choices as an SDK would:
// neither value, nor any piece of them in a logprob token, reaches it,
// whatever the chunking (issue 16 findings 3, 4 and 5). Then a stored
// response fetched with GET is filtered too (finding 6).
func TestExtProcStreamedSideChannelsRedacted(t *testing.T) {
	p, key := llmProc(t)
	text := "Sure, write to " + email + " and I will answer."
	argsText := `{"note":"use ` + ghToken + ` for the repo"}`
	var b bytes.Buffer
	chunk := func(choices ...string) {
		fmt.Fprintf(&b, `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[%s]}`+"\n\n", strings.Join(choices, ","))
	}
	q := func(s string) string { j, _ := json.Marshal(s); return string(j) }
	chunk(`{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}`,
		`{"index":1,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"save_note","arguments":""}}]},"finish_reason":null}`)
	for i := 0; i < max(len(text), len(argsText)); i += 5 {
		var cs []string
		if i < len(text) {
			p := text[i:min(i+5, len(text))]
			cs = append(cs, `{"index":0,"delta":{"content":`+q(p)+`},"logprobs":{"content":[{"token":`+q(p)+`,"logprob":-0.2,"bytes":[1],"top_logprobs":[{"token":`+q(p)+`,"logprob":-0.2,"bytes":[1]}]}]},"finish_reason":null}`)
		}
		if i < len(argsText) {
			cs = append(cs, `{"index":1,"delta":{"tool_calls":[{"index":0,"function":{"arguments":`+q(argsText[i:min(i+5, len(argsText))])+`}}]},"finish_reason":null}`)
		}
		chunk(cs...)
	}
	chunk(`{"index":0,"delta":{},"finish_reason":"stop"}`, `{"index":1,"delta":{},"finish_reason":"tool_calls"}`)
	b.WriteString("data: [DONE]\n\n")
	stream := b.Bytes()

	req := chatRequest(key, "/v1/chat/completions", `{"model":"gpt-4o","stream":true,"n":2,"logprobs":true,"messages":[{"role":"user","content":"hi"}]}`)
	rng := rand.New(rand.NewPCG(16, 5))
	var first []byte
	for round := range 6 {
		var cuts []int
		for range rng.IntN(25) {
			cuts = append(cuts, 1+rng.IntN(len(stream)-1))
		}
		slices.Sort(cuts)
		res := run(t, p, envoysim.DefaultFilter, req, sseUpstream(stream, cuts))
		if res.Immediate != nil {
			t.Fatalf("round %d: refused %d %s", round, res.Status, res.Body)
		}
		content, args, toks, done := assembleChoices(t, res.Body)
		for _, leak := range []string{email, "mailbox.org", ghToken, ghToken[4:20]} {
			if bytes.Contains(res.Body, []byte(leak)) {
				t.Fatalf("round %d: %q reached the client:\n%s", round, leak, res.Body)
			}
		}
		if toks != "" {
			t.Fatalf("round %d: logprob tokens kept their text: %q", round, toks)
		}
		if !done || !strings.Contains(content[0], "[REDACTED:EMAIL_ADDRESS]") || !strings.HasPrefix(content[0], "Sure, write to ") ||
			!strings.Contains(args[1], "[REDACTED:") || !strings.HasSuffix(args[1], ` for the repo"}`) {
			t.Fatalf("round %d: choice 0 %q, choice 1 arguments %q, done %v", round, content[0], args[1], done)
		}
		if first == nil {
			first = res.Body
		} else if !bytes.Equal(first, res.Body) {
			t.Fatalf("round %d: output depends on the chunking", round)
		}
	}

	get := envoysim.Request{Method: "GET", Path: "/v1/responses/resp_1", Headers: map[string]string{"authorization": "Bearer " + key}}
	stored := `{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"mail ` + email + `"}]}]}`
	res := run(t, p, envoysim.DefaultFilter, get, jsonUpstream(stored))
	if res.Immediate != nil || bytes.Contains(res.Body, []byte(email)) || !bytes.Contains(res.Body, []byte(`"id":"resp_1"`)) {
		t.Fatalf("GET stored response: status %d body %s", res.Status, res.Body)
	}
}

// assembleChoices reads an OpenAI chat stream as a client SDK does: content
// and tool-call arguments per choice, and every logprob token.
func assembleChoices(t *testing.T, body []byte) (content, args map[int]string, tokens string, done bool) {
	t.Helper()
	content, args = map[int]string{}, map[int]string{}
	for _, line := range strings.Split(string(body), "\n") {
		d, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if d == "[DONE]" {
			done = true
			continue
		}
		var ev struct {
			Choices []struct {
				Index int `json:"index"`
				Delta struct {
					Content   string `json:"content"`
					ToolCalls []struct {
						Function struct {
							Arguments string `json:"arguments"`
						} `json:"function"`
					} `json:"tool_calls"`
				} `json:"delta"`
				Logprobs *struct {
					Content []struct {
						Token string `json:"token"`
						Top   []struct {
							Token string `json:"token"`
						} `json:"top_logprobs"`
					} `json:"content"`
				} `json:"logprobs"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(d), &ev); err != nil {
			t.Fatalf("client got an event that is not JSON: %q", d)
		}
		for _, c := range ev.Choices {
			content[c.Index] += c.Delta.Content
			for _, tc := range c.Delta.ToolCalls {
				args[c.Index] += tc.Function.Arguments
			}
			if c.Logprobs != nil {
				for _, lp := range c.Logprobs.Content {
					tokens += lp.Token
					for _, tp := range lp.Top {
						tokens += tp.Token
					}
				}
			}
		}
	}
	return content, args, tokens, done
}
