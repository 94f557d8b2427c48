package rls

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bulwark-ai/bulwark/internal/ratelimit"
	"github.com/bulwark-ai/bulwark/test/redisserver"
)

const testConfig = `
domain: edge
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: small
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: big
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: free
    rate_limit: {unlimited: true}
  - key: closed
    rate_limit: {unit: hour, requests_per_unit: 0}
  - key: remote_address
    rate_limit: {name: per_ip, unit: minute, requests_per_unit: 1}
  - key: route
    value: premium
    rate_limit: {unlimited: true, replaces: [{name: per_ip}]}
`

// newTestServer serves cfgYAML (written to a file) over a limiter on a
// real redis-server.
func newTestServer(t *testing.T, cfgYAML string, opts Options) (*Server, string, *prometheus.Registry) {
	t.Helper()
	srv := redisserver.Start(t)
	lim, err := ratelimit.New(ratelimit.Config{RedisURL: "redis://" + srv.Addr, CheckTimeout: 2 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lim.Close() })
	path := filepath.Join(t.TempDir(), "rls.yaml")
	if err := os.WriteFile(path, []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	opts.Path = path
	reg := prometheus.NewRegistry()
	s, err := New(opts, lim, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	return s, path, reg
}

func desc(kv ...string) *rlv3.RateLimitDescriptor {
	return &rlv3.RateLimitDescriptor{Entries: entries(kv...)}
}

func call(t *testing.T, s *Server, req *rlsv3.RateLimitRequest) *rlsv3.RateLimitResponse {
	t.Helper()
	resp, err := s.ShouldRateLimit(context.Background(), req)
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
	if len(resp.Statuses) != len(req.Descriptors) {
		t.Fatalf("%d statuses for %d descriptors", len(resp.Statuses), len(req.Descriptors))
	}
	return resp
}

func req(ds ...*rlv3.RateLimitDescriptor) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: ds}
}

const (
	ok   = rlsv3.RateLimitResponse_OK
	over = rlsv3.RateLimitResponse_OVER_LIMIT
)

func TestCountsPerValue(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig, Options{})
	want := []struct {
		code      rlsv3.RateLimitResponse_Code
		remaining uint32
	}{{ok, 2}, {ok, 1}, {ok, 0}, {over, 0}, {over, 0}}
	for i, w := range want {
		resp := call(t, s, req(desc("user", "alice")))
		st := resp.Statuses[0]
		if resp.OverallCode != w.code || st.Code != w.code || st.LimitRemaining != w.remaining {
			t.Fatalf("call %d: overall %v, status %v remaining %d; want %v remaining %d", i, resp.OverallCode, st.Code, st.LimitRemaining, w.code, w.remaining)
		}
		if st.CurrentLimit.GetRequestsPerUnit() != 3 || st.CurrentLimit.GetUnit() != rlsv3.RateLimitResponse_RateLimit_MINUTE {
			t.Fatalf("current limit %v", st.CurrentLimit)
		}
		if d := st.DurationUntilReset.AsDuration(); d <= 0 || d > time.Minute {
			t.Fatalf("duration_until_reset %v", d)
		}
	}
	// Another value of the same key has its own counter.
	if resp := call(t, s, req(desc("user", "bob"))); resp.OverallCode != ok || resp.Statuses[0].LimitRemaining != 2 {
		t.Fatalf("bob: %v", resp)
	}
}

// TestAtomicAcrossDescriptors: a request denied by one descriptor charges
// none of the others (envoy/ratelimit increments every descriptor).
func TestAtomicAcrossDescriptors(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig, Options{})
	if resp := call(t, s, req(desc("small", "x"), desc("big", "x"))); resp.OverallCode != ok {
		t.Fatalf("first: %v", resp)
	}
	resp := call(t, s, req(desc("small", "x"), desc("big", "x")))
	if resp.OverallCode != over || resp.Statuses[0].Code != over || resp.Statuses[1].Code != ok {
		t.Fatalf("second: %v", resp)
	}
	// big was charged once (by the first request): 5-1-1 after this one.
	if resp := call(t, s, req(desc("big", "x"))); resp.Statuses[0].LimitRemaining != 3 {
		t.Fatalf("big remaining %d, want 3 (the denied request must not charge it)", resp.Statuses[0].LimitRemaining)
	}
}

func TestShadowUnlimitedZeroReplaces(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig, Options{})
	call(t, s, req(desc("shadow", "x")))
	resp := call(t, s, req(desc("shadow", "x")))
	if resp.OverallCode != ok || resp.Statuses[0].Code != ok || resp.Statuses[0].LimitRemaining != 0 {
		t.Fatalf("shadow over its limit: %v", resp)
	}
	resp = call(t, s, req(desc("free", "x")))
	if st := resp.Statuses[0]; st.Code != ok || st.LimitRemaining != math.MaxUint32 || st.CurrentLimit != nil {
		t.Fatalf("unlimited: %v", st)
	}
	resp = call(t, s, req(desc("closed", "x"), desc("big", "z")))
	if resp.OverallCode != over || resp.Statuses[0].Code != over || resp.Statuses[1].LimitRemaining != 5 {
		t.Fatalf("requests_per_unit 0: %v (big must stay uncharged at 5)", resp)
	}
	// per_ip allows 1/min, but a premium route replaces it.
	for i := range 3 {
		resp = call(t, s, req(desc("remote_address", "1.1.1.1"), desc("route", "premium")))
		if resp.OverallCode != ok || resp.Statuses[0].CurrentLimit != nil {
			t.Fatalf("replaced limit applied on call %d: %v", i, resp)
		}
	}
	call(t, s, req(desc("remote_address", "1.1.1.1")))
	if resp = call(t, s, req(desc("remote_address", "1.1.1.1"))); resp.OverallCode != over {
		t.Fatalf("per_ip without the replacing route: %v", resp)
	}
}

func TestHitsAddend(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig, Options{})
	r := req(desc("big", "h"))
	r.HitsAddend = 3
	if resp := call(t, s, r); resp.Statuses[0].LimitRemaining != 2 {
		t.Fatalf("after 3 hits: %v", resp)
	}
	if resp := call(t, s, r); resp.OverallCode != over {
		t.Fatalf("3 more hits with 2 left: %v", resp)
	}
	// A descriptor's own hits_addend wins; 0 reads without charging.
	peek := desc("big", "h")
	peek.HitsAddend = wrapperspb.UInt64(0)
	for range 2 {
		if resp := call(t, s, req(peek)); resp.OverallCode != ok || resp.Statuses[0].LimitRemaining != 2 {
			t.Fatalf("peek: %v", resp)
		}
	}
	two := desc("big", "h")
	two.HitsAddend = wrapperspb.UInt64(2)
	if resp := call(t, s, req(two)); resp.OverallCode != ok || resp.Statuses[0].LimitRemaining != 0 {
		t.Fatalf("2 hits with 2 left: %v", resp)
	}
}

func TestOverride(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig, Options{})
	d := desc("anything", "v")
	d.Limit = &rlv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 2, Unit: typev3.RateLimitUnit_HOUR}
	codes := []rlsv3.RateLimitResponse_Code{ok, ok, over}
	for i, want := range codes {
		resp := call(t, s, req(d))
		if resp.OverallCode != want || resp.Statuses[0].CurrentLimit.GetUnit() != rlsv3.RateLimitResponse_RateLimit_HOUR {
			t.Fatalf("call %d: %v", i, resp)
		}
	}
}

func TestResponseHeaders(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig, Options{ResponseHeaders: true})
	resp := call(t, s, req(desc("big", "hd"), desc("user", "hd"), desc("free", "x")))
	got := map[string]string{}
	for _, h := range resp.ResponseHeadersToAdd {
		got[h.Key] = h.Value
	}
	// The descriptor closest to its limit: user (2 left of 3).
	if got["x-ratelimit-limit"] != "3" || got["x-ratelimit-remaining"] != "2" || got["x-ratelimit-reset"] == "" {
		t.Fatalf("headers %v", got)
	}
	// GCRA: 1 of 3 per minute used, full again in 20 s.
	if n, err := strconv.Atoi(got["x-ratelimit-reset"]); err != nil || n < 1 || n > 20 {
		t.Fatalf("reset %q, want 1..20 seconds", got["x-ratelimit-reset"])
	}
	s2, _, _ := newTestServer(t, testConfig, Options{})
	if resp := call(t, s2, req(desc("big", "hd"))); len(resp.ResponseHeadersToAdd) != 0 {
		t.Fatalf("headers sent while disabled: %v", resp.ResponseHeadersToAdd)
	}
}

func TestUnknownDomainAndBadRequests(t *testing.T) {
	s, _, reg := newTestServer(t, testConfig, Options{})
	resp := call(t, s, &rlsv3.RateLimitRequest{Domain: "nope", Descriptors: []*rlv3.RateLimitDescriptor{desc("user", "a"), desc("x", "y")}})
	if resp.OverallCode != ok || resp.Statuses[0].CurrentLimit != nil {
		t.Fatalf("unknown domain: %v", resp)
	}
	many := make([]*rlv3.RateLimitDescriptor, MaxDescriptors+1)
	for i := range many {
		many[i] = desc("user", "a")
	}
	overrideBad := desc("a", "b")
	overrideBad.Limit = &rlv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: typev3.RateLimitUnit(99)}
	cases := []struct {
		name string
		req  *rlsv3.RateLimitRequest
		want string
	}{
		{"empty domain", &rlsv3.RateLimitRequest{Descriptors: []*rlv3.RateLimitDescriptor{desc("a", "b")}}, "domain must not be empty"},
		{"no descriptors", &rlsv3.RateLimitRequest{Domain: "edge"}, "descriptor list must not be empty"},
		{"too many descriptors", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: many}, "at most"},
		{"override with unknown unit", req(overrideBad), "unknown unit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.ShouldRateLimit(context.Background(), c.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want InvalidArgument mentioning %q", err, c.want)
			}
		})
	}
	if n := testutil.ToFloat64(s.m.errored); n != float64(len(cases)) {
		t.Errorf("error count %v", n)
	}
	_ = reg
}

// TestReloadKeepsLastGood: a broken file is refused with a clear error, the
// last good configuration keeps deciding, and Status and the metrics say
// why until a good file loads.
func TestReloadKeepsLastGood(t *testing.T) {
	s, path, reg := newTestServer(t, testConfig, Options{})
	bad := testConfig + "  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 100}\n"
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), `duplicate descriptor "edge.user"`) {
		t.Fatalf("reload err = %v", err)
	}
	st := s.Status()
	if !st.Ready || !strings.Contains(st.LastError, "duplicate descriptor") {
		t.Fatalf("status %+v", st)
	}
	if v := testutil.ToFloat64(s.m.healthy); v != 0 {
		t.Fatalf("config_healthy %v after a failed reload", v)
	}
	if n, err := testutil.GatherAndCount(reg, "bulwark_rls_config_reloads_total"); err != nil || n != 2 {
		t.Fatalf("reload series %d %v", n, err)
	}
	// Still the old limit (3/min).
	for range 3 {
		call(t, s, req(desc("user", "k")))
	}
	if resp := call(t, s, req(desc("user", "k"))); resp.OverallCode != over {
		t.Fatalf("old config not in force: %v", resp)
	}
	unit := strings.Replace(testConfig, "unit: minute, requests_per_unit: 3", "unit: fortnight, requests_per_unit: 3", 1)
	if err := os.WriteFile(path, []byte(unit), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), `unknown rate limit unit "fortnight"`) {
		t.Fatalf("reload err = %v", err)
	}
	good := strings.Replace(testConfig, "requests_per_unit: 3", "requests_per_unit: 30", 1)
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.LastError != "" || testutil.ToFloat64(s.m.healthy) != 1 {
		t.Fatalf("after a good reload: %+v", st)
	}
	if resp := call(t, s, req(desc("user", "k2"))); resp.Statuses[0].CurrentLimit.GetRequestsPerUnit() != 30 {
		t.Fatalf("new config not in force: %v", resp)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("domain: d\ndescriptors:\n- key: a\n  rate_limit: {unit: eon, requests_per_unit: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lim, err := ratelimit.New(ratelimit.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lim.Close()
	if _, err := New(Options{Path: path}, lim, nil, nil); err == nil || !strings.Contains(err.Error(), `unknown rate limit unit "eon"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestWatchReloads(t *testing.T) {
	s, path, _ := newTestServer(t, testConfig, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Watch(ctx, 20*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(50 * time.Millisecond) // the watcher is set up
	good := strings.Replace(testConfig, "requests_per_unit: 3", "requests_per_unit: 7", 1)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // replaced, as editors and ConfigMaps do
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp := call(t, s, req(desc("user", "w")))
		if resp.Statuses[0].CurrentLimit.GetRequestsPerUnit() == 7 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reloaded: %+v", s.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
