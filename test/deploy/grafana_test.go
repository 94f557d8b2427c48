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
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwark-ai/bulwark/internal/alert"
	"github.com/bulwark-ai/bulwark/internal/audit"
	"github.com/bulwark-ai/bulwark/internal/extproc"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
	"github.com/bulwark-ai/bulwark/policies"
)

// recorder is a Registerer that remembers every collector, so the test can
// list the metric names Bulwark exports even before they have values.
type recorder struct {
	prometheus.Registerer
	cs []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	r.cs = append(r.cs, c)
	return r.Registerer.Register(c)
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
	rec := &recorder{Registerer: prometheus.NewRegistry()}
	ctx := context.Background()
	eng, err := policy.New(ctx, policy.Config{Embedded: policies.FS, Query: "bulwark/decision"}, nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := identity.New(identity.DefaultConfig(), nil, rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer auth.Close()
	lim, err := ratelimit.New(ratelimit.Config{}, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer lim.Close()
	aw, err := audit.Open(audit.Config{Path: filepath.Join(t.TempDir(), "a.log")}, nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_ = aw.Close(c)
	}()
	if _, err := pipeline.New(pipeline.Config{Timeout: time.Second}, auth, eng, lim, nil, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := extproc.NewMetrics(rec); err != nil {
		t.Fatal(err)
	}
	n, err := alert.New(alert.Config{}, nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
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
