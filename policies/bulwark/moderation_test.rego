package bulwark_test

import rego.v1

import data.bulwark

mod_alice := {"id": "alice", "kind": "api_key", "roles": ["user"], "tenant": "acme", "claims": {}}

# A prompt on the LLM route with the moderation verdict v.
mod_prompt(v) := {
	"attributes": {"request": {"http": {"method": "POST", "path": "/v1/chat/completions"}}},
	"phase": "request_body",
	"principal": mod_alice,
	"parsed_body": {"model": "m"},
	"llm": {"api": "openai.chat", "model": "m", "max_tokens": 0, "n": 1},
	"signals": {"prompt_injection": {"score": 0, "detected": false, "rules": []}, "canary_leak": false, "moderation": v},
}

mod_answer(phase, v) := {"phase": phase, "principal": mod_alice, "signals": {"canary_leak": false, "moderation": v}}

flagged_violence := {
	"available": true, "flagged": true, "categories": ["violence"],
	"scores": {"violence": 0.91, "hate": 0.02}, "error": "", "cached": false, "failure_mode": "fail_open",
}

clean := {
	"available": true, "flagged": false, "categories": [],
	"scores": {"violence": 0.2, "hate": 0.01}, "error": "", "cached": false, "failure_mode": "fail_open",
}

down(mode) := {
	"available": false, "flagged": false, "categories": [],
	"scores": {}, "error": "timeout", "cached": false, "failure_mode": mode,
}

test_moderation_flagged_prompt_is_denied if {
	d := bulwark.decision with input as mod_prompt(flagged_violence)
	not d.allowed
	d.http_status == 403
	d.reason == "moderation_flagged"
	d.dynamic_metadata.moderation_categories == ["violence"]
	contains(d.message, "request")
}

test_moderation_clean_prompt_is_allowed if {
	d := bulwark.decision with input as mod_prompt(clean)
	d.allowed
	d.reason == "allowed"
}

test_moderation_absent_signal_changes_nothing if {
	d := bulwark.decision with input as object.remove(mod_prompt(clean), ["signals"])
	d.allowed
}

test_moderation_unavailable_fail_open_is_allowed if {
	d := bulwark.decision with input as mod_prompt(down("fail_open"))
	d.allowed
}

test_moderation_unavailable_fail_closed_is_denied if {
	d := bulwark.decision with input as mod_prompt(down("fail_closed"))
	not d.allowed
	d.http_status == 503
	d.reason == "moderation_unavailable"
	d.dynamic_metadata.moderation_error == "timeout"
}

test_moderation_flagged_without_categories_is_denied if {
	v := object.union(flagged_violence, {"categories": []})
	d := bulwark.decision with input as mod_prompt(v)
	d.reason == "moderation_flagged"
	d.dynamic_metadata.moderation_categories == []
}

test_moderation_deny_categories_restrict if {
	d := bulwark.decision with input as mod_prompt(flagged_violence)
		with data.bulwark.moderation.deny_categories as ["self-harm"]
	d.allowed
	e := bulwark.decision with input as mod_prompt(object.union(flagged_violence, {"categories": ["self-harm", "violence"]}))
		with data.bulwark.moderation.deny_categories as ["self-harm"]
	e.reason == "moderation_flagged"
	e.dynamic_metadata.moderation_categories == ["self-harm"]
}

test_moderation_score_threshold_denies_unflagged if {
	d := bulwark.decision with input as mod_prompt(clean)
		with data.bulwark.moderation.score_thresholds as {"violence": 0.15}
	d.reason == "moderation_flagged"
	d.dynamic_metadata.moderation_categories == ["violence"]
	e := bulwark.decision with input as mod_prompt(clean)
		with data.bulwark.moderation.score_thresholds as {"violence": 0.5}
	e.allowed
}

# Identity comes first: an unauthenticated caller gets 401 whatever the
# moderation model says, so the moderation verdict cannot be probed
# without a credential.
test_moderation_after_authentication if {
	anon := {"id": "", "kind": "anonymous", "roles": [], "tenant": "", "claims": {}}
	d := bulwark.decision with input as object.union(mod_prompt(flagged_violence), {"principal": anon})
	d.http_status == 401
}

test_moderation_flagged_answer_is_stopped if {
	some phase in ["response_body", "response_body_chunk"]
	d := bulwark.decision with input as mod_answer(phase, flagged_violence)
	not d.allowed
	d.reason == "moderation_flagged"
	contains(d.message, "answer")
}

test_moderation_answer_unavailable if {
	d := bulwark.decision with input as mod_answer("response_body_chunk", down("fail_closed"))
	d.reason == "moderation_unavailable"
	e := bulwark.decision with input as mod_answer("response_body_chunk", down("fail_open"))
	e.allowed
	f := bulwark.decision with input as mod_answer("response_body", clean)
	f.allowed
}

# The canary leak still names itself when the moderation model also flags.
test_moderation_canary_leak_first if {
	i := mod_answer("response_body", flagged_violence)
	d := bulwark.decision with input as object.union(i, {"signals": {"canary_leak": true}})
	d.reason == "canary_leak"
}
