package e2e

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/bulwark-ai/bulwark/internal/envoy"
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
	req := envoy.NewCheckRequest(envoy.HTTPRequest{Method: "GET", Path: "/v1/models"})

	// Warm up, and take the baseline.
	began := time.Now()
	p.Check(t, envoy.HTTPRequest{Method: "GET", Path: "/v1/models"})
	t.Logf("one slow decision: %v", time.Since(began))
	_, metrics := p.get(t, "/metrics")
	baseline := metricValue(metrics, "go_goroutines")
	if baseline <= 0 {
		t.Fatalf("no go_goroutines in /metrics:\n%s", grepMetric(metrics, "go_"))
	}

	const callers = 16
	var ok, other atomic.Int64
	var mu sync.Mutex
	var admittedLat, rejectedLat []time.Duration
	var firstOther atomic.Value
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
					mu.Lock()
					admittedLat = append(admittedLat, d)
					mu.Unlock()
				case codes.Unavailable:
					mu.Lock()
					rejectedLat = append(rejectedLat, d)
					mu.Unlock()
					time.Sleep(time.Millisecond) // as a retrying client would back off
				default:
					other.Add(1) // DeadlineExceeded here would be a call that hung
					firstOther.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	// Load until health has been seen NOT_SERVING (after at least a second),
	// or for 8 s: on a busy machine a scheduling gap can break a run of
	// rejections, and a longer load gives the window more chances.
	hc := healthpb.NewHealthClient(p.conn)
	var sawNotServing bool
	healthAnswers := 0
	began = time.Now()
	for time.Since(began) < 8*time.Second && !(sawNotServing && time.Since(began) > time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
		cancel()
		if err == nil {
			healthAnswers++ // exempt from the bound: it answers under load
			sawNotServing = sawNotServing || r.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING
		}
		time.Sleep(20 * time.Millisecond)
	}
	load := time.Since(began)
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("callers hung after the load stopped")
	}

	median := func(ds []time.Duration) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	t.Logf("%v of load: admitted %d (median %v), rejected %d (median %v, slowest %v), health answered %d times",
		load.Round(time.Millisecond), ok.Load(), median(admittedLat), len(rejectedLat), median(rejectedLat),
		slices.Max(append([]time.Duration{0}, rejectedLat...)), healthAnswers)
	if other.Load() != 0 {
		t.Errorf("%d calls failed otherwise than UNAVAILABLE; first: %v", other.Load(), firstOther.Load())
	}
	if ok.Load() == 0 || len(rejectedLat) == 0 {
		t.Fatalf("admitted %d, rejected %d: want both", ok.Load(), len(rejectedLat))
	}
	// A rejection never waits for a slot: it costs a fraction of a decision
	// (absolute times mean little on a busy machine under the race detector).
	if median(rejectedLat) >= median(admittedLat) {
		t.Errorf("median rejection %v not below the median admitted call %v: rejections must not queue",
			median(rejectedLat), median(admittedLat))
	}
	if healthAnswers == 0 {
		t.Error("gRPC health never answered under load")
	}
	if !sawNotServing {
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
	if got := metricValue(metrics, `bulwark_overload_rejections_total{limit="max_in_flight"}`); got != float64(len(rejectedLat)) {
		t.Errorf("bulwark_overload_rejections_total = %v, want %d", got, len(rejectedLat))
	}
	if got := metricValue(metrics, "bulwark_inflight"); got != 0 {
		t.Errorf("bulwark_inflight = %v after the load, want 0", got)
	}
	eventually(t, 15*time.Second, "/readyz 200 after the load", func() bool {
		code, _ := p.get(t, "/readyz")
		return code == 200
	})
}
