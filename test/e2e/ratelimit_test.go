package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/test/envoysim"
	"github.com/bulwark-ai/bulwark/test/fixture"
	"github.com/bulwark-ai/bulwark/test/redisserver"
)

// One limit of 100 per hour on one key; ?mode= picks the failure mode. GCRA
// admits the whole limit at once and then one more every period/limit, so an
// hour keeps refills (one per 36 s) out of a run of a few seconds and the
// count is exact; a per-minute limit would legitimately admit one more per
// 600 ms the run takes.
const limitPolicy = `package bulwark
import rego.v1

mode := input.parsed_query.mode[0] if input.parsed_query.mode
else := ""

decision := {"allowed": true, "reason": "ok", "limits": [
	{"name": "rph", "key": "{acme}:alice", "limit": 100, "period": "1h", "failure_mode": mode},
]}
`

func limitPolicyDir(t *testing.T) string {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.rego"), limitPolicy)
	return dir
}

type tally struct{ allowed, limited, other, errors atomic.Int64 }

// hammer sends n Checks from `clients` goroutines, round-robin over procs.
func hammer(t *testing.T, procs []*proc, clients, n int, path string) *tally {
	t.Helper()
	var tl tally
	var next atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				p := procs[int(i)%len(procs)]
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := p.Auth.Check(ctx, envoy.NewCheckRequest(envoy.HTTPRequest{Path: path}))
				cancel()
				switch {
				case err != nil:
					tl.errors.Add(1)
				case allowed(resp):
					tl.allowed.Add(1)
				case resp.GetDeniedResponse().GetStatus().GetCode() == 429:
					tl.limited.Add(1)
				default:
					tl.other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return &tl
}

func exactness(t *testing.T, redisURL string) {
	dir := limitPolicyDir(t)
	var procs []*proc
	for i := 0; i < 3; i++ {
		procs = append(procs, start(t, "--policy-dir", dir, "--redis-url", redisURL, "--check-timeout", "5s",
			"--ratelimit-timeout", "4s"))
	}
	begin := time.Now()
	// fail_closed: a Redis hiccup under CI load must show up as a 503 (and
	// fail the test visibly), not as an in-process admission.
	tl := hammer(t, procs, 50, 1000, "/x?mode=fail_closed")
	t.Logf("1000 checks from 50 clients over 3 replicas in %v", time.Since(begin))
	if tl.allowed.Load() != 100 || tl.limited.Load() != 900 || tl.errors.Load() != 0 || tl.other.Load() != 0 {
		t.Fatalf("allowed %d, limited %d, other %d, errors %d; want exactly 100 allowed and 900 limited",
			tl.allowed.Load(), tl.limited.Load(), tl.other.Load(), tl.errors.Load())
	}
	// A limited answer says when to retry, in the IETF headers too.
	resp := procs[0].Check(t, envoy.HTTPRequest{Path: "/x?mode=fail_closed"})
	h := hdrs(resp.GetDeniedResponse().GetHeaders())
	if resp.GetStatus().GetMessage() != "rate_limited" || h["retry-after"] == "" || !strings.Contains(h["ratelimit-policy"], "q=100") ||
		!strings.Contains(h["ratelimit"], "r=0") {
		t.Fatalf("429 response: %v, headers %v", resp.GetStatus(), h)
	}
}

func TestRateLimitExactAcrossReplicas(t *testing.T) {
	rs := redisserver.Start(t)
	exactness(t, "redis://"+rs.Addr)
}

func TestRateLimitExactOnRedisCluster(t *testing.T) {
	c := redisserver.StartCluster(t, 3)
	exactness(t, strings.Join(c.Addrs, ","))
}

// Redis killed mid-load: fail_open keeps answering from the in-process
// limiter with no gRPC errors; fail_closed answers 503 quickly; Redis back,
// counting returns to Redis.
func TestRateLimitRedisFailure(t *testing.T) {
	rs := redisserver.Start(t)
	p := start(t, "--policy-dir", limitPolicyDir(t), "--redis-url", "redis://"+rs.Addr,
		"--ratelimit-local-share", "1")
	if !allowed(p.Check(t, envoy.HTTPRequest{Path: "/x"})) {
		t.Fatal("first request limited")
	}
	rs.Stop()

	// fail_open: every request answered, none with a gRPC error.
	tl := hammer(t, []*proc{p}, 10, 200, "/x")
	if tl.errors.Load() != 0 || tl.other.Load() != 0 || tl.allowed.Load() == 0 {
		t.Fatalf("fail_open with Redis down: allowed %d limited %d other %d errors %d",
			tl.allowed.Load(), tl.limited.Load(), tl.other.Load(), tl.errors.Load())
	}
	// The in-process fallback still limits: 100 per minute on this replica, minus what Redis saw.
	if tl.allowed.Load() > 100 {
		t.Fatalf("fallback admitted %d, more than the limit", tl.allowed.Load())
	}

	// fail_closed: 503 with a reason, quickly once the breaker is open.
	var slowest time.Duration
	for i := 0; i < 20; i++ {
		begin := time.Now()
		resp := p.Check(t, envoy.HTTPRequest{Path: "/x?mode=fail_closed"})
		if d := time.Since(begin); d > slowest {
			slowest = d
		}
		if allowed(resp) || resp.GetDeniedResponse().GetStatus().GetCode() != 503 ||
			resp.GetStatus().GetMessage() != "rate_limiter_unavailable" {
			t.Fatalf("fail_closed with Redis down: %v", resp.GetStatus())
		}
	}
	if slowest > time.Second {
		t.Fatalf("a fail_closed answer took %v with the breaker open", slowest)
	}
	_, body := p.get(t, "/metrics")
	if !strings.Contains(body, "bulwark_ratelimit_fallback_active 1") {
		t.Error("fallback not visible in metrics")
	}

	// Redis back: decisions come from Redis again within seconds.
	rs.Restart(t)
	eventually(t, 10*time.Second, "recovery", func() bool {
		resp := p.Check(t, envoy.HTTPRequest{Path: "/x?mode=fail_closed"})
		return resp.GetStatus().GetMessage() != "rate_limiter_unavailable"
	})
	_, body = p.get(t, "/readyz")
	if !strings.Contains(body, `"breaker":"closed"`) {
		t.Errorf("/readyz after recovery: %s", body)
	}
}

// The policy deadline covers the limiter: a stalled Redis cannot hold a Check
// past --check-timeout.
func TestRateLimitDeadlineHolds(t *testing.T) {
	rs := redisserver.Start(t)
	p := start(t, "--policy-dir", limitPolicyDir(t), "--redis-url", "redis://"+rs.Addr, "--check-timeout", "100ms",
		"--ratelimit-timeout", "50ms")
	rs.Pause(t, 3*time.Second) // SIGSTOP: connections stay open, nothing answers
	for i := 0; i < 5; i++ {
		begin := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := p.Auth.Check(ctx, envoy.NewCheckRequest(envoy.HTTPRequest{Path: "/x"}))
		cancel()
		if d := time.Since(begin); d > 500*time.Millisecond {
			t.Fatalf("check took %v with Redis stalled", d)
		}
		if err != nil && status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("err = %v", err)
		}
		if err == nil && !allowed(resp) {
			t.Fatalf("fail_open limit denied with Redis stalled: %v", resp.GetStatus())
		}
	}
}

// A principal without a tenant whose id is a tenant's name ("acme") has its
// own token quota; it cannot spend tenant acme's (the old default policy
// keyed both "{acme}", so the tenant-less key exhausted acme's users' quota).
// Real binary, real redis-server, the default policy through ext_proc.
func TestQuotaTenantlessPrincipalCannotSpendTenantQuota(t *testing.T) {
	rs := redisserver.Start(t)
	dir := fixture.PolicyDir(t, "tokens_per_day: 2000000", "tokens_per_day: 1000")
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	member := createKey(t, "--keys-file", keys, "--id", "app", "--roles", "user", "--tenant", "acme")
	loner := createKey(t, "--keys-file", keys, "--id", "acme", "--roles", "user")
	p := startEnv(t, []string{pepperEnv}, "--keys-file", keys, "--policy-dir", dir, "--redis-url", "redis://"+rs.Addr)
	ask := func(key string, maxTokens int) *envoysim.Result {
		body := fmt.Sprintf(`{"model":"gpt-4o","max_tokens":%d,"messages":[{"role":"user","content":"hi"}]}`, maxTokens)
		// The answer reports using all it reserved: the quota is charged that.
		answer := fmt.Sprintf(`{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":%d,"total_tokens":%d}}`, maxTokens-1, maxTokens)
		return run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions", body), jsonUpstream(answer))
	}
	steps := []struct {
		name       string
		key        string
		maxTokens  int
		wantStatus int // 0: allowed
	}{
		{"tenant-less acme reserves its whole quota", loner, 1000, 0},
		{"tenant acme's member still has acme's quota", member, 1000, 0},
		{"tenant acme's quota is now spent", member, 1, 429},
		{"the tenant-less principal's own quota is spent", loner, 1, 429},
	}
	for _, s := range steps {
		res := ask(s.key, s.maxTokens)
		got := 0
		if res.Immediate != nil {
			got = res.Status
		}
		if got != s.wantStatus {
			t.Fatalf("%s: status %d (%s), want %d", s.name, got, res.Body, s.wantStatus)
		}
	}
}
