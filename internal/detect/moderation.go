package detect

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// ModerationConfig configures the optional moderation model: an endpoint
// speaking the OpenAI moderations API (POST {"input": ..., "model": ...},
// answer {"results": [{"flagged", "categories", "category_scores"}]}), so
// OpenAI's own or a self-hosted model (Llama Guard behind an
// OpenAI-compatible server) plugs in. Its verdict is a second opinion
// beside the local detectors: input.signals.moderation.
type ModerationConfig struct {
	// URL is the http or https endpoint, e.g.
	// https://api.openai.com/v1/moderations.
	URL string
	// Model, when set, is sent as "model".
	Model string
	// Token, when set, is sent as a bearer token. Never logged.
	Token string
	// Timeout bounds one call; default 150ms. The caller's deadline applies
	// too, whichever is sooner.
	Timeout time.Duration
	// BreakerFailures consecutive failed calls open the circuit; default 5.
	BreakerFailures int
	// BreakerCooldown is how long an open circuit sends no call before one
	// trial call is let through; default 10s.
	BreakerCooldown time.Duration
	// CacheTTL is how long a verdict is reused for the same text (by its
	// SHA-256); default 1m. CacheSize bounds the verdicts kept (oldest
	// first out); default 10000. A negative CacheSize turns caching off.
	CacheTTL  time.Duration
	CacheSize int
	// MaxInputBytes is the most text sent as one input; longer text is sent
	// as several inputs of one call (the API takes an array), never cut
	// short. Default 32 KiB.
	MaxInputBytes int
	// MaxInputs bounds the inputs of one call: text longer than
	// MaxInputs × MaxInputBytes gets no verdict (error too_large), so a
	// policy under fail_closed refuses it. Default 32.
	MaxInputs int
	// FailClosed is carried in the verdict (failure_mode): the policy
	// denies when no verdict came back. Otherwise the decision goes on
	// without one.
	FailClosed bool
}

// Validate reports the first bad field. The URL and token are not echoed.
func (c ModerationConfig) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("detect: ModerationConfig.URL is not an http(s) URL")
	}
	if c.Timeout < 0 || c.BreakerCooldown < 0 || c.BreakerFailures < 0 || c.CacheTTL < 0 || c.MaxInputBytes < 0 || c.MaxInputs < 0 {
		return errors.New("detect: ModerationConfig durations and counts must not be negative")
	}
	return nil
}

// Failure modes of the moderation model (ModerationVerdict.FailureMode).
const (
	FailOpen   = "fail_open"
	FailClosed = "fail_closed"
)

// ModerationVerdict is input.signals.moderation. A failed call is a
// verdict too (Available false, the reason in Error): the policy decides
// what that means, by FailureMode.
type ModerationVerdict struct {
	// Available is false when no verdict came back.
	Available bool `json:"available"`
	// Flagged is the model's own verdict (any input flagged, when the text
	// went as several).
	Flagged bool `json:"flagged"`
	// Categories are the names of the categories the model flagged,
	// sorted; never nil.
	Categories []string `json:"categories"`
	// Scores are the models' category scores in [0, 1] (the highest over
	// the inputs); never nil. Shared with the cache: read only.
	Scores map[string]float64 `json:"scores"`
	// Error is why no verdict came back: timeout, status, bad_response,
	// transport, canceled, circuit_open or too_large.
	Error string `json:"error,omitempty"`
	// Cached: the verdict was reused for the same text, no call was made.
	Cached bool `json:"cached"`
	// FailureMode is fail_open or fail_closed, as configured.
	FailureMode string `json:"failure_mode"`
}

// moderationTooLarge: the text needs more inputs than MaxInputs.
const moderationTooLarge = "too_large"

// Bounds on what a moderation answer may carry into the policy input.
const (
	maxModerationCategories = 64
	maxModerationName       = 64
)

// Moderator asks the moderation model about text, with a deadline, a
// circuit breaker (see breaker) and a cache of recent verdicts by the
// text's SHA-256. It is safe for concurrent use.
type Moderator struct {
	cfg     ModerationConfig
	mode    string
	post    poster
	breaker *breaker
	cache   *verdictCache
	clock   Clock
	metrics *moderationMetrics
}

// NewModerator builds a Moderator. client and clock may be nil for the
// defaults; reg may be nil (no metrics registered, as in tests).
func NewModerator(cfg ModerationConfig, client *http.Client, clock Clock, reg prometheus.Registerer) (*Moderator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 150 * time.Millisecond
	}
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures = 5
	}
	if cfg.BreakerCooldown == 0 {
		cfg.BreakerCooldown = 10 * time.Second
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = time.Minute
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 10000
	}
	if cfg.MaxInputBytes == 0 {
		cfg.MaxInputBytes = 32 << 10
	}
	if cfg.MaxInputs == 0 {
		cfg.MaxInputs = 32
	}
	if client == nil {
		client = newHTTPClient()
	}
	if clock == nil {
		clock = systemClock{}
	}
	m, err := newModerationMetrics(reg)
	if err != nil {
		return nil, err
	}
	mode := FailOpen
	if cfg.FailClosed {
		mode = FailClosed
	}
	mod := &Moderator{cfg: cfg, mode: mode, clock: clock, metrics: m,
		post: poster{client: client, url: cfg.URL, timeout: cfg.Timeout, token: cfg.Token},
		breaker: &breaker{failuresToOpen: cfg.BreakerFailures, cooldown: cfg.BreakerCooldown, clock: clock,
			open: m.breakerOpen, opens: m.breakerOpens}}
	if cfg.CacheSize > 0 {
		mod.cache = newVerdictCache(cfg.CacheSize)
	}
	return mod, nil
}

// Moderate asks for a verdict on text. It never fails: a failure is a
// verdict with Available false, so the policy decides with a stated input.
func (m *Moderator) Moderate(ctx context.Context, text string) ModerationVerdict {
	var key [32]byte
	if m.cache != nil {
		key = sha256.Sum256([]byte(text))
		if v, ok := m.cache.get(key, m.clock.Now()); ok {
			m.metrics.cacheHits.Inc()
			v.Cached = true
			return v
		}
	}
	inputs := splitInputs(text, m.cfg.MaxInputBytes)
	if len(inputs) > m.cfg.MaxInputs {
		m.metrics.calls.WithLabelValues(moderationTooLarge).Inc()
		return m.unavailable(moderationTooLarge)
	}
	if !m.breaker.allow() {
		m.metrics.calls.WithLabelValues(remoteCircuitOpen).Inc()
		return m.unavailable(remoteCircuitOpen)
	}
	start := time.Now()
	v, reason := m.call(ctx, inputs)
	m.metrics.seconds.Observe(time.Since(start).Seconds())
	m.metrics.calls.WithLabelValues(reason).Inc()
	m.breaker.record(reason)
	if reason != remoteOK {
		return m.unavailable(reason)
	}
	v.FailureMode = m.mode
	if m.cache != nil {
		m.cache.put(key, v, m.clock.Now().Add(m.cfg.CacheTTL))
	}
	return v
}

func (m *Moderator) unavailable(reason string) ModerationVerdict {
	return ModerationVerdict{Error: reason, Categories: []string{}, Scores: map[string]float64{}, FailureMode: m.mode}
}

// call sends the inputs: one string, or an array when the text was split.
func (m *Moderator) call(ctx context.Context, inputs []string) (ModerationVerdict, string) {
	req := struct {
		Input any    `json:"input"`
		Model string `json:"model,omitempty"`
	}{Input: inputs, Model: m.cfg.Model}
	if len(inputs) == 1 {
		req.Input = inputs[0]
	}
	var v ModerationVerdict
	reason := m.post.post(ctx, req, func(body io.Reader) error {
		b, err := io.ReadAll(body)
		if err != nil {
			return err
		}
		v, err = DecodeModeration(b, len(inputs))
		return err
	})
	return v, reason
}

// splitInputs cuts text into pieces of at most max bytes, at UTF-8
// character boundaries.
func splitInputs(text string, max int) []string {
	if len(text) <= max {
		return []string{text}
	}
	var out []string
	for len(text) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		if cut == 0 {
			cut = max // not UTF-8: cut anywhere
		}
		out = append(out, text[:cut])
		text = text[cut:]
	}
	if text != "" {
		out = append(out, text)
	}
	return out
}

// DecodeModeration reads an OpenAI moderations answer that must hold
// exactly n results into one verdict: flagged if any result is, the
// categories any result flagged, each category's highest score. An answer
// without results, with another number of them, without "flagged", with a
// score that is not in [0, 1], or with too many or too long category names
// is an error: never a verdict of "not flagged" made up from a bad answer.
func DecodeModeration(b []byte, n int) (ModerationVerdict, error) {
	var ans struct {
		Results []struct {
			Flagged        *bool              `json:"flagged"`
			Categories     map[string]*bool   `json:"categories"`
			CategoryScores map[string]float64 `json:"category_scores"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		return ModerationVerdict{}, fmt.Errorf("moderation answer: %w", err)
	}
	if len(ans.Results) != n {
		return ModerationVerdict{}, fmt.Errorf("moderation answer: %d results for %d inputs", len(ans.Results), n)
	}
	v := ModerationVerdict{Available: true, Categories: []string{}, Scores: map[string]float64{}}
	for _, r := range ans.Results {
		if r.Flagged == nil {
			return ModerationVerdict{}, errors.New("moderation answer: a result has no flagged")
		}
		v.Flagged = v.Flagged || *r.Flagged
		if len(r.Categories) > maxModerationCategories || len(r.CategoryScores) > maxModerationCategories {
			return ModerationVerdict{}, errors.New("moderation answer: too many categories")
		}
		for name, on := range r.Categories {
			if len(name) > maxModerationName {
				return ModerationVerdict{}, errors.New("moderation answer: category name too long")
			}
			if on != nil && *on && !slices.Contains(v.Categories, name) {
				v.Categories = append(v.Categories, name)
			}
		}
		for name, s := range r.CategoryScores {
			if len(name) > maxModerationName {
				return ModerationVerdict{}, errors.New("moderation answer: category name too long")
			}
			if math.IsNaN(s) || s < 0 || s > 1 {
				return ModerationVerdict{}, fmt.Errorf("moderation answer: score %v of a category is not in [0, 1]", s)
			}
			v.Scores[name] = max(v.Scores[name], s)
		}
		if len(v.Scores) > maxModerationCategories || len(v.Categories) > maxModerationCategories {
			return ModerationVerdict{}, errors.New("moderation answer: too many categories")
		}
	}
	slices.Sort(v.Categories)
	return v, nil
}

// verdictCache keeps recent verdicts by text hash, at most size of them:
// when full, the oldest inserted goes. Expired entries are never returned.
type verdictCache struct {
	mu   sync.Mutex
	m    map[[32]byte]cacheEntry
	ring [][32]byte // keys in insertion order, ring[next] the oldest
	used []bool
	next int
}

type cacheEntry struct {
	v       ModerationVerdict
	expires time.Time
}

func newVerdictCache(size int) *verdictCache {
	return &verdictCache{m: make(map[[32]byte]cacheEntry, min(size, 1024)), ring: make([][32]byte, size), used: make([]bool, size)}
}

func (c *verdictCache) get(k [32]byte, now time.Time) (ModerationVerdict, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || !now.Before(e.expires) {
		return ModerationVerdict{}, false
	}
	return e.v, true
}

func (c *verdictCache) put(k [32]byte, v ModerationVerdict, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; ok {
		c.m[k] = cacheEntry{v: v, expires: expires} // keeps its place in the ring
		return
	}
	if c.used[c.next] {
		delete(c.m, c.ring[c.next])
	}
	c.ring[c.next], c.used[c.next] = k, true
	c.next = (c.next + 1) % len(c.ring)
	c.m[k] = cacheEntry{v: v, expires: expires}
}

// len is the number of verdicts held (expired ones included).
func (c *verdictCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// moderationMetrics are the moderation model's calls, their latency, its
// breaker and its cache.
type moderationMetrics struct {
	calls        *prometheus.CounterVec
	seconds      prometheus.Histogram
	breakerOpen  prometheus.Gauge
	breakerOpens prometheus.Counter
	cacheHits    prometheus.Counter
}

func newModerationMetrics(reg prometheus.Registerer) (*moderationMetrics, error) {
	m := &moderationMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_moderation_calls_total",
			Help: "Moderation verdicts asked for (cache hits excluded), by result: ok, or why none came " +
				"(timeout, status, bad_response, transport, canceled; circuit_open: not sent while the breaker is open; " +
				"too_large: more text than max inputs allow).",
		}, []string{"result"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bulwark_moderation_call_seconds",
			Help:    "Duration of the moderation calls sent, whatever their result.",
			Buckets: []float64{.005, .01, .025, .05, .1, .15, .25, .5, 1, 2.5},
		}),
		breakerOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bulwark_moderation_breaker_open",
			Help: "1 while the moderation model's circuit breaker is open (or half-open, on trial), 0 when closed.",
		}),
		breakerOpens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_moderation_breaker_opens_total",
			Help: "Times the moderation model's circuit breaker opened (a failed trial opens it again).",
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_moderation_cache_hits_total",
			Help: "Moderation verdicts reused for the same text within moderation_cache_ttl (no call made).",
		}),
	}
	for _, r := range slices.Concat(remoteResults, []string{moderationTooLarge}) {
		m.calls.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.seconds, m.breakerOpen, m.breakerOpens, m.cacheHits} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("detect: register moderation metrics: %w", err)
			}
		}
	}
	return m, nil
}
