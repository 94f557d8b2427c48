# Abuse patterns: a principal that keeps attacking is slowed down, then
# blocked, and the block raises an alert (audit tag alert: abuse_suspected).
#
# input.history (request_headers decisions of authenticated principals):
#   {available, offences, by_reason: {reason: n}, window_seconds}
#   offences are the principal's denials for prompt injection, tool-result
#   injection, canary leaks, secrets or content safety within the window
#   (config abuse_offence_window), counted by every replica together.
# input.usage_pattern: {available, request_rate, baseline_request_rate,
#   request_ratio, token_rate, baseline_token_rate, token_ratio, age_seconds}
#   rates per minute; the baseline is the principal's own exponentially
#   weighted average (config abuse_baseline_window).
#
# Thresholds live in data.bulwark.abuse (data.yaml). A principal is never
# judged on a history Bulwark could not read (available false).
package bulwark

import rego.v1

abuse_settings := object.union(
	{
		"slow_after": 3,
		"slowdown_requests_per_minute": 6,
		"block_after": 5,
		"max_request_ratio": 0,
		"min_baseline_age_seconds": 3600,
	},
	abuse_data,
)

abuse_data := data.bulwark.abuse if is_object(data.bulwark.abuse)
else := {}

abuse_offences := input.history.offences if input.history.available
else := 0

# Blocked: block_after offences within the window. The block lifts as the
# offences age out of the window (blocked requests are not offences).
abuse_blocked if {
	abuse_settings.block_after > 0
	abuse_offences >= abuse_settings.block_after
}

# Blocked too, when the operator sets max_request_ratio: a request rate that
# many times the principal's established baseline (a stolen key used by a
# script). Off by default: a human's bursts vary too much to judge.
abuse_blocked if {
	abuse_settings.max_request_ratio > 0
	input.usage_pattern.available
	input.usage_pattern.age_seconds >= abuse_settings.min_baseline_age_seconds
	input.usage_pattern.request_ratio > abuse_settings.max_request_ratio
}

abuse_decision := {
	"allowed": false,
	"http_status": 429,
	"reason": "abuse_suspected",
	"message": sprintf("principal %s is refused for now: %d attacks within %d seconds", [input.principal.id, abuse_offences, abuse_window_seconds]),
	"headers": {"retry-after": sprintf("%d", [abuse_window_seconds])},
	"audit": {"alert": "abuse_suspected", "offences": abuse_offences},
}

abuse_window_seconds := input.history.window_seconds if input.history.window_seconds
else := 900

# Slowed down: from slow_after offences, a much lower request rate of its
# own, besides the route's limits (checked with them, all or nothing).
abuse_limits := [{
	"name": "abuse_slowdown",
	"tenant": principal_tenant,
	"principal": input.principal.id,
	"limit": abuse_settings.slowdown_requests_per_minute,
	"period": "1m",
}] if {
	abuse_settings.slow_after > 0
	abuse_offences >= abuse_settings.slow_after
} else := []
