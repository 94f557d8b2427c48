package bulwark_test

import rego.v1

import data.bulwark

req(method, path) := {"attributes": {"request": {"http": {"method": method, "path": path}}}, "phase": "request_headers"}

test_llm_route_allowed if {
	d := bulwark.decision with input as req("POST", "/v1/chat/completions")
	d.allowed
	d.reason == "route_allowed"
	d.headers["x-bulwark-route"] == "llm"
}

test_query_string_ignored_for_matching if {
	d := bulwark.decision with input as req("GET", "/healthz?verbose=1")
	d.allowed
	d.headers["x-bulwark-route"] == "health"
}

test_unknown_route_denied if {
	d := bulwark.decision with input as req("GET", "/admin")
	not d.allowed
	d.http_status == 403
	d.reason == "route_not_allowed"
}

test_wrong_method_denied if {
	d := bulwark.decision with input as req("DELETE", "/v1/models")
	not d.allowed
}

test_prefix_is_not_substring if {
	d := bulwark.decision with input as req("POST", "/v10/x")
	not d.allowed
}

test_empty_input_denied if {
	d := bulwark.decision with input as {}
	not d.allowed
}

test_routes_come_from_data if {
	routes := [{"name": "only", "path": "/x", "methods": ["PUT"]}]
	d := bulwark.decision with input as req("PUT", "/x") with data.bulwark.routes as routes
	d.allowed
	d.headers["x-bulwark-route"] == "only"
	e := bulwark.decision with input as req("POST", "/v1/chat/completions") with data.bulwark.routes as routes
	not e.allowed
}
