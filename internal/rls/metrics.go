package rls

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the door's own series; per-rule counts are the limiter's
// (bulwark_ratelimit_*, labelled by the rule's path).
type metrics struct {
	requests *prometheus.CounterVec
	reloads  *prometheus.CounterVec
	healthy  prometheus.Gauge

	ok, over, errored, degraded prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "bulwark", "rls"
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "ShouldRateLimit calls by overall code (ok, over_limit), error, or degraded (decided by the in-process fallback)."}, []string{"code"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "config_reloads_total",
			Help: "Loads of the envoy/ratelimit YAML by result (ok, error); on error the previous configuration stays."}, []string{"result"}),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "config_healthy",
			Help: "1 when the last load of the envoy/ratelimit YAML succeeded, 0 when it failed (the last good one serves)."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.reloads, m.healthy} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("rls: register metrics: %w", err)
			}
		}
	}
	m.ok = m.requests.WithLabelValues("ok")
	m.over = m.requests.WithLabelValues("over_limit")
	m.errored = m.requests.WithLabelValues("error")
	m.degraded = m.requests.WithLabelValues("degraded")
	return m, nil
}
