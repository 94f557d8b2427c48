package policy

import (
	"fmt"
	"strconv"

	"github.com/gobwas/glob"
)

// ToolsPath is where policy data holds the per-role tool allow-lists
// (data.bulwark.tools: role → tool names or glob patterns) that the
// default policy's tool_allowed reads; ToolReviewScorePath is the
// injection score from which an MCP tool definition is shown to the policy
// one by one (data.bulwark.mcp.tool_review_score).
var (
	ToolsPath           = []string{"bulwark", "tools"}
	ToolReviewScorePath = []string{"bulwark", "mcp", "tool_review_score"}
)

// ToolLists is data.bulwark.tools compiled at load, so the exchange can sort
// the hundreds of tools of an MCP tools/list answer without asking Rego
// about each: a tool the caller's allow-lists admit and no scan flagged
// needs no policy answer, every other one is shown to the policy in
// input.mcp.tools. It never decides: the policy does, with every tool's
// name in input.mcp.tool_names should it want to remove one the lists
// admit.
//
// The matching is the default policy's tool_allowed: glob.match(pattern,
// [], name) (the same glob library, "." the delimiter); a role missing
// from the map or with an empty list admits every tool; a caller with
// several roles is admitted by any of them.
type ToolLists struct {
	// roles maps a role to its compiled patterns; a nil slice admits all.
	roles map[string][]*glob.Pattern
	// reviewScore is the injection score from which a tool is reviewed.
	reviewScore float64
}

// ToolLists is the compiled tool allow-lists of the policy in force; nil
// before the first load, when the decision query is not Bulwark's own
// (an OPA-Envoy policy: its rules are unknown, so every tool is shown to
// it), or when the data has no usable tools map.
func (e *Engine) ToolLists() *ToolLists {
	if e == nil {
		return nil
	}
	if c := e.cur.Load(); c != nil && e.unparsed {
		return c.toolLists
	}
	return nil
}

// Admits reports whether the allow-lists admit the tool name for a caller
// with roles. A nil ToolLists admits nothing: every tool needs the
// policy's answer.
func (l *ToolLists) Admits(roles []string, name string) bool {
	if l == nil {
		return false
	}
	if l.roles == nil {
		return true // no tools map: the default policy restricts nothing
	}
	for _, r := range roles {
		if len(l.roles[r]) == 0 {
			return true
		}
	}
	for _, r := range roles {
		for _, p := range l.roles[r] {
			if p.Match(name) {
				return true
			}
		}
	}
	return false
}

// ReviewScore is the injection score at or above which a tool definition
// is shown to the policy whatever the allow-lists say (0 without data:
// every tool is shown).
func (l *ToolLists) ReviewScore() float64 {
	if l == nil {
		return 0
	}
	return l.reviewScore
}

// toolListsFromData compiles the allow-lists from the data documents. Data
// the default policy would not read as a tools map (not an object, a list
// holding a non-string, a pattern that does not compile) gives nil: every
// tool then goes to the policy, which decides as it would have.
func toolListsFromData(data map[string]any) *ToolLists {
	l := &ToolLists{}
	if v, ok := lookup(data, ToolReviewScorePath); ok {
		f, ok := number(v)
		if !ok || f < 0 {
			return nil
		}
		l.reviewScore = f
	}
	v, ok := lookup(data, ToolsPath)
	if !ok {
		return l
	}
	m, ok := v.(map[string]any)
	if !ok {
		return l // tools_by_role is {} then: nothing restricted
	}
	l.roles = make(map[string][]*glob.Pattern, len(m))
	for role, raw := range m {
		list, ok := raw.([]any)
		if !ok {
			return nil
		}
		ps := make([]*glob.Pattern, 0, len(list))
		for _, e := range list {
			s, ok := e.(string)
			if !ok {
				return nil
			}
			p, err := glob.Compile(s, '.')
			if err != nil {
				return nil
			}
			ps = append(ps, p)
		}
		l.roles[role] = ps
	}
	return l
}

func lookup(data map[string]any, path []string) (any, bool) {
	var v any = data
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// number reads a data number: YAML and JSON loaders give float64, int or
// json.Number.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case fmt.Stringer:
		f, err := strconv.ParseFloat(n.String(), 64)
		return f, err == nil
	}
	return 0, false
}
