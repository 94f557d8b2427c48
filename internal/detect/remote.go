package detect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// FailureMode says what a remote classifier's signal is when the call fails
// (timeout, error status, open circuit).
type FailureMode string

const (
	// FailClosed reports score 1: the policy sees the text as flagged.
	FailClosed FailureMode = "fail_closed"
	// FailOpen reports score 0: the policy sees the text as clean.
	FailOpen FailureMode = "fail_open"
)

// RemoteConfig configures one optional remote classifier: an HTTP endpoint
// taking {"text": "..."} and answering {"score": 0..1}, for operators who
// run an ML guard model next to Bulwark on high-risk routes.
type RemoteConfig struct {
	// Name keys the signal: signals.remote.<name>.
	Name string
	// URL is the http or https endpoint that receives POST requests.
	URL string
	// Timeout bounds one call; default 200ms. The caller's context deadline
	// applies too, whichever is sooner.
	Timeout time.Duration
	// FailureMode is applied when the call fails; default FailClosed.
	FailureMode FailureMode
	// BreakerFailures consecutive failures open the circuit; default 5.
	BreakerFailures int
	// BreakerCooldown is how long an open circuit rejects calls before one
	// trial call is let through; default 10s.
	BreakerCooldown time.Duration
	// MaxBytes truncates the text sent; default 64 KiB.
	MaxBytes int
}

// Validate reports the first bad field.
func (c RemoteConfig) Validate() error {
	if c.Name == "" {
		return errors.New("detect: RemoteConfig.Name is empty")
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("detect: RemoteConfig.URL %q is not an http(s) URL", c.URL)
	}
	if c.FailureMode != "" && c.FailureMode != FailClosed && c.FailureMode != FailOpen {
		return fmt.Errorf("detect: RemoteConfig.FailureMode %q: want %s or %s", c.FailureMode, FailClosed, FailOpen)
	}
	if c.Timeout < 0 || c.BreakerCooldown < 0 || c.BreakerFailures < 0 || c.MaxBytes < 0 {
		return errors.New("detect: RemoteConfig durations and counts must not be negative")
	}
	return nil
}

// RemoteSignal is signals.remote.<name>.
type RemoteSignal struct {
	// Score is the classifier's score, or the failure mode's score when OK is false.
	Score float64 `json:"score"`
	// OK is false when the call failed and Score comes from the failure mode.
	OK bool `json:"ok"`
	// Error is a short machine-readable reason when OK is false:
	// timeout, circuit_open, status, bad_response, transport.
	Error string `json:"error,omitempty"`
}

// Clock is the time source of the circuit breaker.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Remote calls a remote classifier with a deadline and a circuit breaker.
// It is safe for concurrent use.
type Remote struct {
	cfg    RemoteConfig
	client *http.Client
	clock  Clock

	mu        sync.Mutex
	failures  int
	openUntil time.Time
	trial     bool // a half-open trial call is in flight
}

// NewRemote builds a Remote. client and clock may be nil for the defaults.
func NewRemote(cfg RemoteConfig, client *http.Client, clock Clock) (*Remote, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 200 * time.Millisecond
	}
	if cfg.FailureMode == "" {
		cfg.FailureMode = FailClosed
	}
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures = 5
	}
	if cfg.BreakerCooldown == 0 {
		cfg.BreakerCooldown = 10 * time.Second
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 64 << 10
	}
	if client == nil {
		client = &http.Client{}
	}
	if clock == nil {
		clock = systemClock{}
	}
	return &Remote{cfg: cfg, client: client, clock: clock}, nil
}

// Name is the configured signal name.
func (r *Remote) Name() string { return r.cfg.Name }

// Classify scores text remotely. It never returns an error: a failure
// becomes a signal with OK false and the failure mode's score, so that the
// policy decides with a stated input.
func (r *Remote) Classify(ctx context.Context, text string) RemoteSignal {
	if !r.allow() {
		return r.failed("circuit_open")
	}
	score, reason := r.call(ctx, text)
	r.record(reason == "")
	if reason != "" {
		return r.failed(reason)
	}
	return RemoteSignal{Score: score, OK: true}
}

func (r *Remote) failed(reason string) RemoteSignal {
	s := RemoteSignal{Error: reason}
	if r.cfg.FailureMode == FailClosed {
		s.Score = 1
	}
	return s
}

// allow reports whether a call may go out: the circuit is closed, or it is
// half-open and no other trial is in flight.
func (r *Remote) allow() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures < r.cfg.BreakerFailures {
		return true
	}
	if r.clock.Now().Before(r.openUntil) || r.trial {
		return false
	}
	r.trial = true
	return true
}

func (r *Remote) record(ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trial = false
	if ok {
		r.failures = 0
		return
	}
	r.failures++
	if r.failures >= r.cfg.BreakerFailures {
		r.openUntil = r.clock.Now().Add(r.cfg.BreakerCooldown)
	}
}

func (r *Remote) call(ctx context.Context, text string) (float64, string) {
	if len(text) > r.cfg.MaxBytes {
		text = text[:r.cfg.MaxBytes]
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	body, err := json.Marshal(struct {
		Text string `json:"text"`
	}{text})
	if err != nil {
		return 0, "bad_request"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, "bad_request"
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return 0, "timeout"
		}
		return 0, "transport"
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096)) // drain so the connection is reused
		return 0, "status"
	}
	var out struct {
		Score *float64 `json:"score"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return 0, "timeout"
		}
		return 0, "bad_response"
	}
	if out.Score == nil || math.IsNaN(*out.Score) || *out.Score < 0 || *out.Score > 1 {
		return 0, "bad_response"
	}
	return *out.Score, ""
}
