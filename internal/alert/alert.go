// Package alert notifies operators of security events as they happen: a
// burst of prompt-injection denials from one principal, a model leaking its
// planted canary (or any decision the policy tags with an "alert" audit
// tag), and the rate limiter falling back from Redis. Events are derived
// from the audit stream (Tap wraps the audit writer), so whatever is alerted
// on is also on the tamper-evident trail.
//
// Alerts go to a webhook as JSON POSTs, or, without a URL, to the log at
// warn level. Sending never blocks a decision: alerts wait in a bounded
// queue for one sender goroutine, and what does not fit is dropped and
// counted. Alerts are rate limited themselves: one per event and subject per
// MinInterval (the next one carries how many were suppressed) and at most
// MaxPerMinute overall, so an attack cannot turn Bulwark into a pager flood.
package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwark-ai/bulwark/internal/audit"
)

// Events Bulwark raises itself. A policy raises others by tagging a
// decision's audit record with {"alert": "<event>"}.
const (
	// EventInjectionBurst: InjectionBurst prompt_injection denials of one
	// principal within InjectionWindow.
	EventInjectionBurst = "injection_burst"
	// EventCanaryLeak: a model answer repeated the canary planted in its
	// system prompt (the default policy tags these decisions).
	EventCanaryLeak = "canary_leak"
	// EventLimiterFallback: Redis stopped answering and the rate limiter's
	// failure mode decides (fail_open: in-process share; fail_closed: 503).
	EventLimiterFallback = "limiter_fallback"
	// EventQualityJump: a model's refusal or error rate jumped over its
	// recent baseline (internal/quality's Monitor).
	EventQualityJump = "quality_jump"
	// EventAbuseSuspected: the default policy refused a principal that
	// keeps attacking (abuse.rego tags the decision).
	EventAbuseSuspected = "abuse_suspected"
	// EventBudgetThreshold: a tenant's spending crossed a threshold of its
	// budget (critical at 100% and over).
	EventBudgetThreshold = "budget_threshold"
)

// The results counted in bulwark_alerts_total.
const (
	ResultSent       = "sent"       // the webhook answered 2xx
	ResultFailed     = "failed"     // the webhook failed or answered non-2xx
	ResultLogged     = "logged"     // no webhook: written to the log
	ResultSuppressed = "suppressed" // rate limited (MinInterval or MaxPerMinute)
	ResultDropped    = "dropped"    // the queue was full
)

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Config configures a Notifier. The zero value logs alerts with the
// defaults below.
type Config struct {
	// WebhookURL receives each alert as a JSON POST. It may carry a token
	// (as Slack's do): it is never logged. Empty: alerts are logged at warn.
	WebhookURL string
	// Timeout bounds one POST (default 5s).
	Timeout time.Duration
	// MinInterval is the least time between two alerts with the same event
	// and subject; the ones in between are suppressed, counted, and
	// reported by the next alert sent (default 1m).
	MinInterval time.Duration
	// MaxPerMinute caps alerts of all kinds (default 30).
	MaxPerMinute int
	// InjectionBurst is how many prompt_injection denials of one principal
	// within InjectionWindow raise EventInjectionBurst (default 5; negative
	// disables it).
	InjectionBurst int
	// InjectionWindow is the burst's window (default 1m).
	InjectionWindow time.Duration
	// Queue bounds alerts waiting to be sent (default 256).
	Queue int
	// Client sends the webhook requests (default: a client with Timeout).
	Client *http.Client
	// Clock is the source of time (default: the system clock).
	Clock Clock
	// PrincipalName, when set, names principals in alerts (the webhook
	// payload, the log line and summaries): serve sets it to the audit
	// keyset's keyed pseudonym under --pseudonymize-principals, so an alert
	// correlates with decision logs and spans without carrying the id.
	// Nil: alerts carry principal ids.
	PrincipalName func(id string) string
}

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.MinInterval == 0 {
		c.MinInterval = time.Minute
	}
	if c.MaxPerMinute == 0 {
		c.MaxPerMinute = 30
	}
	if c.InjectionBurst == 0 {
		c.InjectionBurst = 5
	}
	if c.InjectionWindow <= 0 {
		c.InjectionWindow = time.Minute
	}
	if c.Queue <= 0 {
		c.Queue = 256
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: c.Timeout}
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	return c
}

// Validate names the first invalid field.
func (c Config) Validate() error {
	if c.WebhookURL != "" {
		u, err := url.Parse(c.WebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errors.New("alert: WebhookURL must be an http(s) URL")
		}
	}
	switch {
	case c.Timeout < 0:
		return errors.New("alert: Timeout must not be negative")
	case c.MinInterval < 0:
		return errors.New("alert: MinInterval must not be negative")
	case c.MaxPerMinute < 0:
		return errors.New("alert: MaxPerMinute must not be negative")
	case c.InjectionWindow < 0:
		return errors.New("alert: InjectionWindow must not be negative")
	case c.Queue < 0:
		return errors.New("alert: Queue must not be negative")
	}
	return nil
}

// Alert is one notification, as the webhook receives it (JSON). It carries
// identifiers, codes and counts only, like the audit trail it comes from.
type Alert struct {
	Event    string    `json:"event"`
	Severity string    `json:"severity"` // "warning" or "critical"
	Time     time.Time `json:"time"`
	Service  string    `json:"service"`
	// Summary is one human sentence; Text repeats it so Slack-compatible
	// webhooks display it as is.
	Summary    string           `json:"summary"`
	Text       string           `json:"text"`
	Principal  *audit.Principal `json:"principal,omitempty"`
	DecisionID string           `json:"decision_id,omitempty"`
	TraceID    string           `json:"trace_id,omitempty"`
	// Count and Window describe a burst: Count events within Window.
	Count  int    `json:"count,omitempty"`
	Window string `json:"window,omitempty"`
	// Suppressed is how many alerts of the same event and subject were
	// held back by rate limiting since the last one sent.
	Suppressed uint64         `json:"suppressed,omitempty"`
	Details    map[string]any `json:"details,omitempty"`

	// Subject is the rate-limit key within the event when there is no
	// principal (a model, for quality jumps); not sent.
	Subject string `json:"-"`

	subject string // rate-limit key within the event (principal id)
}

// Notifier turns audit records into alerts and delivers them. It is safe
// for concurrent use; Close it to flush the queue.
type Notifier struct {
	cfg    Config
	logger *slog.Logger
	total  *prometheus.CounterVec

	mu     sync.Mutex // guards the rate-limit and burst state below
	keys   map[string]*keyState
	tokens float64
	refill time.Time
	bursts map[string][]time.Time

	qmu    sync.RWMutex // guards closed against Notify racing Close
	closed bool
	queue  chan Alert
	done   chan struct{}
}

type keyState struct {
	last       time.Time
	suppressed uint64
}

// maxTracked bounds the per-subject state kept for rate limiting and burst
// detection, so a flood of distinct principals cannot grow memory.
const maxTracked = 10000

// New starts a Notifier. reg may be nil.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Notifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{
		cfg:    cfg,
		logger: logger.With("component", "alert"),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_alerts_total",
			Help: "Security alerts by event and result (sent, failed, logged, suppressed by rate limiting, dropped on a full queue).",
		}, []string{"event", "result"}),
		keys:   map[string]*keyState{},
		bursts: map[string][]time.Time{},
		tokens: float64(cfg.MaxPerMinute),
		refill: cfg.Clock.Now(),
		queue:  make(chan Alert, cfg.Queue),
		done:   make(chan struct{}),
	}
	if reg != nil {
		if err := reg.Register(n.total); err != nil {
			return nil, fmt.Errorf("alert: register metrics: %w", err)
		}
	}
	go n.run()
	return n, nil
}

// Recorder is the audit trail as the pipeline writes to it.
type Recorder interface {
	Log(ctx context.Context, r audit.Record)
}

var _ Recorder = (*audit.Writer)(nil)

// Tap returns a Recorder that hands every record to next (which may be nil:
// alerting without an audit log) and watches it for security events. It
// adds a map lookup or two per decision; alerts are sent off the caller's
// goroutine.
func (n *Notifier) Tap(next Recorder) Recorder { return &tap{n: n, next: next} }

type tap struct {
	n    *Notifier
	next Recorder
}

// WantsDecision lets the pipeline skip building records nobody needs:
// without an audit log behind it, the tap only looks at decisions that can
// raise an alert.
func (t *tap) WantsDecision(reason string, tags map[string]any) bool {
	if t.next != nil {
		return true
	}
	_, tagged := tags["alert"]
	return tagged || reason == "prompt_injection"
}

func (t *tap) Log(ctx context.Context, r audit.Record) {
	if t.next != nil {
		t.next.Log(ctx, r)
	}
	t.n.Observe(r)
}

// Observe looks at one audit record and raises the alerts it calls for:
// a decision tagged {"alert": event} by the policy, the InjectionBurst-th
// prompt_injection denial of one principal within InjectionWindow, and the
// limiter's fallback being entered.
func (n *Notifier) Observe(r audit.Record) {
	switch r.Type {
	case audit.TypeDecision:
		if ev, ok := alertTag(r.Details); ok {
			a := fromDecision(ev, r)
			a.Principal = n.named(r.Principal)
			n.Notify(a)
		}
		if r.Reason == "prompt_injection" && (r.DryRun || r.Allowed == nil || !*r.Allowed) && n.cfg.InjectionBurst > 0 {
			n.injection(r)
		}
	case audit.TypeLimiterFallback:
		if r.Details["state"] == "entered" {
			a := Alert{Event: EventLimiterFallback, Severity: "warning",
				Summary: "rate limiter fell back: Redis is not answering; limits are decided by the failure mode", Details: r.Details}
			if r.Details["failure_mode"] == "fail_closed" {
				a.Severity = "critical"
				a.Summary = "rate limiter fell back: Redis is not answering; requests with limits are refused (fail_closed)"
			}
			n.Notify(a)
		}
	case audit.TypeBudgetThreshold:
		n.Notify(budgetAlert(r))
	}
}

// budgetAlert is the alert of a budget_threshold record; its rate-limit
// subject is the tenant, period and threshold, so that crossing 80% does
// not hold back the 100% alert.
func budgetAlert(r audit.Record) Alert {
	d := r.Details
	pct, _ := d["percent"].(float64)
	a := Alert{Event: EventBudgetThreshold, Severity: "warning", Details: d,
		Summary: fmt.Sprintf("tenant %v has spent %v%% of its %v budget (%.2f of %.2f USD)", d["tenant"], pct, d["period"], d["spent_usd"], d["budget_usd"])}
	if pct >= 100 {
		a.Severity = "critical"
	}
	a.subject = fmt.Sprintf("%v\x00%v\x00%v", d["tenant"], d["period"], pct)
	return a
}

// alertTag returns the event a policy asked for with its audit tags.
func alertTag(details map[string]any) (string, bool) {
	tags, _ := details["tags"].(map[string]any)
	ev, _ := tags["alert"].(string)
	return ev, ev != ""
}

// tagValue is one of the policy's audit tags, nil when absent.
func tagValue(details map[string]any, k string) any {
	tags, _ := details["tags"].(map[string]any)
	return tags[k]
}

func fromDecision(ev string, r audit.Record) Alert {
	a := Alert{Event: ev, Severity: "warning", Principal: r.Principal, DecisionID: r.DecisionID, TraceID: r.TraceID,
		Summary: fmt.Sprintf("policy raised %s (decision %s, reason %s)", ev, r.DecisionID, r.Reason),
		Details: map[string]any{"reason": r.Reason, "phase": r.Phase, "route": r.Route}}
	if ev == EventCanaryLeak {
		a.Severity = "critical"
		a.Summary = fmt.Sprintf("a model answer leaked the system prompt's canary (decision %s, %s)", r.DecisionID, r.Route)
	}
	if ev == EventAbuseSuspected {
		a.Severity = "critical"
		a.Summary = fmt.Sprintf("principal %s refused as a repeated offender (decision %s, %v offences in the window)",
			principalID(r.Principal), r.DecisionID, tagValue(r.Details, "offences"))
	}
	if r.Principal != nil {
		a.subject = r.Principal.ID
	}
	return a
}

// injection counts one prompt_injection denial in its principal's window.
func (n *Notifier) injection(r audit.Record) {
	who, p := "anonymous", r.Principal
	if p != nil && p.ID != "" {
		who = p.ID
	}
	now := n.cfg.Clock.Now()
	cutoff := now.Add(-n.cfg.InjectionWindow)
	n.mu.Lock()
	ts := n.bursts[who]
	i := 0
	for i < len(ts) && !ts[i].After(cutoff) {
		i++
	}
	ts = append(ts[i:], now)
	fire := len(ts) >= n.cfg.InjectionBurst
	if fire {
		delete(n.bursts, who)
	} else {
		if _, ok := n.bursts[who]; !ok && len(n.bursts) >= maxTracked {
			for k, v := range n.bursts {
				if !v[len(v)-1].After(cutoff) {
					delete(n.bursts, k)
				}
			}
		}
		if _, ok := n.bursts[who]; ok || len(n.bursts) < maxTracked {
			n.bursts[who] = ts
		}
	}
	n.mu.Unlock()
	if !fire {
		return
	}
	named := n.named(p)
	shown := who
	if named != nil && named.ID != "" {
		shown = named.ID
	}
	n.Notify(Alert{Event: EventInjectionBurst, Severity: "critical", Principal: named, DecisionID: r.DecisionID, TraceID: r.TraceID,
		Count: len(ts), Window: n.cfg.InjectionWindow.String(), subject: who,
		Summary: fmt.Sprintf("%d prompt-injection attempts from %s within %s (last decision %s)", len(ts), shown, n.cfg.InjectionWindow, r.DecisionID)})
}

// named is the principal as alerts show it: a copy carrying its pseudonym
// when Config.PrincipalName is set (the audit record it came from is
// shared and must not change), else p itself.
func (n *Notifier) named(p *audit.Principal) *audit.Principal {
	if p == nil || p.ID == "" || n.cfg.PrincipalName == nil {
		return p
	}
	c := *p
	c.ID = n.cfg.PrincipalName(p.ID)
	return &c
}

// Notify queues an alert unless rate limiting holds it back. It never
// blocks: a full queue drops the alert and counts it.
func (n *Notifier) Notify(a Alert) {
	a.Event = boundedEvent(a.Event)
	now := n.cfg.Clock.Now()
	if !n.admit(&a, now) {
		n.total.WithLabelValues(a.Event, ResultSuppressed).Inc()
		return
	}
	if a.Time.IsZero() {
		a.Time = now.UTC()
	}
	if a.Service == "" {
		a.Service = "bulwark"
	}
	if a.Severity == "" {
		a.Severity = "warning"
	}
	a.Text = a.Summary
	n.qmu.RLock()
	defer n.qmu.RUnlock()
	if n.closed {
		n.total.WithLabelValues(a.Event, ResultDropped).Inc()
		return
	}
	select {
	case n.queue <- a:
	default:
		n.total.WithLabelValues(a.Event, ResultDropped).Inc()
	}
}

// admit applies the per-subject MinInterval and the global MaxPerMinute
// token bucket, and hands the alert its key's suppressed count.
func (n *Notifier) admit(a *Alert, now time.Time) bool {
	if a.subject == "" {
		a.subject = a.Subject
	}
	key := a.Event + "\x00" + a.subject
	n.mu.Lock()
	defer n.mu.Unlock()
	st, ok := n.keys[key]
	if !ok {
		if len(n.keys) >= maxTracked {
			for k, s := range n.keys {
				if now.Sub(s.last) >= n.cfg.MinInterval {
					delete(n.keys, k)
				}
			}
		}
		st = &keyState{}
		if len(n.keys) < maxTracked {
			n.keys[key] = st
		}
	}
	if !st.last.IsZero() && now.Sub(st.last) < n.cfg.MinInterval {
		st.suppressed++
		return false
	}
	rate := float64(n.cfg.MaxPerMinute) / float64(time.Minute)
	n.tokens = min(float64(n.cfg.MaxPerMinute), n.tokens+float64(now.Sub(n.refill))*rate)
	n.refill = now
	if n.tokens < 1 {
		st.suppressed++
		return false
	}
	n.tokens--
	a.Suppressed, st.suppressed, st.last = st.suppressed, 0, now
	return true
}

// boundedEvent keeps the metric's event label a short snake_case code:
// events named by policies are otherwise counted as "other".
func boundedEvent(e string) string {
	if e == "" || len(e) > 48 {
		return "other"
	}
	for i := 0; i < len(e); i++ {
		c := e[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return "other"
		}
	}
	return e
}

func (n *Notifier) run() {
	defer close(n.done)
	for a := range n.queue {
		n.deliver(a)
	}
}

func (n *Notifier) deliver(a Alert) {
	if n.cfg.WebhookURL == "" {
		n.logger.Warn("security alert", "event", a.Event, "severity", a.Severity, "summary", a.Summary,
			"principal", principalID(a.Principal), "decision_id", a.DecisionID, "trace_id", a.TraceID,
			"count", a.Count, "suppressed", a.Suppressed)
		n.total.WithLabelValues(a.Event, ResultLogged).Inc()
		return
	}
	if err := n.post(a); err != nil {
		n.total.WithLabelValues(a.Event, ResultFailed).Inc()
		n.logger.Warn("alert webhook failed; alert lost", "event", a.Event, "summary", a.Summary, "error", err)
		return
	}
	n.total.WithLabelValues(a.Event, ResultSent).Inc()
}

func (n *Notifier) post(a Alert) error {
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.cfg.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return errors.New("bad webhook URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "bulwark-alert")
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		// url.Error repeats the URL, which may hold a token: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

func principalID(p *audit.Principal) string {
	if p == nil {
		return ""
	}
	return p.ID
}

// Close stops accepting alerts and delivers the queued ones, waiting at most
// until ctx is done.
func (n *Notifier) Close(ctx context.Context) error {
	n.qmu.Lock()
	if !n.closed {
		n.closed = true
		close(n.queue)
	}
	n.qmu.Unlock()
	select {
	case <-n.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("alert: close: %w", ctx.Err())
	}
}
