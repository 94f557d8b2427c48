package bulwark_test

import rego.v1

import data.bulwark

mcp_alice := {"id": "alice", "kind": "api_key", "roles": ["user"], "tenant": "acme", "claims": {}}

mcp_anon := {"id": "", "kind": "anonymous", "roles": [], "tenant": "", "claims": {}}

mcp_req(principal, m) := {
	"attributes": {"request": {"http": {"method": "POST", "path": "/mcp", "body": "{}"}}},
	"phase": "request_body",
	"principal": principal,
	"parsed_body": {},
	"llm": {"api": "generic", "model": "", "max_tokens": 0, "n": 1},
	"mcp": object.union({"kind": "request", "session_id": "s1", "protocol_version": "2025-06-18"}, m),
}

call(name) := {"method": "tools/call", "id": 7, "tool": {"name": name, "arguments": {}}}

tools_map := {"user": ["search", "github.*", "*_read"], "admin": []}

test_mcp_allowed_tool_call if {
	d := bulwark.decision with input as mcp_req(mcp_alice, call("search")) with data.bulwark.tools as tools_map
	d.allowed
}

test_mcp_tool_glob_allows if {
	d := bulwark.decision with input as mcp_req(mcp_alice, call("github.create_issue")) with data.bulwark.tools as tools_map
	d.allowed
	d2 := bulwark.decision with input as mcp_req(mcp_alice, call("file_read")) with data.bulwark.tools as tools_map
	d2.allowed
}

test_mcp_disallowed_tool_call_is_403 if {
	d := bulwark.decision with input as mcp_req(mcp_alice, call("delete_repo")) with data.bulwark.tools as tools_map
	not d.allowed
	d.http_status == 403
	d.reason == "tool_not_allowed"
}

test_mcp_glob_does_not_overreach if {
	# "github.*" must not allow a tool merely starting with "github".
	d := bulwark.decision with input as mcp_req(mcp_alice, call("githubx_admin")) with data.bulwark.tools as tools_map
	d.reason == "tool_not_allowed"
}

test_mcp_role_without_list_may_call_every_tool if {
	admin := object.union(mcp_alice, {"roles": ["admin"]})
	d := bulwark.decision with input as mcp_req(admin, call("delete_repo")) with data.bulwark.tools as tools_map
	d.allowed
}

test_mcp_missing_tools_map_allows_every_tool if {
	d := bulwark.decision with input as mcp_req(mcp_alice, call("delete_repo"))
	d.allowed
}

test_mcp_unauthenticated_is_401_before_tool_rules if {
	d := bulwark.decision with input as mcp_req(mcp_anon, call("delete_repo")) with data.bulwark.tools as tools_map
	d.http_status == 401
	d.reason == "missing_credential"
}

test_mcp_malformed_is_400 if {
	d := bulwark.decision with input as mcp_req(mcp_alice, {"method": "", "error": "a request needs a \"method\""})
	d.http_status == 400
	d.reason == "mcp_malformed"
}

test_mcp_batch_is_400 if {
	d := bulwark.decision with input as mcp_req(mcp_alice, {"kind": "batch", "method": "", "error": "JSON-RPC batches are not supported"})
	d.http_status == 400
	d.reason == "mcp_batch_not_supported"
}

test_mcp_notification_and_unknown_method_pass if {
	d := bulwark.decision with input as mcp_req(mcp_alice, {"kind": "notification", "method": "notifications/initialized"})
	d.allowed
	d2 := bulwark.decision with input as mcp_req(mcp_alice, {"method": "vendor/custom", "id": "x"})
	d2.allowed
}

list_answer(tools) := object.union(mcp_req(mcp_alice, {"method": "tools/list", "id": 1, "tools": tools}), {"phase": "response_body", "signals": {"prompt_injection": {"score": 0}}})

tool(name) := {"name": name, "injection_score": 0, "poisoning_rules": [], "changed": false}

test_mcp_tools_list_removes_disallowed if {
	d := bulwark.decision with input as list_answer([tool("search"), tool("delete_repo")]) with data.bulwark.tools as tools_map
	d.allowed
	d.remove_tools == {"delete_repo": "tool_not_allowed"}
	d.reason == "tool_not_allowed"
}

test_mcp_tools_list_removes_poisoned if {
	poisoned := object.union(tool("add"), {"poisoning_rules": ["hidden_tag", "sensitive_path"]})
	scored := object.union(tool("search"), {"injection_score": 0.97})
	one_marker := object.union(tool("ssh_read"), {"poisoning_rules": ["sensitive_path"]})
	d := bulwark.decision with input as list_answer([poisoned, scored, one_marker]) with data.bulwark.tools as tools_map
	d.remove_tools == {"add": "tool_poisoning", "search": "tool_poisoning"}
	d.reason == "tool_poisoning"
}

test_mcp_tools_list_removes_rug_pull if {
	changed := object.union(tool("search"), {"changed": true})
	d := bulwark.decision with input as list_answer([changed]) with data.bulwark.tools as tools_map
	d.remove_tools == {"search": "tool_poisoning"}
}

test_mcp_tools_list_clean_keeps_all if {
	d := bulwark.decision with input as list_answer([tool("search")]) with data.bulwark.tools as tools_map
	d.remove_tools == {}
	d.reason == "allowed"
}

# Content the model reads is untrusted: its findings are
# input.signals.tool_results, the top-level signals stay empty.
untrusted(score) := {"phase": "response_body", "signals": {"prompt_injection": {"score": 0}, "tool_results": {"prompt_injection": {"score": score}}}}

call_answer(score) := object.union(mcp_req(mcp_alice, call("search")), untrusted(score))

test_mcp_tool_result_held_to_the_tool_result_threshold if {
	# 0.5 is under the prompt threshold (0.6) but over the tool results' (0.35).
	d := bulwark.decision with input as call_answer(0.5)
	d.reason == "tool_result_injection"
}

test_mcp_resource_and_prompt_injection_denied if {
	some method in ["resources/read", "prompts/get"]
	d := bulwark.decision with input as object.union(mcp_req(mcp_alice, {"method": method, "id": 4}), untrusted(0.9))
	not d.allowed
	d.reason == "mcp_content_injection"
	contains(d.message, method)
}

test_mcp_resource_clean_allowed_and_redacted if {
	d := bulwark.decision with input as object.union(mcp_req(mcp_alice, {"method": "resources/read", "id": 4}), untrusted(0.1))
	d.allowed
	count(d.redact) > 0
}

test_mcp_sampling_request_injection_denied if {
	# A server's sampling/createMessage on the stream of any request (here an
	# initialize), or of a GET (no method at all).
	inp := object.union(mcp_req(mcp_alice, {"method": "initialize", "id": 1, "server_request": {"method": "sampling/createMessage"}}), untrusted(0.9))
	d := bulwark.decision with input as inp
	d.reason == "mcp_content_injection"
	contains(d.message, "sampling/createMessage request")
	get := object.union(mcp_req(mcp_alice, {"server_request": {"method": "sampling/createMessage"}}), untrusted(0.9))
	d2 := bulwark.decision with input as get
	d2.reason == "mcp_content_injection"
	clean := bulwark.decision with input as object.union(inp, untrusted(0.1))
	clean.allowed
}

test_mcp_sampling_on_tools_call_stream_is_content_injection if {
	inp := object.union(call_answer(0.9), {"mcp": {"server_request": {"method": "sampling/createMessage"}}})
	d := bulwark.decision with input as inp
	d.reason == "mcp_content_injection"
}

test_mcp_tool_result_injection_denied if {
	d := bulwark.decision with input as call_answer(0.99)
	not d.allowed
	d.reason == "tool_result_injection"
}

test_mcp_clean_tool_result_redacted_not_denied if {
	d := bulwark.decision with input as call_answer(0.1)
	d.allowed
	count(d.redact) > 0
}

# Tools passed by name only (input.mcp.tool_names: admitted and unflagged)
# are kept by the default policy; those shown in full are decided on.
test_mcp_tools_list_names_only_kept if {
	inp := object.union(list_answer([tool("delete_repo")]), {"mcp": {"tool_names": ["search", "github.a", "delete_repo"]}})
	d := bulwark.decision with input as inp with data.bulwark.tools as tools_map
	d.remove_tools == {"delete_repo": "tool_not_allowed"}
}
