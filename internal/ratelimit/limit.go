package ratelimit

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Limit is one limit a policy decision attaches to a request. All limits of
// one Check are decided together: if any enforced limit would be exceeded,
// none is charged.
type Limit struct {
	// Name identifies the limit (e.g. "requests_per_minute"). It is part of
	// the counter's identity, the metric label and the header policy name.
	Name string
	// Tenant, Principal and Key say whose usage is counted: the counter is
	// (Tenant, Principal, Key, Name), and at least one of the three is set.
	// A tenant's quota sets Tenant; a principal's rate sets Principal and, if
	// it has one, its Tenant; Key is an opaque policy-defined dimension (a
	// model, a route). The first one set is the Redis Cluster hash tag, so
	// every limit of one request must start with the same one (the tenant's
	// limits and its principals' share the tenant's slot). They are typed
	// and escaped in the counter key (key.go): a principal named like a
	// tenant never shares its counters.
	Tenant    string
	Principal string
	Key       string
	// Limit is how many units (requests or tokens) Period allows, and also the
	// burst: a fresh key admits Limit units at once.
	Limit int64
	// Period is the window over which Limit units are allowed.
	Period time.Duration
	// Cost is the units this request uses; 0 means 1.
	Cost int64
	// Estimated marks Cost as an estimate (an LLM token reservation) that
	// Reconcile later replaces with the actual usage. Request-count limits
	// leave it false, so Reconcile never touches them.
	Estimated bool
	// Shadow limits are counted and reported but never deny.
	Shadow bool
	// FailureMode overrides Config.FailureMode for this limit ("" = default).
	FailureMode FailureMode
}

func (l Limit) cost() int64 {
	if l.Cost == 0 {
		return 1
	}
	return l.Cost
}

func (l Limit) validate() error {
	switch {
	case l.Name == "":
		return invalidf("limit of %s has no name", l.SubjectKey())
	case l.Tenant == "" && l.Principal == "" && l.Key == "":
		return invalidf("limit %q has no tenant, principal or key", l.Name)
	case l.Limit <= 0:
		return invalidf("limit %q: limit %d must be > 0", l.Name, l.Limit)
	case l.Period < time.Microsecond:
		return invalidf("limit %q: period %v must be >= 1µs", l.Name, l.Period)
	case l.Cost < 0:
		return invalidf("limit %q: cost %d must be >= 0", l.Name, l.Cost)
	case !l.FailureMode.valid():
		return invalidf("limit %q: failure mode %q", l.Name, l.FailureMode)
	}
	return nil
}

// LimitState is the outcome of one limit for one request.
type LimitState struct {
	Name string
	// Tenant, Principal and Key are the limit's subject, as in Limit.
	Tenant    string
	Principal string
	Key       string
	Limit     int64
	Period    time.Duration
	// Remaining is the units still available right after this request.
	Remaining int64
	// Reset is when the counter is full again (all Limit units available).
	Reset time.Duration
	// RetryAfter is, for an exceeded limit, when the request's cost fits.
	// A cost above Limit never fits; RetryAfter is then Period.
	RetryAfter time.Duration
	Shadow     bool
	// Exceeded is true when this limit alone would deny the request (for a
	// shadow limit: would have denied it).
	Exceeded bool
}

// of fills in which limit s is the state of: l's name, subject and shadow
// flag, and its size of n units per Period (n is Limit, or the in-process
// share of it).
func (s *LimitState) of(l Limit, n int64) {
	s.Name, s.Tenant, s.Principal, s.Key = l.Name, l.Tenant, l.Principal, l.Key
	s.Limit, s.Period, s.Shadow = n, l.Period, l.Shadow
}

// nearLimit reports usage at or above 80% of the limit after this request.
func (s LimitState) nearLimit() bool {
	return !s.Exceeded && s.Remaining*5 <= s.Limit
}

// Result is the decision of one Check.
type Result struct {
	// Allowed is false when an enforced (non-shadow) limit is exceeded.
	Allowed bool
	// Limits holds one state per requested limit, in request order.
	Limits []LimitState
	// RetryAfter is the longest RetryAfter of the exceeded enforced limits:
	// the earliest time the same request could pass (0 when allowed).
	RetryAfter time.Duration
	// Degraded is true when Redis was unavailable and the in-process fallback
	// decided, with LocalShare of each limit.
	Degraded bool
}

// RetryAfterHeader renders Retry-After in whole seconds, rounded up and at
// least 1 for a denied request ("" when allowed).
func (r Result) RetryAfterHeader() string {
	if r.Allowed {
		return ""
	}
	return strconv.FormatInt(ceilSeconds(r.RetryAfter, 1), 10)
}

// RateLimitPolicyHeader renders the IETF RateLimit-Policy field
// (draft-ietf-httpapi-ratelimit-headers): one `"name";q=<limit>;w=<seconds>`
// item per enforced limit. Shadow limits are not shown to clients.
func (r Result) RateLimitPolicyHeader() string {
	var b strings.Builder
	for _, s := range r.Limits {
		if s.Shadow {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		writeSFString(&b, s.Name)
		b.WriteString(";q=")
		b.WriteString(strconv.FormatInt(s.Limit, 10))
		b.WriteString(";w=")
		b.WriteString(strconv.FormatInt(ceilSeconds(s.Period, 1), 10))
	}
	return b.String()
}

// RateLimitHeader renders the IETF RateLimit field: one
// `"name";r=<remaining>;t=<seconds until reset>` item per enforced limit.
func (r Result) RateLimitHeader() string {
	var b strings.Builder
	for _, s := range r.Limits {
		if s.Shadow {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		writeSFString(&b, s.Name)
		b.WriteString(";r=")
		b.WriteString(strconv.FormatInt(max(s.Remaining, 0), 10))
		b.WriteString(";t=")
		b.WriteString(strconv.FormatInt(ceilSeconds(s.Reset, 0), 10))
	}
	return b.String()
}

// Headers returns RateLimit, RateLimit-Policy and, when denied, Retry-After,
// ready to add to a 429 (or, if configured, to an allowed response).
func (r Result) Headers() http.Header {
	h := http.Header{}
	if v := r.RateLimitPolicyHeader(); v != "" {
		h.Set("RateLimit-Policy", v)
		h.Set("RateLimit", r.RateLimitHeader())
	}
	if v := r.RetryAfterHeader(); v != "" {
		h.Set("Retry-After", v)
	}
	return h
}

func ceilSeconds(d time.Duration, minimum int64) int64 {
	s := int64(math.Ceil(d.Seconds()))
	return max(s, minimum)
}

// writeSFString writes s as a Structured Field string (RFC 8941 §3.3.3):
// quoted, with '"' and '\' escaped and non-printable ASCII dropped.
func writeSFString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}
