package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulwark-ai/bulwark/internal/audit"
	"github.com/bulwark-ai/bulwark/test/fixture/fakeclock"
)

// hook is a real HTTP webhook receiver.
type hook struct {
	mu     sync.Mutex
	got    []Alert
	raw    []string
	status int
	delay  time.Duration
	srv    *httptest.Server
}

func newHook(t *testing.T) *hook {
	h := &hook{status: http.StatusNoContent}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		status, delay := h.status, h.delay
		h.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want a JSON POST", http.StatusBadRequest)
			return
		}
		var a Alert
		if err := json.Unmarshal(body, &a); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.got = append(h.got, a)
		h.raw = append(h.raw, string(body))
		h.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) alerts() []Alert {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Alert(nil), h.got...)
}

func newNotifier(t *testing.T, cfg Config) (*Notifier, *fakeclock.Clock) {
	t.Helper()
	clk := fakeclock.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg.Clock = clk
	n, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close(context.Background()) })
	return n, clk
}

// flush closes n and waits for its queue to be delivered.
func flush(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func count(n *Notifier, event, result string) int {
	return int(testutil.ToFloat64(n.total.WithLabelValues(event, result)))
}

func denial(who, reason string) audit.Record {
	no := false
	return audit.Record{Type: audit.TypeDecision, DecisionID: "d-" + who, Allowed: &no, Reason: reason, HTTPStatus: 403,
		Principal: &audit.Principal{ID: who, Kind: "api_key", Tenant: "acme"}, Route: "POST /v1/chat/completions"}
}

func TestCanaryLeakIsPostedAsJSON(t *testing.T) {
	t.Parallel()
	h := newHook(t)
	n, _ := newNotifier(t, Config{WebhookURL: h.srv.URL + "/hook?token=s3cr3t"})
	r := denial("alice", "canary_leak")
	r.TraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	r.Details = map[string]any{"tags": map[string]any{"alert": "canary_leak"}}
	n.Tap(nil).Log(context.Background(), r)
	n.Observe(denial("bob", "route_not_allowed")) // no tag, no alert
	flush(t, n)

	got := h.alerts()
	if len(got) != 1 {
		t.Fatalf("webhook got %d alerts, want 1", len(got))
	}
	a := got[0]
	if a.Event != EventCanaryLeak || a.Severity != "critical" || a.DecisionID != "d-alice" || a.TraceID != r.TraceID ||
		a.Principal == nil || a.Principal.ID != "alice" || a.Service != "bulwark" || a.Text == "" || a.Time.IsZero() {
		t.Errorf("alert = %+v", a)
	}
	if c := count(n, EventCanaryLeak, ResultSent); c != 1 {
		t.Errorf("sent = %d, want 1", c)
	}
}

func TestTapPassesRecordsOn(t *testing.T) {
	t.Parallel()
	n, _ := newNotifier(t, Config{})
	var next recorded
	tap := n.Tap(&next)
	tap.Log(context.Background(), denial("a", "x"))
	tap.Log(context.Background(), audit.Record{Type: audit.TypeConfigLoaded})
	if len(next.rs) != 2 {
		t.Errorf("next got %d records, want 2", len(next.rs))
	}
}

type recorded struct{ rs []audit.Record }

func (r *recorded) Log(_ context.Context, rec audit.Record) { r.rs = append(r.rs, rec) }

// TestInjectionBurstAndItsRateLimit: the 5th prompt_injection denial of one
// principal within the window raises one alert; further bursts within
// MinInterval are suppressed, and the next alert after it says how many.
func TestInjectionBurstAndItsRateLimit(t *testing.T) {
	t.Parallel()
	h := newHook(t)
	n, clk := newNotifier(t, Config{WebhookURL: h.srv.URL, InjectionBurst: 5, InjectionWindow: time.Minute, MinInterval: 10 * time.Minute})

	// Slow attempts never make a burst: 4 per window.
	for range 3 {
		for range 4 {
			n.Observe(denial("mallory", "prompt_injection"))
			clk.Advance(time.Second)
		}
		clk.Advance(2 * time.Minute)
	}
	// Other principals' denials do not add up to mallory's.
	for _, who := range []string{"a", "b", "c", "d"} {
		n.Observe(denial(who, "prompt_injection"))
	}
	// Allowed decisions and other reasons do not count.
	yes := true
	ok := denial("mallory", "prompt_injection")
	ok.Allowed = &yes
	n.Observe(ok)
	n.Observe(denial("mallory", "route_not_allowed"))
	if c := count(n, EventInjectionBurst, ResultSuppressed); c != 0 || len(h.alerts()) != 0 {
		t.Fatalf("no burst yet, but %d suppressed and %d sent", c, len(h.alerts()))
	}

	// A burst: five within a minute.
	for range 5 {
		n.Observe(denial("mallory", "prompt_injection"))
		clk.Advance(time.Second)
	}
	// Three more bursts within MinInterval: rate limited.
	for range 3 {
		for range 5 {
			n.Observe(denial("mallory", "prompt_injection"))
		}
		clk.Advance(time.Minute)
	}
	if c := count(n, EventInjectionBurst, ResultSuppressed); c != 3 {
		t.Errorf("suppressed = %d, want 3", c)
	}
	// After MinInterval the next burst is sent and reports the 3 suppressed.
	clk.Advance(10 * time.Minute)
	for range 5 {
		n.Observe(denial("mallory", "prompt_injection"))
	}
	flush(t, n)
	got := h.alerts()
	if len(got) != 2 {
		t.Fatalf("webhook got %d alerts, want 2: %+v", len(got), got)
	}
	if a := got[0]; a.Event != EventInjectionBurst || a.Count != 5 || a.Window != "1m0s" || a.Principal.ID != "mallory" || a.Suppressed != 0 {
		t.Errorf("first burst alert = %+v", a)
	}
	if a := got[1]; a.Suppressed != 3 {
		t.Errorf("second burst alert suppressed = %d, want 3", a.Suppressed)
	}
	if c := count(n, EventInjectionBurst, ResultSent); c != 2 {
		t.Errorf("sent = %d, want 2", c)
	}
}

// TestGlobalRateLimit: distinct subjects are capped by MaxPerMinute overall.
func TestGlobalRateLimit(t *testing.T) {
	t.Parallel()
	h := newHook(t)
	n, clk := newNotifier(t, Config{WebhookURL: h.srv.URL, MaxPerMinute: 3})
	leak := func(who string) {
		r := denial(who, "canary_leak")
		r.Details = map[string]any{"tags": map[string]any{"alert": "canary_leak"}}
		n.Observe(r)
	}
	for i := range 10 {
		leak(string(rune('a' + i)))
	}
	clk.Advance(20 * time.Second) // one token back
	leak("k")
	leak("l")
	flush(t, n)
	if got := len(h.alerts()); got != 4 {
		t.Errorf("sent %d alerts, want 3 + 1 refilled", got)
	}
	if c := count(n, EventCanaryLeak, ResultSuppressed); c != 8 {
		t.Errorf("suppressed = %d, want 8", c)
	}
}

// TestWebhookFailuresNeverBlock: a webhook that errors or hangs costs the
// caller nothing: failures are counted, a full queue drops and counts, and
// the token in the URL never reaches the log.
func TestWebhookFailuresNeverBlock(t *testing.T) {
	t.Parallel()
	h := newHook(t)
	h.status = http.StatusInternalServerError
	var logs syncBuffer
	clk := fakeclock.New(time.Unix(0, 0))
	n, err := New(Config{WebhookURL: h.srv.URL + "/?token=s3cr3t", Timeout: 200 * time.Millisecond, Queue: 2, MinInterval: time.Microsecond,
		MaxPerMinute: 1000, Clock: clk}, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	fallback := audit.Record{Type: audit.TypeLimiterFallback, Details: map[string]any{"state": "entered", "failure_mode": "fail_open"}}
	n.Observe(fallback)
	n.Observe(audit.Record{Type: audit.TypeLimiterFallback, Details: map[string]any{"state": "left"}}) // no alert
	eventually(t, func() bool { return count(n, EventLimiterFallback, ResultFailed) == 1 })

	h.mu.Lock()
	h.status, h.delay = http.StatusOK, time.Hour // now it hangs
	h.mu.Unlock()
	start := time.Now()
	for range 50 {
		clk.Advance(time.Millisecond)
		n.Observe(fallback)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("50 alerts took %v to queue behind a hanging webhook", d)
	}
	eventually(t, func() bool { return count(n, EventLimiterFallback, ResultFailed) >= 2 }) // the first timed out
	if c := count(n, EventLimiterFallback, ResultDropped); c < 40 {
		t.Errorf("dropped = %d, want most of 50 with a queue of 2", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "s3cr3t") {
		t.Errorf("webhook token in logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "500 Internal Server Error") {
		t.Errorf("failure not logged:\n%s", logs.String())
	}
}

func TestWithoutURLAlertsAreLogged(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	n, err := New(Config{}, slog.New(slog.NewJSONHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	n.Observe(audit.Record{Type: audit.TypeLimiterFallback, Details: map[string]any{"state": "entered", "failure_mode": "fail_closed"}})
	r := denial("alice", "policy_said_so")
	r.Details = map[string]any{"tags": map[string]any{"alert": "Weird Event!"}} // policy-named: label bounded
	n.Observe(r)
	flush(t, n)
	out := logs.String()
	if !strings.Contains(out, `"level":"WARN"`) || !strings.Contains(out, `"event":"limiter_fallback"`) || !strings.Contains(out, `"severity":"critical"`) {
		t.Errorf("log = %s", out)
	}
	if count(n, EventLimiterFallback, ResultLogged) != 1 || count(n, "other", ResultLogged) != 1 {
		t.Errorf("logged counts: fallback %d, other %d", count(n, EventLimiterFallback, ResultLogged), count(n, "other", ResultLogged))
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"ok", Config{WebhookURL: "https://hooks.example.com/x"}, ""},
		{"not http", Config{WebhookURL: "ftp://x"}, "WebhookURL"},
		{"no host", Config{WebhookURL: "https://"}, "WebhookURL"},
		{"negative interval", Config{MinInterval: -time.Second}, "MinInterval"},
		{"negative queue", Config{Queue: -1}, "Queue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTapWantsOnlyAlertableDecisionsWithoutAuditLog(t *testing.T) {
	t.Parallel()
	n, _ := newNotifier(t, Config{})
	type filter interface {
		WantsDecision(string, map[string]any) bool
	}
	alone, withLog := n.Tap(nil).(filter), n.Tap(&recorded{}).(filter)
	for _, tc := range []struct {
		reason string
		tags   map[string]any
		want   bool
	}{
		{"allowed", nil, false},
		{"route_not_allowed", map[string]any{"route_class": "llm"}, false},
		{"prompt_injection", nil, true},
		{"canary_leak", map[string]any{"alert": "canary_leak"}, true},
	} {
		if got := alone.WantsDecision(tc.reason, tc.tags); got != tc.want {
			t.Errorf("without audit log, WantsDecision(%s, %v) = %v", tc.reason, tc.tags, got)
		}
		if !withLog.WantsDecision(tc.reason, tc.tags) {
			t.Errorf("with an audit log, %s must be recorded", tc.reason)
		}
	}
}

// With PrincipalName set (--pseudonymize-principals), no alert names the
// principal by id: not the webhook payload, not its summary, not the log
// line; the audit record the alert came from keeps the id.
func TestAlertsNamePrincipalsByPseudonym(t *testing.T) {
	t.Parallel()
	pseudonym := func(id string) string { return "psn_" + strings.ToUpper(id) }
	h := newHook(t)
	n, _ := newNotifier(t, Config{WebhookURL: h.srv.URL, InjectionBurst: 2, PrincipalName: pseudonym})
	tagged := denial("alice", "canary_leak")
	tagged.DecisionID = "d1" // denial names decisions after principals
	tagged.Details = map[string]any{"tags": map[string]any{"alert": "canary_leak"}}
	n.Observe(tagged)
	for _, id := range []string{"d2", "d3"} {
		r := denial("mallory", "prompt_injection")
		r.DecisionID = id
		n.Observe(r)
	}
	flush(t, n)
	if tagged.Principal.ID != "alice" {
		t.Errorf("the audit record's principal became %q", tagged.Principal.ID)
	}
	if len(h.alerts()) != 2 {
		t.Fatalf("webhook got %d alerts, want 2", len(h.alerts()))
	}
	for i, raw := range h.raw {
		if strings.Contains(raw, "alice") || strings.Contains(raw, "mallory") {
			t.Errorf("alert %d names the principal: %s", i, raw)
		}
	}
	want := map[string]string{EventCanaryLeak: "psn_ALICE", EventInjectionBurst: "psn_MALLORY"}
	for _, a := range h.alerts() {
		if a.Principal == nil || a.Principal.ID != want[a.Event] || a.Principal.Tenant != "acme" {
			t.Errorf("%s principal = %+v, want %s", a.Event, a.Principal, want[a.Event])
		}
		if a.Event == EventInjectionBurst && !strings.Contains(a.Summary, "psn_MALLORY") {
			t.Errorf("summary = %q", a.Summary)
		}
	}

	var logs syncBuffer
	ln, err := New(Config{PrincipalName: pseudonym}, slog.New(slog.NewJSONHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln.Observe(tagged)
	flush(t, ln)
	if out := logs.String(); strings.Contains(out, "alice") || !strings.Contains(out, "psn_ALICE") {
		t.Errorf("log = %s", out)
	}
}
