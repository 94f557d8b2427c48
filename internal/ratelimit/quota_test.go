package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/test/redisserver"
)

// TestQuota: Known remembers what was checked, Peek reads a counter without
// charging it, Reset refills it; the same on the in-process limiter, one
// Redis node and a Cluster (counters in different slots).
func TestQuota(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		new  func(t *testing.T) *Limiter
	}{
		{"local", func(t *testing.T) *Limiter { return newLocalLimiter(t, newFakeClock()) }},
		{"redis", func(t *testing.T) *Limiter {
			return newRedisLimiter(t, Config{RedisURL: "redis://" + redisserver.Start(t).Addr, CheckTimeout: 2 * time.Second})
		}},
		{"cluster", func(t *testing.T) *Limiter {
			return newRedisLimiter(t, Config{RedisURL: "redis://" + strings.Join(redisserver.StartCluster(t, 3).Addrs, ","),
				CheckTimeout: 2 * time.Second})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := tt.new(t)
			ctx := context.Background()
			rpm := Limit{Name: "rpm", Tenant: "acme", Principal: "alice", Limit: 10, Period: time.Hour}
			tokens := Limit{Name: "tokens", Tenant: "acme", Limit: 1000, Period: 24 * time.Hour, Cost: 300, Estimated: true}
			other := Limit{Name: "rpm", Tenant: "globex", Principal: "bob", Limit: 5, Period: time.Minute}
			for range 3 {
				if res, err := l.Check(ctx, "", []Limit{rpm, tokens}); err != nil || !res.Allowed {
					t.Fatalf("Check: %+v %v", res, err)
				}
			}
			if _, err := l.Check(ctx, "", []Limit{other}); err != nil {
				t.Fatal(err)
			}

			acme := l.Known(func(lim Limit) bool { return lim.Tenant == "acme" })
			if len(acme) != 2 || acme[0].SubjectKey() != "{t:acme}" || acme[1].SubjectKey() != "{t:acme}:p:alice" {
				t.Fatalf("Known(acme) = %+v, want tokens then rpm", acme)
			}
			if acme[0].Cost != 0 || acme[0].Estimated || acme[0].Limit != 1000 || acme[0].Period != 24*time.Hour {
				t.Fatalf("Known kept the request's cost or lost the size: %+v", acme[0])
			}
			if got := len(l.Known(nil)); got != 3 {
				t.Fatalf("Known(nil) has %d limits, want 3", got)
			}

			states, err := l.Peek(ctx, append(acme, other))
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]int64{"{t:acme}": 100, "{t:acme}:p:alice": 7, "{t:globex}:p:bob": 4}
			for _, s := range states {
				if s.Remaining != want[s.SubjectKey()] {
					t.Errorf("Peek %s %s: remaining %d, want %d", s.Name, s.SubjectKey(), s.Remaining, want[s.SubjectKey()])
				}
				if s.Reset <= 0 || s.Reset > s.Period {
					t.Errorf("Peek %s: reset %v outside (0, %v]", s.SubjectKey(), s.Reset, s.Period)
				}
			}
			// Peeking charged nothing.
			again, err := l.Peek(ctx, acme)
			if err != nil || again[1].Remaining != 7 {
				t.Fatalf("second Peek: %+v %v", again, err)
			}

			if err := l.Reset(ctx, acme); err != nil {
				t.Fatal(err)
			}
			states, err = l.Peek(ctx, append(acme, other))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range states {
				wantRem, wantReset := s.Limit, time.Duration(0)
				if s.Tenant == other.Tenant {
					wantRem = 4 // not reset
				}
				if s.Remaining != wantRem || (s.Tenant != other.Tenant && s.Reset != wantReset) {
					t.Errorf("after Reset %s: remaining %d reset %v, want %d and %v", s.SubjectKey(), s.Remaining, s.Reset, wantRem, wantReset)
				}
			}
			// A refilled counter admits a full burst again.
			for i := range 10 {
				if res, err := l.Check(ctx, "", []Limit{{Name: "rpm", Tenant: "acme", Principal: "alice", Limit: 10, Period: time.Hour}}); err != nil || !res.Allowed {
					t.Fatalf("request %d after reset: %+v %v", i, res, err)
				}
			}
		})
	}
}

func TestQuotaInvalid(t *testing.T) {
	t.Parallel()
	l := newLocalLimiter(t, newFakeClock())
	bad := []Limit{{Name: "", Key: "x", Limit: 1, Period: time.Second}}
	if _, err := l.Peek(context.Background(), bad); !errors.Is(err, ErrInvalidLimit) {
		t.Fatalf("Peek(invalid) = %v, want ErrInvalidLimit", err)
	}
	if err := l.Reset(context.Background(), bad); !errors.Is(err, ErrInvalidLimit) {
		t.Fatalf("Reset(invalid) = %v, want ErrInvalidLimit", err)
	}
}

func TestQuotaRedisDown(t *testing.T) {
	t.Parallel()
	rs := redisserver.Start(t)
	l := newRedisLimiter(t, Config{RedisURL: "redis://" + rs.Addr, CheckTimeout: 200 * time.Millisecond})
	rs.Stop()
	lim := []Limit{{Name: "rpm", Key: "a", Limit: 1, Period: time.Second}}
	if _, err := l.Peek(context.Background(), lim); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Peek with Redis down = %v, want ErrUnavailable", err)
	}
	if err := l.Reset(context.Background(), lim); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Reset with Redis down = %v, want ErrUnavailable", err)
	}
}

func TestKnownLimitsBounded(t *testing.T) {
	t.Parallel()
	var k knownLimits
	for i := range maxKnownLimits + 10 {
		k.note(strconv.Itoa(i), Limit{Name: "n", Key: "k", Limit: 1, Period: time.Second})
	}
	if n := len(k.m); n > maxKnownLimits {
		t.Fatalf("%d definitions kept, want at most %d", n, maxKnownLimits)
	}
}
