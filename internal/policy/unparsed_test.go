package policy

import (
	"context"
	"errors"
	"testing"
	"testing/fstest"
)

// TestUnparsedInputFailsClosed: a policy outside data.bulwark (written for
// OPA-Envoy) is not evaluated on an input whose path, body or LLM request
// could not be parsed; Bulwark's own package decides on it (issue 16,
// finding 14).
func TestUnparsedInputFailsClosed(t *testing.T) {
	t.Parallel()
	engine := func(pkg, query string) *Engine {
		e, err := New(context.Background(), Config{Embedded: fstest.MapFS{"p.rego": {Data: []byte(
			"package " + pkg + "\nimport rego.v1\ndefault allow := false\nallow if not input.parsed_body.admin\ndecision := allow\n")}},
			Query: query}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	opaEnvoy, own := engine("envoy.authz", "envoy/authz/allow"), engine("bulwark", "bulwark/decision")
	tests := []struct {
		name, input string
		unparsed    bool
	}{
		{"parsed", `{"parsed_body": {"admin": false}}`, false},
		{"body", `{"parse_errors": {"body": "invalid JSON body"}}`, true},
		{"llm", `{"parsed_body": [1], "parse_errors": {"llm": "not an object"}}`, true},
		{"path", `{"parse_errors": {"path": "bad escape"}}`, true},
		{"query only", `{"parse_errors": {"query": "bad escape"}}`, false},
		{"truncated", `{"truncated_body": true, "parse_errors": {"body": "truncated"}}`, false},
		{"path and truncated", `{"truncated_body": true, "parse_errors": {"path": "x", "body": "truncated"}}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := input(t, tt.input)
			if got := Unparsed(in); got != tt.unparsed {
				t.Fatalf("Unparsed = %v, want %v", got, tt.unparsed)
			}
			_, err := opaEnvoy.Evaluate(context.Background(), in)
			var perr *Error
			if tt.unparsed != (errors.As(err, &perr) && perr.Code == CodeInputNotParsed) {
				t.Fatalf("OPA-Envoy policy: err = %v, want input_not_parsed: %v", err, tt.unparsed)
			}
			if res, err := own.Evaluate(context.Background(), in); err != nil || !res.Decision.Allowed {
				t.Fatalf("data.bulwark policy not evaluated: %+v %v", res, err)
			}
		})
	}
}
