package usage

import (
	"fmt"
	"math"
	"path"
	"slices"
	"sort"
)

// ConfigPath is where policy data holds the usage settings:
// data.bulwark.usage, with
//
//	prices:          model name or glob → {input, output, cached_input}: US
//	                 dollars per million tokens (cached_input defaults to input)
//	budgets:         tenant → {monthly_usd, daily_usd}
//	alert_percent:   the budget percentages that raise an alert (default 50, 80, 100)
//	metric_tenants:  the tenants named in metric labels (the rest are "other")
//
// It is read at every policy load, like the grey zone: a malformed block
// fails the load, so the last good policy and its prices stay in force.
var ConfigPath = []string{"bulwark", "usage"}

// Price is what a model's tokens cost, in US dollars per million tokens.
type Price struct {
	Input, Output, CachedInput float64
}

// Budget is a tenant's spending limit in US dollars (0: none).
type Budget struct {
	MonthlyUSD, DailyUSD float64
}

// Config is the usage block of policy data.
type Config struct {
	exact map[string]Price
	globs []glob // longest pattern first
	// Budgets by tenant.
	Budgets map[string]Budget
	// AlertPercent are the budget percentages that raise an alert, ascending.
	AlertPercent []float64
	// MetricTenants are the tenants that get their own metric label value.
	MetricTenants map[string]bool
}

type glob struct {
	pattern string
	price   Price
}

// DefaultAlertPercent are the budget thresholds alerted on when data sets none.
var DefaultAlertPercent = []float64{50, 80, 100}

// Price returns the price of model: an exact name first, else the longest
// matching glob (path.Match syntax: *, ?, [...]); ok is false when none
// matches (the exchange then costs nothing, and is counted as unpriced).
func (c *Config) Price(model string) (Price, bool) {
	if c == nil {
		return Price{}, false
	}
	if p, ok := c.exact[model]; ok {
		return p, true
	}
	for _, g := range c.globs {
		if ok, _ := path.Match(g.pattern, model); ok {
			return g.price, true
		}
	}
	return Price{}, false
}

// Cost is what t's tokens of model cost, in nano-USD: input tokens not
// served from cache at the input price, cached ones at the cached price,
// output at the output price.
func (c *Config) Cost(model string, t Totals) (int64, bool) {
	p, ok := c.Price(model)
	if !ok {
		return 0, false
	}
	cached := min(max(t.CachedTokens, 0), max(t.InputTokens, 0))
	fresh := max(t.InputTokens, 0) - cached
	// price per million tokens in USD = price×1000 nano-USD per token.
	nano := (float64(fresh)*p.Input + float64(cached)*p.CachedInput + float64(max(t.OutputTokens, 0))*p.Output) * 1000
	if nano >= math.MaxInt64 {
		return math.MaxInt64, true
	}
	return int64(math.Round(nano)), true
}

// ParseConfig reads the usage block from policy data documents (nil when
// there is none). Errors name the bad field and never echo prices of
// other fields.
func ParseConfig(data map[string]any) (*Config, error) {
	var v any = data
	for _, k := range ConfigPath {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, nil
		}
		if v, ok = m[k]; !ok {
			return nil, nil
		}
	}
	const where = "data.bulwark.usage"
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s must be an object", where)
	}
	c := &Config{exact: map[string]Price{}, Budgets: map[string]Budget{}, MetricTenants: map[string]bool{},
		AlertPercent: slices.Clone(DefaultAlertPercent)}
	for key, raw := range m {
		switch key {
		case "prices":
			if err := c.parsePrices(raw); err != nil {
				return nil, err
			}
		case "budgets":
			if err := c.parseBudgets(raw); err != nil {
				return nil, err
			}
		case "alert_percent":
			list, ok := raw.([]any)
			if !ok {
				return nil, fmt.Errorf("%s.alert_percent must be a list of numbers", where)
			}
			c.AlertPercent = c.AlertPercent[:0]
			for i, e := range list {
				f, ok := number(e)
				if !ok || f <= 0 || f > 1000 {
					return nil, fmt.Errorf("%s.alert_percent[%d] must be a number in (0, 1000]", where, i)
				}
				c.AlertPercent = append(c.AlertPercent, f)
			}
			slices.Sort(c.AlertPercent)
			c.AlertPercent = slices.Compact(c.AlertPercent)
		case "metric_tenants":
			list, ok := raw.([]any)
			if !ok {
				return nil, fmt.Errorf("%s.metric_tenants must be a list of tenant names", where)
			}
			if len(list) > 100 {
				return nil, fmt.Errorf("%s.metric_tenants lists %d tenants; at most 100 (each is a set of time series)", where, len(list))
			}
			for i, e := range list {
				s, ok := e.(string)
				if !ok || s == "" || s == OtherTenant {
					return nil, fmt.Errorf("%s.metric_tenants[%d] must be a tenant name (not empty, not %q)", where, i, OtherTenant)
				}
				c.MetricTenants[s] = true
			}
		default:
			return nil, fmt.Errorf("%s: unknown key %q (want prices, budgets, alert_percent, metric_tenants)", where, key)
		}
	}
	sort.SliceStable(c.globs, func(i, j int) bool {
		if len(c.globs[i].pattern) != len(c.globs[j].pattern) {
			return len(c.globs[i].pattern) > len(c.globs[j].pattern)
		}
		return c.globs[i].pattern < c.globs[j].pattern
	})
	return c, nil
}

func (c *Config) parsePrices(raw any) error {
	m, ok := raw.(map[string]any)
	if !ok {
		return fmt.Errorf("data.bulwark.usage.prices must be an object: model name or glob → {input, output}")
	}
	for model, e := range m {
		where := fmt.Sprintf("data.bulwark.usage.prices[%q]", model)
		pm, ok := e.(map[string]any)
		if !ok {
			return fmt.Errorf("%s must be an object {input, output, cached_input}", where)
		}
		var p Price
		cachedSet := false
		for k, v := range pm {
			f, ok := number(v)
			if !ok || f < 0 || f > 1e6 {
				return fmt.Errorf("%s.%s must be a price in US dollars per million tokens (0 to 1000000)", where, k)
			}
			switch k {
			case "input":
				p.Input = f
			case "output":
				p.Output = f
			case "cached_input":
				p.CachedInput, cachedSet = f, true
			default:
				return fmt.Errorf("%s: unknown key %q (want input, output, cached_input)", where, k)
			}
		}
		if !cachedSet {
			p.CachedInput = p.Input
		}
		if _, err := path.Match(model, ""); err != nil {
			return fmt.Errorf("%s: bad glob: %w", where, err)
		}
		if isGlob(model) {
			c.globs = append(c.globs, glob{pattern: model, price: p})
		} else {
			c.exact[model] = p
		}
	}
	return nil
}

func (c *Config) parseBudgets(raw any) error {
	m, ok := raw.(map[string]any)
	if !ok {
		return fmt.Errorf("data.bulwark.usage.budgets must be an object: tenant → {monthly_usd, daily_usd}")
	}
	for tenant, e := range m {
		where := fmt.Sprintf("data.bulwark.usage.budgets[%q]", tenant)
		bm, ok := e.(map[string]any)
		if !ok {
			return fmt.Errorf("%s must be an object {monthly_usd, daily_usd}", where)
		}
		var b Budget
		for k, v := range bm {
			f, ok := number(v)
			if !ok || f < 0 {
				return fmt.Errorf("%s.%s must be a non-negative number of US dollars", where, k)
			}
			switch k {
			case "monthly_usd":
				b.MonthlyUSD = f
			case "daily_usd":
				b.DailyUSD = f
			default:
				return fmt.Errorf("%s: unknown key %q (want monthly_usd, daily_usd)", where, k)
			}
		}
		c.Budgets[tenant] = b
	}
	return nil
}

func isGlob(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', '\\':
			return true
		}
	}
	return false
}

// number reads a JSON or YAML number as policy data holds it.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, !math.IsNaN(n) && !math.IsInf(n, 0)
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case interface{ Float64() (float64, error) }: // json.Number
		f, err := n.Float64()
		return f, err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
	}
	return 0, false
}
