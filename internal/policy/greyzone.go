package policy

import (
	"fmt"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/usage"
)

// GreyZonePath is where policy data holds the grey zone:
// data.bulwark.redaction.never_redact, with the lists ip_ranges,
// email_domains and values (see detect.GreyZoneSpec). It is read from the
// data documents at every load, not evaluated as a rule: the detectors need
// it before any decision, to keep grey-zone values out of input.signals as
// well as out of redaction.
var GreyZonePath = []string{"bulwark", "redaction", "never_redact"}

// GreyZone is the grey zone of the policy in force (nil when its data has
// none, or before the first load): the detectors consult it on every scan,
// so a reload that changes it applies to the next scan.
func (e *Engine) GreyZone() *detect.GreyZone {
	if c := e.cur.Load(); c != nil {
		return c.greyZone
	}
	return nil
}

var _ detect.GreyZoneSource = (*Engine)(nil)

// UsageConfig is the usage block (prices, budgets, alert thresholds, metric
// tenants) of the policy in force: nil when its data has none, or before
// the first load. A reload that changes it applies to the next exchange.
func (e *Engine) UsageConfig() *usage.Config {
	if c := e.cur.Load(); c != nil {
		return c.usage
	}
	return nil
}

// greyZoneFromData builds the grey zone from the policy's data documents. A
// malformed grey zone fails the load, so the last good policy (and its grey
// zone) stays in force. Errors never echo values.
func greyZoneFromData(data map[string]any) (*detect.GreyZone, error) {
	var v any = data
	for _, k := range GreyZonePath {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, nil
		}
		if v, ok = m[k]; !ok {
			return nil, nil
		}
	}
	where := "data." + GreyZonePath[0] + "." + GreyZonePath[1] + "." + GreyZonePath[2]
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s must be an object", where)
	}
	var spec detect.GreyZoneSpec
	for key, dst := range map[string]*[]string{"ip_ranges": &spec.IPRanges, "email_domains": &spec.EmailDomains, "values": &spec.Values} {
		raw, ok := m[key]
		if !ok || raw == nil {
			continue
		}
		list, ok := raw.([]any)
		if !ok {
			return nil, fmt.Errorf("%s.%s must be a list of strings", where, key)
		}
		for i, e := range list {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%s.%s[%d] must be a string", where, key, i)
			}
			*dst = append(*dst, s)
		}
	}
	for key := range m {
		switch key {
		case "ip_ranges", "email_domains", "values":
		default:
			return nil, fmt.Errorf("%s: unknown key %q (want ip_ranges, email_domains, values)", where, key)
		}
	}
	gz, err := detect.NewGreyZone(spec)
	if err != nil {
		return nil, fmt.Errorf("%s.%w", where, err)
	}
	return gz, nil
}
