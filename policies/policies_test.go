package policies

import (
	"context"
	"io/fs"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestRego runs every test_ rule in the embedded policy tree through OPA's own
// test runner, so `make test` covers the policies without the opa binary.
func TestRego(t *testing.T) {
	res, err := loader.NewFileLoader().WithFS(FS).All([]string{"."})
	if err != nil {
		t.Fatalf("load policies: %v", err)
	}
	store := inmem.NewFromObject(res.Documents)
	ctx := context.Background()
	ch, err := tester.NewRunner().
		SetStore(store).
		SetCompiler(ast.NewCompiler()).
		SetModules(res.ParsedModules()).
		CapturePrintOutput(true).
		RunTests(ctx, nil)
	if err != nil {
		t.Fatalf("run rego tests: %v", err)
	}
	n := 0
	for r := range ch {
		n++
		name := r.Package + "." + r.Name
		switch {
		case r.Error != nil:
			t.Errorf("%s: error: %v", name, r.Error)
		case r.Fail:
			t.Errorf("%s: FAIL\n%s", name, r.Output)
		case r.Skip:
			t.Logf("%s: skipped", name)
		}
	}
	if n == 0 {
		t.Fatal("no Rego tests found")
	}
	t.Logf("%d Rego tests ran", n)
}

// TestEmbeddedTree guards the layout the engine relies on.
func TestEmbeddedTree(t *testing.T) {
	var rego, data int
	_ = fs.WalkDir(FS, ".", func(p string, d fs.DirEntry, err error) error {
		switch {
		case strings.HasSuffix(p, ".rego"):
			rego++
		case strings.HasSuffix(p, ".yaml"), strings.HasSuffix(p, ".json"):
			data++
		}
		return nil
	})
	if rego < 2 || data < 1 {
		t.Fatalf("embedded tree has %d rego and %d data files, want policies, tests and data", rego, data)
	}
}
