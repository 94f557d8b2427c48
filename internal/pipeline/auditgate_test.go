package pipeline

import (
	"context"
	"errors"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/audit"
)

// TestAuditGateFailsDecisions: under audit_failure_mode fail_closed, a
// decision the audit log cannot record is not made: Decide returns an error
// (a transport error at the doors, so Envoy's failure mode applies), and
// decides again once the gate opens.
func TestAuditGateFailsDecisions(t *testing.T) {
	var gateErr error
	p := newPipeline(t, Config{AuditGate: func() error { return gateErr }}, true, Deps{})
	req := Request{Phase: PhaseRequestHeaders, Input: ast.NewObject([2]*ast.Term{ast.StringTerm("case"), ast.StringTerm("principal")})}
	for _, tc := range []struct {
		name    string
		gate    error
		wantErr bool
	}{
		{"audit writing", nil, false},
		{"audit log cannot be written", audit.ErrUnavailable, true},
		{"writing resumed", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gateErr = tc.gate
			out, err := p.Decide(context.Background(), req)
			if tc.wantErr != (err != nil) || (tc.wantErr && !errors.Is(err, audit.ErrUnavailable)) {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && !out.Decision.Allowed {
				t.Fatalf("outcome %+v", out)
			}
		})
	}
}
