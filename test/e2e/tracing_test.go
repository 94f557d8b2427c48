package e2e

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/test/envoysim"
)

// collector is a minimal OTLP/HTTP trace receiver (what Jaeger's 4318 port speaks).
type collector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	srv   *httptest.Server
}

func newCollector(t *testing.T) *collector {
	c := &collector{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				c.spans = append(c.spans, ss.GetSpans()...)
			}
		}
		c.mu.Unlock()
		w.Header().Set("content-type", "application/x-protobuf")
		b, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		_, _ = w.Write(b)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *collector) byName(name string) []*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range c.spans {
		if s.GetName() == name {
			out = append(out, s)
		}
	}
	return out
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			v := kv.GetValue()
			switch {
			case v.GetStringValue() != "":
				return v.GetStringValue()
			case v.GetBoolValue():
				return "true"
			}
			return v.String()
		}
	}
	return ""
}

func TestTracesJoinEnvoysTrace(t *testing.T) {
	col := newCollector(t)
	p := startEnv(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + col.srv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_SERVICE_NAME=bulwark-e2e"})

	const w3cTrace, w3cParent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	const b3Trace, b3Parent = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
	p.Check(t, envoy.HTTPRequest{Path: "/healthz", Headers: map[string]string{
		"traceparent": "00-" + w3cTrace + "-" + w3cParent + "-01"}})
	p.Check(t, envoy.HTTPRequest{Method: "POST", Path: "/v1/chat/completions", Headers: map[string]string{
		"b3": b3Trace + "-" + b3Parent + "-1", "authorization": "Bearer bwk_x_secretsecretsecret"}})
	p.Stop() // flushes the batch processor

	checks := col.byName("bulwark.check")
	if len(checks) != 2 {
		t.Fatalf("got %d bulwark.check spans, want 2", len(checks))
	}
	found := map[string]bool{}
	for _, s := range checks {
		tid, pid := hex.EncodeToString(s.GetTraceId()), hex.EncodeToString(s.GetParentSpanId())
		switch tid {
		case w3cTrace:
			if pid != w3cParent || attr(s, "bulwark.allowed") != "true" {
				t.Errorf("traceparent span: parent %s allowed %q", pid, attr(s, "bulwark.allowed"))
			}
		case b3Trace:
			if pid != b3Parent || attr(s, "bulwark.reason") != "invalid_credential" {
				t.Errorf("b3 span: parent %s reason %q", pid, attr(s, "bulwark.reason"))
			}
		default:
			t.Errorf("span in trace %s joined neither Envoy trace", tid)
		}
		found[tid] = true
		if len(attr(s, "bulwark.decision_id")) != 36 || attr(s, "bulwark.policy_revision") == "" {
			t.Errorf("span lacks decision attributes: %v", s.GetAttributes())
		}
		for _, kv := range s.GetAttributes() {
			if strings.Contains(kv.GetValue().String(), "secretsecret") {
				t.Errorf("credential in span attribute %s", kv.GetKey())
			}
		}
	}
	if !found[w3cTrace] || !found[b3Trace] {
		t.Fatalf("traces joined: %v", found)
	}
	if len(col.byName("bulwark.policy")) != 2 {
		t.Errorf("policy child spans: %d", len(col.byName("bulwark.policy")))
	}
}

// TestExtProcTraceJoinsEnvoysTrace: each decision of an ext_proc exchange
// is a bulwark.extproc.<phase> span in the trace the request's headers carry
// (the exchange core reads the propagation headers), annotated by the
// pipeline, with no credential or prompt on it.
func TestExtProcTraceJoinsEnvoysTrace(t *testing.T) {
	col := newCollector(t)
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	key := createKey(t, "--keys-file", keys, "--id", "app", "--roles", "user", "--tenant", "acme")
	p := startEnv(t, []string{pepperEnv, "OTEL_EXPORTER_OTLP_ENDPOINT=" + col.srv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_SERVICE_NAME=bulwark-e2e"}, "--keys-file", keys)

	const trace, parent = "5bf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8"
	req := chatRequest(key, "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"write to jane.doe@corpmail.io"}]}`)
	req.Headers["traceparent"] = "00-" + trace + "-" + parent + "-01"
	if res := run(t, p, envoysim.DefaultFilter, req, jsonUpstream(`{"choices":[]}`)); res.Immediate != nil {
		t.Fatalf("exchange refused: %+v", res.Immediate)
	}
	p.Stop() // flushes the batch processor

	for _, phase := range []string{"request_headers", "request_body", "response_headers", "response_body"} {
		spans := col.byName("bulwark.extproc." + phase)
		if len(spans) != 1 {
			t.Errorf("%s: %d spans, want 1", phase, len(spans))
			continue
		}
		s := spans[0]
		if tid, pid := hex.EncodeToString(s.GetTraceId()), hex.EncodeToString(s.GetParentSpanId()); tid != trace || pid != parent {
			t.Errorf("%s: trace %s parent %s, want %s %s", phase, tid, pid, trace, parent)
		}
		if len(attr(s, "bulwark.decision_id")) != 36 || attr(s, "bulwark.allowed") != "true" {
			t.Errorf("%s: span lacks decision attributes: %v", phase, s.GetAttributes())
		}
		for _, kv := range s.GetAttributes() {
			if v := kv.GetValue().String(); strings.Contains(v, key) || strings.Contains(v, "corpmail") {
				t.Errorf("%s: credential or prompt in span attribute %s", phase, kv.GetKey())
			}
		}
	}
}
