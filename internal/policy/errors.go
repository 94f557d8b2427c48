// Package policy is Bulwark's OPA engine: it loads Rego modules and data from
// the embedded defaults, a directory or a bundle, compiles the decision query
// once per load, swaps it in atomically, evaluates it against an input built
// directly as an ast.Value, and decodes the result into a Decision.
//
// A policy that fails to load never replaces the last good one, and a result
// that is undefined or of the wrong shape is an error with a stable Code, so
// callers turn it into a deny with a reason instead of a silent allow.
package policy

import "fmt"

// Code is a stable, machine-readable reason for a policy failure. It doubles as
// the metric label and the reason that reaches the client, so it never carries
// policy internals.
type Code string

// The codes a caller can see. Their text is part of the public contract
// (reasons in responses, metric labels), so add codes rather than rename them.
const (
	CodeUndefined       Code = "policy_undefined"        // the query produced no result
	CodeInvalidDecision Code = "policy_invalid_decision" // the result is not a boolean or a well-formed object
	CodeEvalError       Code = "policy_error"            // evaluation failed (builtin error, conflict, ...)
	CodeTimeout         Code = "policy_timeout"          // the evaluation ran out of its deadline
	CodeNotLoaded       Code = "policy_not_loaded"       // no policy has ever loaded
	// CodeInputNotParsed: the path or body could not be parsed, and the
	// policy is not Bulwark's own (see Engine.Evaluate): OPA-Envoy could not
	// build such an input either and denies, so Bulwark denies too.
	CodeInputNotParsed Code = "input_not_parsed"
)

// Error is a policy failure with a stable Code; Detail explains it for logs and
// is never sent to clients.
type Error struct {
	Code   Code
	Detail string
	Err    error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Detail, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Detail)
}

// Unwrap exposes the underlying error so errors.Is(err, context.DeadlineExceeded) works.
func (e *Error) Unwrap() error { return e.Err }
