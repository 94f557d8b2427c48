package quality

import (
	"fmt"
	"math"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwark-ai/bulwark/internal/labelcap"
)

// Jump is a model's refusal or error rate over its recent baseline.
type Jump struct {
	Model string
	// Signal is "refusal" or "error".
	Signal string
	// Rate is the share of the last answers (short average), Baseline the
	// model's usual share (long average).
	Rate, Baseline float64
	// Answers is how many answers of the model were seen.
	Answers int64
}

// MonitorConfig tunes a Monitor. The zero value takes the defaults.
type MonitorConfig struct {
	// ShortAnswers and BaselineAnswers are the sizes, in answers, of the
	// exponential averages of the current and baseline rates (defaults 20
	// and 500).
	ShortAnswers, BaselineAnswers float64
	// MinAnswers is how many answers of a model are seen before a jump is
	// reported (default 50): a baseline needs answers to stand on.
	MinAnswers int64
	// Factor and MinRate: a jump is a current rate at least Factor times
	// the baseline and at least MinRate above it (defaults 3 and 0.2).
	Factor, MinRate float64
	// OnJump is told of a jump (the app raises an alert); nil: none. It is
	// called at most once per model and signal while the rate stays high.
	OnJump func(Jump)
}

func (c MonitorConfig) withDefaults() MonitorConfig {
	if c.ShortAnswers <= 0 {
		c.ShortAnswers = 20
	}
	if c.BaselineAnswers <= 0 {
		c.BaselineAnswers = 500
	}
	if c.MinAnswers <= 0 {
		c.MinAnswers = 50
	}
	if c.Factor <= 0 {
		c.Factor = 3
	}
	if c.MinRate <= 0 {
		c.MinRate = 0.2
	}
	return c
}

// Monitor counts answer quality by model (Prometheus) and watches each
// model's refusal and error rates for a jump over its baseline. It is safe
// for concurrent use.
type Monitor struct {
	cfg MonitorConfig

	models    labelcap.Set
	answers   *prometheus.CounterVec
	refusals  *prometheus.CounterVec
	problems  *prometheus.CounterVec
	ttft      *prometheus.HistogramVec
	tps       *prometheus.HistogramVec
	jumpGauge *prometheus.GaugeVec

	mu    sync.Mutex
	rates map[string]*modelRates
}

type modelRates struct {
	n                  int64
	refShort, refBase  float64
	errShort, errBase  float64
	refFired, errFired bool
}

// maxModels bounds the per-model state (the label set is bounded by labelcap).
const maxModels = 1000

// NewMonitor registers the quality metrics with reg (nil: unregistered).
func NewMonitor(cfg MonitorConfig, reg prometheus.Registerer) (*Monitor, error) {
	m := &Monitor{cfg: cfg.withDefaults(), rates: map[string]*modelRates{},
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_genai_answers_total",
			Help: "Model answers seen, by model and normalised finish reason (stop, length, tool_calls, content_filter, error, other, none).",
		}, []string{"model", "finish_reason"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_genai_refusals_total",
			Help: "Model answers the refusal detector read as a refusal, by model.",
		}, []string{"model"}),
		problems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_genai_answer_problems_total",
			Help: "Model answers with a quality problem, by model and problem (empty, truncated, invalid_json, schema_mismatch, error).",
		}, []string{"model", "problem"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bulwark_genai_time_to_first_token_seconds",
			Help:    "Time from the request being sent on to the first output text of a streamed answer, by model.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 4, 8, 16, 32},
		}, []string{"model"}),
		tps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bulwark_genai_output_tokens_per_second",
			Help:    "Output tokens per second of an answer that reported usage, by model.",
			Buckets: []float64{1, 5, 10, 20, 40, 80, 160, 320},
		}, []string{"model"}),
		jumpGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bulwark_genai_quality_jump",
			Help: "1 while a model's refusal or error rate is over its recent baseline (Factor times and MinRate above), by model and signal.",
		}, []string{"model", "signal"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.answers, m.refusals, m.problems, m.ttft, m.tps, m.jumpGauge} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("quality: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Observe counts one answer of model and checks its rates.
func (m *Monitor) Observe(model string, s Signals) {
	if model == "" {
		model = "unknown"
	}
	label := m.models.Value(model)
	m.answers.WithLabelValues(label, s.FinishReason).Inc()
	if s.Refusal.Detected {
		m.refusals.WithLabelValues(label).Inc()
	}
	for _, p := range problems(s) {
		m.problems.WithLabelValues(label, p).Inc()
	}
	if s.TimeToFirstToken > 0 {
		m.ttft.WithLabelValues(label).Observe(s.TimeToFirstToken.Seconds())
	}
	if s.TokensPerSecond > 0 && !math.IsInf(s.TokensPerSecond, 0) {
		m.tps.WithLabelValues(label).Observe(s.TokensPerSecond)
	}
	m.watch(label, s)
}

func problems(s Signals) []string {
	var out []string
	if s.Empty {
		out = append(out, "empty")
	}
	if s.Truncated {
		out = append(out, "truncated")
	}
	if s.JSONRequested && !s.JSONValid {
		if s.JSONError == "schema_mismatch" {
			out = append(out, "schema_mismatch")
		} else {
			out = append(out, "invalid_json")
		}
	}
	if s.FinishReason == FinishError {
		out = append(out, "error")
	}
	return out
}

// watch folds the answer into the model's averages and reports a jump.
func (m *Monitor) watch(model string, s Signals) {
	ref, bad := 0.0, 0.0
	if s.Refusal.Detected {
		ref = 1
	}
	if s.FinishReason == FinishError || s.Empty {
		bad = 1
	}
	m.mu.Lock()
	r, ok := m.rates[model]
	if !ok {
		if len(m.rates) >= maxModels {
			m.mu.Unlock()
			return
		}
		r = &modelRates{}
		m.rates[model] = r
	}
	r.n++
	// Until an average has seen its size in answers it is the plain mean
	// (weight 1/n), so the first answers do not stand for the baseline.
	n := float64(r.n)
	as, ab := max(1/m.cfg.ShortAnswers, 1/n), max(1/m.cfg.BaselineAnswers, 1/n)
	r.refShort += as * (ref - r.refShort)
	r.errShort += as * (bad - r.errShort)
	r.refBase += ab * (ref - r.refBase)
	r.errBase += ab * (bad - r.errBase)
	var jumps []Jump
	check := func(signal string, cur, base float64, fired *bool) {
		high := r.n >= m.cfg.MinAnswers && cur >= base*m.cfg.Factor && cur-base >= m.cfg.MinRate
		switch {
		case high && !*fired:
			*fired = true
			jumps = append(jumps, Jump{Model: model, Signal: signal, Rate: cur, Baseline: base, Answers: r.n})
			m.jumpGauge.WithLabelValues(model, signal).Set(1)
		case !high && *fired && cur < base*m.cfg.Factor/2+m.cfg.MinRate/2:
			// Re-armed only once well below the threshold, so a rate
			// hovering at it does not page again and again.
			*fired = false
			m.jumpGauge.WithLabelValues(model, signal).Set(0)
		}
	}
	check("refusal", r.refShort, r.refBase, &r.refFired)
	check("error", r.errShort, r.errBase, &r.errFired)
	m.mu.Unlock()
	if m.cfg.OnJump != nil {
		for _, j := range jumps {
			m.cfg.OnJump(j)
		}
	}
}
