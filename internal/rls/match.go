package rls

import (
	"strconv"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
)

// lookup finds the rule a request descriptor matches in domain, the way
// envoy/ratelimit does: entry by entry down the tree, each entry matching
// "key_value" first, then a wildcard value, then the bare "key" (any value);
// the descriptor matches a rule only if the rule sits at its last entry. It
// appends the counter key (the descriptor's entries, a share_threshold
// wildcard's pattern in place of its value) to key and returns it.
func (c *Config) lookup(domain string, entries []*rlv3.RateLimitDescriptor_Entry, key []byte) (*rule, []byte) {
	n := c.domains[domain]
	if n == nil || len(entries) == 0 {
		return nil, key
	}
	var found *rule
	var kb [128]byte
	for i, e := range entries {
		k := e.GetKey()
		v := e.GetValue()
		// "key_value" without allocating when it fits.
		full := append(append(append(kb[:0], k...), '_'), v...)
		next := n.children[string(full)]
		value := v
		if next == nil {
			for _, w := range n.wildcards {
				if wildcardMatch(w.parts, string(full)) {
					next = n.children[w.key]
					if w.share {
						value = w.key // the pattern: every match shares one counter
					}
					break
				}
			}
		}
		if next == nil {
			next = n.children[k]
		}
		key = appendPart(appendPart(key, k), value)
		if next == nil {
			return nil, key
		}
		if next.rule != nil && i == len(entries)-1 {
			found = next.rule
		}
		if len(next.children) == 0 {
			break
		}
		n = next
	}
	return found, key
}

// appendPart appends s length-prefixed ("<len>.<s>"), so that no choice of
// keys and values can make two different descriptors share a counter.
func appendPart(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, '.')
	return append(b, s...)
}

// Rule names the rule (its path, "domain.key_value.key2") a descriptor of
// domain matches, "" for none: deployment checks use it to prove that the
// descriptors an Envoy config sends hit the limits meant for them.
func (c *Config) Rule(domain string, entries []*rlv3.RateLimitDescriptor_Entry) string {
	r, _ := c.lookup(domain, entries, nil)
	if r == nil {
		return ""
	}
	return r.id
}
