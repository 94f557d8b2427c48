package audit

import (
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkWriter is the writer goroutine's work per record (encoding,
// chaining, HMAC, buffered write), which runs off the decision's path: it
// bounds how many decisions per second one writer can record.
func BenchmarkWriter(b *testing.B) {
	yes := true
	r := Record{Type: TypeDecision, DecisionID: "0b6c6f5e-0000-4000-8000-000000000001", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
		Principal: &Principal{ID: "alice", Kind: "api_key", Tenant: "acme"}, Phase: "request_body", Route: "POST /v1/chat/completions",
		Allowed: &yes, Reason: "allowed", PolicyRevision: "0cddf8025a84ea87",
		Signals: map[string]any{"prompt_injection_score": 0.12, "pii.EMAIL_ADDRESS": 1},
		Details: map[string]any{"tags": map[string]any{"route_class": "llm"}}}
	for _, signed := range []bool{false, true} {
		name := "unsigned"
		if signed {
			name = "hmac"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			w := &Writer{cfg: Config{Path: filepath.Join(dir, "a.log"), MaxBytes: 1 << 40}}
			if signed {
				w.key = []byte("bench-audit-key-0123456789")
				w.mac = newMAC(w.key)
			}
			w.written, w.lost, w.lostOnDisk, w.failures = nopCounter(), nopCounter(), nopCounter(), nopCounter()
			if err := w.openFile(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				w.write(r)
			}
			w.flush()
			w.f.Close()
		})
	}
}

func nopCounter() prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}) }
