package policy

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

func TestDataDocs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := inmem.NewFromObjectWithOpts(map[string]any{
		"bulwark": map[string]any{"limits": map[string]any{"rpm": 600}, "routes": []any{map[string]any{"name": "llm"}}},
		"system":  map[string]any{"bundles": map[string]any{}},
	}, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	d, err := newDataDocs(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ref  string
		want string // "" : a miss, left to OPA's own read
	}{
		{"data.bulwark.limits.rpm", "600"},
		{"data.bulwark.routes[0].name", `"llm"`},
		{"data.bulwark.limits", `{"rpm": 600}`},
		{"data.bulwark.missing", ""},
		{"data.bulwark.routes[5]", ""},
		{"data", ""}, // the root: OPA strips data.system from it
		{"input.bulwark", ""},
	}
	for _, tc := range tests {
		got := d.Get(ast.MustParseRef(tc.ref))
		switch {
		case tc.want == "" && got != nil:
			t.Errorf("Get(%s) = %v, want a miss", tc.ref, got)
		case tc.want != "" && (got == nil || got.Compare(ast.MustParseTerm(tc.want).Value) != 0):
			t.Errorf("Get(%s) = %v, want %s", tc.ref, got, tc.want)
		}
	}
	d.Put(ast.MustParseRef("data.bulwark.limits.rpm"), ast.Number("1"))
	if got := d.Get(ast.MustParseRef("data.bulwark.limits.rpm")); got.Compare(ast.Number("600")) != 0 {
		t.Errorf("after Put: %v, want 600 (read-only)", got)
	}
}

// TestReloadReadsNewData: data is read once per load (dataDocs), so a
// reload that changes only data must still change the decision.
func TestReloadReadsNewData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"p.rego": `package bulwark
import rego.v1
decision := {"allowed": input.method in data.bulwark.methods, "reason": "data"}`,
		"bulwark/data.yaml": "methods: [POST]\n",
	})
	e, err := New(ctx, Config{Dir: dir, Query: "bulwark/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		data string
		want bool
	}{{"methods: [POST]\n", true}, {"methods: [GET]\n", false}, {"methods: [GET, POST]\n", true}} {
		writeFiles(t, dir, map[string]string{"bulwark/data.yaml": tc.data})
		if err := e.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		res, err := e.Evaluate(ctx, input(t, `{"method": "POST"}`))
		if err != nil || res.Decision.Allowed != tc.want {
			t.Errorf("data %q: allowed %v (%v), want %v", tc.data, res.Decision.Allowed, err, tc.want)
		}
	}
}
