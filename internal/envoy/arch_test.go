package envoy

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// doors are the packages that translate a protocol into the core. A door
// never imports another door; what two doors share lives below them (this
// package for the Envoy doors).
var doors = []string{"extauthz", "extproc", "api"}

// knownDoorImports are the imports that break the rule today and are to be
// removed, each with the issue that removes it. The list may only shrink.
var knownDoorImports = map[string]string{
	"api -> extproc": "issue 17: the Guard API drives ext_proc exchanges until the exchange core exists",
}

// TestDoorsStandSideBySide reads every non-test Go file of each door and
// fails when one imports another door (or this package imports a door).
func TestDoorsStandSideBySide(t *testing.T) {
	const mod = "github.com/bulwark-ai/bulwark/internal/"
	for _, pkg := range append([]string{"envoy"}, doors...) {
		files, err := filepath.Glob(filepath.Join("..", pkg, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no Go files for %s: %v", pkg, err)
		}
		seen := map[string]bool{}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f) // #nosec G304 -- the repository's own sources
			if err != nil {
				t.Fatal(err)
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				path := strings.Trim(imp.Path.Value, `"`)
				for _, door := range doors {
					if door == pkg || path != mod+door || seen[door] {
						continue
					}
					seen[door] = true
					edge := pkg + " -> " + door
					if _, ok := knownDoorImports[edge]; !ok {
						t.Errorf("%s imports door %s (%s): move what they share below both doors", pkg, door, f)
					}
				}
			}
		}
		for edge := range knownDoorImports {
			if from, to, _ := strings.Cut(edge, " -> "); from == pkg && !seen[to] {
				t.Errorf("%s no longer imports %s: remove it from knownDoorImports", from, to)
			}
		}
	}
}
