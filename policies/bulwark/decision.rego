# Bulwark's default policy. Bulwark asks for data.bulwark.decision and expects
# either a boolean or an object with OPA-Envoy's result fields plus `reason`.
#
# Read it top to bottom: deny by default, then say exactly what is allowed.
# Everything tunable (routes, methods) lives in data.yaml beside this file.
package bulwark

import rego.v1

# Deny unless a rule below says otherwise. The reason is machine-readable: it
# reaches the client's error body, the metrics and the logs.
default decision := {
	"allowed": false,
	"http_status": 403,
	"reason": "route_not_allowed",
}

# Allow a request whose route and method data.bulwark.routes permits. The
# route's name goes upstream in a header so the application (and access logs)
# can see which rule admitted the request.
decision := {
	"allowed": true,
	"reason": "route_allowed",
	"headers": {"x-bulwark-route": route.name},
} if {
	route := matched_route
}

# The first route in data.bulwark.routes that matches the request, if any.
matched_route := matches[0] if {
	matches := [r |
		some r in data.bulwark.routes
		route_matches(r)
	]
	count(matches) > 0
}

http := input.attributes.request.http

# The path without its query string, as Envoy forwards it.
request_path := split(http.path, "?")[0]

route_matches(r) if {
	http.method in r.methods
	request_path == r.path
}

route_matches(r) if {
	http.method in r.methods
	startswith(request_path, r.prefix)
}
