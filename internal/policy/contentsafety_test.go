package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/policies"
)

// TestDefaultContentRules: the embedded policy's rules reach the detectors:
// its self-test phrase is a deny category in both directions, and answers'
// markup is sanitised with an empty allow-list.
func TestDefaultContentRules(t *testing.T) {
	t.Parallel()
	e, err := New(context.Background(), Config{Embedded: policies.FS, Query: "bulwark/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []detect.Direction{detect.DirectionRequest, detect.DirectionResponse} {
		sc, err := detect.New(detect.Config{DisableInjection: true, Content: e, Direction: dir})
		if err != nil {
			t.Fatal(err)
		}
		res := sc.Scan("please echo BULWARK-content-safety-SELFTEST now ![x](https://evil.example/p.png)")
		var cats, markup []string
		for _, f := range res.Findings {
			switch f.Detector {
			case detect.DetectorContent:
				cats = append(cats, f.Type)
			case detect.DetectorMarkup:
				markup = append(markup, f.Type)
			}
		}
		if len(cats) != 1 || cats[0] != "bulwark_selftest" {
			t.Errorf("%s: content findings %q, want the self-test category", dir, cats)
		}
		if wantMarkup := dir == detect.DirectionResponse; (len(markup) > 0) != wantMarkup {
			t.Errorf("%s: markup findings %q, want some: %v", dir, markup, wantMarkup)
		}
	}
}

func TestContentRulesFromData(t *testing.T) {
	t.Parallel()
	cat := func(v any) map[string]any {
		return map[string]any{"bulwark": map[string]any{"content_safety": map[string]any{"categories": map[string]any{"c": v}}}}
	}
	good := map[string]any{"terms": []any{"bad phrase"}, "directions": []any{"request"}, "action": "deny"}
	cases := []struct {
		name string
		data map[string]any
		want string // "" means valid
	}{
		{"no data", map[string]any{}, ""},
		{"good", cat(good), ""},
		{"category not an object", cat("x"), "categories.c must be an object"},
		{"terms not a list", cat(map[string]any{"terms": "x", "directions": []any{"request"}, "action": "deny"}), "c.terms must be a list"},
		{"term not a string", cat(map[string]any{"terms": []any{1}, "directions": []any{"request"}, "action": "deny"}), "c.terms[0] must be a string"},
		{"unknown key", cat(map[string]any{"terms": []any{"ab"}, "directions": []any{"request"}, "action": "deny", "x": 1}), `unknown key "x"`},
		{"bad action", cat(map[string]any{"terms": []any{"ab"}, "directions": []any{"request"}, "action": "block"}), "c.action must be deny, redact or flag"},
		{"content_safety not an object", map[string]any{"bulwark": map[string]any{"content_safety": []any{}}}, "content_safety must be an object"},
		{"output bad key", map[string]any{"bulwark": map[string]any{"output": map[string]any{"hosts": []any{}}}}, `unknown key "hosts"`},
		{"output bad host", map[string]any{"bulwark": map[string]any{"output": map[string]any{"allowed_link_hosts": []any{"https://a.example/x"}}}}, "allowed_link_hosts"},
		{"output sanitize not bool", map[string]any{"bulwark": map[string]any{"output": map[string]any{"sanitize": "yes"}}}, "sanitize must be true or false"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := contentRulesFromData(c.data)
			if c.want == "" {
				if err != nil {
					t.Fatalf("error %v, want none", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if strings.Contains(err.Error(), "bad phrase") {
				t.Fatalf("error echoes a term: %v", err)
			}
		})
	}
}
