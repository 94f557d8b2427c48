package pipeline

import (
	"context"
	"errors"
	"testing"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/abuse"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/policy"
)

// abusePolicy denies input.case "attack" with prompt_injection and says,
// in its reason, what input.history it saw.
const abusePolicy = `package t
import rego.v1

decision := {"allowed": false, "reason": "prompt_injection"} if input.case == "attack"
decision := {"allowed": false, "reason": "model_not_allowed"} if input.case == "other_deny"
decision := {"allowed": true, "reason": sprintf("offences_%d", [input.history.offences])} if {
	input.case == "look"
	input.history.available
}
decision := {"allowed": true, "reason": "no_history"} if {
	input.case == "look"
	not input.history.available
}
`

type brokenTracker struct{}

func (brokenTracker) Observe(context.Context, string, int64) (abuse.Snapshot, error) {
	return abuse.Snapshot{}, errors.New("redis down")
}
func (brokenTracker) Offend(context.Context, string, string, string) error {
	return errors.New("redis down")
}

// TestAbuseHistory: offence denials of a principal reach input.history of
// its next request_headers decisions; other denials, other principals and
// anonymous callers do not count; a tracker that fails leaves the history
// unavailable, never a failed decision.
func TestAbuseHistory(t *testing.T) {
	e, err := policy.New(context.Background(), policy.Config{
		Embedded: fstest.MapFS{"p.rego": {Data: []byte(abusePolicy)}}, Query: "t/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := abuse.NewLocal(abuse.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Timeout: time.Second}, Deps{Eval: e, Abuse: tr}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mallory := &identity.Principal{ID: "mallory", Kind: identity.KindAPIKey}
	alice := &identity.Principal{ID: "alice", Kind: identity.KindAPIKey}
	anon := &identity.Principal{Kind: identity.KindAnonymous}
	run := func(p *Pipeline, pr *identity.Principal, phase Phase, c string) string {
		out, err := p.Decide(context.Background(), Request{Phase: phase, Principal: pr,
			Input: ast.NewObject([2]*ast.Term{ast.StringTerm("case"), ast.StringTerm(c)})})
		if err != nil {
			t.Fatal(err)
		}
		return out.Reason
	}
	run(p, mallory, PhaseRequestBody, "attack")
	run(p, mallory, PhaseRequestHeaders, "attack")
	run(p, mallory, PhaseRequestHeaders, "other_deny")
	run(p, anon, PhaseRequestHeaders, "attack")
	for _, tc := range []struct {
		pr    *identity.Principal
		phase Phase
		want  string
	}{
		{mallory, PhaseRequestHeaders, "offences_2"},
		{alice, PhaseRequestHeaders, "offences_0"},
		{mallory, PhaseRequestBody, "no_history"}, // observed once per exchange, at request_headers
	} {
		if got := run(p, tc.pr, tc.phase, "look"); got != tc.want {
			t.Errorf("%s at %s: %s, want %s", tc.pr.ID, tc.phase, got, tc.want)
		}
	}
	broken, err := New(Config{Timeout: time.Second}, Deps{Eval: e, Abuse: brokenTracker{}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := run(broken, mallory, PhaseRequestHeaders, "look"); got != "no_history" {
		t.Errorf("broken tracker: %s, want no_history", got)
	}
	if got := run(broken, mallory, PhaseRequestHeaders, "attack"); got != "prompt_injection" {
		t.Errorf("broken tracker attack: %s", got)
	}
}
