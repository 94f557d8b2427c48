package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
)

// chatBody is a chat completion request whose user message is text.
func chatBody(t *testing.T, text string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"model": "gpt-4o-mini",
		"messages": []map[string]string{{"role": "user", "content": text}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUnauthenticatedBodyNotScanned: an anonymous 1 MB prompt of
// "password=" repeated (once the costliest input for the secrets detector)
// is answered 401 without running the detectors, through ext_authz and
// ext_proc; an authenticated one is scanned.
func TestUnauthenticatedBodyNotScanned(t *testing.T) {
	p, key := llmProc(t)
	body := chatBody(t, strings.Repeat("password=", 1<<20/9))
	jsonCT := map[string]string{"content-type": "application/json"}

	resp := p.Check(t, envoy.HTTPRequest{Method: "POST", Path: "/v1/chat/completions", Headers: jsonCT, Body: body})
	if allowed(resp) || resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
		t.Fatalf("anonymous check: %v", resp.GetStatus())
	}
	_, m := p.get(t, "/metrics")
	if got := metricValue(m, "bulwark_prompts_scanned_total"); got != 0 {
		t.Errorf("anonymous request scanned: bulwark_prompts_scanned_total = %v, want 0", got)
	}
	if got := metricValue(m, "bulwark_prompt_scans_skipped_total"); got != 1 {
		t.Errorf("bulwark_prompt_scans_skipped_total = %v, want 1", got)
	}

	authed := map[string]string{"content-type": "application/json", "authorization": "Bearer " + key}
	small := chatBody(t, "hello there")
	if resp := p.Check(t, envoy.HTTPRequest{Method: "POST", Path: "/v1/chat/completions", Headers: authed, Body: small}); !allowed(resp) {
		t.Fatalf("authenticated check: %v", resp.GetStatus())
	}
	_, m = p.get(t, "/metrics")
	if got := metricValue(m, "bulwark_prompts_scanned_total"); got != 1 {
		t.Errorf("authenticated request: bulwark_prompts_scanned_total = %v, want 1", got)
	}
}

// TestGuardScanTextLimited: the Guard API's ScanText is held to
// guard_scan_per_minute calls per principal and guard_scan_max_bytes of
// text, so one credential cannot make it a CPU sink.
func TestGuardScanTextLimited(t *testing.T) {
	a := startAPI(t, nil, "--guard-scan-per-minute", "2", "--guard-scan-max-bytes", "65536")
	scan := func(id string, n int) error {
		_, err := a.guard.ScanText(a.as(t, id), &bulwarkv1.ScanTextRequest{Text: strings.Repeat("a", n)})
		return err
	}
	apiCode(t, "over the size bound", scan("app", 65537), codes.InvalidArgument)
	apiCode(t, "first call", scan("app", 65536), codes.OK)
	apiCode(t, "second call", scan("app", 10), codes.OK)
	apiCode(t, "third call in a minute", scan("app", 10), codes.ResourceExhausted)
	apiCode(t, "another principal", scan("reader", 10), codes.OK)
}
