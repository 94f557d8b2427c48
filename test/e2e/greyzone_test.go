package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"

	"github.com/bulwark-ai/bulwark/test/envoysim"
)

// Values in the default grey zone (policies/bulwark/data.yaml,
// redaction.never_redact) and real-looking ones next to them.
var (
	greyValues = []string{"127.0.0.1", "192.168.1.10", "2001:db8::1", "alice@example.com", "4242 4242 4242 4242"}
	realValues = []string{"81.2.69.160", "jane.doe@gmail.com", "4556 7375 8689 9855"}
)

const greyText = "Connect to 127.0.0.1 or 192.168.1.10 (v6 2001:db8::1), sign in as alice@example.com and pay with 4242 4242 4242 4242. "
const realText = "Our office is 81.2.69.160, write to jane.doe@gmail.com, my card is 4556 7375 8689 9855."

func checkGreyZone(t *testing.T, where, text string) {
	t.Helper()
	for _, v := range greyValues {
		if !strings.Contains(text, v) {
			t.Errorf("%s: grey-zone value %q was changed: %s", where, v, text)
		}
	}
	for _, v := range realValues {
		if strings.Contains(text, v) {
			t.Errorf("%s: real-looking value %q was not redacted: %s", where, v, text)
		}
	}
	for _, typ := range []string{"IP_ADDRESS", "EMAIL_ADDRESS", "CREDIT_CARD"} {
		if strings.Count(text, "[REDACTED:"+typ+"]") != 1 {
			t.Errorf("%s: want exactly one [REDACTED:%s] (the real value's): %s", where, typ, text)
		}
	}
}

// TestGreyZoneExtProc: the default policy's grey zone reaches the detectors
// of the real binary. Loopback, private and documentation addresses, an
// example.com address and Stripe's test card pass untouched through
// ext_proc, in the request and in buffered and streamed answers (cut
// inside the values), while a public address, a real-looking e-mail and a
// non-test card beside them are still redacted. Grey-zone values are not
// counted in input.signals either (bulwark_detector_findings_total, which
// counts the signals the policy sees, does not move).
func TestGreyZoneExtProc(t *testing.T) {
	p, key := llmProc(t)
	findings := func() float64 {
		n := 0.0
		for _, typ := range []string{"IP_ADDRESS", "EMAIL_ADDRESS", "CREDIT_CARD"} {
			if v := p.metric(t, `bulwark_detector_findings_total{detector="pii",type="`+typ+`"}`); v > 0 {
				n += v
			}
		}
		return n
	}

	// Only grey-zone values: no signal at all.
	body, _ := json.Marshal(map[string]any{"model": "gpt-4o", "messages": []any{map[string]any{"role": "user", "content": greyText}}})
	res := run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions", string(body)), jsonUpstream(`{"id":"c0","object":"chat.completion","choices":[]}`))
	if res.Immediate != nil || !strings.Contains(string(res.Upstream.Body), greyText) {
		t.Fatalf("grey-only request: status %d, forwarded %s", res.Status, res.Upstream.Body)
	}
	if n := findings(); n != 0 {
		t.Fatalf("grey-zone values counted as %v findings in input.signals", n)
	}

	// Request: grey values kept, real ones redacted.
	body, _ = json.Marshal(map[string]any{"model": "gpt-4o", "messages": []any{map[string]any{"role": "user", "content": greyText + realText}}})
	res = run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions", string(body)), jsonUpstream(`{"id":"c0","object":"chat.completion","choices":[]}`))
	if res.Immediate != nil {
		t.Fatalf("request denied: %d %s", res.Status, res.Body)
	}
	var fwd struct{ Messages []struct{ Content string } }
	if err := json.Unmarshal(res.Upstream.Body, &fwd); err != nil || len(fwd.Messages) != 1 {
		t.Fatalf("forwarded body %s: %v", res.Upstream.Body, err)
	}
	checkGreyZone(t, "request", fwd.Messages[0].Content)
	if n := findings(); n != 3 {
		t.Errorf("input.signals counted %v pii findings, want the 3 real ones", n)
	}

	// Buffered answer.
	answer, _ := json.Marshal(map[string]any{"id": "c1", "object": "chat.completion", "model": "gpt-4o",
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": greyText + realText}}}})
	res = run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`), jsonUpstream(string(answer)))
	if res.Immediate != nil || res.ResponseBodyMode != filterv3.ProcessingMode_BUFFERED {
		t.Fatalf("buffered answer: status %d mode %v", res.Status, res.ResponseBodyMode)
	}
	var got struct {
		Choices []struct{ Message struct{ Content string } }
	}
	if err := json.Unmarshal(res.Body, &got); err != nil || len(got.Choices) != 1 {
		t.Fatalf("answer %s: %v", res.Body, err)
	}
	checkGreyZone(t, "buffered answer", got.Choices[0].Message.Content)

	// Streamed answer, the values cut across events, the stream cut inside events.
	full := greyText + realText
	var parts []string
	for _, cut := range []string{"127.0.", "192.168.1", "2001:db", "alice@exam", "4242 4242 42", "81.2.6", "jane.doe@gm", "4556 7375"} {
		i := strings.Index(full, cut) + len(cut)
		parts = append(parts, full[:i])
		full = full[i:]
	}
	parts = append(parts, full)
	stream := openAIStream(parts, 5, 40)
	for _, cuts := range [][]int{nil, {17, 300, 301, 900}} {
		res = run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions", `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`), sseUpstream(stream, cuts))
		if res.Immediate != nil || res.ResponseBodyMode != filterv3.ProcessingMode_STREAMED {
			t.Fatalf("streamed answer: status %d mode %v", res.Status, res.ResponseBodyMode)
		}
		text, errEv, done := streamText(t, res.Body)
		if errEv != "" || !done {
			t.Fatalf("stream cut: %q done=%v", errEv, done)
		}
		checkGreyZone(t, "streamed answer", text)
	}
}

// TestGreyZoneSignalsBothDoors: a policy that denies any prompt with PII
// in input.signals lets a prompt with only grey-zone values through both
// doors (ext_authz with the body, ext_proc), and still denies one with a
// real e-mail address: grey-zone values are not findings for the policy.
func TestGreyZoneSignalsBothDoors(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join("..", "..", "policies", "bulwark", "data.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "bulwark", "data.yaml"), string(data))
	writeFile(t, filepath.Join(dir, "bulwark", "decision.rego"), `package bulwark
import rego.v1
default decision := {"allowed": true, "reason": "allowed", "redact": [{"detector": "pii"}]}
decision := {"allowed": false, "http_status": 403, "reason": "pii_in_prompt"} if count(input.signals.pii) > 0
`)
	p := startEnv(t, nil, "--policy-dir", dir)
	prompt := func(text string) []byte {
		b, _ := json.Marshal(map[string]any{"model": "gpt-4o", "messages": []any{map[string]any{"role": "user", "content": text}}})
		return b
	}
	for _, tc := range []struct {
		name  string
		text  string
		allow bool
	}{
		{"grey zone only", greyText, true},
		{"real e-mail", greyText + "and jane.doe@gmail.com", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := chat(nil)
			r.Body = prompt(tc.text)
			if got := allowed(p.Check(t, r)); got != tc.allow {
				t.Errorf("ext_authz: allowed = %v, want %v", got, tc.allow)
			}
			res := run(t, p, envoysim.DefaultFilter, chatRequest("", "/v1/chat/completions", string(r.Body)), jsonUpstream(`{"id":"c0","object":"chat.completion","choices":[]}`))
			if got := res.Immediate == nil && res.UpstreamCalled; got != tc.allow {
				t.Errorf("ext_proc: allowed = %v (status %d), want %v", got, res.Status, tc.allow)
			}
		})
	}
}
