package identity

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the package's Prometheus collectors. Authentication outcomes
// are resolved to counters up front so the hot path does no label hashing.
type metrics struct {
	auths       *prometheus.CounterVec
	jwtCache    *prometheus.CounterVec
	jwksFetches *prometheus.CounterVec
	keysReloads *prometheus.CounterVec

	outcomes        map[outcome]prometheus.Counter
	jwtHit, jwtMiss prometheus.Counter
}

type outcome struct {
	kind   Kind
	result string
}

// allReasons lists every reason code, for metric pre-resolution and docs.
var allReasons = []string{
	ReasonMalformed, ReasonOversized, ReasonUnsupportedScheme, ReasonNotConfigured,
	ReasonInvalidKey, ReasonUnknownKey, ReasonBadSecret, ReasonRevoked, ReasonDisabled, ReasonExpired,
	ReasonNotYetValid, ReasonBadSignature, ReasonUnsupportedAlg, ReasonBadIssuer,
	ReasonBadAudience, ReasonMissingClaim, ReasonLifetimeTooLong, ReasonJWKSUnavailable, ReasonKeyStoreUnavailable,
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		auths: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_identity_authentications_total",
			Help: "Authentication outcomes by credential kind; result is ok or a reason code.",
		}, []string{"kind", "result"})),
		jwtCache: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_identity_jwt_cache_total",
			Help: "Verified-JWT cache lookups by result (hit, miss).",
		}, []string{"result"})),
		jwksFetches: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_identity_jwks_fetches_total",
			Help: "JWKS fetches by result (ok, error).",
		}, []string{"result"})),
		keysReloads: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_identity_keys_reloads_total",
			Help: "API keys file reloads by result (ok, error); an error keeps the last good keys.",
		}, []string{"result"})),
		outcomes: map[outcome]prometheus.Counter{},
	}
	m.jwtHit = m.jwtCache.WithLabelValues("hit")
	m.jwtMiss = m.jwtCache.WithLabelValues("miss")
	for _, k := range []Kind{KindAPIKey, KindJWT, KindMTLS, KindAnonymous} {
		m.outcomes[outcome{k, "ok"}] = m.auths.WithLabelValues(string(k), "ok")
		for _, r := range allReasons {
			m.outcomes[outcome{k, r}] = m.auths.WithLabelValues(string(k), r)
		}
	}
	return m
}

func (m *metrics) observe(k Kind, result string) {
	if c, ok := m.outcomes[outcome{k, result}]; ok {
		c.Inc()
		return
	}
	m.auths.WithLabelValues(string(k), result).Inc()
}

// register registers c, reusing an identical collector that is already
// registered (several Authenticators in one process, as in tests).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing
			}
		}
	}
	return c
}
