package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/extproc"
)

// rss is the process's resident set size, from /proc.
func (p *proc) rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Skip("no /proc: ", err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmRSS in /proc/%d/status", p.cmd.Process.Pid)
	}
	v, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return v << 10
}

// metric reads one series from /metrics (-1 when absent).
func (p *proc) metric(t *testing.T, series string) float64 {
	t.Helper()
	_, body := p.get(t, "/metrics")
	return metricValue(body, series)
}

func chatHeaders(key string) *extprocv3.ProcessingRequest {
	h := map[string]string{":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json"}
	if key != "" {
		h["authorization"] = "Bearer " + key
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: extproc.EnvoyHeaders(h)}}}
}

func bodyChunk(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

// exchangeMsg sends one message and returns the answer; io.EOF when the
// server has ended the stream.
func exchangeMsg(st extprocv3.ExternalProcessor_ProcessClient, r *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	if err := st.Send(r); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return st.Recv()
}

// TestExtProcUnauthenticatedBodiesNotHeld replays issue 16 finding 2 at a
// small scale: streams answered 401 on their headers go on sending 1 MiB
// body chunks without end of stream. The exchange is over after the
// immediate response: each stream ends at once, no chunk is held and the
// process's memory stays where it was (the base code held every chunk,
// 20 × 6 MiB here, 60 × 8 MiB in the finding).
func TestExtProcUnauthenticatedBodiesNotHeld(t *testing.T) {
	t.Parallel()
	const streams, chunks = 20, 6
	p, _ := llmProc(t, "--extproc-max-buffered-bytes", "16777216")
	warm(t, p)
	before := p.rss(t)
	chunk := make([]byte, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	answered := make([]int, streams) // chunks answered after the 401
	errs := make([]error, streams)
	for i := range streams {
		wg.Go(func() {
			st, err := p.ExtProc().Process(ctx)
			if err != nil {
				errs[i] = err
				return
			}
			resp, err := exchangeMsg(st, chatHeaders(""))
			if err != nil || resp.GetImmediateResponse().GetStatus().GetCode() != 401 {
				errs[i] = fmt.Errorf("headers: %v %v, want an immediate 401", resp, err)
				return
			}
			for range chunks {
				if _, err := exchangeMsg(st, bodyChunk(chunk, false)); err != nil {
					if !errors.Is(err, io.EOF) {
						errs[i] = fmt.Errorf("chunk after the 401: %v, want the stream ended (io.EOF)", err)
					}
					return
				}
				answered[i]++
			}
		})
	}
	wg.Wait()
	held := 0
	for i := range streams {
		if errs[i] != nil {
			t.Errorf("stream %d: %v", i, errs[i])
		}
		held += answered[i]
	}
	if held > 0 {
		t.Errorf("%d body chunks were read and answered after an immediate 401 (want 0: the exchange is over)", held)
	}
	after := p.rss(t)
	t.Logf("RSS before %d MiB, after %d MiB (%d streams × %d MiB sent)", before>>20, after>>20, streams, chunks)
	if grew := after - before; grew > 48<<20 {
		t.Errorf("RSS grew by %d MiB, want under 48 MiB", grew>>20)
	}
	if got := p.metric(t, "bulwark_extproc_buffered_bytes"); got != 0 {
		t.Errorf("bulwark_extproc_buffered_bytes = %v, want 0", got)
	}
}

// warm runs one exchange so lazily built state is in the baseline.
func warm(t *testing.T, p *proc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := p.ExtProc().Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exchangeMsg(st, chatHeaders("")); err != nil {
		t.Fatal(err)
	}
}

// TestExtProcBodyBudget: authenticated exchanges whose bodies come in
// chunks (a filter configured STREAMED) share one budget of held bytes; a
// chunk it has no room for ends its exchange with an immediate 503
// body_buffer_exhausted, counted, and the bytes come back when the
// exchanges end.
func TestExtProcBodyBudget(t *testing.T) {
	t.Parallel()
	p, key := llmProc(t, "--extproc-max-body-bytes", "2097152", "--extproc-max-buffered-bytes", "4194304")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	chunk := make([]byte, 1<<20)
	open := func(n int) (extprocv3.ExternalProcessor_ProcessClient, *extprocv3.ProcessingResponse) {
		t.Helper()
		st, err := p.ExtProc().Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := exchangeMsg(st, chatHeaders(key)); err != nil || resp.GetImmediateResponse() != nil {
			t.Fatalf("headers: %v %v", resp, err)
		}
		var resp *extprocv3.ProcessingResponse
		for range n {
			if resp, err = exchangeMsg(st, bodyChunk(chunk, false)); err != nil {
				t.Fatal(err)
			}
			if resp.GetImmediateResponse() != nil {
				break
			}
		}
		return st, resp
	}
	a, resp := open(2) // holds 2 MiB
	if !resp.GetRequestBody().GetResponse().GetBodyMutation().GetClearBody() {
		t.Fatalf("a: %v, want the chunk held", resp)
	}
	b, resp := open(2) // holds 2 MiB: the budget is full
	if !resp.GetRequestBody().GetResponse().GetBodyMutation().GetClearBody() {
		t.Fatalf("b: %v, want the chunk held", resp)
	}
	if got := p.metric(t, "bulwark_extproc_buffered_bytes"); got != 4<<20 {
		t.Errorf("bulwark_extproc_buffered_bytes = %v, want %d", got, 4<<20)
	}
	c, resp := open(1)
	if ir := resp.GetImmediateResponse(); ir.GetStatus().GetCode() != 503 || ir.GetDetails() != "bulwark_body_buffer_exhausted" {
		t.Fatalf("c: %v, want an immediate 503 body_buffer_exhausted", resp)
	}
	if _, err := c.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("c after its 503: %v, want the stream ended", err)
	}
	if got := p.metric(t, `bulwark_extproc_refused_total{reason="body_buffer_exhausted"}`); got != 1 {
		t.Errorf("refusals counted: %v, want 1", got)
	}
	for _, st := range []extprocv3.ExternalProcessor_ProcessClient{a, b} {
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("stream end: %v", err)
		}
	}
	eventually(t, 10*time.Second, "the held bytes given back", func() bool {
		return p.metric(t, "bulwark_extproc_buffered_bytes") == 0
	})
}

// TestExtProcIdleStreamsDoNotStarveDecisions replays issue 16 finding 11:
// more streams than --max-in-flight open and send nothing. They hold no
// in-flight slot, so a Check and a new ext_proc exchange are still
// answered (the base code refused both: UNAVAILABLE, overloaded).
func TestExtProcIdleStreamsDoNotStarveDecisions(t *testing.T) {
	t.Parallel()
	const maxInFlight, idle = 8, 32
	p, _ := llmProc(t, "--max-in-flight", strconv.Itoa(maxInFlight))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for range idle {
		if _, err := p.ExtProc().Process(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The base code admitted only max-in-flight of them: wait for as many
	// as the server will take, then a little longer.
	eventually(t, 5*time.Second, "the silent streams open", func() bool {
		return p.metric(t, "bulwark_streams") >= maxInFlight
	})
	time.Sleep(200 * time.Millisecond)
	if got := p.metric(t, "bulwark_streams"); got != idle {
		t.Errorf("bulwark_streams = %v, want all %d silent streams admitted", got, idle)
	}
	if got := p.metric(t, "bulwark_inflight"); got != 0 {
		t.Errorf("bulwark_inflight = %v with only silent streams, want 0", got)
	}
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	if _, err := p.Auth.Check(cctx, envoy.NewCheckRequest(envoy.HTTPRequest{Method: "GET", Path: "/healthz"})); err != nil {
		t.Errorf("Check with %d silent streams open: %v, want an answer", idle, err)
	}
	st, err := p.ExtProc().Process(cctx)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := exchangeMsg(st, chatHeaders("")); err != nil || resp.GetImmediateResponse().GetStatus().GetCode() != 401 {
		t.Errorf("new exchange with %d silent streams open: %v %v, want an immediate 401", idle, resp, err)
	}
}

// TestExtProcIdleDeadline: a stream Envoy stays silent on is ended with
// DEADLINE_EXCEEDED after --extproc-idle-timeout, whether it never sent a
// message or went quiet after one, and counted as a timeout.
func TestExtProcIdleDeadline(t *testing.T) {
	t.Parallel()
	const timeout = 500 * time.Millisecond
	p, key := llmProc(t, "--extproc-idle-timeout", timeout.String())
	cases := []struct {
		name  string
		first *extprocv3.ProcessingRequest // answered before the silence; nil: none
	}{
		{"silent from the start", nil},
		{"silent after the request headers", chatHeaders(key)},
	}
	for _, tc := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		began := time.Now()
		st, err := p.ExtProc().Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tc.first != nil {
			if resp, err := exchangeMsg(st, tc.first); err != nil || resp.GetImmediateResponse() != nil {
				t.Fatalf("%s: %v %v", tc.name, resp, err)
			}
		}
		_, err = st.Recv()
		took := time.Since(began)
		cancel()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("%s: stream ended with %v, want DEADLINE_EXCEEDED", tc.name, err)
		}
		if took < timeout || took > 10*time.Second {
			t.Errorf("%s: ended after %v, want soon after %v", tc.name, took, timeout)
		}
	}
	if got := p.metric(t, `bulwark_extproc_streams_total{outcome="timeout"}`); got != float64(len(cases)) {
		t.Errorf(`bulwark_extproc_streams_total{outcome="timeout"} = %v, want %d`, got, len(cases))
	}
	eventually(t, 10*time.Second, "no stream left open", func() bool { return p.metric(t, "bulwark_streams") == 0 })
}
