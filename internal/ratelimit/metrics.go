package ratelimit

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwark-ai/bulwark/internal/labelcap"
)

// metrics are the limiter's Prometheus series. Limit names label the
// per-limit series; they come from policy, so past labelcap.MaxValues
// distinct names (or a name longer than labelcap.MaxLen) they count as
// "other".
type metrics struct {
	names          labelcap.Set             // the limit label
	checks         *prometheus.CounterVec   // result, source
	overLimit      *prometheus.CounterVec   // limit
	nearLimit      *prometheus.CounterVec   // limit
	shadowHits     *prometheus.CounterVec   // limit
	usage          *prometheus.HistogramVec // limit
	redisLatency   *prometheus.HistogramVec
	redisErrors    *prometheus.CounterVec // op
	fallbackActive prometheus.Gauge
	batchSize      prometheus.Histogram

	allowedRedis, deniedRedis, allowedLocal, deniedLocal, errored prometheus.Counter
	latencyCheck, latencyReconcile                                prometheus.Observer
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "bulwark", "ratelimit"
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "checks_total",
			Help: "Rate-limit checks by result (allowed, denied, error) and source (redis, local)."}, []string{"result", "source"}),
		overLimit: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "over_limit_total",
			Help: "Enforced limits exceeded (requests denied by that limit)."}, []string{"limit"}),
		nearLimit: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "near_limit_total",
			Help: "Admitted requests that left a limit at or above 80% used."}, []string{"limit"}),
		shadowHits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "shadow_hits_total",
			Help: "Shadow limits that would have denied a request."}, []string{"limit"}),
		usage: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "usage_ratio",
			Help:    "Share of a limit or quota in use right after an admitted request (1 - remaining/limit): how close callers run to their limits.",
			Buckets: []float64{.1, .25, .5, .75, .8, .9, .95, .99, 1}}, []string{"limit"}),
		redisLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "redis_duration_seconds",
			Help:    "Latency of one Redis script call (a batch of checks, or a reconcile).",
			Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25}}, []string{"op"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "redis_errors_total",
			Help: "Failed Redis calls by operation (check, reconcile, probe)."}, []string{"op"}),
		fallbackActive: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "fallback_active",
			Help: "1 while the Redis circuit breaker is open and checks use the failure mode."}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "batch_size",
			Help: "Checks per Redis script call.", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.checks, m.overLimit, m.nearLimit, m.shadowHits, m.usage, m.redisLatency, m.redisErrors, m.fallbackActive, m.batchSize} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	m.allowedRedis = m.checks.WithLabelValues("allowed", "redis")
	m.deniedRedis = m.checks.WithLabelValues("denied", "redis")
	m.allowedLocal = m.checks.WithLabelValues("allowed", "local")
	m.deniedLocal = m.checks.WithLabelValues("denied", "local")
	m.errored = m.checks.WithLabelValues("error", "redis")
	m.latencyCheck = m.redisLatency.WithLabelValues("check")
	m.latencyReconcile = m.redisLatency.WithLabelValues("reconcile")
	return m, nil
}

func (m *metrics) observe(res *Result) {
	switch {
	case res.Allowed && !res.Degraded:
		m.allowedRedis.Inc()
	case !res.Allowed && !res.Degraded:
		m.deniedRedis.Inc()
	case res.Allowed:
		m.allowedLocal.Inc()
	default:
		m.deniedLocal.Inc()
	}
	for _, s := range res.Limits {
		name := m.names.Value(s.Name)
		switch {
		case s.Exceeded && s.Shadow:
			m.shadowHits.WithLabelValues(name).Inc()
		case s.Exceeded:
			m.overLimit.WithLabelValues(name).Inc()
		case res.Allowed && s.nearLimit():
			m.nearLimit.WithLabelValues(name).Inc()
		}
		if res.Allowed && !s.Exceeded && s.Limit > 0 {
			m.usage.WithLabelValues(name).Observe(1 - float64(s.Remaining)/float64(s.Limit))
		}
	}
}
