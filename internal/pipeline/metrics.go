package pipeline

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	decisions   *prometheus.CounterVec
	evalSeconds prometheus.Histogram
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
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.decisions, m.evalSeconds} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("pipeline: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// decision counts one decision. Reasons come from policies, so a reason that
// is not a short snake_case code is counted as "other" to keep the label set
// bounded.
func (m *metrics) decision(result, reason string) {
	m.decisions.WithLabelValues(result, boundedReason(reason)).Inc()
}

func boundedReason(r string) string {
	if r == "" {
		return "none"
	}
	if len(r) > 48 {
		return "other"
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return "other"
		}
	}
	return r
}
