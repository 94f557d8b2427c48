package deploy

import (
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// TestPrometheusRules parses deploy/prometheus/bulwark-alerts.yaml with
// Prometheus's own rule parser (the same validation promtool does), then
// checks that every metric a rule names is one Bulwark registers, with the
// labels the rule uses, and that every alert links to an entry of
// docs/runbook.md that exists.
func TestPrometheusRules(t *testing.T) {
	const path = "../../deploy/prometheus/bulwark-alerts.yaml"
	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("rules: %v", err)
	}
	if groups == nil {
		t.Fatal("no rule groups")
	}
	runbook, err := os.ReadFile("../../docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	heading := regexp.MustCompile(`(?m)^#{2,4} (.+)$`)
	for _, h := range heading.FindAllStringSubmatch(string(runbook), -1) {
		anchors[githubAnchor(h[1])] = true
	}
	names := exportedNames(t)
	alerts := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", r.Alert, err)
				continue
			}
			parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
				vs, ok := node.(*parser.VectorSelector)
				if !ok {
					return nil
				}
				labels := names[vs.Name]
				if labels == nil {
					t.Errorf("%s: names %s, which Bulwark does not register", r.Alert, vs.Name)
					return nil
				}
				for _, m := range vs.LabelMatchers {
					if m.Name != "__name__" && !labels[m.Name] {
						t.Errorf("%s: %s has no label %q", r.Alert, vs.Name, m.Name)
					}
				}
				return nil
			})
			url := r.Annotations["runbook_url"]
			anchor, ok := strings.CutPrefix(url, "docs/runbook.md#")
			if !ok || !anchors[anchor] {
				t.Errorf("%s: runbook_url %q names no heading of docs/runbook.md", r.Alert, url)
			}
			if r.Labels["severity"] != "warning" && r.Labels["severity"] != "critical" {
				t.Errorf("%s: severity %q", r.Alert, r.Labels["severity"])
			}
		}
	}
	if alerts < 10 {
		t.Fatalf("%d alerts, want the ten or more the runbook describes", alerts)
	}
}

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}
