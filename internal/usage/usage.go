// Package usage attributes the traffic of LLM exchanges: tokens (input,
// output, cached), requests, denials and their cost, per tenant, principal
// and model, in time buckets (minute, hour, day, month) that every replica
// shares through Redis (in-process without Redis, as the limiter does).
//
// One exchange is one Add: a single Redis call (one Lua script over the
// keys of one Cluster slot) that increments every bucket and returns the
// tenant's month and day totals, so budgets are known without a read of
// their own. Costs come from a price table in policy data (Config); the
// Recorder turns an exchange into an Entry, counts it in Prometheus, keeps
// the totals a policy reads as input.usage, and reports budget thresholds
// crossed.
package usage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bulwark-ai/bulwark/internal/ratelimit"
)

// Granularity is the width of a time bucket.
type Granularity string

// The granularities every Add writes and Query reads.
const (
	Minute Granularity = "minute"
	Hour   Granularity = "hour"
	Day    Granularity = "day"
	Month  Granularity = "month"
)

// granularities are written by every Add, in this order: the month and day
// buckets come first (the script returns their totals).
var granularities = [...]Granularity{Month, Day, Hour, Minute}

// Retention is how long a bucket of each granularity is kept after it
// ends: minutes for two days, hours for forty, days for thirteen months,
// months for three years.
var Retention = map[Granularity]time.Duration{
	Minute: 48 * time.Hour,
	Hour:   40 * 24 * time.Hour,
	Day:    400 * 24 * time.Hour,
	Month:  3 * 366 * 24 * time.Hour,
}

// ParseGranularity reads a granularity name.
func ParseGranularity(s string) (Granularity, error) {
	switch g := Granularity(strings.ToLower(s)); g {
	case Minute, Hour, Day, Month:
		return g, nil
	}
	return "", fmt.Errorf("usage: unknown granularity %q (want minute, hour, day or month)", s)
}

// Start is the start (UTC) of the bucket of granularity g holding t.
func (g Granularity) Start(t time.Time) time.Time {
	t = t.UTC()
	switch g {
	case Minute:
		return t.Truncate(time.Minute)
	case Hour:
		return t.Truncate(time.Hour)
	case Day:
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	default:
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	}
}

// Next is the start of the bucket after the one starting at start.
func (g Granularity) Next(start time.Time) time.Time {
	switch g {
	case Minute:
		return start.Add(time.Minute)
	case Hour:
		return start.Add(time.Hour)
	case Day:
		return start.AddDate(0, 0, 1)
	default:
		return start.AddDate(0, 1, 0)
	}
}

// Totals are the counts of one subject, model and bucket.
type Totals struct {
	InputTokens  int64
	OutputTokens int64
	// CachedTokens are input tokens the provider served from its prompt
	// cache (included in InputTokens), where it reports them.
	CachedTokens int64
	Requests     int64
	Denials      int64
	// CostNanoUSD is the cost in billionths of a US dollar, from the price
	// table in force when each exchange was recorded.
	CostNanoUSD int64
}

// Add adds o to t.
func (t *Totals) Add(o Totals) {
	t.InputTokens += o.InputTokens
	t.OutputTokens += o.OutputTokens
	t.CachedTokens += o.CachedTokens
	t.Requests += o.Requests
	t.Denials += o.Denials
	t.CostNanoUSD += o.CostNanoUSD
}

// CostUSD is the cost in US dollars.
func (t Totals) CostUSD() float64 { return float64(t.CostNanoUSD) / 1e9 }

// The hash fields of a bucket are "<metric>|<model>"; the model "" holds
// the bucket's total over every model.
var metricNames = [...]string{"in", "out", "cached", "req", "deny", "cost"}

func (t *Totals) values() [6]int64 {
	return [6]int64{t.InputTokens, t.OutputTokens, t.CachedTokens, t.Requests, t.Denials, t.CostNanoUSD}
}

func (t *Totals) set(metric string, v int64) {
	switch metric {
	case "in":
		t.InputTokens = v
	case "out":
		t.OutputTokens = v
	case "cached":
		t.CachedTokens = v
	case "req":
		t.Requests = v
	case "deny":
		t.Denials = v
	case "cost":
		t.CostNanoUSD = v
	}
}

// Entry is one exchange's usage.
type Entry struct {
	Tenant, Principal string
	// Model is the model that answered (the request's when the answer named
	// none); "" is recorded as UnknownModel.
	Model string
	Totals
	// At is when the exchange ended.
	At time.Time
}

// UnknownModel stands for an exchange whose model is unknown (a denied
// request without a body, an API that names none).
const UnknownModel = "unknown"

// Period is a subject's totals over every model in the current month and
// day, as the store holds them right after an Add (every replica's
// exchanges included), and the month's cost before this Add: a budget
// threshold is crossed by exactly the Add whose MonthBefore is below it
// and whose Month is not, whichever replica made it.
type Period struct {
	Month, Day       Totals
	MonthBefore      int64 // cost in nano-USD before the Add
	MonthStart       time.Time
	DayStart         time.Time
	Tenant, Subject  string
	PrincipalWithout bool // the subject is a principal without a tenant
}

// Query selects usage: a tenant's (every principal's), or one principal's
// (of Tenant, "" for a principal without a tenant), per model or for one
// model, from From (inclusive) to To (exclusive), in buckets of
// Granularity.
type Query struct {
	Tenant, Principal, Model string
	From, To                 time.Time
	Granularity              Granularity
}

// Row is the usage of one model in one bucket.
type Row struct {
	Start time.Time
	Model string
	Totals
}

// MaxBuckets bounds the buckets one Query reads.
const MaxBuckets = 1500

// ErrBadQuery is a query that cannot be answered (no subject, an empty or
// too long range).
var ErrBadQuery = errors.New("usage: bad query")

// backend is where buckets live: Redis, or this process.
type backend interface {
	// add increments every key's fields for model and the model total ""
	// by vals, sets each key to expire at expireAt, and returns the totals
	// ("" fields) of keys[0] and keys[1] afterwards, and keys[0]'s cost
	// before.
	add(ctx context.Context, keys []string, expireAt []int64, model string, vals [6]int64) (month, day Totals, before int64, err error)
	// read returns the fields of each key (nil for a missing one).
	read(ctx context.Context, keys []string) ([]map[string]int64, error)
}

// Store keeps usage buckets. It is safe for concurrent use.
type Store struct {
	prefix string
	b      backend
}

// DefaultPrefix prefixes the store's Redis keys.
const DefaultPrefix = "bulwark:usage"

func subject(tenant, principal string) string {
	if tenant == "" && principal == "" {
		return ""
	}
	return ratelimit.SubjectKey(tenant, principal, "")
}

func (s *Store) key(subj string, g Granularity, start time.Time) string {
	var b strings.Builder
	b.Grow(len(s.prefix) + len(subj) + 16)
	b.WriteString(s.prefix)
	b.WriteByte(':')
	b.WriteString(subj)
	b.WriteByte(':')
	b.WriteString(string(g[:2]))
	b.WriteByte(':')
	b.WriteString(strconv.FormatInt(start.Unix(), 10))
	return b.String()
}

// Add records one exchange in every bucket: the tenant's (its total over
// every principal) and the principal's, at each granularity. It returns the
// month and day totals of the tenant (or, without a tenant, of the
// principal). An Entry with neither tenant nor principal (an anonymous
// caller) is counted under the principal "anonymous".
func (s *Store) Add(ctx context.Context, e Entry) (Period, error) {
	if e.Model == "" {
		e.Model = UnknownModel
	}
	if e.Tenant == "" && e.Principal == "" {
		e.Principal = "anonymous"
	}
	at := e.At
	if at.IsZero() {
		at = time.Now()
	}
	var subjects [2]string
	n := 0
	if e.Tenant != "" {
		subjects[n] = subject(e.Tenant, "")
		n++
	}
	if e.Principal != "" {
		subjects[n] = subject(e.Tenant, e.Principal)
		n++
	}
	keys := make([]string, 0, n*len(granularities))
	exp := make([]int64, 0, n*len(granularities))
	for _, subj := range subjects[:n] {
		for _, g := range granularities {
			start := g.Start(at)
			keys = append(keys, s.key(subj, g, start))
			exp = append(exp, g.Next(start).Add(Retention[g]).Unix())
		}
	}
	month, day, before, err := s.b.add(ctx, keys, exp, e.Model, e.Totals.values())
	if err != nil {
		return Period{}, fmt.Errorf("usage: record: %w", err)
	}
	return Period{Month: month, Day: day, MonthBefore: before, MonthStart: Month.Start(at), DayStart: Day.Start(at),
		Tenant: e.Tenant, Subject: subjects[0], PrincipalWithout: e.Tenant == ""}, nil
}

// Query reads the buckets q selects, in one round trip: rows sorted by
// bucket start, then model; buckets without usage are left out.
func (s *Store) Query(ctx context.Context, q Query) ([]Row, error) {
	subj := subject(q.Tenant, q.Principal)
	if subj == "" {
		return nil, fmt.Errorf("%w: a tenant or a principal is needed", ErrBadQuery)
	}
	g := q.Granularity
	if g == "" {
		g = Hour
	}
	if _, err := ParseGranularity(string(g)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadQuery, err)
	}
	if !q.To.After(q.From) {
		return nil, fmt.Errorf("%w: the range is empty (to must be after from)", ErrBadQuery)
	}
	var starts []time.Time
	var keys []string
	for t := g.Start(q.From); t.Before(q.To); t = g.Next(t) {
		if len(keys) == MaxBuckets {
			return nil, fmt.Errorf("%w: more than %d %s buckets; choose a coarser granularity or a shorter range", ErrBadQuery, MaxBuckets, g)
		}
		starts = append(starts, t)
		keys = append(keys, s.key(subj, g, t))
	}
	maps, err := s.b.read(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("usage: query: %w", err)
	}
	var rows []Row
	for i, m := range maps {
		byModel := map[string]*Totals{}
		var models []string
		for f, v := range m {
			metric, model, ok := strings.Cut(f, "|")
			if !ok || model == "" || (q.Model != "" && model != q.Model) {
				continue
			}
			t := byModel[model]
			if t == nil {
				t = &Totals{}
				byModel[model] = t
				models = append(models, model)
			}
			t.set(metric, v)
		}
		slices.Sort(models)
		for _, model := range models {
			rows = append(rows, Row{Start: starts[i], Model: model, Totals: *byModel[model]})
		}
	}
	return rows, nil
}
