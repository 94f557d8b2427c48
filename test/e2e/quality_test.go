package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-ai/bulwark/test/envoysim"
)

// A policy that reads input.response.quality: an answer that is not the
// JSON the request asked for is refused.
const qualityPolicy = `package bulwark
import rego.v1

default decision := {"allowed": true, "reason": "ok"}

decision := {"allowed": false, "http_status": 502, "reason": "invalid_json_answer", "message": input.response.quality.json.error} if {
	input.phase == "response_body"
	input.response.quality.json.requested
	not input.response.quality.json.valid
}
`

// TestAnswerQualitySignals drives the real binary through ext_proc: an
// answer that breaks the request's JSON schema reaches the policy as
// input.response.quality.json (and is refused by it), a refusal and a
// streamed answer cut at the token cap are counted by model in /metrics,
// with the stream's time to first token.
func TestAnswerQualitySignals(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.rego"), qualityPolicy)
	p, key := llmProc(t, "--policy-dir", dir)

	schemaReq := `{"model":"gpt-4o","messages":[{"role":"user","content":"a person"}],` +
		`"response_format":{"type":"json_schema","json_schema":{"name":"p","schema":{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]}}}}`
	answer := func(content, finish string) string {
		return `{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":` +
			quote(content) + `},"finish_reason":"` + finish + `"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`
	}
	res := run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions", schemaReq), jsonUpstream(answer(`{"name":"Ada"}`, "stop")))
	if res.Status != 502 || !strings.Contains(string(res.Body), "invalid_json_answer") {
		t.Fatalf("schema-breaking answer: %d %s", res.Status, res.Body)
	}
	res = run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions", schemaReq), jsonUpstream(answer(`{"name":"Ada","age":36}`, "stop")))
	if res.Status != 200 {
		t.Fatalf("valid JSON answer: %d %s", res.Status, res.Body)
	}
	plain := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`
	res = run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions", plain),
		jsonUpstream(answer("I'm sorry, but I can't help with that.", "stop")))
	if res.Status != 200 {
		t.Fatalf("refusal: %d", res.Status)
	}
	stream := strings.Replace(string(openAIStream([]string{"Once upon", " a time"}, 5, 2)), `"finish_reason":"stop"`, `"finish_reason":"length"`, 1)
	streamReq := `{"model":"gpt-4o","stream":true,"max_tokens":2,"messages":[{"role":"user","content":"a story"}]}`
	res = run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions", streamReq), sseUpstream([]byte(stream), []int{40, 200}))
	if res.Status != 200 || !strings.Contains(string(res.Body), "Once upon") {
		t.Fatalf("stream: %d %s", res.Status, res.Body)
	}
	_, metrics := p.get(t, "/metrics")
	for _, want := range []string{
		`bulwark_genai_answer_problems_total{model="gpt-4o",problem="schema_mismatch"} 1`,
		`bulwark_genai_refusals_total{model="gpt-4o"} 1`,
		`bulwark_genai_answers_total{finish_reason="stop",model="gpt-4o"} 3`,
		`bulwark_genai_answers_total{finish_reason="length",model="gpt-4o"} 1`,
		`bulwark_genai_answer_problems_total{model="gpt-4o",problem="truncated"} 1`,
		`bulwark_genai_time_to_first_token_seconds_count{model="gpt-4o"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}
