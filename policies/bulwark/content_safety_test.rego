package bulwark_test

import rego.v1

import data.bulwark

cs_alice := {"id": "alice", "kind": "api_key", "roles": ["user"], "tenant": "acme", "claims": {}}

cs_categories := {
	"weapons": {"terms": ["nerve agent"], "directions": ["request", "response"], "action": "deny"},
	"brand": {"terms": ["acme rival"], "directions": ["response"], "action": "redact"},
	"watch": {"terms": ["layoffs"], "directions": ["request"], "action": "flag"},
}

cs_prompt(matches) := {
	"attributes": {"request": {"http": {"method": "POST", "path": "/v1/chat/completions", "body": "{}"}}},
	"phase": "request_body",
	"principal": cs_alice,
	"parsed_body": {"model": "m", "messages": []},
	"llm": {"api": "openai.chat", "model": "m", "max_tokens": 0, "n": 1},
	"signals": {"prompt_injection": {"score": 0, "rules": []}, "content_safety": matches},
}

cs_answer(phase, matches) := {"phase": phase, "principal": cs_alice, "signals": {"canary_leak": false, "content_safety": matches}}

test_prompt_with_deny_category_is_403_blocked_content if {
	d := bulwark.decision with input as cs_prompt([{"category": "weapons", "start": 3, "end": 14}])
		with data.bulwark.content_safety.categories as cs_categories
	not d.allowed
	d.http_status == 403
	d.reason == "blocked_content"
	d.dynamic_metadata.content_safety_categories == ["weapons"]
}

test_prompt_with_flag_category_is_allowed if {
	d := bulwark.decision with input as cs_prompt([{"category": "watch", "start": 0, "end": 7}])
		with data.bulwark.content_safety.categories as cs_categories
	d.allowed
}

test_prompt_without_matches_is_allowed if {
	d := bulwark.decision with input as cs_prompt([]) with data.bulwark.content_safety.categories as cs_categories
	d.allowed
}

test_unknown_category_in_signals_does_not_deny if {
	# A category no longer in data (a reload raced a scan) counts as flag.
	d := bulwark.decision with input as cs_prompt([{"category": "gone", "start": 0, "end": 2}])
		with data.bulwark.content_safety.categories as cs_categories
	d.allowed
}

test_answer_with_deny_category_is_stopped if {
	some phase in ["response_body", "response_body_chunk"]
	d := bulwark.decision with input as cs_answer(phase, [{"category": "weapons", "start": 0, "end": 11}])
		with data.bulwark.content_safety.categories as cs_categories
	not d.allowed
	d.reason == "blocked_content"
	d.dynamic_metadata.content_safety_categories == ["weapons"]
}

test_redact_categories_become_redact_rules if {
	some phase in ["response_headers", "response_body", "response_body_chunk"]
	d := bulwark.decision with input as cs_answer(phase, []) with data.bulwark.content_safety.categories as cs_categories
	d.allowed
	some r in d.redact
	r.detector == "content_safety"
	r.types == ["brand"]
}

test_redact_category_match_in_answer_is_allowed_and_redacted if {
	d := bulwark.decision with input as cs_answer("response_body", [{"category": "brand", "start": 0, "end": 10}])
		with data.bulwark.content_safety.categories as cs_categories
	d.allowed
	{r.detector | some r in d.redact} == {"markup", "pii", "secrets", "canary", "content_safety"}
}

test_markup_is_removed_first if {
	d := bulwark.decision with input as cs_answer("response_headers", [])
	d.redact[0] == {"detector": "markup", "action": "remove"}
}

test_no_redact_categories_no_content_rule if {
	d := bulwark.decision with input as cs_prompt([]) with data.bulwark.content_safety.categories as {}
	d.allowed
	not "content_safety" in {r.detector | some r in d.redact}
}

test_default_data_selftest_category_denies if {
	d := bulwark.decision with input as cs_prompt([{"category": "bulwark_selftest", "start": 0, "end": 31}])
	d.reason == "blocked_content"
}

test_default_data_has_no_allowed_link_hosts if {
	count(data.bulwark.output.allowed_link_hosts) == 0
	data.bulwark.output.sanitize
}

test_unauthenticated_is_401_before_content_rules if {
	p := object.union(cs_prompt([{"category": "weapons", "start": 0, "end": 1}]), {"principal": {"id": "", "kind": "anonymous", "roles": [], "tenant": "", "claims": {}}})
	d := bulwark.decision with input as p with data.bulwark.content_safety.categories as cs_categories
	d.http_status == 401
}
