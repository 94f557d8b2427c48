package pipeline

import (
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/usage"
)

// UsageSource gives the current usage totals of a tenant (or of a
// principal without one) for input.usage: what a budget rule compares with
// data.bulwark.usage.budgets. It must not block (usage.Recorder keeps them
// in memory, refreshed by each exchange it records).
type UsageSource interface {
	Current(tenant, principal string) usage.Current
}

var _ UsageSource = (*usage.Recorder)(nil)

var (
	keyUsage        = ast.StringTerm("usage")
	keyUsageTenant  = ast.StringTerm("tenant")
	keyUsagePrinc   = ast.StringTerm("principal")
	keyMonth        = ast.StringTerm("month")
	keyDay          = ast.StringTerm("day")
	keyKnown        = ast.StringTerm("known")
	keyCostUSD      = ast.StringTerm("cost_usd")
	keyInputTokens  = ast.StringTerm("input_tokens")
	keyOutputTokens = ast.StringTerm("output_tokens")
	keyCachedTokens = ast.StringTerm("cached_tokens")
	keyRequests     = ast.StringTerm("requests")
	keyDenials      = ast.StringTerm("denials")

	// unknownUsage is the value of a subject this replica has recorded
	// nothing for this month: shared, as input values are never mutated.
	unknownUsage = usageValue(usage.Current{})
)

func totalsValue(t usage.Totals) *ast.Term {
	return ast.ObjectTerm(
		[2]*ast.Term{keyCostUSD, ast.FloatNumberTerm(t.CostUSD())},
		[2]*ast.Term{keyInputTokens, ast.IntNumberTerm(int(t.InputTokens))},
		[2]*ast.Term{keyOutputTokens, ast.IntNumberTerm(int(t.OutputTokens))},
		[2]*ast.Term{keyCachedTokens, ast.IntNumberTerm(int(t.CachedTokens))},
		[2]*ast.Term{keyRequests, ast.IntNumberTerm(int(t.Requests))},
		[2]*ast.Term{keyDenials, ast.IntNumberTerm(int(t.Denials))},
	)
}

func usageValue(c usage.Current) *ast.Term {
	return ast.ObjectTerm(
		[2]*ast.Term{keyMonth, totalsValue(c.Month)},
		[2]*ast.Term{keyDay, totalsValue(c.Day)},
		[2]*ast.Term{keyKnown, ast.BooleanTerm(c.Known)},
	)
}

// addUsage sets input.usage.tenant (input.usage.principal for a principal
// without a tenant): the month's and day's totals over every model, every
// replica's exchanges included as of this replica's last record. The
// response phases' input.usage (the tokens of this answer) keeps its fields.
func (p *Pipeline) addUsage(input ast.Object, pr identity.Principal) {
	if p.usage == nil {
		return
	}
	key, val := keyUsageTenant, unknownUsage
	if pr.Tenant == "" {
		key = keyUsagePrinc
	}
	if c := p.usage.Current(pr.Tenant, pr.ID); c.Known {
		val = p.usageTerms.term(pr.Tenant, pr.ID, c)
	}
	obj := ast.NewObject([2]*ast.Term{key, val})
	if old := input.Get(keyUsage); old != nil {
		if o, ok := old.Value.(ast.Object); ok {
			o.Foreach(func(k, v *ast.Term) {
				if !k.Equal(key) {
					obj.Insert(k, v)
				}
			})
		}
	}
	input.Insert(keyUsage, ast.NewTerm(obj))
}

// usageTerms caches the input.usage value of each subject while its totals
// are unchanged: most decisions of a tenant see the totals of its last
// recorded exchange, so the value is built once per exchange, not per
// decision. Values are never mutated once built, so sharing them is safe.
type usageTerms struct {
	mu sync.Mutex
	m  map[[2]string]usageTerm
}

type usageTerm struct {
	c usage.Current
	t *ast.Term
}

// maxUsageTerms bounds the cache; past it, values are built each time.
const maxUsageTerms = 10000

func (u *usageTerms) term(tenant, principal string, c usage.Current) *ast.Term {
	k := [2]string{tenant, ""}
	if tenant == "" {
		k[1] = principal
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if e, ok := u.m[k]; ok && e.c == c {
		return e.t
	}
	t := usageValue(c)
	if u.m == nil {
		u.m = map[[2]string]usageTerm{}
	}
	if _, ok := u.m[k]; ok || len(u.m) < maxUsageTerms {
		u.m[k] = usageTerm{c: c, t: t}
	}
	return t
}
