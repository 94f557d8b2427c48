# MCP (Model Context Protocol over Streamable HTTP): what the default policy
# does with the input.mcp Bulwark adds to a request recognised as MCP.
#
# Requests: the route decides first (credential, role, body), then a
# malformed message or a batch is refused (400), and a tools/call of a tool
# the caller's roles may not call is refused (403 tool_not_allowed). Bulwark
# answers a denied MCP request with a JSON-RPC error carrying its id.
#
# Answers (phase response_body): a tools/list answer loses the tools the
# caller may not call (tool_not_allowed) and those whose definition looks
# poisoned or changed within the session (tool_poisoning). Bulwark shows the
# policy every tool's name (input.mcp.tool_names) and, in full
# (input.mcp.tools), each tool that needs an answer: one the tools map does
# not admit for the caller, or that a scan flagged (see data.bulwark.mcp);
# a custom rule may remove any tool by name through remove_tools. Every
# other text the model will read is untrusted, its findings in
# input.signals.tool_results, held to tool_result_injection_threshold: a
# tools/call result that looks like an injection is replaced by a JSON-RPC
# error (tool_result_injection), so is a resources/read or prompts/get
# result, or a server's sampling/createMessage request on an SSE stream
# (mcp_content_injection); their secrets and PII are redacted.
#
# data.bulwark.tools: role → tool names or globs the role may call; a role
# missing or with an empty list may call every tool (as models). The same
# map governs LLM function calls.
package bulwark

import rego.v1

# The methods whose answers Bulwark reads and asks about.
mcp_filtered_methods := {"tools/list", "tools/call", "resources/read", "prompts/get"}

# The server message decided on is one Bulwark reads: the answer to a
# filtered method, or a server request on the stream whose content the
# client's model reads (input.mcp.server_request, sampling/createMessage).
mcp_answer_read if input.mcp.method in mcp_filtered_methods

mcp_answer_read if input.mcp.server_request

mcp_route_decision(route) := d if {
	d := route_decision(route)
	not d.allowed
} else := {
	"allowed": false,
	"http_status": 400,
	"reason": "mcp_batch_not_supported",
	"message": "JSON-RPC batches are not supported; send one message per request",
} if {
	input.mcp.kind == "batch"
} else := {
	"allowed": false,
	"http_status": 400,
	"reason": "mcp_malformed",
	"message": sprintf("not a valid MCP message: %s", [input.mcp.error]),
} if {
	input.mcp.error
} else := {
	"allowed": false,
	"http_status": 403,
	"reason": "tool_not_allowed",
	"message": sprintf("tool %s is not allowed for this principal", [input.mcp.tool.name]),
} if {
	input.mcp.tool
	not tool_allowed(input.mcp.tool.name)
} else := route_decision(route)

mcp_response_decision := {
	"allowed": false,
	"http_status": 403,
	"reason": "tool_result_injection",
	"message": "the tool's result looks like a prompt-injection attempt and was withheld",
	"audit": {"alert": "tool_result_injection"},
} if {
	input.mcp.method == "tools/call"
	not input.mcp.server_request
	tool_result_injection_detected
} else := {
	"allowed": false,
	"http_status": 403,
	"reason": "mcp_content_injection",
	"message": sprintf("the MCP server's %s looks like a prompt-injection attempt and was withheld", [mcp_content_kind]),
	"audit": {"alert": "mcp_content_injection"},
} if {
	tool_result_injection_detected
} else := {
	"allowed": true,
	"reason": mcp_list_reason,
	"redact": data.bulwark.redact.response,
	"remove_tools": mcp_removed_tools,
}

# The tools a tools/list answer loses, each with its reason. Add your own
# definitions (in package bulwark) to remove other tools: any name in
# input.mcp.tool_names, e.g.
#
#	mcp_removed_tools[name] := "tool_not_allowed" if {
#		some name in input.mcp.tool_names
#		startswith(name, "admin_")
#		not mcp_default_removals[name] # one reason per name
#	}
mcp_removed_tools[name] := reason if some name, reason in mcp_default_removals

# The default policy's removals: of the tools shown in full.
mcp_default_removals := {t.name: reason |
	some t in object.get(input.mcp, "tools", [])
	reason := mcp_removal_reason(t)
}

mcp_removal_reason(t) := "tool_poisoning" if {
	mcp_tool_poisoned(t)
} else := "tool_not_allowed" if {
	not tool_allowed(t.name)
}

# Hidden instructions: the injection detector's score over the threshold,
# or two of Bulwark's poisoning markers (<IMPORTANT> tags, credential
# paths, "do not tell the user", exfiltration through a parameter, ...);
# or a definition that changed within the session after it was first
# listed (a rug pull).
mcp_tool_poisoned(t) if t.injection_score >= data.bulwark.detectors.prompt_injection_threshold

mcp_tool_poisoned(t) if count(t.poisoning_rules) >= 2

mcp_tool_poisoned(t) if t.changed

mcp_list_reason := "tool_poisoning" if {
	some r in mcp_removed_tools
	r == "tool_poisoning"
} else := "tool_not_allowed" if {
	count(mcp_removed_tools) > 0
} else := "allowed"

# What the content withheld was, for the message.
mcp_content_kind := sprintf("%s request", [input.mcp.server_request.method]) if {
	input.mcp.server_request
} else := sprintf("%s answer", [input.mcp.method])
