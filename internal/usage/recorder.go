package usage

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwark-ai/bulwark/internal/labelcap"
)

// OtherTenant is the metric label of every tenant not listed in
// data.bulwark.usage.metric_tenants, and NoTenant that of principals
// without a tenant: the tenant label stays bounded.
const (
	OtherTenant = "other"
	NoTenant    = "none"
)

// ConfigSource gives the usage block of the policy in force (the policy
// engine); nil means none.
type ConfigSource interface {
	UsageConfig() *Config
}

// BudgetAlert says a tenant's spending crossed a threshold of its budget.
// Exactly one Add crosses each threshold (see Period), whichever replica
// made it, so every replica may report what its own Adds crossed.
type BudgetAlert struct {
	Tenant string
	// Period is "month" or "day".
	Period string
	// Percent is the threshold crossed (data.bulwark.usage.alert_percent).
	Percent             float64
	SpentUSD, BudgetUSD float64
	PeriodStart         time.Time
}

// Current is what a policy reads as input.usage.tenant (or, for a
// principal without a tenant, input.usage.principal): the month's and the
// day's totals over every model, as this replica last learned them from the
// store (each Add returns them, with every replica's exchanges counted).
type Current struct {
	Month, Day Totals
	// Known is false when this replica has recorded nothing for the subject
	// in the current month yet: the totals are then zero.
	Known bool
}

// maxTracked bounds the subjects whose current totals are kept.
const maxTracked = 50000

// Recorder records exchanges: it prices them, adds them to the store,
// counts them in Prometheus, keeps the current totals and reports budget
// thresholds crossed. It is safe for concurrent use.
type Recorder struct {
	store    *Store
	cfg      ConfigSource
	onBudget func(BudgetAlert)
	logger   *slog.Logger
	now      func() time.Time
	m        *metrics

	mu  sync.Mutex
	cur map[string]Period
}

// Options are a Recorder's optional parts.
type Options struct {
	// OnBudget is told of each budget threshold an Add crossed (nil: only
	// logged).
	OnBudget func(BudgetAlert)
	// Logger receives record failures and budget crossings (nil: discarded).
	Logger *slog.Logger
	// Registerer receives the metrics (nil: unregistered).
	Registerer prometheus.Registerer
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// NewRecorder returns a Recorder over store, pricing with cfg's usage block.
func NewRecorder(store *Store, cfg ConfigSource, o Options) (*Recorder, error) {
	if store == nil {
		return nil, fmt.Errorf("usage: nil store")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	return &Recorder{store: store, cfg: cfg, onBudget: o.OnBudget, logger: o.Logger, now: o.Now, m: m,
		cur: map[string]Period{}}, nil
}

// Store is the recorder's store, for queries.
func (r *Recorder) Store() *Store { return r.store }

func (r *Recorder) config() *Config {
	if r.cfg == nil {
		return nil
	}
	return r.cfg.UsageConfig()
}

// Exchange is what the exchange core knows when an exchange ends.
type Exchange struct {
	Tenant, Principal, Model string
	// Input, Output and Cached are the tokens the model reported (zero when
	// it reported none).
	Input, Output, Cached int64
	// Denied: a decision of the exchange denied it (or ended its answer).
	Denied bool
}

// Record records one exchange. Metrics are counted whatever happens; a
// store failure is returned (and the totals kept are then left as they
// were).
func (r *Recorder) Record(ctx context.Context, x Exchange) error {
	cfg := r.config()
	e := Entry{Tenant: x.Tenant, Principal: x.Principal, Model: x.Model, At: r.now(),
		Totals: Totals{InputTokens: x.Input, OutputTokens: x.Output, CachedTokens: x.Cached, Requests: 1}}
	if e.Model == "" {
		e.Model = UnknownModel
	}
	if x.Denied {
		e.Denials = 1
	}
	cost, priced := cfg.Cost(e.Model, e.Totals)
	e.CostNanoUSD = cost
	r.m.count(cfg, e, priced)
	p, err := r.store.Add(ctx, e)
	if err != nil {
		r.m.errors.Inc()
		return err
	}
	r.keep(p)
	r.budgets(cfg, p)
	return nil
}

func (r *Recorder) keep(p Period) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.cur[p.Subject]; ok && old.MonthStart.Equal(p.MonthStart) && old.DayStart.After(p.DayStart) {
		return // an Add of an earlier day finished late
	}
	if _, ok := r.cur[p.Subject]; !ok && len(r.cur) >= maxTracked {
		for k, v := range r.cur {
			if !v.MonthStart.Equal(p.MonthStart) {
				delete(r.cur, k)
			}
		}
		if len(r.cur) >= maxTracked {
			return
		}
	}
	r.cur[p.Subject] = p
}

// Current returns the current totals of tenant (or, when tenant is "", of
// principal): what input.usage carries.
func (r *Recorder) Current(tenant, principal string) Current {
	subj := subject(tenant, "")
	if tenant == "" {
		if principal == "" {
			principal = "anonymous"
		}
		subj = subject("", principal)
	}
	now := r.now()
	r.mu.Lock()
	p, ok := r.cur[subj]
	r.mu.Unlock()
	if !ok || !p.MonthStart.Equal(Month.Start(now)) {
		return Current{}
	}
	c := Current{Month: p.Month, Known: true}
	if p.DayStart.Equal(Day.Start(now)) {
		c.Day = p.Day
	}
	return c
}

// budgets reports the thresholds of the tenant's budget this Add crossed.
func (r *Recorder) budgets(cfg *Config, p Period) {
	if cfg == nil || p.Tenant == "" || p.PrincipalWithout {
		return
	}
	b, ok := cfg.Budgets[p.Tenant]
	if !ok {
		return
	}
	dayBefore := p.Day.CostNanoUSD - (p.Month.CostNanoUSD - p.MonthBefore)
	for _, c := range []struct {
		period        string
		budget        float64
		before, after int64
		start         time.Time
	}{
		{"month", b.MonthlyUSD, p.MonthBefore, p.Month.CostNanoUSD, p.MonthStart},
		{"day", b.DailyUSD, dayBefore, p.Day.CostNanoUSD, p.DayStart},
	} {
		if c.budget <= 0 || c.after <= c.before {
			continue
		}
		for _, pct := range cfg.AlertPercent {
			limit := c.budget * pct / 100 * 1e9
			if float64(c.before) < limit && float64(c.after) >= limit {
				a := BudgetAlert{Tenant: p.Tenant, Period: c.period, Percent: pct, SpentUSD: float64(c.after) / 1e9,
					BudgetUSD: c.budget, PeriodStart: c.start}
				r.m.budget.WithLabelValues(c.period).Inc()
				r.logger.Warn("tenant budget threshold crossed", "tenant", a.Tenant, "period", a.Period,
					"percent", a.Percent, "spent_usd", a.SpentUSD, "budget_usd", a.BudgetUSD)
				if r.onBudget != nil {
					r.onBudget(a)
				}
			}
		}
	}
}

type metrics struct {
	tokens   *prometheus.CounterVec
	cost     *prometheus.CounterVec
	requests *prometheus.CounterVec
	unpriced *prometheus.CounterVec
	errors   prometheus.Counter
	budget   *prometheus.CounterVec
	models   labelcap.Set
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_genai_tokens_total",
			Help: "Tokens the models reported, by model, type (input, output, cached: input served from the provider's cache, also counted as input) and tenant (the tenants listed in data.bulwark.usage.metric_tenants; the rest are \"other\", principals without a tenant \"none\").",
		}, []string{"model", "type", "tenant"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_genai_cost_usd_total",
			Help: "Cost of the tokens the models reported, in US dollars, from the price table in data.bulwark.usage.prices, by model and tenant.",
		}, []string{"model", "tenant"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_genai_requests_total",
			Help: "LLM exchanges ended, by model, tenant and outcome (allowed, denied).",
		}, []string{"model", "tenant", "outcome"}),
		unpriced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_genai_unpriced_tokens_total",
			Help: "Tokens of models the price table has no price for (their cost is counted as zero), by model.",
		}, []string{"model"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_usage_record_errors_total",
			Help: "Exchanges whose usage could not be stored (Redis unavailable); their metrics are counted.",
		}),
		budget: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_budget_thresholds_crossed_total",
			Help: "Tenant budget thresholds (data.bulwark.usage.alert_percent) crossed by this replica's exchanges, by period (month, day).",
		}, []string{"period"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.tokens, m.cost, m.requests, m.unpriced, m.errors, m.budget} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("usage: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) count(cfg *Config, e Entry, priced bool) {
	model := m.models.Value(e.Model)
	tenant := NoTenant
	if e.Tenant != "" {
		tenant = OtherTenant
		if cfg != nil && cfg.MetricTenants[e.Tenant] {
			tenant = e.Tenant
		}
	}
	outcome := "allowed"
	if e.Denials > 0 {
		outcome = "denied"
	}
	m.requests.WithLabelValues(model, tenant, outcome).Inc()
	if e.InputTokens > 0 {
		m.tokens.WithLabelValues(model, "input", tenant).Add(float64(e.InputTokens))
	}
	if e.OutputTokens > 0 {
		m.tokens.WithLabelValues(model, "output", tenant).Add(float64(e.OutputTokens))
	}
	if e.CachedTokens > 0 {
		m.tokens.WithLabelValues(model, "cached", tenant).Add(float64(e.CachedTokens))
	}
	if e.CostNanoUSD > 0 {
		m.cost.WithLabelValues(model, tenant).Add(float64(e.CostNanoUSD) / 1e9)
	}
	if !priced && e.InputTokens+e.OutputTokens > 0 {
		m.unpriced.WithLabelValues(model).Add(float64(e.InputTokens + e.OutputTokens))
	}
}
