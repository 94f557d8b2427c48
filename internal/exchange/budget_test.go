package exchange_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/bulwark-ai/bulwark/internal/app/core"
	"github.com/bulwark-ai/bulwark/internal/exchange"
	"github.com/bulwark-ai/bulwark/internal/usage"
	"github.com/bulwark-ai/bulwark/test/fixture"
)

// TestBudgetExceededDenies: the default policy over the real core: once a
// tenant's recorded spending (priced from data.bulwark.usage.prices) reaches
// its budget, its next request is refused 429 budget_exceeded, the crossing
// raised one budget alert per threshold, and another tenant is unaffected.
func TestBudgetExceededDenies(t *testing.T) {
	ctx := context.Background()
	pol := fixture.Unlimited(t)
	data := pol["bulwark/data.yaml"].Data
	if !bytes.Contains(data, []byte("  budgets: {}\n")) {
		t.Fatal("data.yaml has no empty budgets line to tune")
	}
	pol["bulwark/data.yaml"] = &fstest.MapFile{Data: bytes.Replace(data, []byte("  budgets: {}\n"), []byte("  budgets: {acme: {monthly_usd: 0.003}}\n"), 1)}
	var mu sync.Mutex
	var alerts []usage.BudgetAlert
	st := fixture.NewStack(t, fixture.StackOptions{Policies: pol,
		Keys: []fixture.Key{{ID: "app", Roles: []string{"user"}, Tenant: "acme"}, {ID: "other", Roles: []string{"user"}, Tenant: "beta"}},
		Deps: core.Deps{Pepper: "exchange-test-pepper-0123456789", OnBudget: func(a usage.BudgetAlert) {
			mu.Lock()
			alerts = append(alerts, a)
			mu.Unlock()
		}}})
	c := exchange.New(st.Pipeline, st.Scanner, st.Limiter, exchange.Options{ResponseScanner: st.ResponseScanner, Usage: st.Usage}, nil, nil)

	// run makes one buffered chat exchange; it returns the denial reason of
	// its request steps ("" when allowed). A tenant past its budget is
	// refused at the request's headers already.
	run := func(key string, in, out int) string {
		t.Helper()
		x := c.Start("test")
		defer x.End(ctx)
		res, err := x.RequestHeaders(ctx, head(key, "/v1/chat/completions", true))
		if err != nil {
			t.Fatal(err)
		}
		if res.Deny == nil {
			res, err = x.RequestBody(ctx, []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}`))
		}
		if err != nil {
			t.Fatal(err)
		}
		if res.Deny != nil {
			if res.Deny.Status != 429 {
				t.Errorf("deny status %d, want 429", res.Deny.Status)
			}
			return res.Deny.Reason
		}
		if _, err := x.ResponseHeaders(ctx, 200, map[string]string{"content-type": "application/json"}, false); err != nil {
			t.Fatal(err)
		}
		body := `{"id":"c","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":` +
			itoa(in) + `,"completion_tokens":` + itoa(out) + `}}`
		if _, err := x.ResponseBody(ctx, []byte(body)); err != nil {
			t.Fatal(err)
		}
		return ""
	}
	// 400 input + 50 output tokens of gpt-4o: 0.001 + 0.0005 = 0.0015 USD, 50% of 0.003.
	if r := run(st.Secrets["app"], 400, 50); r != "" {
		t.Fatalf("first request denied: %s", r)
	}
	if r := run(st.Secrets["app"], 400, 50); r != "" {
		t.Fatalf("second request (budget at 50%%) denied: %s", r)
	}
	if r := run(st.Secrets["app"], 1, 1); r != "budget_exceeded" {
		t.Errorf("third request (budget spent) reason %q, want budget_exceeded", r)
	}
	if r := run(st.Secrets["other"], 1, 1); r != "" {
		t.Errorf("another tenant denied: %s", r)
	}
	mu.Lock()
	defer mu.Unlock()
	var got []float64
	for _, a := range alerts {
		if a.Tenant != "acme" || a.Period != "month" {
			t.Errorf("alert %+v", a)
		}
		got = append(got, a.Percent)
	}
	if len(got) != 3 || got[0] != 50 || got[1] != 80 || got[2] != 100 {
		t.Errorf("alerts at %v%%, want 50, 80, 100", got)
	}
	cur := st.Usage.Current("acme", "")
	if cur.Month.Requests != 3 || cur.Month.Denials != 1 || cur.Month.CostNanoUSD != 3_000_000 {
		t.Errorf("acme's month %+v, want 3 requests, 1 denial, 0.003 USD", cur.Month)
	}
}

func itoa(n int) string {
	b := []byte{}
	if n == 0 {
		return "0"
	}
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
