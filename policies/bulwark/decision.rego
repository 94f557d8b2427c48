# Bulwark's default policy. Bulwark asks for data.bulwark.decision and expects
# either a boolean or an object with OPA-Envoy's result fields plus `reason`
# (and `message`, the human text of Bulwark's JSON error body).
#
# Read it top to bottom: deny by default, then say exactly what is allowed.
# Everything tunable (routes, roles, models) lives in data.yaml beside this file.
package bulwark

import rego.v1

# Deny unless a rule below says otherwise. The reason is machine-readable: it
# reaches the client's error body, the metrics and the logs.
default decision := {
	"allowed": false,
	"http_status": 403,
	"reason": "route_not_allowed",
	"message": "no route allows this method and path",
}

# Response phases (ext_proc) decide on what the model answered; the request
# was authorized before it reached the model. A request on a known route
# gets that route's decision.
decision := mcp_response_decision if {
	input.phase == "response_body"
	mcp_answer_read # mcp.rego
} else := response_decision if {
	response_phase
} else := mcp_route_decision(route) if {
	input.mcp
	route := matched_route
} else := route_decision(route) if {
	route := matched_route
}

response_phase if input.phase in {"response_headers", "response_body", "response_body_chunk"}

# The model repeated the canary Bulwark planted in the system prompt: it is
# revealing its instructions. The answer is stopped (a streamed one ends
# with an error event) and the audit record is tagged for alerting.
response_decision := {
	"allowed": false,
	"http_status": 403,
	"reason": "canary_leak",
	"message": "the answer revealed protected instructions and was stopped",
	"audit": {"alert": "canary_leak"},
} if {
	input.signals.canary_leak
} else := {
	"allowed": false,
	"http_status": 403,
	"reason": "tool_not_allowed",
	# The message reaches the client in the error event: it names no tool
	# (the call it stopped must not reach the client in any form); the
	# names are in the dynamic metadata and the audit trail.
	"message": sprintf("the model called a tool principal %s may not use; the answer was stopped", [input.principal.id]),
	"dynamic_metadata": {"tools": denied_response_tools},
} if {
	count(denied_response_tools) > 0
} else := moderation_decision if {
	# moderation.rego: the moderation model flagged the answer (a streamed
	# one ends with an error event), or gave no verdict under fail_closed.
	moderation_denies
} else := content_blocked_decision if {
	# A deny category's term in the answer (content_safety.rego): a
	# streamed answer ends with an error event, a buffered one is replaced.
	count(content_denied) > 0
} else := {
	"allowed": true,
	"reason": "allowed",
	"redact": response_redact_rules,
}

# Public routes need no credential. Headers Bulwark sets for authenticated
# callers are removed so a client cannot forge them.
route_decision(route) := {
	"allowed": true,
	"reason": "public_route",
	"headers": {"x-bulwark-route": route.name},
	"request_headers_to_remove": ["x-bulwark-principal", "x-bulwark-tenant"],
} if {
	route.public
} else := {
	"allowed": false,
	"http_status": 401,
	"reason": unauthenticated_reason,
	"message": unauthenticated_message,
	"headers": {"www-authenticate": "Bearer"},
} if {
	not authenticated
} else := {
	"allowed": false,
	"http_status": 403,
	"reason": "role_not_allowed",
	"message": sprintf("principal %s has none of the roles this route needs", [input.principal.id]),
} if {
	not role_allowed(route)
} else := abuse_decision if {
	# abuse.rego: a principal that keeps attacking is blocked (and alerted on).
	abuse_blocked
} else := {
	"allowed": false,
	"http_status": 415,
	"reason": "unsupported_body",
	"message": "LLM request bodies must be valid JSON sent as application/json",
} if {
	# A body Bulwark could not parse (another content type, or malformed
	# JSON) is a body the detectors did not see, while the model's API may
	# still read it: refuse it rather than pass it on uninspected.
	http.method == "POST"
	body_present
	not input.truncated_body
	body_not_inspected
	data.bulwark.detectors.require_json_bodies
} else := {
	"allowed": false,
	"http_status": 413,
	"reason": "body_too_large_to_inspect",
	"message": "the request body is larger than the gateway inspects; send a smaller request",
} if {
	# Envoy sent only the first bytes of the body (allow_partial_message): the
	# detectors cannot see the rest, so a padded prompt would slip past them.
	input.truncated_body
	data.bulwark.detectors.deny_truncated_bodies
} else := {
	"allowed": false,
	"http_status": 403,
	"reason": "prompt_injection",
	"message": "the prompt looks like a prompt-injection attempt",
	"dynamic_metadata": {"prompt_injection_rules": input.signals.prompt_injection.rules},
} if {
	injection_detected
} else := {
	"allowed": false,
	"http_status": 403,
	"reason": "tool_result_injection",
	"message": "a tool result in the conversation carries instructions to the model",
	"dynamic_metadata": {"prompt_injection_rules": input.signals.tool_results.prompt_injection.rules},
} if {
	tool_result_injection_detected
} else := content_blocked_decision if {
	# A deny category's term in the prompt (content_safety.rego).
	count(content_denied) > 0
} else := {
	"allowed": false,
	"http_status": 403,
	"reason": "tool_not_allowed",
	"message": sprintf("tool %s is not allowed for principal %s", [denied_request_tools[0], input.principal.id]),
	"dynamic_metadata": {"tools": denied_request_tools},
} if {
	count(denied_request_tools) > 0
} else := moderation_decision if {
	# moderation.rego: the moderation model flagged the prompt, or gave no
	# verdict under fail_closed.
	moderation_denies
} else := {
	"allowed": false,
	"http_status": 403,
	"reason": "model_not_allowed",
	"message": sprintf("model %s is not allowed for this principal", [input.llm.model]),
} if {
	not model_allowed
} else := {
	"allowed": false,
	"http_status": 403,
	"reason": "data_residency",
	"message": sprintf("tenant %s may not send data to region %s", [input.principal.tenant, upstream_region_name]),
} if {
	not residency_allowed
} else := budget_denial if {
	# A tenant past its budget (budget.rego).
	budget_exceeded
} else := {
	"allowed": true,
	"reason": "allowed",
	"headers": {
		"x-bulwark-route": route.name,
		"x-bulwark-principal": input.principal.id,
		"x-bulwark-tenant": input.principal.tenant,
	},
	"dynamic_metadata": {"route": route.name},
	"limits": phase_limits,
	"redact": request_redact_rules,
}

# The first route in data.bulwark.routes that matches the request, if any
# (undefined when none does).
matched_route := [r |
	some r in data.bulwark.routes
	http.method in r.methods
	path_matches(r)
][0]

http := input.attributes.request.http

# The path without its query string, as Envoy forwards it.
request_path := split(http.path, "?")[0]

path_matches(r) if request_path == r.path

path_matches(r) if startswith(request_path, r.prefix)

# Envoy sent a body (with_request_body): as a string, or as bytes with
# pack_as_bytes; ext_proc's request_body phase always has one.
body_present if http.body != ""

body_present if input.phase == "request_body"

body_present if http.rawBody != ""

# No parsed body, or a body on an LLM API route that is not a request of
# that API (Bulwark reads those routes as JSON whatever the content-type
# label, as the APIs do, and records why it could not: parse_errors.llm).
body_not_inspected if not input.parsed_body

body_not_inspected if input.parse_errors.body

body_not_inspected if input.parse_errors.llm

# The detectors' score, against the threshold operators set in data.
injection_detected if {
	input.signals.prompt_injection.score >= data.bulwark.detectors.prompt_injection_threshold
}

authenticated if input.principal.kind in {"api_key", "jwt", "mtls"}

# A presented but rejected credential says why (expired, revoked, ...);
# no credential at all is a different answer.
unauthenticated_reason := "invalid_credential" if input.principal.error
else := "missing_credential"

unauthenticated_message := sprintf("credential rejected: %s", [input.principal.error]) if input.principal.error
else := "this route needs an API key or a bearer token"

role_allowed(route) if {
	some role in input.principal.roles
	role in route.roles
}

# The model comes from the parsed LLM request (input.llm), the body the
# upstream reads, never from a parsed_body shaped by the content-type label.
# No LLM request read yet (ext_authz without the body; ext_proc decides again
# on the body): nothing to restrict here.
model_allowed if not input.llm

# A body that is not one of the LLM APIs and names no model.
model_allowed if {
	input.llm.api == "generic"
	input.llm.model == ""
}

# A role without a model list may use any model.
model_allowed if {
	some role in input.principal.roles
	count(object.get(data.bulwark.models, role, [])) == 0
}

model_allowed if {
	some role in input.principal.roles
	input.llm.model in data.bulwark.models[role]
}

# Rate limits and quotas for an authenticated request, from data.bulwark.limits.
# A limit names whose counter it is with typed fields, never a key spliced
# together here: "tenant" and "principal" (and "key", an opaque extra
# dimension). Bulwark builds the Redis key from them, escaped, so a principal
# without a tenant never counts against a tenant that has its name. The first
# field set is the Redis Cluster hash tag: both limits start with the tenant
# (or, without one, the principal), so they live in one slot and are checked
# in one round trip.
#
# Each exchange is charged once: the request rate where the request is first
# decided (ext_authz's check, or ext_proc's request headers when it runs
# alone), the token quota in the phase data.bulwark.limits.token_quota_phase
# names: request_body (ext_proc, which reconciles the reservation with the
# model's reported usage on the same replica) or request_headers (ext_authz
# alone, which can only estimate).
# abuse_limits (abuse.rego) slow a repeated offender down.
phase_limits := array.concat(array.concat(request_limits, abuse_limits), phase_token_limits) if input.phase == "request_headers"
else := phase_token_limits

phase_token_limits := token_limits if input.phase == data.bulwark.limits.token_quota_phase
else := []

principal_tenant := object.get(input.principal, "tenant", "")

# The token quota is the tenant's; a principal without a tenant has its own.
quota_principal := "" if principal_tenant != ""
else := input.principal.id

request_limits := [{
	"name": "requests_per_minute",
	"tenant": principal_tenant,
	"principal": input.principal.id,
	"limit": data.bulwark.limits.requests_per_minute,
	"period": "1m",
}]

token_limits := [{
	"name": "tokens_per_day",
	"tenant": principal_tenant,
	"principal": quota_principal,
	"limit": data.bulwark.limits.tokens_per_day,
	"period": "24h",
	"cost": requested_tokens,
	"estimated": true,
}] if http.method == "POST"
else := []

# The model may produce up to max_tokens (max_completion_tokens,
# max_output_tokens: input.llm.max_tokens) for each of the n answers it is
# asked for; reserve that, or the configured default per answer when the
# request does not say.
requested_tokens := per_answer_tokens * answers

per_answer_tokens := input.llm.max_tokens if {
	input.llm.max_tokens > 0
} else := data.bulwark.limits.default_max_tokens

answers := input.llm.n if {
	input.llm.n > 1
} else := 1

# Tools (agents). data.bulwark.tools maps a role to the tool names (or glob
# patterns, "*" matching any run of characters but ".") it may call: LLM function
# calls and MCP tools alike. A role that is missing or has an empty list may
# call every tool, as with models; a caller with several roles may call a
# tool any of them allows. Data without a tools map restricts nothing.
tools_by_role := data.bulwark.tools if is_object(data.bulwark.tools)
else := {}

# tool_allowed(name): the principal may call the tool name (LLM function
# calls and MCP tools alike). The roles' lists are merged once per decision
# (rules are evaluated once), not once per tool: an MCP tools/list answer
# asks about hundreds of tools. glob.match's default delimiter is ".", so
# "github.*" allows "github.search" but not "github.admin.delete".
tool_allowed(_) if every_tool_allowed

tool_allowed(name) if {
	not every_tool_allowed
	some pattern in tool_patterns
	glob.match(pattern, [], name)
}

every_tool_allowed if {
	some role in input.principal.roles
	count(object.get(tools_by_role, role, [])) == 0
}

tool_patterns contains pattern if {
	some role in input.principal.roles
	some pattern in object.get(tools_by_role, role, [])
}

# The request offers the model a tool, or its history holds a call of one,
# that the principal may not use (sorted, so the message names the same one
# every time).
denied_request_tools := sort({name |
	some name in request_tool_names
	not tool_allowed(name)
})

request_tool_names contains t.name if some t in input.llm.tools

request_tool_names contains c.name if some c in input.llm.tool_calls

# The model called a tool the principal may not use (a buffered answer's
# calls, or a streamed call Bulwark held back until it was complete), in
# the order the model made them.
denied_response_tools := [c.name |
	some c in input.response.tool_calls
	tool_call_denied(c)
]

# tool_call_denied(c): the model's call c ({id, name, arguments,
# arguments_valid}) must not run. Add your own definitions beside this one
# (in package bulwark) for rules on arguments: any one that holds denies.
tool_call_denied(c) if not tool_allowed(c.name)

# Text in tool results (role tool messages, tool_result blocks,
# function_call_output) is data nobody vouches for: it is held to its own
# threshold, stricter than the user's prompt.
tool_result_injection_detected if {
	input.signals.tool_results.prompt_injection.score >= data.bulwark.detectors.tool_result_injection_threshold
}

# Data residency. The upstream's region comes from the route's metadata
# (filter_metadata "bulwark", key upstream_region: Envoy sends it as
# routeMetadataContext) or, failing that, from the header
# data.bulwark.residency.region_header, which the edge must set and strip
# from clients. A tenant listed in data.bulwark.residency.tenants may only
# reach the regions listed for it; a request to any other region, or to an
# upstream whose region is unknown, is denied with reason data_residency.
# Tenants not listed are not restricted.
upstream_region := r if {
	r := input.attributes.routeMetadataContext.filterMetadata.bulwark.upstream_region
} else := r if {
	r := http.headers[lower(data.bulwark.residency.region_header)]
}

default upstream_region_name := "unknown"

upstream_region_name := upstream_region

default residency_allowed := true

residency_allowed := false if {
	allowed := data.bulwark.residency.tenants[input.principal.tenant].allowed_regions
	not region_listed(allowed)
}

region_listed(allowed) if upstream_region in allowed
