package audit

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkWriter is the writer goroutine's work per record (encoding,
// chaining, HMAC, buffered write), which runs off the decision's path: it
// bounds how many decisions per second one writer can record.
func BenchmarkWriter(b *testing.B) {
	r := benchRecord()
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) {
			benchWriterMode(b, r, mode.signed, mode.encrypt)
		})
	}
}

var benchModes = []struct {
	name            string
	signed, encrypt bool
}{{"unsigned", false, false}, {"hmac", true, false}, {"encrypted", false, true}, {"encrypted+hmac", true, true}}

func benchRecord() Record {
	yes := true
	return Record{Type: TypeDecision, DecisionID: "0b6c6f5e-0000-4000-8000-000000000001", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
		Principal: &Principal{ID: "alice", Kind: "api_key", Tenant: "acme"}, Phase: "request_body", Route: "POST /v1/chat/completions",
		Allowed: &yes, Reason: "allowed", PolicyRevision: "0cddf8025a84ea87",
		Signals: map[string]any{"prompt_injection_score": 0.12, "pii.EMAIL_ADDRESS": 1},
		Details: map[string]any{"tags": map[string]any{"route_class": "llm"}}}
}

func benchWriterMode(b *testing.B, r Record, signed, encrypt bool) {
	dir := b.TempDir()
	var s *sealer
	if encrypt {
		s = newSealer(newKeyset(b, dir, testKEK(b)))
	}
	w := benchWriter(b, filepath.Join(dir, "a.log"), s)
	if signed {
		w.key = []byte("bench-audit-key-0123456789")
		w.mac = newMAC(w.key)
	}
	b.ReportAllocs()
	for b.Loop() {
		w.write(r)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	w.flush()
}

// BenchmarkSealOverhead writes the same record to a plain and to an
// encrypted writer, alternately, timing each: on a shared machine the
// neighbours slow both alike, so the ratio (overhead-%) holds where the
// absolute figures of BenchmarkWriter do not.
func BenchmarkSealOverhead(b *testing.B) {
	r := benchRecord()
	dir := b.TempDir()
	plain := benchWriter(b, filepath.Join(dir, "plain.log"), nil)
	enc := benchWriter(b, filepath.Join(dir, "enc.log"), newSealer(newKeyset(b, dir, testKEK(b))))
	var tPlain, tEnc time.Duration
	i := 0
	for b.Loop() {
		first, second, t1, t2 := plain, enc, &tPlain, &tEnc
		if i%2 == 1 {
			first, second, t1, t2 = enc, plain, &tEnc, &tPlain
		}
		i++
		t0 := time.Now()
		first.write(r)
		tm := time.Now()
		second.write(r)
		*t1 += tm.Sub(t0)
		*t2 += time.Since(tm)
	}
	plain.flush()
	enc.flush()
	b.ReportMetric(float64(tPlain.Nanoseconds())/float64(b.N), "plain-ns/record")
	b.ReportMetric(float64(tEnc.Nanoseconds())/float64(b.N), "encrypted-ns/record")
	b.ReportMetric(100*(float64(tEnc)/float64(tPlain)-1), "overhead-%")
}

func benchWriter(b *testing.B, path string, s *sealer) *Writer {
	w := &Writer{cfg: Config{Path: path, MaxBytes: 1 << 40}, seal: s}
	w.written, w.lost, w.lostOnDisk, w.failures = nopCounter(), nopCounter(), nopCounter(), nopCounter()
	if err := w.openFile(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = w.f.Close() })
	return w
}

func nopCounter() prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}) }
