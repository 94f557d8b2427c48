// Package arch keeps the import rules of ARCHITECTURE.md: doors stand side
// by side, the core imports no door, telemetry imports nothing of the core.
package arch

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/bulwark-ai/bulwark/"

// doors translate a protocol into the core; wiring builds the whole stack
// and may import everything.
var (
	doors  = []string{"internal/extauthz", "internal/extproc", "internal/api", "internal/rls"}
	wiring = []string{"internal/app", "cmd/bulwark"}
)

// graph is each package's direct imports of the module's own packages, read
// from its non-test Go files.
type graph map[string][]string

// readGraph parses the imports of every package under the given roots.
func readGraph(t *testing.T, root string, dirs ...string) graph {
	t.Helper()
	g := graph{}
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(root, d), func(path string, e os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			rel, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				return err
			}
			pkg := filepath.ToSlash(rel)
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			if _, ok := g[pkg]; !ok {
				g[pkg] = nil
			}
			for _, imp := range f.Imports {
				p := strings.Trim(imp.Path.Value, `"`)
				if dep, ok := strings.CutPrefix(p, module); ok && !slices.Contains(g[pkg], dep) {
					g[pkg] = append(g[pkg], dep)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// reaches reports the chain by which from imports to, directly or not
// (nil: it does not).
func (g graph) reaches(from, to string) []string {
	seen := map[string]bool{}
	var walk func(p string, chain []string) []string
	walk = func(p string, chain []string) []string {
		if seen[p] {
			return nil
		}
		seen[p] = true
		for _, d := range g[p] {
			next := append(slices.Clip(chain), d)
			if d == to {
				return next
			}
			if c := walk(d, next); c != nil {
				return c
			}
		}
		return nil
	}
	return walk(from, []string{from})
}

// violations lists every broken rule of g.
func (g graph) violations() []string {
	var out []string
	for pkg := range g {
		if slices.Contains(wiring, pkg) {
			continue
		}
		for _, door := range doors {
			if door == pkg {
				continue
			}
			if c := g.reaches(pkg, door); c != nil {
				what := "the core imports a door"
				if slices.Contains(doors, pkg) {
					what = "a door imports another door"
				}
				out = append(out, what+": "+strings.Join(c, " -> "))
			}
		}
		if strings.HasPrefix(pkg, "internal/telemetry") {
			for _, d := range g[pkg] {
				if strings.HasPrefix(d, "internal/") && !strings.HasPrefix(d, "internal/telemetry") {
					out = append(out, "telemetry imports the core: "+pkg+" -> "+d)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestImportRules reads the module's import graph and fails on any
// import that breaks the map in ARCHITECTURE.md.
func TestImportRules(t *testing.T) {
	g := readGraph(t, filepath.Join("..", ".."), "internal", "cmd")
	for _, p := range append(slices.Clone(doors), "internal/exchange", "internal/pipeline", "internal/envoy", "internal/telemetry") {
		if _, ok := g[p]; !ok {
			t.Fatalf("package %s not found: the rules below would pass vacuously", p)
		}
	}
	for _, v := range g.violations() {
		t.Error(v)
	}
}

// TestRulesCatchViolations: the checker fails on each kind of import it
// forbids, so TestImportRules cannot pass by accident.
func TestRulesCatchViolations(t *testing.T) {
	for _, tc := range []struct {
		name string
		g    graph
		want string
	}{
		{"door to door", graph{"internal/api": {"internal/extproc"}, "internal/extproc": nil}, "a door imports another door: internal/api -> internal/extproc"},
		{"door to door through the core", graph{"internal/api": {"internal/exchange"}, "internal/exchange": {"internal/extproc"}, "internal/extproc": nil},
			"a door imports another door: internal/api -> internal/exchange -> internal/extproc"},
		{"core to door", graph{"internal/pipeline": {"internal/extauthz"}, "internal/extauthz": nil}, "the core imports a door: internal/pipeline -> internal/extauthz"},
		{"telemetry to core", graph{"internal/telemetry": {"internal/pipeline"}, "internal/pipeline": nil}, "telemetry imports the core: internal/telemetry -> internal/pipeline"},
	} {
		if v := tc.g.violations(); !slices.Contains(v, tc.want) {
			t.Errorf("%s: violations %q, want %q", tc.name, v, tc.want)
		}
	}
	if v := (graph{"internal/app": {"internal/extproc", "internal/api"}, "internal/extproc": nil, "internal/api": nil}).violations(); len(v) != 0 {
		t.Errorf("the wiring may import every door: %q", v)
	}
}
