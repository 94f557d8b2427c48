package extproc

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the door's own Prometheus series (the exchange's are
// exchange.Metrics). Build them once per
// registry with NewMetrics and hand them to New.
type Metrics struct{ m *metrics }

type metrics struct {
	extended  prometheus.Counter
	buffered  prometheus.Gauge
	authzMeta *prometheus.CounterVec
}

// NewMetrics registers the ext_proc series with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &metrics{
		extended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_extproc_timeout_extensions_total",
			Help: "Messages for which Bulwark asked Envoy for more time (override_message_timeout): answers slower than half of message_timeout.",
		}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bulwark_extproc_buffered_bytes",
			Help: "Body bytes ext_proc exchanges hold while a body sent in chunks accumulates (bounded by extproc_max_buffered_bytes).",
		}),
		authzMeta: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_extproc_authz_metadata_total",
			Help: "ext_authz decisions forwarded to ext_proc, by result: verified (believed), invalid, expired or unverified (the request's credentials were authenticated instead).",
		}, []string{"result"}),
	}
	for _, r := range []string{"verified", "invalid", "expired", "unverified"} {
		m.authzMeta.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.extended, m.buffered, m.authzMeta} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("extproc: register metrics: %w", err)
			}
		}
	}
	return &Metrics{m: m}, nil
}

// The methods below accept a nil receiver: a Server built without metrics
// counts nothing.

func (m *metrics) timeoutExtended() {
	if m != nil {
		m.extended.Inc()
	}
}

func (m *metrics) bufferedBytes(delta int64) {
	if m != nil {
		m.buffered.Add(float64(delta))
	}
}

func (m *metrics) authzMetadata(result string) {
	if m != nil && result != "absent" {
		m.authzMeta.WithLabelValues(result).Inc()
	}
}
