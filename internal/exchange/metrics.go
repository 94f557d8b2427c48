package exchange

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the exchange's Prometheus series (their names predate this
// package and keep the ext_proc prefix: dashboards and alerts read them).
// Build them once per registry with NewMetrics and hand them to New.
type Metrics struct{ m *metrics }

type metrics struct {
	active     prometheus.Gauge
	streams    *prometheus.CounterVec
	redactions *prometheus.CounterVec
	refused    *prometheus.CounterVec
	reconcile  *prometheus.CounterVec
	chunks     prometheus.Histogram
	mcpTools   *prometheus.CounterVec
}

// NewMetrics registers the exchange series with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bulwark_extproc_streams_active",
			Help: "LLM exchanges in progress (ext_proc streams and Guard API calls).",
		}),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_extproc_streams_total",
			Help: "LLM exchanges ended (ext_proc streams and Guard API calls), by outcome (allowed, denied, error, timeout: ended by the idle timeout or the maximum duration).",
		}, []string{"outcome"}),
		redactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_redactions_total",
			Help: "Spans redacted from bodies, by direction (request, response).",
		}, []string{"direction"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_extproc_refused_total",
			Help: "Bodies refused without a policy decision because they could not be inspected, by reason.",
		}, []string{"reason"}),
		reconcile: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_token_reconciliations_total",
			Help: "Token reservations settled when an exchange ends, by result: ok (the model's reported usage), estimated (no usage reported: Bulwark's estimate, nothing when the request never reached the model), error.",
		}, []string{"result"}),
		chunks: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bulwark_extproc_chunk_duration_seconds",
			Help:    "Time to process one streamed response chunk (parse, redact, policy when findings).",
			Buckets: []float64{.00001, .000025, .00005, .0001, .0002, .0005, .001, .0025, .01, .05},
		}),
		mcpTools: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_mcp_tools_removed_total",
			Help: "Tools removed from MCP tools/list answers, by reason (tool_not_allowed, tool_poisoning, other).",
		}, []string{"reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.active, m.streams, m.redactions, m.refused, m.reconcile, m.chunks, m.mcpTools} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("exchange: register metrics: %w", err)
			}
		}
	}
	return &Metrics{m: m}, nil
}

// The methods below accept a nil receiver: a Core built without metrics
// counts nothing.

func (m *metrics) streamStarted() {
	if m != nil {
		m.active.Inc()
	}
}

func (m *metrics) streamEnded(outcome string) {
	if m != nil {
		m.active.Dec()
		m.streams.WithLabelValues(outcome).Inc()
	}
}

func (m *metrics) redacted(direction string, n int) {
	if m != nil && n > 0 {
		m.redactions.WithLabelValues(direction).Add(float64(n))
	}
}

func (m *metrics) localDeny(reason string) {
	if m != nil {
		m.refused.WithLabelValues(reason).Inc()
	}
}

func (m *metrics) reconciled(result string) {
	if m != nil {
		m.reconcile.WithLabelValues(result).Inc()
	}
}

func (m *metrics) chunk(d time.Duration) {
	if m != nil {
		m.chunks.Observe(d.Seconds())
	}
}

// mcpToolsRemoved counts the tools a tools/list answer lost, by the
// policy's reason (a bounded label: unknown reasons count as "other").
func (m *metrics) mcpToolsRemoved(remove map[string]string, n int) {
	if m == nil || n == 0 {
		return
	}
	for _, reason := range remove {
		switch reason {
		case "tool_not_allowed", "tool_poisoning":
		default:
			reason = "other"
		}
		m.mcpTools.WithLabelValues(reason).Inc()
	}
}
