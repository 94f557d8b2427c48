package mcp

import (
	"syscall"
	"testing"
	"time"
)

// BenchmarkToolsListFilter200 is the filtering itself on a 200-tool
// tools/list answer: parse, read every definition (name, text, hash), the
// poisoning markers, re-encode without some tools. The exchange adds the
// detectors (cached per definition) and one policy decision
// (exchange.BenchmarkMCPToolsList200).
func BenchmarkToolsListFilter200(b *testing.B) {
	body := []byte(listBody(199, `,{"name":"add","description":`+quoteJSON(poisonDesc)+`}`))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		r, err := ParseResponse(body)
		if err != nil {
			b.Fatal(err)
		}
		l, err := ParseToolsList(r)
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range l.Tools {
			PoisonRules(t.Text)
		}
		out, n, err := l.Encode(func(name string) bool { return name == "add" || name == "tool_7" })
		if err != nil || n != 2 || len(out) == 0 {
			b.Fatal(n, err)
		}
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user+system CPU time: on a shared machine the
// wall time of a benchmark measures the queue for a core, this measures
// the work.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
