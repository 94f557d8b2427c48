package policies

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// readmeFetchRule is README's worked tool policy ("Agents and MCP"): keep
// the two in step.
const readmeFetchRule = `package bulwark

import rego.v1

# fetch_url only for the listed hosts, and only with arguments Bulwark can read.
tool_call_denied(c) if {
	c.name == "fetch_url"
	not fetch_allowed(c)
}

fetch_allowed(c) if {
	c.arguments_valid
	parts := regex.find_all_string_submatch_n(` + "`" + `^https://([^/:?#@]+)(?:[/:?#]|$)` + "`" + `, c.arguments.url, 1)
	parts[0][1] in data.bulwark.fetch_url_hosts
}
`

const readmeFetchTests = `package readme_test

import rego.v1

import data.bulwark

support := {"id": "s", "kind": "api_key", "roles": ["support"], "tenant": "t", "claims": {}}

call(name, args, valid) := {"phase": "response_body_chunk", "principal": support, "signals": {"canary_leak": false},
	"response": {"status": 200, "content_type": "text/event-stream",
	"tool_calls": [{"id": "c1", "name": name, "arguments": args, "arguments_valid": valid}]}}

test_listed_host_allowed if {
	bulwark.decision.allowed with input as call("fetch_url", {"url": "https://docs.example.com/a"}, true)
}

test_other_host_denied if {
	d := bulwark.decision with input as call("fetch_url", {"url": "https://evil.example/docs.example.com"}, true)
	d.reason == "tool_not_allowed"
}

test_userinfo_trick_denied if {
	d := bulwark.decision with input as call("fetch_url", {"url": "https://docs.example.com@evil.example/"}, true)
	d.reason == "tool_not_allowed"
}

test_unreadable_arguments_denied if {
	d := bulwark.decision with input as call("fetch_url", "{\"url\": \"https://docs.exa", false)
	d.reason == "tool_not_allowed"
}

test_search_glob_allowed_and_others_denied if {
	bulwark.decision.allowed with input as call("search_web", {}, true)
	d := bulwark.decision with input as call("send_email", {}, true)
	d.reason == "tool_not_allowed"
}
`

// TestREADMEToolPolicy runs README's worked tool policy against the
// default policy, with README's data.
func TestREADMEToolPolicy(t *testing.T) {
	res, err := loader.NewFileLoader().WithFS(FS).All([]string{"."})
	if err != nil {
		t.Fatalf("load policies: %v", err)
	}
	b := res.Documents["bulwark"].(map[string]any)
	b["tools"] = map[string]any{"admin": []any{}, "support": []any{"search_*", "fetch_url"}}
	b["fetch_url_hosts"] = []any{"docs.example.com", "status.example.com"}
	mods := res.ParsedModules()
	for name, src := range map[string]string{"readme.rego": readmeFetchRule, "readme_test.rego": readmeFetchTests} {
		m, err := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		mods[name] = m
	}
	ch, err := tester.NewRunner().SetStore(inmem.NewFromObject(res.Documents)).SetCompiler(ast.NewCompiler()).
		SetModules(mods).Filter("readme_test").RunTests(context.Background(), nil)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	n := 0
	for r := range ch {
		n++
		if r.Error != nil || r.Fail {
			t.Errorf("%s: fail %v error %v", r.Name, r.Fail, r.Error)
		}
	}
	if n != 5 {
		t.Fatalf("%d tests ran, want 5", n)
	}
}
