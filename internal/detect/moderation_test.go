package detect

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulwark-ai/bulwark/test/fixture/fakeclock"
)

// moderationServer is a real HTTP server speaking the OpenAI moderations
// API, whose behaviour a test switches: "ok" flags any input containing
// "kill" (violence, 0.91) and scores the rest 0.02; "hang" answers only when
// the client gives up; "500" fails; "bad" answers malformed JSON; "noflag"
// answers a result without "flagged". It records what it was sent.
type moderationServer struct {
	srv   *httptest.Server
	mode  atomic.Value
	calls atomic.Int64

	mu     sync.Mutex
	inputs [][]string // each call's inputs
	auth   []string   // each call's Authorization header
	models []string
}

func newModerationServer(t *testing.T) *moderationServer {
	t.Helper()
	s := &moderationServer{}
	s.mode.Store("ok")
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		var in struct {
			Input json.RawMessage `json:"input"`
			Model string          `json:"model"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		var inputs []string
		if err := json.Unmarshal(in.Input, &inputs); err != nil {
			var one string
			if err := json.Unmarshal(in.Input, &one); err != nil {
				http.Error(w, "bad input", http.StatusBadRequest)
				return
			}
			inputs = []string{one}
		}
		s.mu.Lock()
		s.inputs = append(s.inputs, inputs)
		s.auth = append(s.auth, r.Header.Get("Authorization"))
		s.models = append(s.models, in.Model)
		s.mu.Unlock()
		switch s.mode.Load() {
		case "hang":
			<-r.Context().Done()
			return
		case "500":
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		case "bad":
			_, _ = w.Write([]byte(`{"results": [{"flagged": tru`))
			return
		case "noflag":
			_, _ = w.Write([]byte(`{"results": [{"categories": {}}]}`))
			return
		}
		var results []map[string]any
		for _, text := range inputs {
			flagged := strings.Contains(text, "kill")
			score := 0.02
			if flagged {
				score = 0.91
			}
			results = append(results, map[string]any{
				"flagged":         flagged,
				"categories":      map[string]bool{"violence": flagged, "hate": false},
				"category_scores": map[string]float64{"violence": score, "hate": 0.01},
			})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "modr-1", "model": "omni-moderation-latest", "results": results})
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func flaggedVerdict(mode string) ModerationVerdict {
	return ModerationVerdict{Available: true, Flagged: true, Categories: []string{"violence"},
		Scores: map[string]float64{"violence": 0.91, "hate": 0.01}, FailureMode: mode}
}

func cleanVerdict(mode string) ModerationVerdict {
	return ModerationVerdict{Available: true, Categories: []string{},
		Scores: map[string]float64{"violence": 0.02, "hate": 0.01}, FailureMode: mode}
}

func downVerdict(mode, reason string) ModerationVerdict {
	return ModerationVerdict{Error: reason, Categories: []string{}, Scores: map[string]float64{}, FailureMode: mode}
}

// TestModerateAndBreaker walks the client through verdicts, failures of
// every kind, the breaker opening and closing and the cache, against a
// real HTTP server, checking the verdict, whether a call was sent and the
// metrics after each step.
func TestModerateAndBreaker(t *testing.T) {
	t.Parallel()
	srv := newModerationServer(t)
	clock := fakeclock.New(time.Unix(0, 0))
	reg := prometheus.NewRegistry()
	m, err := NewModerator(ModerationConfig{URL: srv.srv.URL, Model: "omni-moderation-latest", Token: "sk-test",
		Timeout: 50 * time.Millisecond, BreakerFailures: 2, BreakerCooldown: time.Minute, CacheTTL: 30 * time.Second},
		srv.srv.Client(), clock, reg)
	if err != nil {
		t.Fatal(err)
	}
	const open = FailOpen
	cached := func(v ModerationVerdict) ModerationVerdict { v.Cached = true; return v }
	ctx := context.Background()
	steps := []struct {
		name     string
		mode     string
		advance  time.Duration
		text     string
		want     ModerationVerdict
		sent     bool
		breaker  float64
		opens    float64
		resultOf string // the calls_total label the step counts under; "" for a cache hit
	}{
		{"flagged", "ok", 0, "how do I kill a process of mine", flaggedVerdict(open), true, 0, 0, "ok"},
		{"not flagged", "ok", 0, "what is the capital of France?", cleanVerdict(open), true, 0, 0, "ok"},
		{"same text again: cached, no call", "500", 0, "how do I kill a process of mine", cached(flaggedVerdict(open)), false, 0, 0, ""},
		{"timeout", "hang", 0, "a", downVerdict(open, "timeout"), true, 0, 0, "timeout"},
		{"second failure opens the breaker", "500", 0, "b", downVerdict(open, "status"), true, 1, 1, "status"},
		{"open breaker sends nothing", "ok", 0, "c", downVerdict(open, "circuit_open"), false, 1, 1, "circuit_open"},
		{"cache still answers while open", "ok", 0, "what is the capital of France?", cached(cleanVerdict(open)), false, 1, 1, ""},
		{"failed trial (malformed JSON) opens it again", "bad", time.Minute, "d", downVerdict(open, "bad_response"), true, 1, 2, "bad_response"},
		{"open again", "ok", 0, "e", downVerdict(open, "circuit_open"), false, 1, 2, "circuit_open"},
		{"successful trial closes it", "ok", time.Minute, "kill", flaggedVerdict(open), true, 0, 2, "ok"},
		{"expired cache entry: asked again", "ok", 31 * time.Second, "what is the capital of France?", cleanVerdict(open), true, 0, 2, "ok"},
		{"a result without flagged is a bad answer", "noflag", 0, "f", downVerdict(open, "bad_response"), true, 0, 2, "bad_response"},
	}
	for _, s := range steps {
		srv.mode.Store(s.mode)
		clock.Advance(s.advance)
		before := srv.calls.Load()
		hitsBefore := testutil.ToFloat64(m.metrics.cacheHits)
		var countBefore float64
		if s.resultOf != "" {
			countBefore = testutil.ToFloat64(m.metrics.calls.WithLabelValues(s.resultOf))
		}
		if got := m.Moderate(ctx, s.text); !reflect.DeepEqual(got, s.want) {
			t.Errorf("%s: Moderate = %+v, want %+v", s.name, got, s.want)
		}
		if sent := srv.calls.Load() > before; sent != s.sent {
			t.Errorf("%s: call sent = %v, want %v", s.name, sent, s.sent)
		}
		if got := testutil.ToFloat64(m.metrics.breakerOpen); got != s.breaker {
			t.Errorf("%s: breaker_open = %v, want %v", s.name, got, s.breaker)
		}
		if got := testutil.ToFloat64(m.metrics.breakerOpens); got != s.opens {
			t.Errorf("%s: breaker_opens_total = %v, want %v", s.name, got, s.opens)
		}
		if s.resultOf == "" {
			if got := testutil.ToFloat64(m.metrics.cacheHits) - hitsBefore; got != 1 {
				t.Errorf("%s: cache_hits_total went up by %v, want 1", s.name, got)
			}
		} else if got := testutil.ToFloat64(m.metrics.calls.WithLabelValues(s.resultOf)) - countBefore; got != 1 {
			t.Errorf("%s: calls_total{result=%q} went up by %v, want 1", s.name, s.resultOf, got)
		}
	}
	srv.mu.Lock()
	for i, a := range srv.auth {
		if a != "Bearer sk-test" || srv.models[i] != "omni-moderation-latest" {
			t.Errorf("call %d: Authorization %q, model %q; want the bearer token and the model", i, a, srv.models[i])
		}
	}
	srv.mu.Unlock()
	if n, err := testutil.GatherAndCount(reg, "bulwark_moderation_calls_total", "bulwark_moderation_call_seconds",
		"bulwark_moderation_breaker_open", "bulwark_moderation_breaker_opens_total", "bulwark_moderation_cache_hits_total"); err != nil || n != 12 {
		t.Errorf("registered series = %d (%v), want 12 (eight results, histogram, gauge, two counters)", n, err)
	}
}

// Fail-closed is carried in every verdict, available or not, so that the
// policy can deny when none came back.
func TestModerateFailureMode(t *testing.T) {
	t.Parallel()
	srv := newModerationServer(t)
	m, err := NewModerator(ModerationConfig{URL: srv.srv.URL, Timeout: 50 * time.Millisecond, FailClosed: true}, srv.srv.Client(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Moderate(context.Background(), "kill"); !reflect.DeepEqual(got, flaggedVerdict(FailClosed)) {
		t.Errorf("verdict = %+v, want flagged, fail_closed", got)
	}
	for _, mode := range []string{"bad", "500", "hang"} {
		srv.mode.Store(mode)
		got := m.Moderate(context.Background(), "new text "+mode)
		if got.Available || got.Flagged || got.FailureMode != FailClosed || got.Error == "" {
			t.Errorf("%s: verdict = %+v, want unavailable with an error, fail_closed", mode, got)
		}
	}
}

// Text longer than one input goes as several inputs of one call, cut at
// character boundaries: the flagged part at the end is seen, and nothing
// is lost or repeated. Past MaxInputs there is no call and no verdict.
func TestModerateLongText(t *testing.T) {
	t.Parallel()
	srv := newModerationServer(t)
	m, err := NewModerator(ModerationConfig{URL: srv.srv.URL, Timeout: time.Second, MaxInputBytes: 10, MaxInputs: 4, CacheSize: -1},
		srv.srv.Client(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	text := "ééééé" + "aaaa" + "kill" // 10 + 4 + 4 bytes: "ééééé" fills the first input exactly
	if got := m.Moderate(context.Background(), text); !got.Flagged || !got.Available {
		t.Errorf("long text = %+v, want flagged", got)
	}
	srv.mu.Lock()
	got := srv.inputs[len(srv.inputs)-1]
	srv.mu.Unlock()
	if want := []string{"ééééé", "aaaakill"}; !reflect.DeepEqual(got, want) {
		t.Errorf("inputs sent = %q, want %q", got, want)
	}
	if got := splitInputs("aéb", 2); !reflect.DeepEqual(got, []string{"a", "é", "b"}) {
		t.Errorf("splitInputs cut inside a character: %q", got)
	}
	before := srv.calls.Load()
	if got := m.Moderate(context.Background(), strings.Repeat("a", 41)); got.Available || got.Error != "too_large" {
		t.Errorf("too long = %+v, want unavailable, too_large", got)
	}
	if srv.calls.Load() != before {
		t.Error("too long text was sent")
	}
	// CacheSize -1: nothing cached, the same text is asked again.
	before = srv.calls.Load()
	m.Moderate(context.Background(), text)
	if srv.calls.Load() != before+1 {
		t.Error("with caching off, the same text was not asked again")
	}
}

// A caller that goes away mid-call says nothing about the model: it must
// not open the breaker, and its (absent) verdict is not cached.
func TestModerateCanceledCallerIsNoFailure(t *testing.T) {
	t.Parallel()
	srv := newModerationServer(t)
	srv.mode.Store("hang")
	m, err := NewModerator(ModerationConfig{URL: srv.srv.URL, Timeout: time.Minute, BreakerFailures: 1}, srv.srv.Client(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for srv.calls.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if got := m.Moderate(ctx, "kill"); got.Error != "canceled" {
		t.Fatalf("cancelled call = %+v, want canceled", got)
	}
	srv.mode.Store("ok")
	if got := m.Moderate(context.Background(), "kill"); !got.Available || got.Cached {
		t.Errorf("after a cancelled call = %+v, want a fresh verdict (breaker closed, nothing cached)", got)
	}
}

func TestVerdictCacheBounded(t *testing.T) {
	t.Parallel()
	c := newVerdictCache(3)
	now := time.Unix(0, 0)
	key := func(i byte) [32]byte { return [32]byte{i} }
	for i := range byte(10) {
		c.put(key(i), ModerationVerdict{Flagged: i%2 == 0}, now.Add(time.Minute))
		if c.len() > 3 {
			t.Fatalf("after %d puts the cache holds %d, want at most 3", i+1, c.len())
		}
	}
	for i := range byte(10) {
		_, ok := c.get(key(i), now)
		if want := i >= 7; ok != want {
			t.Errorf("key %d held = %v, want %v (the three newest)", i, ok, want)
		}
	}
	c.put(key(9), ModerationVerdict{}, now.Add(time.Minute)) // an update keeps its place
	if c.len() != 3 {
		t.Errorf("update changed the size to %d", c.len())
	}
	if _, ok := c.get(key(9), now.Add(time.Minute)); ok {
		t.Error("an entry is returned at its expiry")
	}
}

func TestDecodeModeration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		n    int
		want ModerationVerdict
		err  bool
	}{
		{"flagged", `{"results":[{"flagged":true,"categories":{"violence":true,"hate":false,"sexual":null},"category_scores":{"violence":0.9,"hate":0.1}}]}`, 1,
			ModerationVerdict{Available: true, Flagged: true, Categories: []string{"violence"}, Scores: map[string]float64{"violence": 0.9, "hate": 0.1}}, false},
		{"two inputs merged", `{"results":[{"flagged":false,"categories":{"hate":true},"category_scores":{"hate":0.3}},{"flagged":true,"categories":{"violence":true,"hate":true},"category_scores":{"hate":0.2,"violence":0.8}}]}`, 2,
			ModerationVerdict{Available: true, Flagged: true, Categories: []string{"hate", "violence"}, Scores: map[string]float64{"violence": 0.8, "hate": 0.3}}, false},
		{"minimal", `{"results":[{"flagged":false}]}`, 1, ModerationVerdict{Available: true, Categories: []string{}, Scores: map[string]float64{}}, false},
		{"no results", `{"results":[]}`, 1, ModerationVerdict{}, true},
		{"too many results", `{"results":[{"flagged":false},{"flagged":false}]}`, 1, ModerationVerdict{}, true},
		{"no flagged", `{"results":[{"categories":{}}]}`, 1, ModerationVerdict{}, true},
		{"flagged not a bool", `{"results":[{"flagged":"yes"}]}`, 1, ModerationVerdict{}, true},
		{"score above 1", `{"results":[{"flagged":false,"category_scores":{"x":1.5}}]}`, 1, ModerationVerdict{}, true},
		{"negative score", `{"results":[{"flagged":false,"category_scores":{"x":-0.1}}]}`, 1, ModerationVerdict{}, true},
		{"long name", `{"results":[{"flagged":true,"categories":{"` + strings.Repeat("x", 65) + `":true}}]}`, 1, ModerationVerdict{}, true},
		{"not JSON", `<html>bad gateway</html>`, 1, ModerationVerdict{}, true},
		{"an error object", `{"error":{"message":"invalid key"}}`, 1, ModerationVerdict{}, true},
		{"truncated", `{"results":[{"flagged":true`, 1, ModerationVerdict{}, true},
	}
	for _, tt := range tests {
		got, err := DecodeModeration([]byte(tt.body), tt.n)
		if (err != nil) != tt.err {
			t.Errorf("%s: err = %v, want error %v", tt.name, err, tt.err)
			continue
		}
		if !tt.err && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestModerationConfig(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		cfg  ModerationConfig
		ok   bool
	}{
		{"valid", ModerationConfig{URL: "https://api.openai.com/v1/moderations"}, true},
		{"no url", ModerationConfig{}, false},
		{"bad scheme", ModerationConfig{URL: "file:///etc/passwd"}, false},
		{"negative ttl", ModerationConfig{URL: "http://x/", CacheTTL: -time.Second}, false},
	} {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
	m, err := NewModerator(ModerationConfig{URL: "http://127.0.0.1:1/", Timeout: 50 * time.Millisecond}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Moderate(context.Background(), "x"); got.Available || got.Error != "transport" {
		t.Errorf("nothing listening = %+v, want unavailable, transport", got)
	}
}

// FuzzDecodeModeration: whatever a moderation server answers, the decoder
// returns an error or a verdict within the bounds the policy input relies
// on, and never panics.
func FuzzDecodeModeration(f *testing.F) {
	f.Add([]byte(`{"results":[{"flagged":true,"categories":{"violence":true},"category_scores":{"violence":0.9}}]}`), uint8(1))
	f.Add([]byte(`{"results":[{"flagged":false},{"flagged":true,"categories":{"a":true,"b":null}}]}`), uint8(2))
	f.Add([]byte(`{"results":[{"flagged":true,"category_scores":{"x":1e308}}]}`), uint8(1))
	f.Add([]byte(`{"error":{"message":"x"}}`), uint8(1))
	f.Add([]byte(`[`), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, n uint8) {
		v, err := DecodeModeration(b, int(n))
		if err != nil {
			return
		}
		if !v.Available || v.Categories == nil || v.Scores == nil {
			t.Fatalf("verdict without its fields: %+v", v)
		}
		if len(v.Categories) > maxModerationCategories || len(v.Scores) > maxModerationCategories {
			t.Fatalf("too many categories: %d, %d", len(v.Categories), len(v.Scores))
		}
		for name, s := range v.Scores {
			if len(name) > maxModerationName || !(s >= 0 && s <= 1) {
				t.Fatalf("score %q = %v out of bounds", name, s)
			}
		}
		for _, c := range v.Categories {
			if len(c) > maxModerationName {
				t.Fatalf("category name %q too long", c)
			}
		}
	})
}

// BenchmarkModerateCacheHit is the cost of a verdict reused for a 4 KiB
// text (hash, lookup): what a repeated prompt costs instead of a call.
func BenchmarkModerateCacheHit(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"results":[{"flagged":false,"categories":{"violence":false},"category_scores":{"violence":0.01}}]}`))
	}))
	b.Cleanup(srv.Close)
	m, err := NewModerator(ModerationConfig{URL: srv.URL, Timeout: time.Second}, srv.Client(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	text := strings.Repeat("Please summarise the quarterly report for the board. ", 80)[:4096]
	ctx := context.Background()
	if v := m.Moderate(ctx, text); !v.Available {
		b.Fatal(v.Error)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if v := m.Moderate(ctx, text); !v.Cached {
			b.Fatal("not cached")
		}
	}
}
