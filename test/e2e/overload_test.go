package e2e

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/bulwark-ai/bulwark/internal/extauthz"
)

// slowPolicy burns CPU in every decision (the range depends on the input,
// so nothing is computed ahead), standing in for an expensive policy.
const slowPolicy = `package bulwark
import rego.v1

work := count([x | some x in numbers.range(1, 5000 + count(input.attributes.request.http.path)); x % 7 == 0])

decision := {"allowed": work > 0, "reason": "slow"}
`

// TestOverload drives a server bounded at two decisions in flight with many
// concurrent callers: calls beyond the bound get UNAVAILABLE at once, none
// hangs, health goes NOT_SERVING while rejections last and SERVING after,
// and the goroutines return to their baseline.
func TestOverload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "slow.rego"), slowPolicy)
	const window = 300 * time.Millisecond
	p := start(t, "--policy-dir", dir, "--max-in-flight", "2", "--overload-window", window.String())
	req := extauthz.NewCheckRequest(extauthz.HTTPRequest{Method: "GET", Path: "/v1/models"})

	// Warm up, and take the baseline.
	began := time.Now()
	p.Check(t, extauthz.HTTPRequest{Method: "GET", Path: "/v1/models"})
	t.Logf("one slow decision: %v", time.Since(began))
	_, metrics := p.get(t, "/metrics")
	baseline := metricValue(metrics, "go_goroutines")
	if baseline <= 0 {
		t.Fatalf("no go_goroutines in /metrics:\n%s", grepMetric(metrics, "go_"))
	}

	const callers = 16
	load := 2 * time.Second
	var ok, rejected, other atomic.Int64
	var slowestReject atomic.Int64
	var firstOther atomic.Value
	var sawNotServing atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				_, err := p.Auth.Check(ctx, req)
				d := time.Since(t0)
				cancel()
				switch status.Code(err) {
				case codes.OK:
					ok.Add(1)
				case codes.Unavailable:
					rejected.Add(1)
					for s := slowestReject.Load(); int64(d) > s && !slowestReject.CompareAndSwap(s, int64(d)); s = slowestReject.Load() {
					}
					time.Sleep(time.Millisecond) // as a retrying client would back off
				default:
					other.Add(1)
					firstOther.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	hc := healthpb.NewHealthClient(p.conn)
	deadline := time.Now().Add(load)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
		cancel()
		if err != nil {
			t.Errorf("health under load: %v", err) // exempt from the bound: it must answer
		} else if r.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			sawNotServing.Store(true)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("callers hung after the load stopped")
	}

	t.Logf("admitted %d, rejected %d, slowest rejection %v", ok.Load(), rejected.Load(), time.Duration(slowestReject.Load()))
	if other.Load() != 0 {
		t.Errorf("%d calls failed otherwise than UNAVAILABLE; first: %v", other.Load(), firstOther.Load())
	}
	if ok.Load() == 0 || rejected.Load() == 0 {
		t.Fatalf("admitted %d, rejected %d: want both", ok.Load(), rejected.Load())
	}
	// A rejection never waits for a slot; under the race detector on a busy
	// machine it may still take a scheduling delay.
	if d := time.Duration(slowestReject.Load()); d > time.Second {
		t.Errorf("slowest rejection took %v: rejections must not queue", d)
	}
	if !sawNotServing.Load() {
		t.Errorf("health never went NOT_SERVING during %v of rejections (window %v)", load, window)
	}

	eventually(t, 15*time.Second, "health SERVING after the load", func() bool {
		return p.health(t, "envoy.service.auth.v3.Authorization") == healthpb.HealthCheckResponse_SERVING
	})
	var after float64
	eventually(t, 15*time.Second, "goroutines back near the baseline", func() bool {
		_, m := p.get(t, "/metrics")
		after = metricValue(m, "go_goroutines")
		return after <= baseline+5
	})
	_, metrics = p.get(t, "/metrics")
	t.Logf("goroutines: baseline %v, after %v", baseline, after)
	if got := metricValue(metrics, `bulwark_overload_rejections_total{limit="max_in_flight"}`); got != float64(rejected.Load()) {
		t.Errorf("bulwark_overload_rejections_total = %v, want %d", got, rejected.Load())
	}
	if got := metricValue(metrics, "bulwark_inflight"); got != 0 {
		t.Errorf("bulwark_inflight = %v after the load, want 0", got)
	}
	if code, _ := p.get(t, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d after the load", code)
	}
}
