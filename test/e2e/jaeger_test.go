package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/test/envoysim"
)

// jaegerBinary is the Jaeger v2 all-in-one `make jaeger` builds (or
// $JAEGER_BIN); "" when there is none.
func jaegerBinary() string {
	p := os.Getenv("JAEGER_BIN")
	if p == "" {
		p = "../../.cache/bin/jaeger"
	}
	if st, err := os.Stat(p); err != nil || st.IsDir() {
		return ""
	}
	abs, _ := filepath.Abs(p)
	return abs
}

// freeAddrs returns n loopback addresses nothing listens on right now.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startJaeger runs Jaeger v2 all-in-one (in-memory storage) on free
// loopback ports and returns its OTLP gRPC address and query base URL.
func startJaeger(t *testing.T, bin string) (otlpGRPC, query string) {
	t.Helper()
	addrs := freeAddrs(t, 4)
	cfg, err := filepath.Abs("testdata/jaeger.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Env = append(cleanEnv(), "JAEGER_OTLP_GRPC="+addrs[0], "JAEGER_OTLP_HTTP="+addrs[1],
		"JAEGER_QUERY_HTTP="+addrs[2], "JAEGER_QUERY_GRPC="+addrs[3])
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start jaeger: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("jaeger logs:\n%s", logs.String())
		}
	})
	query = "http://" + addrs[2]
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("jaeger exited before serving:\n%s", logs.String())
		default:
		}
		if resp, err := http.Get(query + "/api/services"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("jaeger's query API did not answer within 60s:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The query API may come up before the OTLP receiver: wait for it too.
	for {
		c, err := net.DialTimeout("tcp", addrs[0], time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jaeger's OTLP port is not open:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return addrs[0], query
}

// The Jaeger query API's trace document (GET /api/traces/<id>).
type jaegerTrace struct {
	TraceID   string                                  `json:"traceID"`
	Spans     []jaegerSpan                            `json:"spans"`
	Processes map[string]struct{ ServiceName string } `json:"processes"`
}

type jaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	ProcessID     string `json:"processID"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
}

func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

func (s jaegerSpan) tag(k string) string {
	for _, t := range s.Tags {
		if t.Key == k {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

func (tr jaegerTrace) named(name string) []jaegerSpan {
	var out []jaegerSpan
	for _, s := range tr.Spans {
		if s.OperationName == name {
			out = append(out, s)
		}
	}
	return out
}

func (tr jaegerTrace) children(of jaegerSpan) map[string]bool {
	out := map[string]bool{}
	for _, s := range tr.Spans {
		if s.parent() == of.SpanID {
			out[s.OperationName] = true
		}
	}
	return out
}

// TestJaeger runs the real Bulwark against a real Jaeger (v2 all-in-one,
// built by `make jaeger`; skipped when it is not built) and reads the trace
// back through Jaeger's query API: an ext_authz Check and an ext_proc
// exchange carrying Envoy's traceparent appear inside that trace as
// bulwark.check and bulwark.extproc.<phase> spans with their stage spans
// and decision attributes, and nothing in the trace is prompt text, a
// finding's value or a credential.
func TestJaeger(t *testing.T) {
	bin := jaegerBinary()
	if bin == "" {
		t.Skip("Jaeger is not built: run `make jaeger` (or `make e2e-jaeger`) to run this test")
	}
	otlp, query := startJaeger(t, bin)
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.yaml")
	auditLog := filepath.Join(dir, "audit.log")
	key := createKey(t, "--keys-file", keys, "--id", "app", "--roles", "user", "--tenant", "acme")
	p := startEnv(t, []string{pepperEnv, "OTEL_EXPORTER_OTLP_ENDPOINT=http://" + otlp, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_SERVICE_NAME=bulwark-jaeger-e2e", "OTEL_BSP_SCHEDULE_DELAY=100"},
		"--keys-file", keys, "--audit-log", auditLog)

	const traceID, checkParent, procParent = "5a1f6c0e9b2d4f7a8c3e1b0d2f4a6c8e", "1111111111111111", "2222222222222222"
	prompt := "Summarise this and mail it to " + email + "; the deploy token is " + ghToken
	body := `{"model":"gpt-4o","messages":[{"role":"user","content":"` + prompt + `"}]}`

	// ext_authz: the Check Envoy sends, with the body (with_request_body).
	req := chat(map[string]string{"authorization": "Bearer " + key, "traceparent": "00-" + traceID + "-" + checkParent + "-01"})
	req.Body = []byte(body)
	if !allowed(p.Check(t, req)) {
		t.Fatal("Check denied")
	}
	// ext_proc: the same request's exchange, redacted on its way upstream.
	ereq := chatRequest(key, "/v1/chat/completions", body)
	ereq.Headers["traceparent"] = "00-" + traceID + "-" + procParent + "-01"
	res := run(t, p, envoysim.DefaultFilter, ereq, jsonUpstream(`{"id":"chatcmpl-jaeger","model":"gpt-4o-2024-08-06","choices":[{"message":{"role":"assistant","content":"done"},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":8}}}`))
	if res.Status != 200 || strings.Contains(string(res.Upstream.Body), ghToken) {
		t.Fatalf("exchange: status %d, upstream got %s", res.Status, res.Upstream.Body)
	}

	// Read the trace back from Jaeger.
	var tr jaegerTrace
	var raw []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		raw = getTrace(t, query, traceID)
		var doc struct{ Data []jaegerTrace }
		if json.Unmarshal(raw, &doc) == nil && len(doc.Data) == 1 {
			tr = doc.Data[0]
			if len(tr.named("bulwark.check")) == 1 && len(tr.named("bulwark.extproc.response_body")) == 1 && len(tr.named("chat gpt-4o")) == 1 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s not complete in Jaeger after 30s: %s", traceID, raw)
		}
		time.Sleep(200 * time.Millisecond)
	}

	for _, s := range tr.Spans {
		t.Logf("span %s %s (parent %s), %d tags", s.SpanID, s.OperationName, s.parent(), len(s.Tags))
	}
	if os.Getenv("JAEGER_TRACE_DUMP") != "" {
		_ = os.WriteFile(os.Getenv("JAEGER_TRACE_DUMP"), raw, 0o600)
	}
	if tr.TraceID != traceID {
		t.Errorf("trace id %s, want the parent's %s", tr.TraceID, traceID)
	}
	check := tr.named("bulwark.check")[0]
	if check.parent() != checkParent {
		t.Errorf("bulwark.check's parent is %q, want Envoy's span %s", check.parent(), checkParent)
	}
	if svc := tr.Processes[check.ProcessID].ServiceName; svc != "bulwark-jaeger-e2e" {
		t.Errorf("service name %q", svc)
	}
	for _, child := range []string{"bulwark.identity", "bulwark.detect", "bulwark.policy", "bulwark.ratelimit"} {
		if !tr.children(check)[child] {
			t.Errorf("bulwark.check has no %s child span (children: %v)", child, tr.children(check))
		}
	}
	for k, want := range map[string]string{"bulwark.allowed": "true", "bulwark.principal.id": "app", "bulwark.principal.kind": "api_key",
		"bulwark.signals.pii.count": "1", "bulwark.signals.secrets.count": "1", "bulwark.signals.pii.types": `["EMAIL_ADDRESS=1"]`} {
		if got := check.tag(k); got != want {
			t.Errorf("bulwark.check %s = %q, want %q", k, got, want)
		}
	}
	if len(check.tag("bulwark.decision_id")) != 36 || check.tag("bulwark.reason") == "" || len(check.tag("bulwark.policy_revision")) < 8 {
		t.Errorf("bulwark.check lacks decision attributes: %+v", check.Tags)
	}

	phases := map[string]bool{}
	for _, s := range tr.Spans {
		if phase, ok := strings.CutPrefix(s.OperationName, "bulwark.extproc."); ok {
			phases[phase] = true
			if s.parent() != procParent {
				t.Errorf("%s's parent is %q, want Envoy's span %s", s.OperationName, s.parent(), procParent)
			}
			if !tr.children(s)["bulwark.policy"] || len(s.tag("bulwark.decision_id")) != 36 || s.tag("bulwark.allowed") != "true" {
				t.Errorf("%s: children %v, tags %+v", s.OperationName, tr.children(s), s.Tags)
			}
		}
	}
	for _, phase := range []string{"request_headers", "request_body", "response_headers", "response_body"} {
		if !phases[phase] {
			t.Errorf("no bulwark.extproc.%s span (have %v)", phase, phases)
		}
	}
	rb := tr.named("bulwark.extproc.request_body")[0]
	if !tr.children(rb)["bulwark.ratelimit"] || rb.tag("bulwark.signals.secrets.types") != `["GITHUB_TOKEN=1"]` {
		t.Errorf("request_body span: children %v, secrets %q", tr.children(rb), rb.tag("bulwark.signals.secrets.types"))
	}

	// The exchange's GenAI span (OTel GenAI semantic conventions), beside
	// the decisions' spans under Envoy's.
	gen := tr.named("chat gpt-4o")[0]
	if gen.parent() != procParent {
		t.Errorf("the GenAI span's parent is %q, want Envoy's span %s", gen.parent(), procParent)
	}
	for k, want := range map[string]string{"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
		"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.response.id": "chatcmpl-jaeger",
		"gen_ai.response.finish_reasons": `["stop"]`, "gen_ai.usage.input_tokens": "20", "gen_ai.usage.output_tokens": "1",
		"gen_ai.usage.cache_read.input_tokens": "8", "span.kind": "client"} {
		if got := gen.tag(k); got != want {
			t.Errorf("GenAI span %s = %q, want %q", k, got, want)
		}
	}

	// Nothing in the whole trace is prompt text, a finding's value or a credential.
	for _, leak := range []string{key, strings.Split(key, "_")[2], email, ghToken, "Summarise this", "deploy token"} {
		if bytes.Contains(raw, []byte(leak)) {
			t.Errorf("the trace in Jaeger contains %q", leak)
		}
	}

	// The audit records carry the same trace id: a record leads to its trace.
	p.Stop()
	n := 0
	for _, r := range auditRecords(t, auditLog) {
		if r["type"] == "decision" {
			n++
			if r["trace_id"] != traceID {
				t.Errorf("decision record %v has trace_id %v, want %s", r["decision_id"], r["trace_id"], traceID)
			}
		}
	}
	if n != 5 {
		t.Errorf("%d decision records, want 5 (check + 4 ext_proc phases)", n)
	}
}

func getTrace(t *testing.T, query, traceID string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, query+"/api/traces/"+traceID, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("jaeger query: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}
