// Package envoy is what Bulwark's two Envoy doors share: the policy input
// built from Envoy's AttributeContext (a superset of OPA-Envoy's), the
// credentials in a request's headers, the roles whose text the detectors
// read, the decision metadata Envoy is told and the seal that lets ext_proc
// believe the principal ext_authz found. It imports no door, so extauthz and
// extproc stand side by side over it.
package envoy
