package detect

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// GreyZone holds values that look like PII or secrets but are known not to
// be: loopback, private and documentation IP ranges, example e-mail domains,
// published test card numbers, example IBANs, documentation tokens. A
// finding whose text falls in the grey zone is dropped by Scan, so it is
// neither redacted nor counted in the signals the policy decides on: the
// same exemption applies through every door and every phase.
//
// A nil *GreyZone is empty (nothing is exempt). A GreyZone is immutable
// after NewGreyZone and safe for concurrent use.
type GreyZone struct {
	v4, v6  []netip.Prefix
	domains []string            // lower-case, no leading or trailing dot
	compact map[string]struct{} // values as letters and digits only, upper-cased
	exact   map[string]struct{} // values as written
	// exactLen has bit n set when a value of n bytes (n < 256) is in exact,
	// and longExact when a longer one is: most findings skip the map.
	exactLen  [4]uint64
	longExact bool
}

// GreyZoneSpec is the configuration a GreyZone is built from (the policy
// data's redaction.never_redact).
type GreyZoneSpec struct {
	// IPRanges are CIDR prefixes ("10.0.0.0/8", "2001:db8::/32") or single
	// addresses; an IP_ADDRESS finding inside one is exempt.
	IPRanges []string
	// EmailDomains exempt an EMAIL_ADDRESS finding whose domain is one of
	// them or a subdomain of one (label boundary: "example.com" covers
	// "mail.example.com", not "badexample.com"). A bare TLD ("test") covers
	// every domain under it.
	EmailDomains []string
	// Values exempt a finding whose text is one of them: PII findings
	// (cards, IBANs, ...) compare on letters and digits only, upper-cased,
	// so "4242 4242 4242 4242" covers "4242-4242-4242-4242"; secrets, IP
	// addresses and e-mail addresses compare exactly.
	Values []string
}

// GreyZoneSource supplies the grey zone in force; Scan asks once per scan, so
// a source that reloads (policy.Engine, from policy data) takes effect on the
// next scan.
type GreyZoneSource interface {
	GreyZone() *GreyZone
}

// GreyZone makes a fixed grey zone its own source.
func (g *GreyZone) GreyZone() *GreyZone { return g }

var _ GreyZoneSource = (*GreyZone)(nil)

// minValueChars is the fewest letters and digits a grey-zone value may have:
// a shorter one ("0", "N/A") would exempt far more than the value meant.
const minValueChars = 8

// maxCompact bounds the compacted form of a value; PII values are far
// shorter, and a longer finding is compared exactly only.
const maxCompact = 64

// NewGreyZone validates spec and builds a GreyZone. Errors name the list and
// index of the bad entry but never echo a value (values may be sensitive).
func NewGreyZone(spec GreyZoneSpec) (*GreyZone, error) {
	g := &GreyZone{}
	for i, r := range spec.IPRanges {
		p, err := parseRange(strings.TrimSpace(r))
		if err != nil {
			return nil, fmt.Errorf("ip_ranges[%d]: %w", i, err)
		}
		if p.Addr().Is4() {
			g.v4 = append(g.v4, p)
		} else {
			g.v6 = append(g.v6, p)
		}
	}
	for i, d := range spec.EmailDomains {
		d = strings.ToLower(strings.Trim(strings.TrimPrefix(strings.TrimSpace(d), "*."), "."))
		if !validDomain(d) {
			return nil, fmt.Errorf("email_domains[%d]: not a domain name (letters, digits, '-' and '.' only)", i)
		}
		g.domains = append(g.domains, d)
	}
	for i, v := range spec.Values {
		if v == "" || strings.TrimSpace(v) != v {
			return nil, fmt.Errorf("values[%d]: empty or surrounded by spaces", i)
		}
		var buf [maxCompact]byte
		c, ok := compactValue(buf[:0], v)
		if len(c) < minValueChars {
			return nil, fmt.Errorf("values[%d]: fewer than %d letters and digits", i, minValueChars)
		}
		if g.exact == nil {
			g.exact, g.compact = map[string]struct{}{}, map[string]struct{}{}
		}
		g.exact[v] = struct{}{}
		if n := len(v); n < 256 {
			g.exactLen[n/64] |= 1 << (n % 64)
		} else {
			g.longExact = true
		}
		if ok {
			g.compact[string(c)] = struct{}{}
		}
	}
	return g, nil
}

func parseRange(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, errors.New("not a CIDR prefix")
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, errors.New("not an IP address or CIDR prefix")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func validDomain(d string) bool {
	if d == "" || len(d) > 253 || strings.Contains(d, "..") {
		return false
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; !isASCIIAlnum(c) && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// compactValue appends the letters and digits of v, upper-cased, to dst. It
// reports false when they do not fit in dst's capacity.
func compactValue(dst []byte, v string) ([]byte, bool) {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !isASCIIAlnum(c) {
			continue
		}
		if len(dst) == cap(dst) {
			return dst, false
		}
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst, true
}

// Empty reports whether nothing is exempt.
func (g *GreyZone) Empty() bool {
	return g == nil || len(g.v4) == 0 && len(g.v6) == 0 && len(g.domains) == 0 && len(g.exact) == 0
}

// Exempt reports whether a PII or secrets finding whose text is value falls
// in the grey zone (other detectors' findings never do). It does not
// allocate.
func (g *GreyZone) Exempt(f Finding, value string) bool {
	_, ok := g.vetted(f, value)
	return ok
}

// vetted is Exempt, and also says from which byte of value on the grey zone
// vouches for the text: 0 for an address in a range or a listed value, the
// domain's start for an e-mail address (whose local part may be anything,
// a card number included).
func (g *GreyZone) vetted(f Finding, value string) (int, bool) {
	if g.Empty() || f.Detector != DetectorPII && f.Detector != DetectorSecrets {
		return 0, false
	}
	if f.Detector == DetectorPII {
		switch f.Type {
		case TypeIPAddress:
			if g.ContainsIP(value) {
				return 0, true
			}
			return 0, g.isExact(value)
		case TypeEmail:
			if at := strings.LastIndexByte(value, '@'); at >= 0 && g.ContainsDomain(value[at+1:]) {
				return at + 1, true
			}
			return 0, g.isExact(value)
		}
	}
	if g.isExact(value) {
		return 0, true
	}
	if f.Detector != DetectorPII {
		return 0, false
	}
	if len(g.compact) == 0 {
		return 0, false
	}
	var buf [maxCompact]byte
	c, ok := compactValue(buf[:0], value)
	if !ok {
		return 0, false
	}
	_, ok = g.compact[string(c)]
	return 0, ok
}

func (g *GreyZone) isExact(value string) bool {
	if n := len(value); n < 256 && g.exactLen[n/64]&(1<<(n%64)) == 0 || n >= 256 && !g.longExact {
		return false
	}
	_, ok := g.exact[value]
	return ok
}

// dropGrey removes from f (sorted by ByteStart) the findings in the grey
// zone and the PII and secrets findings lying wholly inside the part of one
// the grey zone vouches for (a phone-shaped run inside a test card number). It runs
// before overlaps are resolved, so a grey-zone finding never hides another
// one it overlapped: the card number in the local part of
// 4556737586899855@example.com is still a finding.
func (s *scratch) dropGrey(f []Finding, text string, gz *GreyZone) []Finding {
	s.vetted = s.vetted[:0]
	n := 0 // findings kept, compacted in place (copied only once one is dropped)
	for i := range f {
		x := &f[i]
		if from, ok := gz.vetted(*x, text[x.ByteStart:x.ByteEnd]); ok {
			s.vetted = append(s.vetted, [2]int{x.ByteStart + from, x.ByteEnd})
			continue
		}
		if n != i {
			f[n] = *x
		}
		n++
	}
	if len(s.vetted) == 0 || n == 0 {
		return f[:n]
	}
	kept := f[:n]
	n = 0
	for i := range kept {
		x := &kept[i]
		// Hidden text inside a grey-zone value is still reported: the value
		// is harmless, characters hidden in it are not.
		if (x.Detector == DetectorPII || x.Detector == DetectorSecrets) && insideAny(s.vetted, x.ByteStart, x.ByteEnd) {
			continue
		}
		if n != i {
			kept[n] = *x
		}
		n++
	}
	return kept[:n]
}

// insideAny reports whether [st, en) lies inside one of spans.
func insideAny(spans [][2]int, st, en int) bool {
	for _, v := range spans {
		if v[0] <= st && en <= v[1] {
			return true
		}
	}
	return false
}

// ContainsIP reports whether s parses as an IP address (net/netip syntax;
// an IPv4-mapped IPv6 address counts as its IPv4 address, a zone is
// ignored) inside one of the grey zone's ranges.
func (g *GreyZone) ContainsIP(s string) bool {
	if g == nil || len(g.v4) == 0 && len(g.v6) == 0 {
		return false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return false
	}
	a = a.WithZone("").Unmap()
	prefixes := g.v6
	if a.Is4() {
		prefixes = g.v4
	}
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ContainsDomain reports whether domain (any case, optionally with a
// trailing dot) is one of the grey zone's e-mail domains or a subdomain of
// one.
func (g *GreyZone) ContainsDomain(domain string) bool {
	if g == nil {
		return false
	}
	domain = strings.TrimSuffix(domain, ".")
	for _, d := range g.domains {
		if len(domain) == len(d) && strings.EqualFold(domain, d) {
			return true
		}
		if n := len(domain) - len(d); n > 1 && domain[n-1] == '.' && strings.EqualFold(domain[n:], d) {
			return true
		}
	}
	return false
}
