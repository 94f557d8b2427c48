package e2e

import (
	"testing"

	"github.com/bulwark-ai/bulwark/test/envoysim"
	"github.com/bulwark-ai/bulwark/test/fixture"
	"github.com/bulwark-ai/bulwark/test/redisserver"
)

// TestExtProcInvokeModelPathFamilyCap (issue 21): a Llama or Mistral
// InvokeModel body without its cap field (no max_gen_len, no max_tokens)
// has the role's cap (--extproc-clamp-max-tokens 256) added in its own
// field because the path's model id names the family, and reserves quota at
// that cap: against a 2,000-token quota with a 100,000-token default the
// request passes only because it is reserved at 256 (read as uncapped it
// would reserve the default and be refused). A provisioned-throughput ARN
// names no family: that body stays uncapped and is refused 429 at the
// default, as before.
func TestExtProcInvokeModelPathFamilyCap(t *testing.T) {
	rs := redisserver.Start(t)
	dir := fixture.PolicyDir(t, "tokens_per_day: 2000000", "tokens_per_day: 2000",
		"default_max_tokens: 1024", "default_max_tokens: 100000")
	p, key := llmProc(t, "--policy-dir", dir, "--redis-url", "redis://"+rs.Addr, "--extproc-clamp-max-tokens", "256")
	usage := map[string]string{"content-type": "application/json",
		"x-amzn-bedrock-input-token-count": "10", "x-amzn-bedrock-output-token-count": "30"}
	for _, tc := range []struct{ path, body, want string }{
		{"/model/meta.llama3-1-70b-instruct-v1:0/invoke", `{"prompt":"hi","temperature":0.5}`,
			`{"prompt":"hi","temperature":0.5,"max_gen_len":256}`},
		{"/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.meta.llama3-2-11b-instruct-v1%3A0/invoke",
			`{"prompt":"hi"}`, `{"prompt":"hi","max_gen_len":256}`},
		{"/model/mistral.mistral-large-2407-v1:0/invoke", `{"prompt":"<s>[INST] hi [/INST]"}`,
			`{"prompt":"<s>[INST] hi [/INST]","max_tokens":256}`},
	} {
		res := run(t, p, envoysim.DefaultFilter, chatRequest(key, tc.path, tc.body), func(envoysim.Forwarded) envoysim.Upstream {
			return envoysim.Upstream{Status: 200, Headers: usage, Chunks: [][]byte{[]byte(`{"generation":"Hello","stop_reason":"stop"}`)}}
		})
		if res.Immediate != nil || !res.UpstreamCalled {
			t.Fatalf("%s: refused (%d %s): reserved at the default, not at the cap", tc.path, res.Status, res.Body)
		}
		if got := string(res.Upstream.Body); got != tc.want {
			t.Fatalf("%s: the model received %s, want %s", tc.path, got, tc.want)
		}
	}
	res := run(t, p, envoysim.DefaultFilter, chatRequest(key,
		"/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprovisioned-model%2Fabc123/invoke", `{"prompt":"hi"}`), jsonUpstream(`{}`))
	if res.Immediate == nil || res.Status != 429 || res.UpstreamCalled {
		t.Fatalf("a provisioned model's uncapped body was not reserved at the default: %d %s", res.Status, res.Body)
	}
}
