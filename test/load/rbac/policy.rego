# A three-condition RBAC policy in OPA-Envoy's style (package envoy.authz,
# decision envoy/authz/allow): the role from a header, the method, and a path
# prefix, looked up in data. `make bench` runs it under Bulwark so the figures
# compare with OPA-Envoy's on the same policy.
package envoy.authz

import rego.v1

default allow := false

allow if {
	some grant in data.grants[input.attributes.request.http.headers["x-role"]]
	grant.method == input.attributes.request.http.method
	startswith(input.attributes.request.http.path, grant.prefix)
}
