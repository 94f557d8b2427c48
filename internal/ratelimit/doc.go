// Package ratelimit decides the rate limits and token quotas that policy
// decisions attach to requests, against counters in Redis shared by every
// Bulwark replica, or in-process when no Redis is configured.
//
// # Algorithm and burst semantics
//
// Every limit is a GCRA (generic cell rate algorithm) counter: one value per
// (Name, Key), the theoretical arrival time (TAT). With emission interval
// T = Period/Limit and burst tolerance Period, a request of cost c passes if
// max(TAT, now) + c·T − Period ≤ now. So "Limit N per Period" admits N units
// at once on a fresh key, then one more every T: 100/min admits 100
// immediately and the 101st 600 ms after the first. Unlike a fixed window,
// no window edge lets 2N through.
//
// In Redis the arithmetic runs inside one Lua script, on Redis's clock (TIME),
// so replica clocks never matter. All limits of one request are decided in
// that script: if any enforced limit would be exceeded, none is charged.
// Shadow limits are evaluated and reported (and charged when they pass) but
// never deny.
//
// # Keys and Redis Cluster
//
// A limit says whose usage it counts with typed fields: Tenant, Principal
// and an opaque Key, at least one set. The counter lives at
// "<KeyPrefix>:<subject>:<name>", where the subject is built by SubjectKey
// (key.go) alone: "{t:acme}" for tenant acme, "{t:acme}:p:alice" for its
// principal alice, "{p:acme}" for a principal acme without a tenant. Values
// are escaped ('{', '}', ':', '%', '#', spaces and control bytes become %XX)
// and hashed when long, so distinct subjects never share a counter and no
// value can move a counter into another hash slot. The first field set is
// the Redis Cluster hash tag; every limit of one Check must have the same
// one, on every topology, so a policy that works on one Redis node works on
// a Cluster (a tenant's quota and its principals' rates all start with the
// tenant). Limits with different tags return ErrInvalidLimit.
//
// # Batching
//
// Concurrent Checks are batched: a worker goroutine (BatchWorkers) takes the
// first queued check plus whatever else is queued (up to BatchMax, lingering
// BatchWindow, or yielding briefly so just-answered callers can queue), and
// sends them in one EVALSHA per hash slot, pipelined. The script decides the
// requests one after another, so batching changes round trips, not results.
//
// # Token quotas
//
// A limit marked Estimated charges an estimate (e.g. max_tokens). Check saves
// the charged estimate in Redis under the decision id (TTL ReservationTTL, in
// the counters' slot); Reconcile(decisionID, actual) later refunds or charges
// the difference exactly once. The replica that reserved remembers the
// reservation's slot, so Reconcile must run on it (ext_proc's request and
// response phases share one stream, hence one replica).
//
// # Failures
//
// Redis calls carry a deadline (the request's, capped by CheckTimeout) and no
// retries. On a failure, fail_open limits (the default) are decided by the
// in-process GCRA with LocalShare of each limit (Result.Degraded); a
// fail_closed limit makes Check return an error matching ErrUnavailable (503).
// After BreakerThreshold consecutive failures a circuit breaker opens: checks
// go straight to the failure mode while a probe pings Redis every
// ProbeInterval and closes the breaker on the first answer. Healthy reports
// the breaker for /readyz; metrics show it as bulwark_ratelimit_fallback_active.
package ratelimit
