package bulwark_test

import rego.v1

import data.bulwark

abuse_alice := {"id": "alice", "kind": "api_key", "roles": ["user"], "tenant": "acme", "claims": {}}

abuse_req(offences) := {
	"attributes": {"request": {"http": {"method": "GET", "path": "/v1/models", "headers": {}}}},
	"phase": "request_headers",
	"principal": abuse_alice,
	"history": {"available": true, "offences": offences, "by_reason": {"prompt_injection": offences}, "window_seconds": 900},
	"usage_pattern": {"available": true, "request_rate": 1, "baseline_request_rate": 1, "request_ratio": 1, "token_rate": 0, "baseline_token_rate": 0, "token_ratio": 1, "age_seconds": 10},
}

test_clean_history_allowed_without_slowdown if {
	d := bulwark.decision with input as abuse_req(0)
	d.allowed
	not abuse_limit_in(d)
}

test_slow_after_adds_the_slowdown_limit if {
	d := bulwark.decision with input as abuse_req(3)
	d.allowed
	abuse_limit_in(d)
}

test_block_after_blocks_with_alert if {
	d := bulwark.decision with input as abuse_req(5)
	not d.allowed
	d.http_status == 429
	d.reason == "abuse_suspected"
	d.audit.alert == "abuse_suspected"
	d.headers["retry-after"] == "900"
}

test_unavailable_history_never_blocks if {
	d := bulwark.decision with input as object.union(abuse_req(0), {"history": {"available": false}})
	d.allowed
}

test_thresholds_come_from_data if {
	d := bulwark.decision with input as abuse_req(2) with data.bulwark.abuse.block_after as 2
	d.reason == "abuse_suspected"
	d2 := bulwark.decision with input as abuse_req(9) with data.bulwark.abuse.block_after as 0 with data.bulwark.abuse.slow_after as 0
	d2.allowed
}

test_request_ratio_off_by_default if {
	surge := object.union(abuse_req(0), {"usage_pattern": {"available": true, "request_ratio": 500, "age_seconds": 86400}})
	d := bulwark.decision with input as surge
	d.allowed
	d2 := bulwark.decision with input as surge with data.bulwark.abuse.max_request_ratio as 50
	d2.reason == "abuse_suspected"
	young := object.union(surge, {"usage_pattern": {"available": true, "request_ratio": 500, "age_seconds": 60}})
	d3 := bulwark.decision with input as young with data.bulwark.abuse.max_request_ratio as 50
	d3.allowed
}

test_unauthenticated_is_401_not_abuse if {
	anon := object.union(abuse_req(9), {"principal": {"id": "", "kind": "anonymous", "roles": [], "tenant": "", "claims": {}}})
	d := bulwark.decision with input as anon
	d.http_status == 401
}

abuse_limit_in(d) if {
	some l in d.limits
	l.name == "abuse_slowdown"
}
