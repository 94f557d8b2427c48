package usage_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulwark-ai/bulwark/internal/usage"
)

func parse(t testing.TB, js string) (*usage.Config, error) {
	t.Helper()
	var data map[string]any
	d := json.NewDecoder(strings.NewReader(js))
	d.UseNumber() // as OPA's loader reads data
	if err := d.Decode(&data); err != nil {
		t.Fatal(err)
	}
	return usage.ParseConfig(data)
}

const testData = `{"bulwark": {"usage": {
	"prices": {
		"gpt-4o": {"input": 2.5, "output": 10, "cached_input": 1.25},
		"gpt-4o*": {"input": 5, "output": 15},
		"gpt-*": {"input": 1, "output": 2},
		"claude-3-5-sonnet-*": {"input": 3, "output": 15}
	},
	"budgets": {"acme": {"monthly_usd": 1, "daily_usd": 0.5}},
	"alert_percent": [80, 50, 100, 80],
	"metric_tenants": ["acme"]
}}}`

func TestConfigPrices(t *testing.T) {
	c, err := parse(t, testData)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		model          string
		in, out, cache int64
		want           int64
		priced         bool
	}{
		// 1M input of which 400k cached, 1M output: 0.6M×2.5 + 0.4M×1.25 + 1M×10 = 1.5+0.5+10 USD.
		{"gpt-4o", 1_000_000, 1_000_000, 400_000, 12_000_000_000, true},
		{"gpt-4o-mini", 1000, 0, 0, 5_000_000, true}, // the longest glob wins over gpt-*
		{"gpt-3.5-turbo", 1000, 1000, 0, 3_000_000, true},
		{"claude-3-5-sonnet-20241022", 10, 10, 0, 180_000, true},
		{"mistral-large", 1000, 1000, 0, 0, false},
		{"gpt-4o", 10, 0, 50, 12_500, true}, // more cached than input: all input at the cached price
	}
	for _, tc := range cases {
		got, ok := c.Cost(tc.model, usage.Totals{InputTokens: tc.in, OutputTokens: tc.out, CachedTokens: tc.cache})
		if got != tc.want || ok != tc.priced {
			t.Errorf("Cost(%s, %d/%d/%d) = %d, %v; want %d, %v", tc.model, tc.in, tc.out, tc.cache, got, ok, tc.want, tc.priced)
		}
	}
	if got := c.AlertPercent; len(got) != 3 || got[0] != 50 || got[2] != 100 {
		t.Errorf("AlertPercent = %v, want [50 80 100]", got)
	}
	var nilCfg *usage.Config
	if _, ok := nilCfg.Cost("gpt-4o", usage.Totals{InputTokens: 1}); ok {
		t.Error("a nil config priced a model")
	}
}

func TestConfigErrors(t *testing.T) {
	cases := map[string]string{
		"not an object":     `{"bulwark": {"usage": []}}`,
		"unknown key":       `{"bulwark": {"usage": {"price": {}}}}`,
		"negative price":    `{"bulwark": {"usage": {"prices": {"m": {"input": -1}}}}}`,
		"price not number":  `{"bulwark": {"usage": {"prices": {"m": {"input": "1"}}}}}`,
		"unknown price key": `{"bulwark": {"usage": {"prices": {"m": {"inptu": 1}}}}}`,
		"bad glob":          `{"bulwark": {"usage": {"prices": {"m[": {"input": 1}}}}}`,
		"budget not object": `{"bulwark": {"usage": {"budgets": {"acme": 5}}}}`,
		"budget negative":   `{"bulwark": {"usage": {"budgets": {"acme": {"monthly_usd": -5}}}}}`,
		"percent zero":      `{"bulwark": {"usage": {"alert_percent": [0]}}}`,
		"tenant other":      `{"bulwark": {"usage": {"metric_tenants": ["other"]}}}`,
	}
	for name, js := range cases {
		if _, err := parse(t, js); err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.Contains(err.Error(), "data.bulwark.usage") {
			t.Errorf("%s: error %q does not name data.bulwark.usage", name, err)
		}
	}
	if c, err := parse(t, `{"bulwark": {}}`); c != nil || err != nil {
		t.Errorf("no usage block: %v, %v; want nil, nil", c, err)
	}
}

// FuzzParseConfig: any JSON data gives a config or an error, never a panic,
// and a config prices every model without panicking.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(testData))
	f.Add([]byte(`{"bulwark": {"usage": {"prices": {"[": {"input": 1}}}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var data map[string]any
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		if d.Decode(&data) != nil {
			return
		}
		c, err := usage.ParseConfig(data)
		if err != nil || c == nil {
			return
		}
		c.Cost("gpt-4o-mini", usage.Totals{InputTokens: 1 << 40, OutputTokens: 1 << 40, CachedTokens: -1})
	})
}

type fixedConfig struct{ c *usage.Config }

func (f fixedConfig) UsageConfig() *usage.Config { return f.c }

func TestRecorder(t *testing.T) {
	c, err := parse(t, testData)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	now := time.Now()
	var alerts []usage.BudgetAlert
	r, err := usage.NewRecorder(usage.NewLocal(nil), fixedConfig{c}, usage.Options{Registerer: reg, Now: func() time.Time { return now },
		OnBudget: func(a usage.BudgetAlert) { alerts = append(alerts, a) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if cur := r.Current("acme", "alice"); cur.Known {
		t.Errorf("Current before any record = %+v, want unknown", cur)
	}
	// gpt-4o: 100k input, 20k output = 0.25 + 0.2 = 0.45 USD.
	must(t, r.Record(ctx, usage.Exchange{Tenant: "acme", Principal: "alice", Model: "gpt-4o", Input: 100_000, Output: 20_000}))
	// 0.45 USD is 45% of the month and 90% of the day: the day's 50% and
	// 80% are crossed. +0.15 USD: 60% of the month, 120% of the day.
	must(t, r.Record(ctx, usage.Exchange{Tenant: "acme", Principal: "bob", Model: "gpt-4o", Input: 60_000}))
	var got []string
	for _, a := range alerts {
		got = append(got, a.Period+":"+strings.TrimRight(strings.TrimRight(jsonNum(a.Percent), "0"), "."))
	}
	if strings.Join(got, ",") != "day:50,day:80,month:50,day:100" {
		t.Errorf("alerts = %v, want day:50,day:80,month:50,day:100", got)
	}
	must(t, r.Record(ctx, usage.Exchange{Tenant: "beta", Principal: "carol", Model: "mistral", Input: 10, Denied: true}))
	cur := r.Current("acme", "")
	if !cur.Known || cur.Month.CostNanoUSD != 600_000_000 || cur.Month.Requests != 2 || cur.Day.InputTokens != 160_000 {
		t.Errorf("Current(acme) = %+v", cur)
	}
	if got := testutil.ToFloat64(mustVec(t, reg, "bulwark_genai_cost_usd_total", map[string]string{"model": "gpt-4o", "tenant": "acme"})); got < 0.5999 || got > 0.6001 {
		t.Errorf("cost metric = %v, want 0.6", got)
	}
	if got := testutil.ToFloat64(mustVec(t, reg, "bulwark_genai_tokens_total", map[string]string{"model": "mistral", "type": "input", "tenant": "other"})); got != 10 {
		t.Errorf("tokens{mistral,input,other} = %v, want 10 (beta is not a metric tenant)", got)
	}
	if got := testutil.ToFloat64(mustVec(t, reg, "bulwark_genai_requests_total", map[string]string{"model": "mistral", "tenant": "other", "outcome": "denied"})); got != 1 {
		t.Errorf("requests{denied} = %v, want 1", got)
	}
	// Next month: the totals kept are not this month's.
	now = now.AddDate(0, 1, 0)
	if cur := r.Current("acme", ""); cur.Known {
		t.Errorf("Current next month = %+v, want unknown", cur)
	}
}

func jsonNum(f float64) string { b, _ := json.Marshal(f); return string(b) + "." }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// mustVec finds one series of a registered counter.
func mustVec(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := len(m.GetLabel()) == len(labels)
			for _, l := range m.GetLabel() {
				ok = ok && labels[l.GetName()] == l.GetValue()
			}
			if ok {
				return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x", Help: "x"}, func() float64 { return m.GetCounter().GetValue() })
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return nil
}
