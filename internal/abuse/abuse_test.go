package abuse

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bulwark-ai/bulwark/test/redisserver"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want)) }

// The local tracker's rates follow the exponential average: n requests at
// once give a current rate of n per ShortWindow and a baseline of n per
// BaselineWindow (per minute: n and n/60 with the defaults); after one
// ShortWindow of silence the current rate has decayed by e.
func TestLocalRatesAndOffences(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l, err := NewLocal(Config{}, clk)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var s Snapshot
	for range 10 {
		if s, err = l.Observe(ctx, "alice", 100); err != nil {
			t.Fatal(err)
		}
	}
	if !near(s.Rates.Requests, 10, 1e-9) || !near(s.Rates.BaselineRequests, 10.0/60, 1e-9) || !near(s.Rates.Tokens, 1000, 1e-9) {
		t.Fatalf("rates %+v, want 10/min now, 1/6 per min baseline, 1000 tokens/min", s.Rates)
	}
	if !near(s.Rates.RequestRatio(), 60, 1e-9) {
		t.Fatalf("ratio %v, want 60", s.Rates.RequestRatio())
	}
	clk.Add(time.Minute)
	s, _ = l.Observe(ctx, "alice", 0)
	if want := 10/math.E + 1; !near(s.Rates.Requests, want, 1e-9) {
		t.Fatalf("current rate after a minute %v, want %v", s.Rates.Requests, want)
	}
	if s.Rates.Age != time.Minute {
		t.Fatalf("age %v, want 1m", s.Rates.Age)
	}
	// Offences count within the window, by reason, then expire.
	for i := range 3 {
		_ = l.Offend(ctx, "alice", "prompt_injection", fmt.Sprint(i))
	}
	_ = l.Offend(ctx, "alice", "secrets", "x")
	s, _ = l.Observe(ctx, "alice", 0)
	if s.Total() != 4 || s.Offences["prompt_injection"] != 3 {
		t.Fatalf("offences %v, want 3 prompt_injection and 1 secrets", s.Offences)
	}
	if s, _ = l.Observe(ctx, "bob", 0); s.Total() != 0 {
		t.Fatalf("bob has alice's offences: %v", s.Offences)
	}
	clk.Add(16 * time.Minute)
	if s, _ = l.Observe(ctx, "alice", 0); s.Total() != 0 {
		t.Fatalf("offences after the window: %v, want none", s.Offences)
	}
}

// Three clients (as three replicas would) observing and offending at once
// on one real Redis count exactly: every offence is seen, and the baseline
// is the sum of every request.
func TestRedisExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	ctx := context.Background()
	var trackers []*Redis
	for range 3 {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { _ = c.Close() })
		r, err := NewRedis(Config{Timeout: 5 * time.Second}, c)
		if err != nil {
			t.Fatal(err)
		}
		trackers = append(trackers, r)
	}
	const perClient = 100
	var wg sync.WaitGroup
	errs := make(chan error, 3*perClient*2)
	for i, tr := range trackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perClient {
				if _, err := tr.Observe(ctx, "mallory{x}", 10); err != nil {
					errs <- err
				}
				if j%10 == 0 {
					if err := tr.Offend(ctx, "mallory{x}", "prompt_injection", fmt.Sprintf("%d-%d", i, j)); err != nil {
						errs <- err
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s, err := trackers[0].Observe(ctx, "mallory{x}", 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Offences["prompt_injection"] != 30 {
		t.Fatalf("offences %v, want exactly 30", s.Offences)
	}
	// 301 requests within a few seconds: a baseline of 301 per hour,
	// 301/60 per minute, decayed by at most exp(-elapsed/1h).
	if want := 301.0 / 60; s.Rates.BaselineRequests > want || s.Rates.BaselineRequests < want*0.995 {
		t.Fatalf("baseline %v per minute, want just under %v", s.Rates.BaselineRequests, want)
	}
	if want := 3000.0 / 60; s.Rates.BaselineTokens > want || s.Rates.BaselineTokens < want*0.995 {
		t.Fatalf("token baseline %v per minute, want just under %v", s.Rates.BaselineTokens, want)
	}
	// The keys share one hash tag, even for an id with braces.
	for _, k := range trackers[0].keys("mallory{x}") {
		if !strings.HasPrefix(k, "bulwark:abuse:{mallory(x)}:") {
			t.Fatalf("key %q lacks the principal's hash tag", k)
		}
	}
	if s, _ = trackers[1].Observe(ctx, "other", 0); s.Total() != 0 {
		t.Fatalf("another principal sees %v", s.Offences)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []Config{{ShortWindow: -1}, {ShortWindow: time.Hour, BaselineWindow: time.Minute}} {
		if c.Validate() == nil {
			t.Errorf("%+v validated", c)
		}
	}
	if _, err := NewRedis(Config{}, nil); err == nil {
		t.Error("nil client accepted")
	}
}

// BenchmarkLocalObserve is the in-process tracker's cost per exchange.
func BenchmarkLocalObserve(b *testing.B) {
	l, err := NewLocal(Config{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Observe(ctx, "alice", 100); err != nil {
			b.Fatal(err)
		}
	}
}
