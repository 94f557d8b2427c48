package policy

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/bulwark-ai/bulwark/policies"
)

// newRegoToolAllowedWithTools is the default policy's own answer,
// tool_allowed(name) for a caller with roles, under the tools map (nil: the
// data has none).
func newRegoToolAllowedWithTools(tb testing.TB, tools any) func(roles []string, name string) bool {
	tb.Helper()
	res, err := loader.NewFileLoader().WithFS(policies.FS).All([]string{"."})
	if err != nil {
		tb.Fatal(err)
	}
	b := res.Documents["bulwark"].(map[string]any)
	delete(b, "tools")
	if tools != nil {
		b["tools"] = tools
	}
	opts := []func(*rego.Rego){rego.Query(`x := data.bulwark.tool_allowed(input.name)`), rego.Store(inmem.NewFromObject(res.Documents))}
	for _, m := range res.ParsedModules() {
		opts = append(opts, rego.ParsedModule(m))
	}
	pq, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return func(roles []string, name string) bool {
		rs := make([]any, len(roles))
		for i, s := range roles {
			rs[i] = s
		}
		in := map[string]any{"name": name, "principal": map[string]any{"roles": rs}}
		out, err := pq.Eval(context.Background(), rego.EvalInput(in))
		if err != nil {
			tb.Fatal(err)
		}
		return len(out) == 1 && out[0].Bindings["x"] == true
	}
}

// TestToolListsAgreeWithToolAllowed: the compiled allow-lists admit a tool
// exactly when the default policy's tool_allowed does, for every shape of
// pattern glob.match knows and for callers with none, one or several
// roles. Were they to admit more, a tool the policy forbids would skip
// the policy (decision.remove_tools) on a tools/list answer.
func TestToolListsAgreeWithToolAllowed(t *testing.T) {
	maps := []string{
		`{"user": ["search", "github.*", "*_read", "a?c", "[ab]x", "{x,y}z", "gh.**"], "ops": ["deploy_*"], "admin": []}`,
		`{"user": ["*"]}`,
		`{}`,
	}
	names := []string{"search", "search2", "github.search", "github.admin.delete", "githubx", "file_read", "file.read",
		"abc", "a.c", "ax", "cx", "xz", "yz", "gh.a.b", "deploy_prod", "delete_repo", "", "*", "tool with space"}
	roleSets := [][]string{{"user"}, {"ops"}, {"user", "ops"}, {"admin"}, {"user", "ghost"}, {"ghost"}, {}}
	for _, m := range maps {
		var tools map[string]any
		if err := json.Unmarshal([]byte(m), &tools); err != nil {
			t.Fatal(err)
		}
		lists := toolListsFromData(map[string]any{"bulwark": map[string]any{"tools": tools}})
		r := newRegoToolAllowedWithTools(t, tools)
		for _, roles := range roleSets {
			for _, name := range names {
				got, want := lists.Admits(roles, name), r(roles, name)
				if got != want {
					t.Errorf("tools %s, roles %v, %q: Admits = %v, tool_allowed = %v", m, roles, name, got, want)
				}
			}
		}
	}
}

// TestToolListsFromData: data the default policy would not read as a tools
// map gives nil ToolLists (every tool goes to the policy); no tools map
// admits every tool; the review score is read and a bad one refused.
func TestToolListsFromData(t *testing.T) {
	bw := func(m map[string]any) map[string]any { return map[string]any{"bulwark": m} }
	cases := []struct {
		name     string
		data     map[string]any
		nilLists bool
		admits   bool // Admits([user], "x")
		score    float64
	}{
		{name: "no data", data: map[string]any{}, admits: true},
		{name: "tools not an object", data: bw(map[string]any{"tools": "x"}), admits: true},
		{name: "role not a list", data: bw(map[string]any{"tools": map[string]any{"user": "x"}}), nilLists: true},
		{name: "pattern not a string", data: bw(map[string]any{"tools": map[string]any{"user": []any{1.0}}}), nilLists: true},
		{name: "pattern does not compile", data: bw(map[string]any{"tools": map[string]any{"user": []any{"[x"}}}), nilLists: true},
		{name: "listed", data: bw(map[string]any{"tools": map[string]any{"user": []any{"x"}}}), admits: true},
		{name: "not listed", data: bw(map[string]any{"tools": map[string]any{"user": []any{"y"}}})},
		{name: "review score", data: bw(map[string]any{"mcp": map[string]any{"tool_review_score": json.Number("0.25")}}), admits: true, score: 0.25},
		{name: "bad review score", data: bw(map[string]any{"mcp": map[string]any{"tool_review_score": "high"}}), nilLists: true},
		{name: "negative review score", data: bw(map[string]any{"mcp": map[string]any{"tool_review_score": -1.0}}), nilLists: true},
	}
	for _, tc := range cases {
		l := toolListsFromData(tc.data)
		if (l == nil) != tc.nilLists {
			t.Errorf("%s: lists = %v, want nil %v", tc.name, l, tc.nilLists)
			continue
		}
		if got := l.Admits([]string{"user"}, "x"); got != tc.admits {
			t.Errorf("%s: Admits = %v, want %v", tc.name, got, tc.admits)
		}
		if got := l.ReviewScore(); got != tc.score {
			t.Errorf("%s: ReviewScore = %v, want %v", tc.name, got, tc.score)
		}
	}
}

// FuzzToolListsMatchGlob: for any pattern and name, the compiled lists
// admit exactly when the policy's glob.match(pattern, [], name) holds.
func FuzzToolListsMatchGlob(f *testing.F) {
	for _, s := range [][2]string{{"github.*", "github.a"}, {"github.*", "github.a.b"}, {"*_read", "x_read"}, {"{a,b}?", "ax"}, {"[!a]", "b"}, {"**", "a.b"}} {
		f.Add(s[0], s[1])
	}
	pq, err := rego.New(rego.Query(`x := glob.match(input.p, [], input.n)`)).PrepareForEval(context.Background())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		l := toolListsFromData(map[string]any{"bulwark": map[string]any{"tools": map[string]any{"r": []any{pattern}}}})
		out, err := pq.Eval(context.Background(), rego.EvalInput(map[string]any{"p": pattern, "n": name}))
		if err != nil || len(out) != 1 {
			if l != nil {
				t.Fatalf("glob.match(%q) fails (%v) but the lists compiled", pattern, err)
			}
			return
		}
		if l == nil {
			t.Fatalf("glob.match(%q, %q) works but the lists did not compile", pattern, name)
		}
		if got, want := l.Admits([]string{"r"}, name), out[0].Bindings["x"] == true; got != want {
			t.Fatalf("glob %q, name %q: Admits = %v, glob.match = %v", pattern, name, got, want)
		}
	})
}
