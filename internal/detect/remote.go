package detect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RemoteConfig configures the optional remote classifier: an HTTP endpoint,
// for operators who run an ML guard model next to Bulwark, that takes
// {"text": "..."} and answers {"score": 0..1, "label": "..."} (label
// optional). Its verdict joins the local detectors' signals as
// input.signals.remote_classifier; it never replaces them.
type RemoteConfig struct {
	// URL is the http or https endpoint that receives POST requests.
	URL string
	// Timeout bounds one call; default 150ms. The caller's context deadline
	// applies too, whichever is sooner.
	Timeout time.Duration
	// Threshold is the score at or above which the verdict is detected;
	// default 0.5.
	Threshold float64
	// BreakerFailures consecutive failed calls open the circuit; default 5.
	BreakerFailures int
	// BreakerCooldown is how long an open circuit sends no call before one
	// trial call is let through; default 10s.
	BreakerCooldown time.Duration
	// MaxBytes truncates the text sent; default 64 KiB.
	MaxBytes int
}

// Validate reports the first bad field. The URL is not echoed: it may carry
// a token.
func (c RemoteConfig) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("detect: RemoteConfig.URL is not an http(s) URL")
	}
	if c.Threshold < 0 || c.Threshold > 1 || math.IsNaN(c.Threshold) {
		return fmt.Errorf("detect: RemoteConfig.Threshold %v is not in [0, 1]", c.Threshold)
	}
	if c.Timeout < 0 || c.BreakerCooldown < 0 || c.BreakerFailures < 0 || c.MaxBytes < 0 {
		return errors.New("detect: RemoteConfig durations and counts must not be negative")
	}
	return nil
}

// RemoteVerdict is input.signals.remote_classifier. A failed call is a
// verdict too (Available false, with the reason in Error): the decision goes
// on with the local detectors' signals, and the policy says what an
// unavailable classifier means on each route.
type RemoteVerdict struct {
	// Available is false when no verdict came back: Score and Detected are
	// then zero.
	Available bool `json:"available"`
	// Score is the classifier's score in [0, 1].
	Score float64 `json:"score"`
	// Detected is Score >= the configured threshold.
	Detected bool `json:"detected"`
	// Label is the classifier's own label, when it sends one.
	Label string `json:"label"`
	// Error is why no verdict came back: timeout, status, bad_response,
	// transport, canceled (the caller went away) or circuit_open (no call
	// was made while the breaker is open).
	Error string `json:"error,omitempty"`
}

// maxRemoteLabel bounds the label a classifier may send.
const maxRemoteLabel = 64

// Remote calls the remote classifier with a deadline and a circuit breaker
// (see breaker): a caller that goes away mid-call neither counts as a
// failure nor as a success. It is safe for concurrent use.
type Remote struct {
	cfg     RemoteConfig
	post    poster
	breaker *breaker
	metrics *remoteMetrics
}

// NewRemote builds a Remote. client and clock may be nil for the defaults;
// reg may be nil (no metrics registered, as in tests).
func NewRemote(cfg RemoteConfig, client *http.Client, clock Clock, reg prometheus.Registerer) (*Remote, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 150 * time.Millisecond
	}
	if cfg.Threshold == 0 {
		cfg.Threshold = 0.5
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
		client = newHTTPClient()
	}
	if clock == nil {
		clock = systemClock{}
	}
	m, err := newRemoteMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Remote{cfg: cfg, post: poster{client: client, url: cfg.URL, timeout: cfg.Timeout}, metrics: m,
		breaker: &breaker{failuresToOpen: cfg.BreakerFailures, cooldown: cfg.BreakerCooldown, clock: clock,
			open: m.breakerOpen, opens: m.breakerOpens}}, nil
}

// Classify scores text remotely. It never fails: a failure is a verdict
// with Available false, so that the policy decides with a stated input.
func (r *Remote) Classify(ctx context.Context, text string) RemoteVerdict {
	if !r.breaker.allow() {
		r.metrics.calls.WithLabelValues(remoteCircuitOpen).Inc()
		return RemoteVerdict{Error: remoteCircuitOpen}
	}
	score, label, reason := r.call(ctx, text)
	r.metrics.calls.WithLabelValues(reason).Inc()
	r.breaker.record(reason)
	if reason != remoteOK {
		return RemoteVerdict{Error: reason}
	}
	return RemoteVerdict{Available: true, Score: score, Detected: score >= r.cfg.Threshold, Label: label}
}

func (r *Remote) call(ctx context.Context, text string) (score float64, label, reason string) {
	if len(text) > r.cfg.MaxBytes {
		text = text[:r.cfg.MaxBytes]
	}
	reason = r.post.post(ctx, struct {
		Text string `json:"text"`
	}{text}, func(body io.Reader) error {
		var out struct {
			Score *float64 `json:"score"`
			Label string   `json:"label"`
		}
		if err := json.NewDecoder(body).Decode(&out); err != nil {
			return err
		}
		if out.Score == nil || math.IsNaN(*out.Score) || *out.Score < 0 || *out.Score > 1 || len(out.Label) > maxRemoteLabel {
			return errors.New("score missing or out of [0, 1], or label too long")
		}
		score, label = *out.Score, out.Label
		return nil
	})
	if reason != remoteOK {
		return 0, "", reason
	}
	return score, label, reason
}

// RemoteScanner runs the local detectors and the remote classifier side by
// side on the same text: a decision waits for the slower of the two, and
// the classifier's verdict lands in Result.Remote.
type RemoteScanner struct {
	local  localScanner
	remote *Remote
}

// localScanner is the local detectors as RemoteScanner needs them.
type localScanner interface {
	ScanContext(ctx context.Context, text string) (Result, error)
}

var _ localScanner = (*Scanner)(nil)

// WithRemote returns a scanner whose ScanContext is local's plus remote's
// verdict.
func WithRemote(local *Scanner, remote *Remote) *RemoteScanner {
	return &RemoteScanner{local: local, remote: remote}
}

// ScanContext is Scanner.ScanContext with the remote classifier's verdict
// in Result.Remote. The classifier is asked concurrently; its failures
// never fail the scan (see RemoteVerdict).
func (s *RemoteScanner) ScanContext(ctx context.Context, text string) (Result, error) {
	verdict := make(chan RemoteVerdict, 1)
	go func() { verdict <- s.remote.Classify(ctx, text) }()
	res, err := s.local.ScanContext(ctx, text)
	v := <-verdict // bounded by the classifier's timeout
	if err != nil {
		return res, err
	}
	res.Remote = &v
	return res, nil
}

// remoteMetrics are the classifier's calls and its breaker.
type remoteMetrics struct {
	calls        *prometheus.CounterVec
	breakerOpen  prometheus.Gauge
	breakerOpens prometheus.Counter
}

func newRemoteMetrics(reg prometheus.Registerer) (*remoteMetrics, error) {
	m := &remoteMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_remote_classifier_calls_total",
			Help: "Remote classifier verdicts asked for, by result: ok, or why none came " +
				"(timeout, status, bad_response, transport, canceled; circuit_open: not sent while the breaker is open).",
		}, []string{"result"}),
		breakerOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bulwark_remote_classifier_breaker_open",
			Help: "1 while the remote classifier's circuit breaker is open (or half-open, on trial), 0 when closed.",
		}),
		breakerOpens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_remote_classifier_breaker_opens_total",
			Help: "Times the remote classifier's circuit breaker opened (a failed trial opens it again).",
		}),
	}
	for _, r := range remoteResults {
		m.calls.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.breakerOpen, m.breakerOpens} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("detect: register remote classifier metrics: %w", err)
			}
		}
	}
	return m, nil
}
