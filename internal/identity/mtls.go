package identity

import (
	"errors"
	"sort"
	"strings"
)

// peerMapper gives roles and tenant to mTLS peers by exact ID or by the
// longest matching "prefix*" pattern.
type peerMapper struct {
	exact    map[string]PeerIdentity
	prefixes []string // longest first
	byPrefix map[string]PeerIdentity
}

func newPeerMapper(m map[string]PeerIdentity) *peerMapper {
	pm := &peerMapper{exact: map[string]PeerIdentity{}, byPrefix: map[string]PeerIdentity{}}
	for k, v := range m {
		v.Roles = append([]string(nil), v.Roles...)
		if p, ok := strings.CutSuffix(k, "*"); ok {
			pm.byPrefix[p] = v
			pm.prefixes = append(pm.prefixes, p)
			continue
		}
		pm.exact[k] = v
	}
	sort.Slice(pm.prefixes, func(i, j int) bool { return len(pm.prefixes[i]) > len(pm.prefixes[j]) })
	return pm
}

func (pm *peerMapper) principal(id string) Principal {
	p := Principal{ID: id, Kind: KindMTLS}
	pi, ok := pm.exact[id]
	if !ok {
		for _, pre := range pm.prefixes {
			if strings.HasPrefix(id, pre) {
				pi, ok = pm.byPrefix[pre], true
				break
			}
		}
	}
	if ok {
		p.Roles, p.Tenant = pi.Roles, pi.Tenant
	}
	if td, _, found := strings.Cut(strings.TrimPrefix(id, "spiffe://"), "/"); strings.HasPrefix(id, "spiffe://") && found && td != "" {
		p.Claims = map[string]any{"spiffe_id": id, "trust_domain": td}
	}
	return p
}

var errXFCC = errors.New("malformed x-forwarded-client-cert")

// XFCCElement is one element of an x-forwarded-client-cert header: the
// client certificate one proxy saw.
type XFCCElement struct {
	By, Hash, Subject string
	URI, DNS          []string
}

// ParseXFCC parses an x-forwarded-client-cert header (comma-separated
// elements of semicolon-separated key=value pairs, values optionally
// double-quoted with backslash escapes), as Envoy writes it.
func ParseXFCC(h string) ([]XFCCElement, error) {
	var (
		out  []XFCCElement
		cur  XFCCElement
		seen bool
	)
	i := 0
	for {
		// key
		j := i
		for j < len(h) && h[j] != '=' && h[j] != ',' && h[j] != ';' {
			j++
		}
		if j == len(h) || h[j] != '=' {
			return nil, errXFCC
		}
		key := strings.TrimSpace(h[i:j])
		if key == "" {
			return nil, errXFCC
		}
		i = j + 1
		// value
		var val string
		if i < len(h) && h[i] == '"' {
			var b strings.Builder
			i++
			closed := false
			for i < len(h) {
				c := h[i]
				if c == '\\' && i+1 < len(h) {
					b.WriteByte(h[i+1])
					i += 2
					continue
				}
				if c == '"' {
					closed = true
					i++
					break
				}
				b.WriteByte(c)
				i++
			}
			if !closed {
				return nil, errXFCC
			}
			val = b.String()
		} else {
			j = i
			for j < len(h) && h[j] != ',' && h[j] != ';' {
				j++
			}
			val = strings.TrimSpace(h[i:j])
			i = j
		}
		seen = true
		switch strings.ToLower(key) {
		case "by":
			cur.By = val
		case "hash":
			cur.Hash = val
		case "subject":
			cur.Subject = val
		case "uri":
			cur.URI = append(cur.URI, val)
		case "dns":
			cur.DNS = append(cur.DNS, val)
		}
		if i == len(h) {
			out = append(out, cur)
			return out, nil
		}
		switch h[i] {
		case ';':
		case ',':
			out = append(out, cur)
			cur, seen = XFCCElement{}, false
		default:
			return nil, errXFCC
		}
		i++
		for i < len(h) && h[i] == ' ' {
			i++
		}
		if i == len(h) {
			if !seen {
				return nil, errXFCC // trailing comma
			}
			out = append(out, cur)
			return out, nil
		}
	}
}

// xfccIdentity picks the identity of the nearest client: the last element
// (added by the proxy next to Bulwark), preferring its URI SAN (SPIFFE ID),
// then its subject, then its DNS SAN.
func xfccIdentity(h string) (string, bool) {
	els, err := ParseXFCC(h)
	if err != nil || len(els) == 0 {
		return "", false
	}
	e := els[len(els)-1]
	switch {
	case len(e.URI) > 0 && e.URI[0] != "":
		return e.URI[0], true
	case e.Subject != "":
		return e.Subject, true
	case len(e.DNS) > 0 && e.DNS[0] != "":
		return e.DNS[0], true
	}
	return "", false
}
