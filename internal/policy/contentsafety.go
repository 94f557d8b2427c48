package policy

import (
	"fmt"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// ContentSafetyPath and OutputPath are where policy data holds the
// content-safety categories (data.bulwark.content_safety.categories) and
// the output sanitisation settings (data.bulwark.output). Like the grey
// zone they are read from the data documents at every load, not evaluated
// as rules: the detectors need them before any decision. A malformed entry
// fails the load, so the last good policy (and its rules) stays.
var (
	ContentSafetyPath = []string{"bulwark", "content_safety"}
	OutputPath        = []string{"bulwark", "output"}
)

// ContentRules is the content-safety and output sanitisation rules of the
// policy in force (nil before the first load): the detectors consult them
// on every scan, so a reload applies to the next scan (for a streamed
// answer, its next window).
func (e *Engine) ContentRules() *detect.ContentRules {
	if c := e.cur.Load(); c != nil {
		return c.content
	}
	return nil
}

var _ detect.ContentSource = (*Engine)(nil)

// dataAt walks path in the data documents; ok is false when a key is
// missing.
func dataAt(data map[string]any, path []string) (any, bool) {
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

// contentRulesFromData builds the rules from the policy's data documents.
// Without a content_safety object there are no categories; without an
// output object answers' links are still sanitised, with an empty
// allow-list (only relative links kept): the safe default. output.sanitize
// false turns sanitisation off. Errors never echo terms.
func contentRulesFromData(data map[string]any) (*detect.ContentRules, error) {
	var cats []detect.ContentCategory
	if v, ok := dataAt(data, ContentSafetyPath); ok && v != nil {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("data.bulwark.content_safety must be an object")
		}
		for k := range m {
			if k != "categories" {
				return nil, fmt.Errorf("data.bulwark.content_safety: unknown key %q (want categories)", k)
			}
		}
		if raw, ok := m["categories"]; ok && raw != nil {
			cm, ok := raw.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("data.bulwark.content_safety.categories must be an object of categories")
			}
			for name, rc := range cm {
				c, err := categoryFromData(name, rc)
				if err != nil {
					return nil, fmt.Errorf("data.bulwark.content_safety.categories.%w", err)
				}
				cats = append(cats, c)
			}
		}
	}
	out := detect.OutputSpec{Sanitize: true}
	if v, ok := dataAt(data, OutputPath); ok && v != nil {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("data.bulwark.output must be an object")
		}
		for k, raw := range m {
			switch k {
			case "sanitize":
				b, ok := raw.(bool)
				if !ok {
					return nil, fmt.Errorf("data.bulwark.output.sanitize must be true or false")
				}
				out.Sanitize = b
			case "allowed_link_hosts":
				hosts, err := dataStrings(raw)
				if err != nil {
					return nil, fmt.Errorf("data.bulwark.output.allowed_link_hosts%w", err)
				}
				out.AllowedLinkHosts = hosts
			default:
				return nil, fmt.Errorf("data.bulwark.output: unknown key %q (want sanitize, allowed_link_hosts)", k)
			}
		}
	}
	cr, err := detect.NewContentRules(cats, out)
	if err != nil {
		return nil, fmt.Errorf("data.bulwark.content_safety: %w", err)
	}
	return cr, nil
}

func categoryFromData(name string, raw any) (detect.ContentCategory, error) {
	c := detect.ContentCategory{Name: name}
	m, ok := raw.(map[string]any)
	if !ok {
		return c, fmt.Errorf("%s must be an object with terms, directions and action", name)
	}
	for k, v := range m {
		switch k {
		case "terms":
			t, err := dataStrings(v)
			if err != nil {
				return c, fmt.Errorf("%s.terms%w", name, err)
			}
			c.Terms = t
		case "directions":
			d, err := dataStrings(v)
			if err != nil {
				return c, fmt.Errorf("%s.directions%w", name, err)
			}
			for _, s := range d {
				c.Directions = append(c.Directions, detect.Direction(s))
			}
		case "action":
			s, ok := v.(string)
			if !ok {
				return c, fmt.Errorf("%s.action must be a string", name)
			}
			c.Action = detect.ContentAction(s)
		default:
			return c, fmt.Errorf("%s: unknown key %q (want terms, directions, action)", name, k)
		}
	}
	return c, nil
}

// dataStrings reads a list of strings; the error completes "<key>...".
func dataStrings(raw any) ([]string, error) {
	if raw == nil {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf(" must be a list of strings")
	}
	out := make([]string, 0, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("[%d] must be a string", i)
		}
		out = append(out, s)
	}
	return out, nil
}
