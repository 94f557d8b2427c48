// Package rls is a door: Envoy's RateLimitService v3
// (envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit), configured
// by envoy/ratelimit's YAML, so that Envoy's rate_limit filter (and Envoy
// Gateway, Envoy AI Gateway) can call Bulwark where it called
// envoy/ratelimit, with the same config file.
//
// Descriptors are matched the way envoy/ratelimit matches them (key_value,
// then wildcard, then bare key; a limit applies only at a descriptor's last
// entry; replaces, unlimited, shadow_mode, hits_addend and limit overrides
// honoured), but counted by Bulwark's limiter (internal/ratelimit): GCRA in
// Redis, all descriptors of one request decided in one script call and
// charged only if every enforced one fits. A fixed window admits up to twice
// its limit across a window edge; GCRA never admits more than the limit in
// any window of one unit.
//
// Counters live under the tenant "rls/<domain>", so every descriptor of a
// domain shares one Redis Cluster hash slot (that is what makes a request's
// descriptors atomic on a Cluster), keyed by the descriptor's entries and
// named by the rule's path ("domain.key_value.key2").
package rls
