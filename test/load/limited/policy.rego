# The RBAC policy of test/load/rbac as a Bulwark decision object, twice: with
# one rate limit (bulwark/limited) and without (bulwark/unlimited), so
# `make bench` can show what a limit check costs on the server.
package bulwark

import rego.v1

http := input.attributes.request.http

granted if {
	some grant in data.grants[http.headers["x-role"]]
	grant.method == http.method
	startswith(http.path, grant.prefix)
}

default unlimited := {"allowed": false, "http_status": 403, "reason": "forbidden"}

unlimited := {"allowed": true, "reason": "granted"} if granted

default limited := {"allowed": false, "http_status": 403, "reason": "forbidden"}

limited := {"allowed": true, "reason": "granted", "limits": [{
	"name": "requests_per_minute",
	"key": concat("", ["{", http.headers["x-role"], "}:", http.headers["x-request-id"]]),
	"limit": 100000000,
	"period": "1m",
}]} if granted
