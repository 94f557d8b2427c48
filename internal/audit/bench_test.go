package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
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

// BenchmarkLogToFile is the audit throughput end to end: records go
// through Log (OverflowBlock, so none is dropped), the sealing stage when
// encrypted, and the writer, into a signed log file; the timer stops once
// Close has drained and written them all. Run it with -cpu 2: the sealing
// stage and the writer then run on their own cores. cpu-ns/record is the
// process's CPU time (user+system, getrusage) per record, so a figure that
// a loaded machine's wall clock distorts can be read beside it.
func BenchmarkLogToFile(b *testing.B) {
	r := benchRecord()
	for _, mode := range []struct {
		name    string
		encrypt bool
	}{{"plain", false}, {"encrypted", true}} {
		b.Run(mode.name, func(b *testing.B) {
			dir := b.TempDir()
			keyFile := filepath.Join(dir, "audit.key")
			if err := os.WriteFile(keyFile, []byte("bench-audit-key-0123456789"), 0o600); err != nil {
				b.Fatal(err)
			}
			cfg := Config{Path: filepath.Join(dir, "audit.log"), KeyFile: keyFile, Buffer: 4096, Overflow: OverflowBlock, MaxBytes: 1 << 40}
			if mode.encrypt {
				kek := testKEK(b)
				cfg.Keyset, cfg.KEK = newKeyset(b, dir, kek).Path, kek
			}
			w, err := Open(cfg, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			w.Log(ctx, r) // the subject key is made once, before timing
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for b.Loop() {
				w.Log(ctx, r)
			}
			if err := w.Close(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			cpu := cpuTime(b) - cpu0
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/record")
		})
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLogToFileAB runs BenchmarkLogToFile's two cases in alternating
// rounds of 5000 records (a fresh writer each round, opened outside the
// timing), so a loaded machine slows both alike: the ratio of their
// throughputs (encrypted-throughput-%) and of their CPU per record hold
// where the absolute figures do not. b.N records go to each.
func BenchmarkLogToFileAB(b *testing.B) {
	r := benchRecord()
	dir := b.TempDir()
	keyFile := filepath.Join(dir, "audit.key")
	if err := os.WriteFile(keyFile, []byte("bench-audit-key-0123456789"), 0o600); err != nil {
		b.Fatal(err)
	}
	kek := testKEK(b)
	keys := newKeyset(b, dir, kek)
	const round = 5000
	var wall, cpu [2]time.Duration
	ctx := context.Background()
	b.StopTimer()
	n := 0
	for i := 0; n < b.N; i++ {
		for j := range 2 {
			mode := (i + j) % 2 // 0 plain, 1 encrypted; who goes first alternates
			cfg := Config{Path: filepath.Join(dir, fmt.Sprintf("%d-%d.log", i, mode)), KeyFile: keyFile, Buffer: 4096,
				Overflow: OverflowBlock, MaxBytes: 1 << 40}
			if mode == 1 {
				cfg.Keyset, cfg.KEK = keys.Path, kek
			}
			w, err := Open(cfg, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			w.Log(ctx, r) // the subject key exists from the first round on; this warms the caches
			c0, t0 := cpuTime(b), time.Now()
			b.StartTimer()
			for range round {
				w.Log(ctx, r)
			}
			if err := w.Close(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			wall[mode] += time.Since(t0)
			cpu[mode] += cpuTime(b) - c0
			_ = os.Remove(cfg.Path)
		}
		n += round
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(n) }
	b.ReportMetric(float64(n)/wall[0].Seconds(), "plain-records/s")
	b.ReportMetric(float64(n)/wall[1].Seconds(), "encrypted-records/s")
	b.ReportMetric(100*wall[0].Seconds()/wall[1].Seconds(), "encrypted-throughput-%")
	b.ReportMetric(per(cpu[0]), "plain-cpu-ns/record")
	b.ReportMetric(per(cpu[1]), "encrypted-cpu-ns/record")
}
