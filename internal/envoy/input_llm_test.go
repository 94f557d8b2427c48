package envoy

import (
	"strings"
	"testing"
)

// TestBuildRequestInputLLM: input.llm is built in the ext_authz door too,
// with n, from JSON whatever the label on an LLM route.
func TestBuildRequestInputLLM(t *testing.T) {
	in, r := BuildRequestInput(NewCheckRequest(HTTPRequest{Method: "POST", Path: "/v1/chat/completions?x=1",
		Headers: map[string]string{"content-type": "application/x-www-form-urlencoded"},
		Body:    []byte(`{"model":"gpt-4o","n":3,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`)}))
	if r == nil || r.Model != "gpt-4o" || r.Choices != 3 {
		t.Fatalf("llm request = %+v", r)
	}
	got := in.String()
	for _, want := range []string{`"llm": {`, `"n": 3`, `"max_tokens": 100`, `"parsed_body": {`, `"model": "gpt-4o"`} {
		if !strings.Contains(got, want) {
			t.Errorf("input lacks %s: %s", want, got)
		}
	}
}
