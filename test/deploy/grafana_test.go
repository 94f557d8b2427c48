package deploy

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwark-ai/bulwark/internal/app"
	"github.com/bulwark-ai/bulwark/internal/config"
)

// recorder is a registry that remembers every collector, so the test can
// list the metric names Bulwark exports even before they have values.
type recorder struct {
	*prometheus.Registry
	cs []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	r.cs = append(r.cs, c)
	return r.Registry.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// exportedNames maps every metric Bulwark registers to its label names.
func exportedNames(t *testing.T) map[string]map[string]bool {
	t.Helper()
	rec := &recorder{Registry: prometheus.NewRegistry()}
	// The service as serve builds it, with an audit log so its metrics
	// register too.
	cfg := config.Default()
	cfg.AuditLog = filepath.Join(t.TempDir(), "a.log")
	a, err := app.New(context.Background(), cfg, app.Deps{Registry: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	names := map[string]map[string]bool{}
	for _, c := range rec.cs {
		ch := make(chan *prometheus.Desc, 64)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			if m := fqName.FindStringSubmatch(d.String()); m != nil {
				labels := map[string]bool{}
				if l := varLabels.FindStringSubmatch(d.String()); l != nil {
					for _, name := range strings.Split(l[1], ",") {
						labels[strings.TrimSpace(name)] = true
					}
				}
				names[m[1]] = labels
			}
		}
	}
	return names
}

var varLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)

// TestGrafanaDashboardUsesRealMetrics checks every metric the dashboard
// queries against what Bulwark's components register, so a renamed metric
// cannot silently empty a panel.
func TestGrafanaDashboardUsesRealMetrics(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/grafana/bulwark.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	names := exportedNames(t)
	metric := regexp.MustCompile(`bulwark_[a-z_]+`)
	// Labels a query groups or filters by: "by (a, b)" and "{a=...}".
	byLabels := regexp.MustCompile(`by \(([^)]*)\)`)
	selLabels := regexp.MustCompile(`[{,]\s*([a-z_]+)\s*(?:=~|!~|!=|=)`)
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range metric.FindAllString(tg.Expr, -1) {
				base := m
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if trimmed := strings.TrimSuffix(m, suf); trimmed != m && names[trimmed] != nil {
						base = trimmed
					}
				}
				if names[base] == nil {
					t.Errorf("panel %q queries %s, which Bulwark does not export", p.Title, m)
				}
				used[base] = true
			}
			// Every label the query uses must belong to a metric it queries
			// (a wrong label silently sums everything into one series).
			var labels []string
			for _, g := range byLabels.FindAllStringSubmatch(tg.Expr, -1) {
				labels = append(labels, strings.Split(g[1], ",")...)
			}
			for _, g := range selLabels.FindAllStringSubmatch(tg.Expr, -1) {
				labels = append(labels, g[1])
			}
			for _, l := range labels {
				l = strings.TrimSpace(l)
				if l == "le" || l == "" {
					continue
				}
				found := false
				for _, m := range metric.FindAllString(tg.Expr, -1) {
					for _, suf := range []string{"", "_bucket", "_sum", "_count"} {
						if lbl := names[strings.TrimSuffix(m, suf)]; lbl != nil && lbl[l] {
							found = true
						}
					}
				}
				if !found {
					t.Errorf("panel %q uses label %q, which none of its metrics has: %s", p.Title, l, tg.Expr)
				}
			}
		}
	}
	var unused []string
	for n := range names {
		if !used[n] && strings.HasPrefix(n, "bulwark_") {
			unused = append(unused, n)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Logf("metrics without a panel: %v", unused)
	}
	if len(used) < 15 {
		t.Fatalf("dashboard uses only %d metrics", len(used))
	}
}
