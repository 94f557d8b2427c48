package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwark-ai/bulwark/internal/labelcap"
	"github.com/bulwark-ai/bulwark/test/fixture/fakeclock"
)

// newFakeClock is a fake clock at a fixed start.
func newFakeClock() *fakeclock.Clock { return fakeclock.New(time.Unix(1_800_000_000, 0)) }

func newLocalLimiter(t *testing.T, clock Clock) *Limiter {
	t.Helper()
	l, err := New(Config{Clock: clock}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestLocalGCRA(t *testing.T) {
	t.Parallel()
	rpm := Limit{Name: "rpm", Key: "alice", Limit: 100, Period: time.Minute}
	type step struct {
		advance     time.Duration
		limits      []Limit
		n           int // repeat
		wantAllowed bool
		wantRemain  int64 // of the first limit, after the last repeat
		wantRetry   time.Duration
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"burst of exactly the limit", []step{
			{n: 100, limits: []Limit{rpm}, wantAllowed: true, wantRemain: 0},
			{n: 1, limits: []Limit{rpm}, wantAllowed: false, wantRemain: 0, wantRetry: 600 * time.Millisecond},
		}},
		{"one unit back per emission interval", []step{
			{n: 100, limits: []Limit{rpm}, wantAllowed: true, wantRemain: 0},
			{advance: 599 * time.Millisecond, n: 1, limits: []Limit{rpm}, wantAllowed: false, wantRetry: time.Millisecond},
			{advance: time.Millisecond, n: 1, limits: []Limit{rpm}, wantAllowed: true, wantRemain: 0},
			{advance: 6 * time.Second, n: 1, limits: []Limit{rpm}, wantAllowed: true, wantRemain: 9},
		}},
		{"full after one period", []step{
			{n: 100, limits: []Limit{rpm}, wantAllowed: true},
			{advance: time.Minute, n: 1, limits: []Limit{rpm}, wantAllowed: true, wantRemain: 99},
		}},
		{"cost", []step{
			{n: 1, limits: []Limit{{Name: "tok", Key: "acme", Limit: 1000, Period: time.Hour, Cost: 700}}, wantAllowed: true, wantRemain: 300},
			{n: 1, limits: []Limit{{Name: "tok", Key: "acme", Limit: 1000, Period: time.Hour, Cost: 301}}, wantAllowed: false, wantRemain: 300, wantRetry: 3600 * time.Millisecond},
			{n: 1, limits: []Limit{{Name: "tok", Key: "acme", Limit: 1000, Period: time.Hour, Cost: 300}}, wantAllowed: true, wantRemain: 0},
		}},
		{"cost above limit never fits", []step{
			{n: 1, limits: []Limit{{Name: "tok", Key: "acme", Limit: 10, Period: time.Second, Cost: 11}}, wantAllowed: false, wantRemain: 10, wantRetry: time.Second},
		}},
		{"non-divisible period admits exactly the limit", []step{
			{n: 7, limits: []Limit{{Name: "r", Key: "k", Limit: 7, Period: time.Second}}, wantAllowed: true, wantRemain: 0},
			{n: 1, limits: []Limit{{Name: "r", Key: "k", Limit: 7, Period: time.Second}}, wantAllowed: false, wantRetry: 142857143 * time.Nanosecond},
		}},
		{"all or nothing", []step{
			{n: 1, limits: []Limit{rpm, {Name: "tight", Key: "alice", Limit: 1, Period: time.Minute}}, wantAllowed: true, wantRemain: 99},
			{n: 3, limits: []Limit{rpm, {Name: "tight", Key: "alice", Limit: 1, Period: time.Minute}}, wantAllowed: false, wantRemain: 99, wantRetry: time.Minute},
			{n: 1, limits: []Limit{rpm}, wantAllowed: true, wantRemain: 98},
		}},
		{"shadow never denies", []step{
			{n: 5, limits: []Limit{rpm, {Name: "s", Key: "alice", Limit: 1, Period: time.Minute, Shadow: true}}, wantAllowed: true, wantRemain: 95},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock()
			l := newLocalLimiter(t, clock)
			for i, s := range tt.steps {
				clock.Advance(s.advance)
				var res Result
				for range s.n {
					var err error
					if res, err = l.Check(context.Background(), "", s.limits); err != nil {
						t.Fatalf("step %d: Check: %v", i, err)
					}
				}
				if res.Allowed != s.wantAllowed || res.Limits[0].Remaining != s.wantRemain || (res.RetryAfter-s.wantRetry).Abs() > time.Microsecond {
					t.Errorf("step %d: got allowed=%v remaining=%d retry=%v, want %v %d %v",
						i, res.Allowed, res.Limits[0].Remaining, res.RetryAfter, s.wantAllowed, s.wantRemain, s.wantRetry)
				}
				if res.Degraded {
					t.Errorf("step %d: in-process limiter reported Degraded", i)
				}
			}
		})
	}
}

func TestLocalShadowReported(t *testing.T) {
	t.Parallel()
	l := newLocalLimiter(t, newFakeClock())
	limits := []Limit{{Name: "s", Key: "k", Limit: 1, Period: time.Minute, Shadow: true}}
	for i, wantExceeded := range []bool{false, true, true} {
		res, err := l.Check(context.Background(), "", limits)
		if err != nil || !res.Allowed || res.Limits[0].Exceeded != wantExceeded {
			t.Errorf("check %d: got allowed=%v exceeded=%v err=%v, want allowed, exceeded=%v", i, res.Allowed, res.Limits[0].Exceeded, err, wantExceeded)
		}
	}
}

func TestLocalReconcile(t *testing.T) {
	t.Parallel()
	tok := Limit{Name: "tokens", Key: "acme", Limit: 1000, Period: time.Hour, Cost: 100, Estimated: true}
	probe := Limit{Name: "tokens", Key: "acme", Limit: 1000, Period: time.Hour}
	tests := []struct {
		name    string
		actuals []int64
		want    int64 // remaining after a probe of 1
	}{
		{"refund", []int64{30}, 1000 - 30 - 1},
		{"exact", []int64{100}, 1000 - 100 - 1},
		{"over-use", []int64{250}, 1000 - 250 - 1},
		{"duplicate", []int64{30, 30, 500}, 1000 - 30 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := newLocalLimiter(t, newFakeClock())
			ctx := context.Background()
			if _, err := l.Check(ctx, "d1", []Limit{tok}); err != nil {
				t.Fatal(err)
			}
			for _, a := range tt.actuals {
				if err := l.Reconcile(ctx, "d1", a); err != nil {
					t.Fatalf("Reconcile(%d): %v", a, err)
				}
			}
			res, err := l.Check(ctx, "", []Limit{probe})
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Limits[0].Remaining; got != tt.want {
				t.Errorf("remaining = %d, want %d", got, tt.want)
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		l := newLocalLimiter(t, newFakeClock())
		if err := l.Reconcile(context.Background(), "nope", 1); !errors.Is(err, ErrUnknownReservation) {
			t.Errorf("Reconcile(unknown) = %v, want ErrUnknownReservation", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		clock := newFakeClock()
		l := newLocalLimiter(t, clock)
		if _, err := l.Check(context.Background(), "d1", []Limit{tok}); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Hour)
		if err := l.Reconcile(context.Background(), "d1", 1); !errors.Is(err, ErrUnknownReservation) {
			t.Errorf("Reconcile(expired) = %v, want ErrUnknownReservation", err)
		}
	})
}

func TestValidation(t *testing.T) {
	t.Parallel()
	l := newLocalLimiter(t, newFakeClock())
	ok := Limit{Name: "n", Key: "k", Limit: 1, Period: time.Second}
	tests := []struct {
		name   string
		limits []Limit
	}{
		{"no name", []Limit{{Key: "k", Limit: 1, Period: time.Second}}},
		{"no subject", []Limit{{Name: "n", Limit: 1, Period: time.Second}}},
		{"zero limit", []Limit{{Name: "n", Key: "k", Period: time.Second}}},
		{"zero period", []Limit{{Name: "n", Key: "k", Limit: 1}}},
		{"negative cost", []Limit{{Name: "n", Key: "k", Limit: 1, Period: time.Second, Cost: -1}}},
		{"bad failure mode", []Limit{{Name: "n", Key: "k", Limit: 1, Period: time.Second, FailureMode: "maybe"}}},
		{"different tags", []Limit{ok, {Name: "t", Key: "other", Limit: 1, Period: time.Second}}},
		{"different tenants", []Limit{{Name: "a", Tenant: "t1", Principal: "a", Limit: 1, Period: time.Second}, {Name: "b", Tenant: "t2", Limit: 1, Period: time.Second}}},
		// Braces in a key are text, not a hash tag any more.
		{"legacy brace tags", []Limit{{Name: "a", Key: "{acme}:a", Limit: 1, Period: time.Second}, {Name: "b", Key: "{acme}", Limit: 1, Period: time.Second}}},
		{"tenant-less principal and tenant of the same name", []Limit{{Name: "a", Principal: "acme", Limit: 1, Period: time.Second}, {Name: "b", Tenant: "acme", Limit: 1, Period: time.Second}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := l.Check(context.Background(), "", tt.limits); !errors.Is(err, ErrInvalidLimit) {
				t.Errorf("Check = %v, want ErrInvalidLimit", err)
			}
		})
	}
	// A principal inside its tenant shares the tenant limit's slot.
	if _, err := l.Check(context.Background(), "", []Limit{
		{Name: "rpm", Tenant: "acme", Principal: "alice", Limit: 1, Period: time.Second},
		{Name: "tpd", Tenant: "acme", Limit: 1, Period: time.Second},
	}); err != nil {
		t.Errorf("shared tag: %v", err)
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", maxKeyPart+1)
	tests := []struct {
		name             string
		lim              Limit
		wantKey, wantTag string
	}{
		{"tenant", Limit{Name: "n", Tenant: "acme"}, "p:{t:acme}:n", "t:acme"},
		{"principal of a tenant", Limit{Name: "n", Tenant: "acme", Principal: "alice"}, "p:{t:acme}:p:alice:n", "t:acme"},
		{"principal without tenant", Limit{Name: "n", Principal: "acme"}, "p:{p:acme}:n", "p:acme"},
		{"opaque key", Limit{Name: "n", Key: "{acme}:alice"}, "p:{k:%7Bacme%7D%3Aalice}:n", "k:%7Bacme%7D%3Aalice"},
		{"all three", Limit{Name: "n", Tenant: "a", Principal: "b", Key: "c"}, "p:{t:a}:p:b:k:c:n", "t:a"},
		{"brace in a principal", Limit{Name: "n", Principal: "acme}x"}, "p:{p:acme%7Dx}:n", "p:acme%7Dx"},
		{"separators and escapes", Limit{Name: "a:b", Tenant: "%#: \x00"}, "p:{t:%25%23%3A%20%00}:a%3Ab", "t:%25%23%3A%20%00"},
		{"long value hashed", Limit{Name: "n", Tenant: long}, "p:{t:#" + digest(long) + "}:n", "t:#" + digest(long)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := counterKey("p", tt.lim)
			if k != tt.wantKey || hashTag(k) != tt.wantTag {
				t.Errorf("counterKey(%+v) = %q tag %q, want %q tag %q", tt.lim, k, hashTag(k), tt.wantKey, tt.wantTag)
			}
		})
	}
	// Known Redis Cluster slots (CLUSTER KEYSLOT).
	for tag, want := range map[string]int{"foo": 12182, "bar": 5061, "123456789": 12739} {
		if got := slotOf(tag); got != want {
			t.Errorf("slotOf(%q) = %d, want %d", tag, got, want)
		}
	}
}

func TestHeaders(t *testing.T) {
	t.Parallel()
	res := Result{
		Allowed:    false,
		RetryAfter: 1500 * time.Millisecond,
		Limits: []LimitState{
			{Name: "rpm", Limit: 100, Period: time.Minute, Remaining: 0, Reset: 59*time.Second + time.Millisecond, Exceeded: true},
			{Name: `to"k`, Limit: 1000, Period: 24 * time.Hour, Remaining: 900, Reset: time.Hour},
			{Name: "shadow", Limit: 1, Period: time.Second, Shadow: true, Exceeded: true},
		},
	}
	h := res.Headers()
	want := map[string]string{
		"RateLimit-Policy": `"rpm";q=100;w=60, "to\"k";q=1000;w=86400`,
		"RateLimit":        `"rpm";r=0;t=60, "to\"k";r=900;t=3600`,
		"Retry-After":      "2",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if got := (Result{Allowed: true}).RetryAfterHeader(); got != "" {
		t.Errorf("allowed Retry-After = %q, want empty", got)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, url   string
		wantAddrs   int
		wantCluster bool
		wantMaster  string
		wantTLS     bool
		wantErr     bool
	}{
		{name: "single", url: "redis://127.0.0.1:7000/2", wantAddrs: 1},
		{name: "credentials", url: "redis://u:p%40ss@h:1", wantAddrs: 1},
		{name: "tls", url: "rediss://h:6380", wantAddrs: 1, wantTLS: true},
		{name: "cluster", url: "redis://a:1,b:2,c:3", wantAddrs: 3, wantCluster: true},
		{name: "bare cluster", url: "a:1,b:2", wantAddrs: 2, wantCluster: true},
		{name: "cluster seed", url: "redis://a:1?cluster=true", wantAddrs: 1, wantCluster: true},
		{name: "sentinel", url: "redis+sentinel://s1:26379,s2:26379/mymaster/1", wantAddrs: 2, wantMaster: "mymaster"},
		{name: "sentinel query", url: "redis://s1:26379?master_name=m", wantAddrs: 1, wantMaster: "m"},
		{name: "bad scheme", url: "http://h", wantErr: true},
		{name: "unknown param", url: "redis://h?foo=1", wantErr: true},
		{name: "sentinel without master", url: "redis+sentinel://s1", wantErr: true},
		{name: "cluster db", url: "redis://a:1,b:2/3", wantErr: true},
		{name: "missing CA", url: "rediss://h?ca_file=/nonexistent", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := redisOptions(Config{RedisURL: tt.url}.withDefaults())
			if tt.wantErr {
				if err == nil {
					t.Fatalf("redisOptions(%q) succeeded, want error", tt.url)
				}
				return
			}
			if err != nil {
				t.Fatalf("redisOptions(%q): %v", tt.url, err)
			}
			if len(o.Addrs) != tt.wantAddrs || isCluster(o) != tt.wantCluster || o.MasterName != tt.wantMaster || (o.TLSConfig != nil) != tt.wantTLS {
				t.Errorf("got addrs=%v cluster=%v master=%q tls=%v", o.Addrs, isCluster(o), o.MasterName, o.TLSConfig != nil)
			}
			if !o.ContextTimeoutEnabled || o.MaxRetries != -1 {
				t.Errorf("ContextTimeoutEnabled=%v MaxRetries=%d, want true, -1", o.ContextTimeoutEnabled, o.MaxRetries)
			}
		})
	}
	for _, bad := range []Config{{KeyPrefix: "a{b}"}, {FailureMode: "x"}, {LocalShare: 2}, {PoolSize: -1}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want error", bad)
		}
	}
}

// A malformed Redis URL is reported without its credentials: url's own
// errors quote the userinfo, bad escape included.
func TestRedisURLErrorsHideCredentials(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, url string }{
		{"bad escape in the password", "redis://:s3cret%zzpw@h:6379"},
		{"bad escape in the user", "redis://u%zzs3cret:s3cret@h:6379"},
		{"no host", "redis://u:s3cret@"},
		{"bad database", "redis://:s3cret@h:6379/x"},
		{"unknown parameter", "redis://:s3cret@h:6379?foo=1"},
		{"bad scheme", "http://:s3cret@h"},
		{"sentinel without master", "redis+sentinel://:s3cret@s1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{RedisURL: tt.url}, nil)
			if err == nil {
				t.Fatalf("New(%q) succeeded, want an error", tt.url)
			}
			if msg := err.Error(); strings.Contains(msg, "s3cret") || strings.Contains(msg, "zz") {
				t.Errorf("error shows the credentials: %s", msg)
			}
		})
	}
	for in, want := range map[string]string{
		"redis://:s3cret%zzpw@h:6379": "redis://***@h:6379",
		"u:p@h:1,h2:2":                "***@h:1,h2:2",
		"redis://h:6379":              "redis://h:6379",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// Limit names come from policy: past labelcap.MaxValues distinct names the
// per-limit series count "other" instead of growing without bound.
func TestLimitNameLabelsCapped(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	l, err := New(Config{Clock: newFakeClock()}, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	const names = labelcap.MaxValues + 36
	for i := range names {
		// Cost above the limit: every check is denied by its limit.
		lim := Limit{Name: "limit_" + strconv.Itoa(i), Tenant: "acme", Limit: 1, Period: time.Minute, Cost: 2}
		if _, err := l.Check(context.Background(), "", []Limit{lim}); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, mf := range mfs {
		if mf.GetName() == "bulwark_ratelimit_over_limit_total" {
			series = len(mf.GetMetric())
		}
	}
	if series != labelcap.MaxValues+1 {
		t.Errorf("over_limit_total has %d series, want %d (the cap and other)", series, labelcap.MaxValues+1)
	}
	if got := counterValue(t, reg, "bulwark_ratelimit_over_limit_total", labelcap.Other); got != 36 {
		t.Errorf(`over_limit_total{limit="other"} = %v, want 36`, got)
	}
	if got := counterValue(t, reg, "bulwark_ratelimit_over_limit_total", "limit_0"); got != 1 {
		t.Errorf(`over_limit_total{limit="limit_0"} = %v, want 1`, got)
	}
}
