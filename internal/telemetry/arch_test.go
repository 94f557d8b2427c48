package telemetry

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestStandsAlone reads every non-test Go file of this package and fails
// when one imports a package of Bulwark's own: telemetry is providers,
// propagation, header carriers and batching over OTel and the standard
// library, and the core (the pipeline) annotates its own spans, so every
// package may use telemetry without dragging the core in.
func TestStandsAlone(t *testing.T) {
	t.Parallel()
	const mod = "github.com/bulwark-ai/bulwark/internal/"
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range af.Imports {
			if path := strings.Trim(imp.Path.Value, `"`); strings.HasPrefix(path, mod) {
				t.Errorf("%s imports %s: telemetry must not import the core", f, path)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no non-test Go files found")
	}
}
