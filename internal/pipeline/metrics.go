package pipeline

import (
	"fmt"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/labelcap"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	decisions   *prometheus.CounterVec
	reasons     labelcap.Set // the reason label: policy output, capped
	evalSeconds prometheus.Histogram
	findings    *prometheus.CounterVec
	injections  prometheus.Counter
	scanned     prometheus.Counter
	scanSkipped prometheus.Counter
	scanStopped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_decisions_total",
			Help: "Decisions by result (allow, deny, dry_run_deny, error) and reason code.",
		}, []string{"result", "reason"}),
		evalSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bulwark_decision_duration_seconds",
			Help:    "Time to make one decision, policy evaluation included.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}),
		findings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_detector_findings_total",
			Help: "Detector findings in prompts, by detector (pii, secrets, hidden_text) and type.",
		}, []string{"detector", "type"}),
		injections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_prompt_injection_detected_total",
			Help: "Prompts whose injection score reached the detector's threshold.",
		}),
		scanned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_prompts_scanned_total",
			Help: "Prompts run through the detectors.",
		}),
		scanSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_prompt_scans_skipped_total",
			Help: "Prompts not scanned because the policy refused the unauthenticated caller (401) without signals.",
		}),
		scanStopped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_prompt_scans_stopped_total",
			Help: "Prompt scans given up because the request was cancelled or its deadline passed.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.decisions, m.evalSeconds, m.findings, m.injections, m.scanned, m.scanSkipped, m.scanStopped} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("pipeline: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// decision counts one decision. Reasons come from policies, so a reason that
// is not a short snake_case code, or a new one past the first
// labelcap.MaxValues, is counted as "other" to keep the label set bounded.
func (m *metrics) decision(result, reason string) {
	m.decisions.WithLabelValues(result, m.reasons.Value(boundedReason(reason))).Inc()
}

func boundedReason(r string) string {
	if r == "" {
		return "none"
	}
	if len(r) > 48 {
		return labelcap.Other
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return labelcap.Other
		}
	}
	return r
}

// signals counts what the detectors found in one prompt.
func (m *metrics) signals(s detect.Signals) {
	m.scanned.Inc()
	if s.PromptInjection.Detected {
		m.injections.Inc()
	}
	for _, c := range s.PII {
		m.findings.WithLabelValues("pii", c.Type).Add(float64(c.Count))
	}
	for _, c := range s.Secrets {
		m.findings.WithLabelValues("secrets", c.Type).Add(float64(c.Count))
	}
	if s.HiddenText.Detected {
		m.findings.WithLabelValues("hidden_text", "HIDDEN_TEXT").Inc()
	}
}
