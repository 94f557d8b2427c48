package bulwark_test

import rego.v1

import data.bulwark

anonymous := {"id": "", "kind": "anonymous", "roles": [], "tenant": "", "claims": {}}

alice := {"id": "alice", "kind": "api_key", "roles": ["user"], "tenant": "acme", "claims": {}}

ops := {"id": "ops", "kind": "jwt", "roles": ["auditor"], "tenant": "acme", "claims": {}}

req(method, path, principal) := {
	"attributes": {"request": {"http": {"method": method, "path": path}}},
	"phase": "request_headers",
	"principal": principal,
}

with_model(r, model) := object.union(r, {"parsed_body": {"model": model}, "llm": llm({"model": model})})

# llm is input.llm as Bulwark builds it from a parsed LLM request body.
llm(fields) := object.union({"api": "openai.chat", "model": "", "max_tokens": 0, "n": 1}, object.filter(fields, ["model", "max_tokens", "n"]))

test_user_may_call_llm_routes if {
	d := bulwark.decision with input as req("POST", "/v1/chat/completions", alice)
	d.allowed
	d.headers["x-bulwark-principal"] == "alice"
	d.headers["x-bulwark-tenant"] == "acme"
	d.headers["x-bulwark-route"] == "llm"
}

test_missing_credential_is_401 if {
	d := bulwark.decision with input as req("POST", "/v1/chat/completions", anonymous)
	not d.allowed
	d.http_status == 401
	d.reason == "missing_credential"
}

test_rejected_credential_is_401_with_reason if {
	p := object.union(anonymous, {"error": "expired"})
	d := bulwark.decision with input as req("POST", "/v1/chat/completions", p)
	d.http_status == 401
	d.reason == "invalid_credential"
	contains(d.message, "expired")
}

test_wrong_role_is_403 if {
	d := bulwark.decision with input as req("POST", "/v1/chat/completions", ops)
	not d.allowed
	d.http_status == 403
	d.reason == "role_not_allowed"
}

test_public_route_needs_no_credential if {
	d := bulwark.decision with input as req("GET", "/healthz?verbose=1", anonymous)
	d.allowed
	"x-bulwark-principal" in d.request_headers_to_remove
}

test_unknown_route_denied if {
	d := bulwark.decision with input as req("GET", "/admin", alice)
	not d.allowed
	d.http_status == 403
	d.reason == "route_not_allowed"
}

test_wrong_method_denied if {
	d := bulwark.decision with input as req("DELETE", "/v1/models", alice)
	d.reason == "route_not_allowed"
}

test_prefix_is_not_substring if {
	d := bulwark.decision with input as req("POST", "/v10/x", alice)
	not d.allowed
}

test_empty_input_denied if {
	d := bulwark.decision with input as {}
	not d.allowed
}

test_models_unrestricted_by_default if {
	d := bulwark.decision with input as with_model(req("POST", "/v1/chat/completions", alice), "gpt-4o")
	d.allowed
}

test_model_allow_list if {
	models := {"user": ["gpt-4o-mini"], "admin": []}
	ok := bulwark.decision with input as with_model(req("POST", "/v1/chat/completions", alice), "gpt-4o-mini")
		with data.bulwark.models as models
	ok.allowed
	no := bulwark.decision with input as with_model(req("POST", "/v1/chat/completions", alice), "gpt-4o")
		with data.bulwark.models as models
	not no.allowed
	no.reason == "model_not_allowed"
	admin := object.union(alice, {"roles": ["user", "admin"]})
	yes := bulwark.decision with input as with_model(req("POST", "/v1/chat/completions", admin), "gpt-4o")
		with data.bulwark.models as models
	yes.allowed
}

test_routes_come_from_data if {
	routes := [{"name": "only", "path": "/x", "methods": ["PUT"], "roles": ["user"]}]
	d := bulwark.decision with input as req("PUT", "/x", alice) with data.bulwark.routes as routes
	d.allowed
	e := bulwark.decision with input as req("POST", "/v1/chat/completions", alice) with data.bulwark.routes as routes
	not e.allowed
}

body_req(principal, body) := object.union(req("POST", "/v1/chat/completions", principal), {"phase": "request_body", "parsed_body": body, "llm": llm(body)})

test_request_rate_charged_at_request_headers_only if {
	d := bulwark.decision with input as with_model(req("POST", "/v1/chat/completions", alice), "m")
	rpm := [l | some l in d.limits; l.name == "requests_per_minute"][0]
	rpm.tenant == "acme"
	rpm.principal == "alice"
	not rpm.key
	rpm.limit == 600
	rpm.period == "1m"
	not "tokens_per_day" in {l.name | some l in d.limits}
	b := bulwark.decision with input as body_req(alice, {"model": "m"})
	b.allowed
	not "requests_per_minute" in {l.name | some l in b.limits}
}

test_token_quota_charged_in_configured_phase if {
	b := bulwark.decision with input as body_req(alice, {"model": "m"})
	tpd := [l | some l in b.limits; l.name == "tokens_per_day"][0]
	tpd.tenant == "acme"
	tpd.principal == ""
	tpd.cost == 1024
	tpd.estimated
	h := bulwark.decision with input as with_model(req("POST", "/v1/chat/completions", alice), "m")
		with data.bulwark.limits.token_quota_phase as "request_headers"
	"tokens_per_day" in {l.name | some l in h.limits}
}

test_token_reservation_uses_max_tokens if {
	d := bulwark.decision with input as body_req(alice, {"model": "m", "max_tokens": 300})
	[l | some l in d.limits; l.name == "tokens_per_day"][0].cost == 300
}

test_token_reservation_counts_every_answer if {
	d := bulwark.decision with input as body_req(alice, {"model": "m", "max_tokens": 300, "n": 3})
	[l | some l in d.limits; l.name == "tokens_per_day"][0].cost == 900
	e := bulwark.decision with input as body_req(alice, {"model": "m", "n": 2})
	[l | some l in e.limits; l.name == "tokens_per_day"][0].cost == 2048
}

# The model allow-list reads the LLM request the upstream will read, not a
# parsed_body a content-type label shaped (finding: form-labelled JSON).
test_model_allow_list_reads_llm_request if {
	models := {"user": ["gpt-4o-mini"], "admin": []}
	r := object.union(body_req(alice, {}), {"parsed_body": {"model": ["gpt-4o-mini"]}, "llm": llm({"model": "gpt-4o"})})
	d := bulwark.decision with input as r with data.bulwark.models as models
	not d.allowed
	d.reason == "model_not_allowed"
}

test_restricted_role_needs_a_model if {
	models := {"user": ["gpt-4o-mini"]}
	d := bulwark.decision with input as body_req(alice, {"messages": []}) with data.bulwark.models as models
	d.reason == "model_not_allowed"
}

test_llm_request_not_parsed_is_415 if {
	r := object.union(object.remove(body_req(alice, {}), ["llm", "parsed_body"]), {"parsed_body": [1], "parse_errors": {"llm": "top level is not an object"}})
	d := bulwark.decision with input as r
	d.http_status == 415
	d.reason == "unsupported_body"
}

test_request_body_allowed_with_redaction if {
	d := bulwark.decision with input as body_req(alice, {"model": "m", "messages": []})
	d.allowed
	{r.detector | some r in d.redact} == {"pii", "secrets"}
}

test_request_body_not_json_is_415 if {
	r := object.remove(body_req(alice, {}), ["parsed_body"])
	d := bulwark.decision with input as r
	d.http_status == 415
}

test_response_phases_redact_and_allow if {
	some phase in ["response_headers", "response_body", "response_body_chunk"]
	d := bulwark.decision with input as {"phase": phase, "principal": alice, "signals": {"canary_leak": false}}
	d.allowed
	# markup: unsafe links, images and HTML are removed (content_safety.rego).
	{r.detector | some r in d.redact} == {"markup", "pii", "secrets", "canary"}
}

test_canary_leak_stops_the_answer if {
	d := bulwark.decision with input as {"phase": "response_body_chunk", "principal": alice, "signals": {"canary_leak": true}}
	not d.allowed
	d.reason == "canary_leak"
	d.audit.alert == "canary_leak"
}

test_get_has_no_token_quota if {
	d := bulwark.decision with input as req("GET", "/v1/models", alice)
	count(d.limits) == 1
}

# A principal without a tenant is counted as a principal, never as a tenant
# of the same name: its quota is its own, typed "principal" (the old key
# "{acme}" of a tenant-less "acme" was tenant acme's quota).
test_limits_without_tenant_are_the_principals if {
	tenantless := object.union(alice, {"id": "acme", "tenant": ""})
	d := bulwark.decision with input as req("GET", "/v1/models", tenantless)
	d.limits[0].principal == "acme"
	d.limits[0].tenant == ""
	b := bulwark.decision with input as body_req(tenantless, {"model": "m"})
	tpd := [l | some l in b.limits; l.name == "tokens_per_day"][0]
	tpd.principal == "acme"
	tpd.tenant == ""
	not tpd.key
}

test_limits_come_from_data if {
	d := bulwark.decision with input as req("GET", "/v1/models", alice) with data.bulwark.limits.requests_per_minute as 5
	d.limits[0].limit == 5
}

with_injection_score(r, score) := object.union(r, {"signals": {"prompt_injection": {"score": score, "detected": score >= 0.6, "rules": ["instruction_override"]}}})

test_prompt_injection_denied if {
	r := with_injection_score(with_model(req("POST", "/v1/chat/completions", alice), "m"), 0.93)
	d := bulwark.decision with input as r
	not d.allowed
	d.http_status == 403
	d.reason == "prompt_injection"
}

test_prompt_below_threshold_allowed if {
	r := with_injection_score(with_model(req("POST", "/v1/chat/completions", alice), "m"), 0.2)
	d := bulwark.decision with input as r
	d.allowed
}

test_injection_threshold_comes_from_data if {
	r := with_injection_score(with_model(req("POST", "/v1/chat/completions", alice), "m"), 0.5)
	d := bulwark.decision with input as r with data.bulwark.detectors.prompt_injection_threshold as 0.4
	d.reason == "prompt_injection"
	e := bulwark.decision with input as r
	e.allowed
}

test_no_signals_no_injection_verdict if {
	d := bulwark.decision with input as with_model(req("POST", "/v1/chat/completions", alice), "m")
	d.allowed
}

test_truncated_body_denied if {
	r := object.union(req("POST", "/v1/chat/completions", alice), {"truncated_body": true})
	d := bulwark.decision with input as r
	d.http_status == 413
	d.reason == "body_too_large_to_inspect"
	e := bulwark.decision with input as r with data.bulwark.detectors.deny_truncated_bodies as false
	e.allowed
}

with_raw_body(r, ct) := object.union(r, {"attributes": {"request": {"http": {
	"method": r.attributes.request.http.method,
	"path": r.attributes.request.http.path,
	"headers": {"content-type": ct},
	"body": "{\"model\": \"m\", \"messages\": []}",
}}}})

test_unparsed_body_denied if {
	r := with_raw_body(req("POST", "/v1/chat/completions", alice), "text/plain")
	d := bulwark.decision with input as r
	d.http_status == 415
	d.reason == "unsupported_body"
}

test_parsed_body_allowed if {
	r := object.union(with_raw_body(req("POST", "/v1/chat/completions", alice), "application/json"), {"parsed_body": {"model": "m", "messages": []}})
	d := bulwark.decision with input as r
	d.allowed
}

test_unparsed_body_allowed_when_not_required if {
	r := with_raw_body(req("POST", "/v1/chat/completions", alice), "text/plain")
	d := bulwark.decision with input as r with data.bulwark.detectors.require_json_bodies as false
	d.allowed
}

# The grey zone (data.bulwark.redaction.never_redact) is read by Bulwark at
# every load and applied by the detectors; these tests keep its documented
# defaults: loopback, private, link-local and documentation ranges, the
# reserved example domains, and no public address or real domain.
in_grey_ranges(ip) if {
	some r in data.bulwark.redaction.never_redact.ip_ranges
	net.cidr_contains(r, ip)
}

test_grey_zone_default_ip_ranges if {
	every ip in [
		"0.0.0.0", "127.0.0.1", "10.0.0.5", "172.16.0.1", "172.31.255.254", "192.168.1.10", "169.254.169.254",
		"192.0.2.10", "198.51.100.1", "203.0.113.5", "::1", "fe80::1", "fd00::1", "2001:db8::1",
	] {
		in_grey_ranges(ip)
	}
	every ip in ["8.8.8.8", "81.2.69.160", "172.32.0.1", "100.64.0.1", "2a00:1450:4007:80e::200e"] {
		not in_grey_ranges(ip)
	}
}

test_grey_zone_default_email_domains if {
	domains := {d | some d in data.bulwark.redaction.never_redact.email_domains}
	domains == {"example.com", "example.org", "example.net", "example", "test", "invalid", "localhost"}
}

test_grey_zone_default_values if {
	values := {v | some v in data.bulwark.redaction.never_redact.values}
	"4242 4242 4242 4242" in values
	"4111 1111 1111 1111" in values
	"GB82 WEST 1234 5698 7654 32" in values
	some v in values
	startswith(v, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.")
}

# The grey zone narrows what counts as a finding; it does not remove a
# detector from the redaction rules.
test_grey_zone_keeps_redaction_rules if {
	{r.detector | some r in data.bulwark.redact.request} == {"pii", "secrets"}
	{r.detector | some r in data.bulwark.redact.response} == {"pii", "secrets", "canary"}
}

# Tools (agents): data.bulwark.tools, tool_not_allowed, tool_result_injection.

support_tools := {"user": ["search_*", "get_weather"], "admin": []}

with_tools(r, tools, calls) := object.union(r, {"llm": object.union(r.llm, {
	"tools": [{"name": t, "type": "function", "description": ""} | some t in tools],
	"tool_calls": [{"id": "call_1", "name": c} | some c in calls],
})})

chat_req := with_model(req("POST", "/v1/chat/completions", alice), "m")

answer(calls) := {"phase": "response_body", "principal": alice, "signals": {"canary_leak": false}, "response": {
	"status": 200, "content_type": "application/json",
	"tool_calls": [{"id": "call_1", "name": c, "arguments": {}, "arguments_valid": true} | some c in calls],
}}

test_tools_every_tool_allowed_without_a_list if {
	d := bulwark.decision with input as with_tools(chat_req, ["delete_repo"], ["delete_repo"])
	d.allowed
	e := bulwark.decision with input as answer(["delete_repo"])
	e.allowed
}

test_tools_missing_tools_map_restricts_nothing if {
	d := bulwark.decision with input as answer(["delete_repo"]) with data.bulwark.tools as null
	d.allowed
}

test_tools_listed_and_glob_allowed if {
	d := bulwark.decision with input as with_tools(chat_req, ["search_web", "get_weather"], ["search_docs"]) with data.bulwark.tools as support_tools
	d.allowed
	e := bulwark.decision with input as answer(["search_web", "get_weather"]) with data.bulwark.tools as support_tools
	e.allowed
}

test_tools_declared_tool_not_allowed if {
	d := bulwark.decision with input as with_tools(chat_req, ["search_web", "send_email"], []) with data.bulwark.tools as support_tools
	not d.allowed
	d.http_status == 403
	d.reason == "tool_not_allowed"
	d.dynamic_metadata.tools == ["send_email"]
	contains(d.message, "send_email")
}

test_tools_history_call_not_allowed if {
	d := bulwark.decision with input as with_tools(chat_req, [], ["send_email"]) with data.bulwark.tools as support_tools
	d.reason == "tool_not_allowed"
}

test_tools_answer_call_not_allowed if {
	some phase in ["response_body", "response_body_chunk"]
	a := object.union(answer(["search_web", "send_email"]), {"phase": phase})
	d := bulwark.decision with input as a with data.bulwark.tools as support_tools
	not d.allowed
	d.http_status == 403
	d.reason == "tool_not_allowed"
	d.dynamic_metadata.tools == ["send_email"]
}

test_tools_any_role_may_allow if {
	both := object.union(alice, {"roles": ["user", "admin"]})
	d := bulwark.decision with input as object.union(answer(["send_email"]), {"principal": both}) with data.bulwark.tools as support_tools
	d.allowed
}

test_tools_glob_is_anchored if {
	d := bulwark.decision with input as answer(["my_search_web"]) with data.bulwark.tools as support_tools
	d.reason == "tool_not_allowed"
}

with_tool_result_score(r, score) := object.union(r, {"signals": {
	"prompt_injection": {"score": 0.1, "detected": false, "rules": []},
	"tool_results": {"prompt_injection": {"score": score, "detected": score >= 0.6, "rules": ["r1"]}},
}})

test_tool_result_injection_denied_below_prompt_threshold if {
	d := bulwark.decision with input as with_tool_result_score(chat_req, 0.5)
	not d.allowed
	d.http_status == 403
	d.reason == "tool_result_injection"
	d.dynamic_metadata.prompt_injection_rules == ["r1"]
	# The same score in the user's own prompt is under its threshold.
	e := bulwark.decision with input as with_injection_score(chat_req, 0.5)
	e.allowed
}

test_tool_result_threshold_comes_from_data if {
	d := bulwark.decision with input as with_tool_result_score(chat_req, 0.2)
	d.allowed
	e := bulwark.decision with input as with_tool_result_score(chat_req, 0.2) with data.bulwark.detectors.tool_result_injection_threshold as 0.15
	e.reason == "tool_result_injection"
}

test_tool_result_threshold_stricter_than_prompt if {
	data.bulwark.detectors.tool_result_injection_threshold < data.bulwark.detectors.prompt_injection_threshold
}

eu_user := object.union(alice, {"id": "eve", "tenant": "eu-bank"})

with_region_header(r, region) := object.union(r, {"attributes": {"request": {"http": {"headers": {"x-bulwark-upstream-region": region}}}}})

with_route_region(r, region) := object.union(r, {"attributes": {"routeMetadataContext": {"filterMetadata": {"bulwark": {"upstream_region": region}}}}})

test_residency_allows_a_listed_region if {
	d := bulwark.decision with input as with_route_region(req("POST", "/v1/chat/completions", eu_user), "eu-west-1")
	d.allowed
}

test_residency_denies_another_region_from_route_metadata if {
	d := bulwark.decision with input as with_route_region(req("POST", "/v1/chat/completions", eu_user), "us-east-1")
	not d.allowed
	d.http_status == 403
	d.reason == "data_residency"
}

test_residency_denies_another_region_from_the_header if {
	d := bulwark.decision with input as with_region_header(req("POST", "/v1/chat/completions", eu_user), "us-east-1")
	d.reason == "data_residency"
}

test_residency_route_metadata_wins_over_the_header if {
	r := with_region_header(with_route_region(req("POST", "/v1/chat/completions", eu_user), "eu-central-1"), "us-east-1")
	d := bulwark.decision with input as r
	d.allowed
}

test_residency_denies_an_unknown_region_for_a_listed_tenant if {
	d := bulwark.decision with input as req("POST", "/v1/chat/completions", eu_user)
	d.reason == "data_residency"
}

test_residency_leaves_unlisted_tenants_alone if {
	d := bulwark.decision with input as with_region_header(req("POST", "/v1/chat/completions", alice), "us-east-1")
	d.allowed
}
