package policy

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// TestRuleCacheAnswersAsOPAs drives ruleCache and OPA's own VirtualCache
// with the same random operations (puts of values and of undefined, gets,
// frames pushed and popped, refs whose backing slice is reused) and
// requires the same answers.
func TestRuleCacheAnswersAsOPAs(t *testing.T) {
	t.Parallel()
	refs := []ast.Ref{
		ast.MustParseRef("data.bulwark.decision"),
		ast.MustParseRef("data.bulwark.matched_route"),
		ast.MustParseRef("data.bulwark.tool_allowed"),
		ast.MustParseRef(`data.bulwark.tool_allowed["search"]`),
		ast.MustParseRef(`data.bulwark.tool_allowed["shell"]`),
		ast.MustParseRef("data.bulwark"),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 50; round++ {
		want := topdown.NewVirtualCache()
		got := getRuleCache()
		depth := 0
		scratch := make(ast.Ref, 0, 8)
		for op := 0; op < 200; op++ {
			ref := refs[r.IntN(len(refs))]
			switch k := r.IntN(10); {
			case k < 3:
				var v *ast.Term
				if r.IntN(3) > 0 {
					v = ast.IntNumberTerm(r.IntN(5))
				}
				scratch = append(scratch[:0], ref...) // the caller's slice, reused
				want.Put(scratch, v)
				got.Put(scratch, v)
				for i := range scratch { // OPA reuses the slice it put
					scratch[i] = ast.StringTerm("clobbered")
				}
			case k < 8:
				q := append(ast.Ref(nil), ref...) // not the slice Put was given
				wv, wu := want.Get(q)
				gv, gu := got.Get(q)
				if wu != gu || (wv == nil) != (gv == nil) || (wv != nil && !wv.Equal(gv)) {
					t.Fatalf("round %d op %d Get(%v) = %v, %v; OPA's: %v, %v", round, op, ref, gv, gu, wv, wu)
				}
			case k == 8:
				want.Push()
				got.Push()
				depth++
			case depth > 0:
				want.Pop()
				got.Pop()
				depth--
			}
		}
		if len(want.Keys()) != len(got.Keys()) {
			t.Fatalf("round %d: %d keys, OPA's %d", round, len(got.Keys()), len(want.Keys()))
		}
		putRuleCache(got)
	}
}

// TestRuleCacheWithAndReuse: a policy whose rules are re-evaluated under
// `with` (a pushed frame) decides the same on every evaluation, whether
// the pooled cache is fresh or reused.
func TestRuleCacheWithAndReuse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": `package bulwark
import rego.v1
role := input.role
default admin := false
admin if role == "admin"
decision := {"allowed": before, "reason": "r", "as_admin": as_admin, "after": after} if {
	before := admin
	as_admin := admin with input.role as "admin"
	after := admin
}`})
	e, err := New(ctx, Config{Dir: dir, Query: "bulwark/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		role := []string{"admin", "user"}[i%2]
		res, err := e.Evaluate(ctx, input(t, `{"role": "`+role+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		want := `{"allowed": false, "reason": "r", "as_admin": true, "after": false}`
		if role == "admin" {
			want = `{"allowed": true, "reason": "r", "as_admin": true, "after": true}`
		}
		if res.Value.Compare(ast.MustParseTerm(want).Value) != 0 {
			t.Fatalf("evaluation %d (%s): %v, want %s", i, role, res.Value, want)
		}
	}
}
