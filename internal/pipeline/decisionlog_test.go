package pipeline

import (
	"context"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/policy"
)

type recordingLog struct {
	mu  sync.Mutex
	evs []policy.DecisionEvent
}

func (r *recordingLog) LogDecision(_ context.Context, ev policy.DecisionEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
}

// Every decision reaches the decision log once, with the input the policy
// saw, the policy's own answer and Bulwark's final verdict: a limit that
// denies after the policy allowed shows as custom.bulwark.allowed false.
func TestDecisionLogOncePerDecision(t *testing.T) {
	for _, tc := range []struct {
		name, c     string
		calls       int
		wantAllowed bool
		wantReason  string
	}{
		{"allowed", "principal", 1, true, "anonymous"},
		{"policy deny", "deny", 1, false, "nope"},
		{"undefined", "nothing matches", 1, false, string(policy.CodeUndefined)},
		{"limit denies on the third call", "two", 3, false, "rate_limited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := &recordingLog{}
			p := newPipeline(t, Config{}, true, Deps{DecisionLog: log})
			var out Outcome
			for range tc.calls {
				out = decide(t, p, tc.c)
			}
			if len(log.evs) != tc.calls {
				t.Fatalf("%d events for %d decisions", len(log.evs), tc.calls)
			}
			ev := log.evs[len(log.evs)-1]
			in, ok := ev.Input.(ast.Object)
			if !ok || ev.DecisionID != out.DecisionID || in.Get(ast.StringTerm("decision_id")) == nil || in.Get(ast.StringTerm("case")) == nil {
				t.Fatalf("event %+v: want the decision's id and the input as evaluated", ev)
			}
			b, _ := ev.Custom["bulwark"].(map[string]any)
			if b["allowed"] != tc.wantAllowed || b["reason"] != tc.wantReason || b["allowed"] != out.Decision.Allowed {
				t.Fatalf("custom.bulwark %v, want allowed %v reason %q", b, tc.wantAllowed, tc.wantReason)
			}
			if tc.wantReason == string(policy.CodeUndefined) {
				if ev.Result != nil || ev.Err == nil {
					t.Fatalf("undefined: result %v err %v, want no result and the error", ev.Result, ev.Err)
				}
			} else if ev.Result == nil {
				t.Fatal("the policy's answer must be the event's result")
			}
		})
	}
}
