package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/bulwark-ai/bulwark/internal/extproc"
	"github.com/bulwark-ai/bulwark/test/fixture"
)

// TestExtProcManyOpenStreams holds 5,000 exchanges open in the middle of a
// streamed answer (each with text held by its redactor) against the real
// binary, and checks the memory they cost is bounded and given back, and
// that no goroutine outlives its stream. It logs RSS per stream.
func TestExtProcManyOpenStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 5,000 streams")
	}
	const n = 5000
	dir := fixture.PolicyDir(t, "requests_per_minute: 600", "requests_per_minute: 1000000", "tokens_per_day: 2000000", "tokens_per_day: 1000000000000")
	// A low GC target: the Go heap in use is then close to the live heap,
	// so the figure below measures what each stream keeps rather than how
	// much garbage the collector had not yet reclaimed (with the default
	// target of 400 the same build read 30–77 KB per stream). GOGC wins
	// over --gc-percent, whose floor is 25.
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	key := createKey(t, "--keys-file", keys, "--id", "app", "--roles", "user", "--tenant", "acme")
	p := startEnv(t, []string{pepperEnv, "GOGC=10"}, "--keys-file", keys, "--max-streams", "20000", "--policy-dir", dir)
	rss := func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		if err != nil {
			t.Skip("no /proc: ", err)
		}
		m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
		v, _ := strconv.ParseInt(string(m[1]), 10, 64)
		return v * 1024
	}
	metric := func(name string) float64 {
		_, body := p.get(t, "/metrics")
		m := regexp.MustCompile(`(?m)^` + name + ` (\S+)`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no metric %s", name)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	goroutines := func() int { return int(metric("go_goroutines")) }
	// Warm up one exchange so lazily built state (policy, detectors) is in
	// the baseline.
	conns := make([]*grpc.ClientConn, 8) // Bulwark allows 1,024 streams per connection
	for i := range conns {
		c, err := grpc.NewClient(p.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func(c *grpc.ClientConn) extprocv3.ExternalProcessor_ProcessClient {
		st, err := extprocv3.NewExternalProcessorClient(c).Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		body := []byte(`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		chunk := []byte(`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"the first words of a streamed answer, held back by the redactor"},"finish_reason":null}]}` + "\n\n")
		for _, r := range []*extprocv3.ProcessingRequest{
			{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: extproc.EnvoyHeaders(map[string]string{
				":method": "POST", ":path": "/v1/chat/completions", "authorization": "Bearer " + key, "content-type": "application/json"})}}},
			{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}},
			{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: extproc.EnvoyHeaders(map[string]string{
				":status": "200", "content-type": "text/event-stream"})}}},
			{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: chunk}}},
		} {
			if err := st.Send(r); err != nil {
				t.Fatal(err)
			}
			resp, err := st.Recv()
			if err != nil || resp.GetImmediateResponse() != nil {
				t.Fatalf("exchange refused: %v %v", err, resp.GetImmediateResponse())
			}
		}
		return st
	}
	open(conns[0]).CloseSend()
	time.Sleep(200 * time.Millisecond)
	rss0, g0, heap0 := rss(), goroutines(), metric("go_memstats_heap_inuse_bytes")
	streams := make([]extprocv3.ExternalProcessor_ProcessClient, 0, n)
	for i := range n {
		streams = append(streams, open(conns[i%len(conns)]))
	}
	rss1, g1, heap1 := rss(), goroutines(), metric("go_memstats_heap_inuse_bytes")
	// The e2e binary is built with -race, whose shadow memory and
	// per-goroutine state inflate RSS several times; the Go heap is not
	// inflated, so the bound is on the heap and RSS is only reported.
	heapPer := int64(heap1-heap0) / n
	t.Logf("%d open streams: Go heap %d MiB -> %d MiB, %d bytes per stream; RSS %d -> %d MiB, %d bytes per stream; goroutines %d -> %d",
		n, int64(heap0)>>20, int64(heap1)>>20, heapPer, rss0>>20, rss1>>20, (rss1-rss0)/n, g0, g1)
	if heapPer > 32<<10 {
		t.Errorf("each open stream holds %d bytes of heap; the bound is 32 KiB", heapPer)
	}
	for _, st := range streams {
		st.CloseSend()
	}
	cancel()
	// The client connections go too: each holds three server goroutines
	// (reader, writer, keepalive), and only the first was open when g0 was
	// read. The bound is generous for the race-built binary on a loaded
	// machine: what is checked is that every stream's goroutines end.
	for _, c := range conns {
		c.Close()
	}
	eventually(t, 60*time.Second, "stream goroutines to end", func() bool { return goroutines() <= g0+20 })
	_, metrics := p.get(t, "/metrics")
	if !strings.Contains(metrics, "bulwark_extproc_streams_active 0") {
		t.Errorf("streams still counted active:\n%s", grepLines(metrics, "streams_active"))
	}
}
