package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/bulwark-ai/bulwark/test/envoysim"
)

// benignCase is one ordinary exchange of testdata/benign.jsonl: what a
// legitimate user asks and what the model answers. Bulwark must pass it
// untouched: no denial, no redaction, the prompt reaching the model and the
// answer reaching the client byte for byte. Add a line for every false
// positive a user reports.
type benignCase struct {
	ID       string `json:"id"`
	Lang     string `json:"lang"`
	Category string `json:"category"`
	API      string `json:"api"` // chat, anthropic, responses, embeddings
	System   string `json:"system"`
	Prompt   string `json:"prompt"`
	Answer   string `json:"answer"`
	Stream   bool   `json:"stream"`
	// Tools and ResponseFormat, when set, go into a chat request as its
	// tools and response_format: function calling and structured outputs.
	Tools          json.RawMessage `json:"tools"`
	ResponseFormat json.RawMessage `json:"response_format"`
}

func loadBenign(t *testing.T) []benignCase {
	t.Helper()
	f, err := os.Open("testdata/benign.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []benignCase
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var c benignCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("benign.jsonl line %d: %v", n, err)
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

// request builds the client's request for c in its API's own shape.
func (c benignCase) request() (path string, body []byte) {
	var doc map[string]any
	switch c.API {
	case "anthropic":
		path = "/v1/messages"
		doc = map[string]any{"model": "claude-sonnet-4-5", "max_tokens": 1024,
			"messages": []any{map[string]any{"role": "user", "content": c.Prompt}}}
		if c.System != "" {
			doc["system"] = c.System
		}
	case "responses":
		path = "/v1/responses"
		doc = map[string]any{"model": "gpt-4o", "input": c.Prompt}
		if c.System != "" {
			doc["instructions"] = c.System
		}
	case "embeddings":
		path = "/v1/embeddings"
		doc = map[string]any{"model": "text-embedding-3-small", "input": c.Prompt}
	default:
		path = "/v1/chat/completions"
		msgs := []any{}
		if c.System != "" {
			msgs = append(msgs, map[string]any{"role": "system", "content": c.System})
		}
		doc = map[string]any{"model": "gpt-4o", "messages": append(msgs, map[string]any{"role": "user", "content": c.Prompt})}
		if len(c.Tools) > 0 {
			doc["tools"] = c.Tools
		}
		if len(c.ResponseFormat) > 0 {
			doc["response_format"] = c.ResponseFormat
		}
	}
	if c.Stream {
		doc["stream"] = true
	}
	body, _ = json.Marshal(doc)
	return path, body
}

// upstream answers c the way its API does, streamed in small pieces cut at
// awkward places when c.Stream.
func (c benignCase) upstream() func(envoysim.Forwarded) envoysim.Upstream {
	if c.Stream {
		pieces := splitRunes(c.Answer, 7)
		var sse []byte
		switch c.API {
		case "anthropic":
			sse = anthropicStream(pieces)
		case "responses":
			sse = responsesStream(pieces)
		default:
			sse = openAIStream(pieces, 10, len(pieces))
		}
		var cuts []int
		for i := 13; i < len(sse); i += 29 {
			cuts = append(cuts, i)
		}
		return sseUpstream(sse, cuts)
	}
	var doc any
	switch c.API {
	case "anthropic":
		doc = map[string]any{"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
			"content": []any{map[string]any{"type": "text", "text": c.Answer}}, "stop_reason": "end_turn",
			"usage": map[string]any{"input_tokens": 10, "output_tokens": 20}}
	case "responses":
		doc = map[string]any{"id": "resp_1", "object": "response", "status": "completed", "model": "gpt-4o",
			"output": []any{map[string]any{"type": "message", "id": "msg_1", "role": "assistant",
				"content": []any{map[string]any{"type": "output_text", "text": c.Answer}}}},
			"usage": map[string]any{"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}}
	case "embeddings":
		doc = map[string]any{"object": "list", "model": "text-embedding-3-small",
			"data":  []any{map[string]any{"object": "embedding", "index": 0, "embedding": []float64{0.0023064255, -0.009327292, 0.015797347}}},
			"usage": map[string]any{"prompt_tokens": 8, "total_tokens": 8}}
	default:
		doc = map[string]any{"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": c.Answer}, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}
	}
	b, _ := json.Marshal(doc)
	return jsonUpstream(string(b))
}

// splitRunes cuts s into pieces of n runes, as a model's tokens arrive.
func splitRunes(s string, n int) []string {
	r := []rune(s)
	var out []string
	for len(r) > n {
		out = append(out, string(r[:n]))
		r = r[n:]
	}
	return append(out, string(r))
}

// strings collects every string in a JSON document.
func jsonStrings(v any, out map[string]bool) {
	switch v := v.(type) {
	case string:
		out[v] = true
	case []any:
		for _, e := range v {
			jsonStrings(e, out)
		}
	case map[string]any:
		for _, e := range v {
			jsonStrings(e, out)
		}
	}
}

// check runs c through p and says what was done to it, "" when nothing.
func (c benignCase) check(t *testing.T, p *proc, key string) string {
	path, body := c.request()
	res := run(t, p, envoysim.DefaultFilter, chatRequest(key, path, string(body)), c.upstream())
	if res.Immediate != nil || !res.UpstreamCalled {
		return fmt.Sprintf("denied %d: %s", res.Status, res.Body)
	}
	var fwd any
	if err := json.Unmarshal(res.Upstream.Body, &fwd); err != nil {
		return fmt.Sprintf("forwarded body is not JSON: %v", err)
	}
	sent := map[string]bool{}
	jsonStrings(fwd, sent)
	for _, s := range []string{c.Prompt, c.System} {
		if s != "" && !sent[s] {
			return fmt.Sprintf("prompt changed on its way to the model: %s", res.Upstream.Body)
		}
	}
	if c.API == "embeddings" {
		return ""
	}
	var got string
	if c.Stream {
		text, errEvent, done := streamText(t, res.Body)
		if errEvent != "" || !done {
			return fmt.Sprintf("stream cut (error %q, done %v)", errEvent, done)
		}
		got = text
	} else {
		var doc any
		if err := json.Unmarshal(res.Body, &doc); err != nil {
			return fmt.Sprintf("answer is not JSON: %v", err)
		}
		recv := map[string]bool{}
		jsonStrings(doc, recv)
		if recv[c.Answer] {
			got = c.Answer
		} else {
			got = string(res.Body)
		}
	}
	if got != c.Answer {
		return fmt.Sprintf("answer changed: %q", got)
	}
	return ""
}

// TestBenignTraffic sends every ordinary exchange of testdata/benign.jsonl
// through ext_proc with an API key on the default policy, as a new user
// would, and requires each to pass untouched. It prints the pass rate per
// language and per category (run with -v to see them).
func TestBenignTraffic(t *testing.T) {
	p, key := llmProc(t)
	cases := loadBenign(t)
	type tally struct{ pass, all int }
	byLang, byCat := map[string]*tally{}, map[string]*tally{}
	count := func(m map[string]*tally, k string, ok bool) {
		if m[k] == nil {
			m[k] = &tally{}
		}
		m[k].all++
		if ok {
			m[k].pass++
		}
	}
	var failed []string
	for _, c := range cases {
		what := c.check(t, p, key)
		count(byLang, c.Lang, what == "")
		count(byCat, c.Category, what == "")
		if what != "" {
			failed = append(failed, fmt.Sprintf("%s (%s, %s): %s", c.ID, c.Lang, c.API, what))
		}
	}
	var report bytes.Buffer
	for _, m := range []map[string]*tally{byLang, byCat} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&report, "%s %d/%d  ", k, m[k].pass, m[k].all)
		}
		report.WriteString("\n")
	}
	t.Logf("benign exchanges passed untouched: %d/%d\n%s", len(cases)-len(failed), len(cases), report.String())
	if len(failed) > 0 {
		t.Logf("not passed untouched:\n%s", strings.Join(failed, "\n"))
	}
	// The targets (issue 27): at least 98 % pass untouched, and no language
	// is denied more often than English.
	if pass := float64(len(cases)-len(failed)) / float64(len(cases)); pass < minBenignPass {
		t.Errorf("%d of %d benign exchanges were not passed untouched (%.1f %% passed, want >= %.0f %%):\n%s",
			len(failed), len(cases), 100*pass, 100*minBenignPass, strings.Join(failed, "\n"))
	}
	en := byLang["en"]
	for lang, l := range byLang {
		if lang != "en" && (l.all-l.pass)*en.all > (en.all-en.pass)*l.all {
			t.Errorf("%s: %d of %d not passed untouched, more often than English (%d of %d)", lang, l.all-l.pass, l.all, en.all-en.pass, en.all)
		}
	}
}

// minBenignPass is the share of benign exchanges that must pass untouched.
const minBenignPass = 0.98
