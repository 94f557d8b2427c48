package e2e

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/test/envoysim"
)

// moderationModel is a real HTTP server speaking the OpenAI moderations
// API: it flags any input containing "kill" (category violence). While
// down it answers 503; while slow it answers only after 2s (far beyond
// the timeout the tests configure). It records the bearer tokens it got.
type moderationModel struct {
	srv   *httptest.Server
	mode  atomic.Value // "ok", "down", "slow"
	mu    sync.Mutex
	auth  map[string]bool
	calls atomic.Int64
}

func newModerationModel(t *testing.T) *moderationModel {
	t.Helper()
	m := &moderationModel{auth: map[string]bool{}}
	m.mode.Store("ok")
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.calls.Add(1)
		m.mu.Lock()
		m.auth[r.Header.Get("Authorization")] = true
		m.mu.Unlock()
		var in struct{ Input string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		switch m.mode.Load() {
		case "down":
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
			return
		case "slow":
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		}
		flagged := strings.Contains(in.Input, "kill")
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "modr-1", "model": "omni-moderation-latest", "results": []any{map[string]any{
			"flagged": flagged, "categories": map[string]bool{"violence": flagged, "hate": false},
			"category_scores": map[string]float64{"violence": map[bool]float64{true: 0.93, false: 0.01}[flagged], "hate": 0.01}}}})
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func chatPrompt(key, prompt string) envoy.HTTPRequest {
	body, _ := json.Marshal(map[string]any{"model": "gpt-4o-mini", "messages": []map[string]string{{"role": "user", "content": prompt}}})
	return envoy.HTTPRequest{Method: "POST", Path: "/v1/chat/completions",
		Headers: map[string]string{"content-type": "application/json", "authorization": "Bearer " + key}, Body: body}
}

// TestModerationFailOpen: through the real binary and its default policy,
// with --moderation-url and fail-open: a prompt the moderation model flags
// is denied (403 moderation_flagged) through ext_authz and ext_proc, a
// flagged answer is stopped (buffered: an error in OpenAI's shape;
// streamed: an error event before the flagged text), and a moderation
// server that is down or slow never fails a request. The bearer token
// reaches the server and never the logs.
func TestModerationFailOpen(t *testing.T) {
	model := newModerationModel(t)
	const token = "sk-moderation-e2e-token-42"
	p, key := llmProcEnv(t, []string{"BULWARK_MODERATION_TOKEN=" + token},
		append([]string{"--moderation-url", model.srv.URL + "/v1/moderations", "--moderation-timeout", "200ms",
			"--moderation-breaker-failures", "100", "--moderation-stream-window", "64"}, attackerPolicy(t)...)...)

	// Prompts through ext_authz.
	for _, tc := range []struct {
		name, prompt, mode string
		status             int
		reason             string
	}{
		{"flagged prompt", "how do I kill my neighbour", "ok", 403, "moderation_flagged"},
		{"flagged again (cached)", "how do I kill my neighbour", "ok", 403, "moderation_flagged"},
		{"clean prompt", "what is the capital of France?", "ok", 200, ""},
		{"server down: fail-open", "how would one kill a zombie process?", "down", 200, ""},
		{"server slow: fail-open", "how could one kill a stuck job?", "slow", 200, ""},
	} {
		model.mode.Store(tc.mode)
		start := time.Now()
		status, reason, msg := denial(t, p, chatPrompt(key, tc.prompt))
		if status != tc.status || reason != tc.reason {
			t.Errorf("%s: %d %s (%s), want %d %s", tc.name, status, reason, msg, tc.status, tc.reason)
		}
		if el := time.Since(start); tc.mode == "slow" && el > 1500*time.Millisecond {
			t.Errorf("%s: the decision took %v: the moderation timeout (200ms) did not bound it", tc.name, el)
		}
	}

	// Prompts and answers through ext_proc.
	model.mode.Store("ok")
	res := run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions",
		`{"model":"gpt-4o","messages":[{"role":"user","content":"tell me how to kill him"}]}`), jsonUpstream(`{}`))
	if res.Immediate == nil || res.Status != 403 || res.UpstreamCalled || !bytes.Contains(res.Body, []byte("moderation_flagged")) {
		t.Errorf("ext_proc flagged prompt: status %d upstream %v body %s, want 403 moderation_flagged", res.Status, res.UpstreamCalled, res.Body)
	}
	buffered := `{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"First you kill the lights."},"finish_reason":"stop"}]}`
	res = run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions",
		`{"model":"gpt-4o","messages":[{"role":"user","content":"a story please"}]}`), jsonUpstream(buffered))
	if res.Status != 403 || bytes.Contains(res.Body, []byte("kill")) || !bytes.Contains(res.Body, []byte("moderation_flagged")) {
		t.Errorf("buffered flagged answer: status %d body %s, want 403 moderation_flagged without the answer", res.Status, res.Body)
	}
	texts := []string{"Once upon a time ", "there was a quiet village ", "by a river. ", "One night a stranger came ", "and he wanted to kill ", "the miller. ", "The end."}
	stream := openAIStream(texts, 10, 20)
	req := chatRequest(key, "/v1/chat/completions", `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"a story please"}]}`)
	for _, cuts := range [][]int{nil, {7, 100, 333}, {1, 2, 3, 50, 51, 400, 401}} {
		res = run(t, p, envoysim.DefaultFilter, req, sseUpstream(stream, cuts))
		if res.Immediate != nil || bytes.Contains(res.Body, []byte("kill")) || !bytes.Contains(res.Body, []byte("moderation_flagged")) {
			t.Errorf("streamed flagged answer (cuts %v): %d %s, want it cut with moderation_flagged before the flagged text", cuts, res.Status, res.Body)
		}
	}
	clean := openAIStream([]string{"Paris is ", "the capital ", "of France."}, 10, 5)
	for _, mode := range []string{"ok", "down", "slow"} {
		model.mode.Store(mode)
		res = run(t, p, envoysim.DefaultFilter, req, sseUpstream(clean, []int{20, 90}))
		content, _, _, done := assembleChoices(t, res.Body)
		if res.Immediate != nil || bytes.Contains(res.Body, []byte("error")) || content[0] != "Paris is the capital of France." || !done {
			t.Errorf("clean streamed answer, server %s: %d %s, want it whole", mode, res.Status, res.Body)
		}
	}

	model.mu.Lock()
	if len(model.auth) != 1 || !model.auth["Bearer "+token] {
		t.Errorf("Authorization headers seen: %v, want only the bearer token", model.auth)
	}
	model.mu.Unlock()
	if strings.Contains(p.Logs(), token) {
		t.Error("the moderation token is in the logs")
	}
	_, metrics := p.get(t, "/metrics")
	for _, want := range []string{
		`bulwark_moderation_calls_total{result="status"}`,
		`bulwark_moderation_calls_total{result="timeout"}`,
		`bulwark_moderation_cache_hits_total`,
		`bulwark_moderation_breaker_open 0`,
		`bulwark_moderation_call_seconds_count`,
		`bulwark_decisions_total{reason="moderation_flagged",result="deny"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, zero := range []string{`bulwark_moderation_calls_total{result="timeout"} 0`, `bulwark_moderation_calls_total{result="status"} 0`, `bulwark_moderation_cache_hits_total 0`} {
		if strings.Contains(metrics, zero) {
			t.Errorf("metrics: %s, want it counted", zero)
		}
	}
}

// TestModerationFailClosed: with fail-closed, a moderation server that
// cannot be reached denies the prompt with moderation_unavailable; the
// breaker then opens and stops the calls, and still every prompt is denied.
func TestModerationFailClosed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there now
	p, key := llmProc(t, "--moderation-url", "http://"+addr+"/v1/moderations", "--moderation-failure-mode", "fail_closed",
		"--moderation-breaker-failures", "2", "--moderation-breaker-cooldown", "1h")
	for i, prompt := range []string{"what is the capital of France?", "hello", "and again"} {
		status, reason, _ := denial(t, p, chatPrompt(key, prompt))
		if status != 503 || reason != "moderation_unavailable" {
			t.Errorf("prompt %d: %d %s, want 503 moderation_unavailable", i, status, reason)
		}
	}
	_, metrics := p.get(t, "/metrics")
	for _, want := range []string{
		`bulwark_moderation_calls_total{result="transport"} 2`,
		`bulwark_moderation_calls_total{result="circuit_open"} 1`,
		`bulwark_moderation_breaker_open 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// llmProcEnv is llmProc with extra environment variables.
func llmProcEnv(t *testing.T, env []string, args ...string) (*proc, string) {
	t.Helper()
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	key := createKey(t, "--keys-file", keys, "--id", "app", "--roles", "user", "--tenant", "acme")
	return startEnv(t, append([]string{pepperEnv}, env...), append([]string{"--keys-file", keys}, args...)...), key
}
