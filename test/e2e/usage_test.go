package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
	"github.com/bulwark-ai/bulwark/test/envoysim"
	"github.com/bulwark-ai/bulwark/test/redisserver"
)

// TestUsageAcrossReplicas: three replicas of the real binary share one real
// Redis. Exchanges through ext_proc whose answers report usage (buffered
// and streamed, two models) are spread over them; then `bulwark usage` and
// AdminService.GetUsage, asked of any replica, report exactly the sum of
// the answers' usage, priced from the default price table, and /metrics
// shows the token and cost counters by model.
func TestUsageAcrossReplicas(t *testing.T) {
	rs := redisserver.Start(t)
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	app := createKey(t, "--keys-file", keys, "--id", "app", "--roles", "user", "--tenant", "acme")
	ops := createKey(t, "--keys-file", keys, "--id", "ops", "--roles", "bulwark-operator,bulwark-cross-tenant")
	var procs []*proc
	for range 3 {
		procs = append(procs, startEnv(t, []string{pepperEnv}, "--keys-file", keys, "--redis-url", "redis://"+rs.Addr))
	}

	type sum struct{ in, out, cached, requests int64 }
	want := map[string]*sum{"gpt-4o": {}, "gpt-4o-mini": {}}
	for i := range 9 {
		p := procs[i%3]
		in, out, cached := int64(100+i), int64(20+i), int64(10*i)
		model := "gpt-4o"
		if i%3 == 2 {
			model = "gpt-4o-mini"
		}
		reqBody := `{"model":"` + model + `","messages":[{"role":"user","content":"hello number ` + strconv.Itoa(i) + `"}]}`
		if i%2 == 0 {
			body := fmt.Sprintf(`{"id":"c%d","object":"chat.completion","model":"%s","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":%d}}}`,
				i, model, in, out, in+out, cached)
			res := run(t, p, envoysim.DefaultFilter, chatRequest(app, "/v1/chat/completions", reqBody), jsonUpstream(body))
			if res.Immediate != nil || res.Status != 200 {
				t.Fatalf("exchange %d: status %d body %s", i, res.Status, res.Body)
			}
		} else {
			cached = 0 // the stream helper reports none
			reqBody = `{"model":"` + model + `","stream":true,"messages":[{"role":"user","content":"hello number ` + strconv.Itoa(i) + `"}]}`
			stream := strings.ReplaceAll(string(openAIStream([]string{"Hel", "lo"}, int(in), int(out))), `"gpt-4o"`, `"`+model+`"`)
			res := run(t, p, envoysim.DefaultFilter, chatRequest(app, "/v1/chat/completions", reqBody), sseUpstream([]byte(stream), nil))
			if res.Immediate != nil || res.Status != 200 {
				t.Fatalf("exchange %d: status %d body %s", i, res.Status, res.Body)
			}
		}
		s := want[model]
		s.in, s.out, s.cached, s.requests = s.in+in, s.out+out, s.cached+cached, s.requests+1
	}
	// Prices of data.yaml: gpt-4o 2.5/10 (cached 1.25), gpt-4o-mini* 0.15/0.6 (cached 0.075), per million.
	price := map[string][3]float64{"gpt-4o": {2.5, 10, 1.25}, "gpt-4o-mini": {0.15, 0.6, 0.075}}
	var total sum
	var wantNano int64
	for m, s := range want {
		pr := price[m]
		wantNano += int64(math.Round((float64(s.in-s.cached)*pr[0] + float64(s.cached)*pr[2] + float64(s.out)*pr[1]) * 1000))
		total.in, total.out, total.cached, total.requests = total.in+s.in, total.out+s.out, total.cached+s.cached, total.requests+s.requests
	}

	// An exchange is recorded when its ext_proc stream ends, just after
	// the client has its answer: wait until the last one is in.
	eventually(t, 10*time.Second, "every exchange recorded", func() bool {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+ops), 5*time.Second)
		defer cancel()
		resp, err := bulwarkv1.NewAdminServiceClient(procs[0].apiConn).GetUsage(ctx, &bulwarkv1.GetUsageRequest{Tenant: "acme"})
		return err == nil && resp.GetTotal().GetRequests() >= total.requests
	})
	// The Admin API of each replica reports the same totals.
	for i, p := range procs {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+ops), 10*time.Second)
		resp, err := bulwarkv1.NewAdminServiceClient(p.apiConn).GetUsage(ctx, &bulwarkv1.GetUsageRequest{Tenant: "acme",
			Granularity: bulwarkv1.UsageGranularity_USAGE_GRANULARITY_DAY})
		cancel()
		if err != nil {
			t.Fatalf("replica %d GetUsage: %v", i, err)
		}
		tot := resp.GetTotal()
		if tot.GetInputTokens() != total.in || tot.GetOutputTokens() != total.out || tot.GetCachedTokens() != total.cached ||
			tot.GetRequests() != total.requests || tot.GetDenials() != 0 || tot.GetCostNanoUsd() != wantNano {
			t.Errorf("replica %d GetUsage total %v; want in %d out %d cached %d requests %d cost %d nano-USD", i, tot, total.in, total.out, total.cached, total.requests, wantNano)
		}
		for _, m := range resp.GetModels() {
			if s := want[m.GetModel()]; s == nil || m.GetTotals().GetInputTokens() != s.in || m.GetTotals().GetRequests() != s.requests {
				t.Errorf("replica %d model %s: %v", i, m.GetModel(), m.GetTotals())
			}
		}
	}

	// `bulwark usage` against another replica says the same.
	stdout, stderr, code := runCLIEnv(t, []string{"BULWARK_API_KEY=" + ops}, "usage", "--addr", procs[2].APIAddr, "--tenant", "acme",
		"--granularity", "hour", "--json")
	if code != 0 {
		t.Fatalf("bulwark usage: exit %d: %s", code, stderr)
	}
	var cli struct {
		Total struct {
			CostNanoUSD int64 `json:"cost_nano_usd"`
		} `json:"total"`
		Models []struct{ Model string } `json:"models"`
	}
	if err := json.Unmarshal([]byte(stdout), &cli); err != nil {
		t.Fatalf("bulwark usage --json: %v\n%s", err, stdout)
	}
	var raw map[string]map[string]any
	_ = json.Unmarshal([]byte(stdout), &raw)
	got := raw["total"]
	if int64(got["input_tokens"].(float64)) != total.in || int64(got["output_tokens"].(float64)) != total.out ||
		int64(got["cached_tokens"].(float64)) != total.cached || int64(got["requests"].(float64)) != total.requests ||
		cli.Total.CostNanoUSD != wantNano || len(cli.Models) != 2 {
		t.Errorf("bulwark usage total %v (%d models), want in %d out %d cached %d requests %d cost %d", got, len(cli.Models), total.in, total.out, total.cached, total.requests, wantNano)
	}
	// The table form prints a total row too.
	totalRow := regexp.MustCompile(`(?m)^total\s+\*\s+` + strconv.FormatInt(total.in, 10) + `\s+` + strconv.FormatInt(total.out, 10) + `\s`)
	if table, _, code := runCLIEnv(t, []string{"BULWARK_API_KEY=" + ops}, "usage", "--addr", procs[0].APIAddr, "--tenant", "acme"); code != 0 ||
		!totalRow.MatchString(table) {
		t.Errorf("bulwark usage table (exit %d):\n%s", code, table)
	}

	// /metrics of the replicas: token and cost counters by model add up to
	// the same (each replica counts its own exchanges).
	var metricIn, metricCost float64
	re := regexp.MustCompile(`(?m)^(bulwark_genai_tokens_total|bulwark_genai_cost_usd_total)\{([^}]*)\} (\S+)$`)
	for i, p := range procs {
		status, body := p.get(t, "/metrics")
		if status != 200 {
			t.Fatalf("replica %d /metrics: %d", i, status)
		}
		for _, m := range re.FindAllStringSubmatch(body, -1) {
			v, _ := strconv.ParseFloat(m[3], 64)
			if !strings.Contains(m[2], `model="gpt-4o`) || !strings.Contains(m[2], `tenant="other"`) {
				t.Errorf("replica %d: unexpected series %s{%s}", i, m[1], m[2])
			}
			switch {
			case m[1] == "bulwark_genai_tokens_total" && strings.Contains(m[2], `type="input"`):
				metricIn += v
			case m[1] == "bulwark_genai_cost_usd_total":
				metricCost += v
			}
		}
	}
	if int64(metricIn) != total.in || math.Abs(metricCost-float64(wantNano)/1e9) > 1e-9 {
		t.Errorf("/metrics: input tokens %v, cost %v USD; want %d, %v", metricIn, metricCost, total.in, float64(wantNano)/1e9)
	}
}
