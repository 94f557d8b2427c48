package ratelimit

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
)

// subject is the identity of one counter: every field of it counts.
type subject struct{ tenant, principal, key, name string }

func (s subject) limit() Limit {
	return Limit{Name: s.name, Tenant: s.tenant, Principal: s.principal, Key: s.key}
}

func digest(v string) string {
	sum := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// canonical is what a value must decode to: itself, or '#' and its digest
// when it is too long to keep.
func canonical(v string) string {
	n := len(v)
	for i := 0; i < len(v); i++ {
		if needsEscape(v[i]) {
			n += 2
		}
	}
	if n > maxKeyPart {
		return "#" + digest(v)
	}
	return v
}

// decodeValue undoes appendKeyValue's escaping; a digest stays as it is.
func decodeValue(v string) (string, error) {
	if strings.HasPrefix(v, "#") {
		if len(v) != 1+43 || strings.ContainsAny(v[1:], "%{}:#") {
			return "", fmt.Errorf("bad digest %q", v)
		}
		return v, nil
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c != '%' && needsEscape(c) {
			return "", fmt.Errorf("unescaped %q in %q", c, v)
		}
	}
	return url.PathUnescape(v)
}

// decodeCounterKey parses a counter key independently of counterKey: the
// subject's parts in their fixed order, then the name. A key this cannot
// parse, or that parses two ways, would break the uniqueness argument.
func decodeCounterKey(prefix, k string) (subject, string, error) {
	var s subject
	rest, ok := strings.CutPrefix(k, prefix+":{")
	if !ok {
		return s, "", fmt.Errorf("%q: no prefix and tag", k)
	}
	end := strings.IndexByte(rest, '}')
	if end < 0 {
		return s, "", fmt.Errorf("%q: tag not closed", k)
	}
	tag := rest[:end]
	fields := strings.Split(tag, ":")
	if after := rest[end+1:]; after != "" {
		if after[0] != ':' {
			return s, "", fmt.Errorf("%q: no separator after the tag", k)
		}
		fields = append(fields, strings.Split(after[1:], ":")...)
	}
	if len(fields)%2 != 1 || len(fields) < 3 {
		return s, "", fmt.Errorf("%q: %d fields, want an odd number >= 3", k, len(fields))
	}
	order := "tpk"
	for i := 0; i+1 < len(fields)-1; i += 2 {
		typ := fields[i]
		at := strings.Index(order, typ)
		if len(typ) != 1 || at < 0 {
			return s, "", fmt.Errorf("%q: part type %q out of order", k, typ)
		}
		order = order[at+1:]
		v, err := decodeValue(fields[i+1])
		if err != nil || v == "" {
			return s, "", fmt.Errorf("%q: part %s: %v", k, typ, err)
		}
		switch typ {
		case "t":
			s.tenant = v
		case "p":
			s.principal = v
		case "k":
			s.key = v
		}
	}
	name, err := decodeValue(fields[len(fields)-1])
	if err != nil || name == "" {
		return s, "", fmt.Errorf("%q: name: %v", k, err)
	}
	s.name = name
	return s, tag, nil
}

// checkKey asserts the invariants of one subject's counter key: it decodes
// back to the subject (long values to their digest), and its Redis Cluster
// hash tag is exactly the first part that is set.
func checkKey(t *testing.T, s subject) string {
	t.Helper()
	k := counterKey("bulwark:rl", s.limit())
	got, tag, err := decodeCounterKey("bulwark:rl", k)
	if err != nil {
		t.Fatalf("counterKey(%+q): %v", s, err)
	}
	want := subject{canonical(s.tenant), canonical(s.principal), canonical(s.key), canonical(s.name)}
	if got != want {
		t.Fatalf("counterKey(%+q) = %q decodes to %+q, want %+q", s, k, got, want)
	}
	var wantTag string
	switch {
	case s.tenant != "":
		wantTag = "t:" + string(appendKeyValue(nil, s.tenant))
	case s.principal != "":
		wantTag = "p:" + string(appendKeyValue(nil, s.principal))
	default:
		wantTag = "k:" + string(appendKeyValue(nil, s.key))
	}
	if tag != wantTag || hashTag(k) != wantTag {
		t.Fatalf("counterKey(%+q) = %q: hash tag %q (Redis: %q), want %q", s, k, tag, hashTag(k), wantTag)
	}
	if _, _, err := decodeCounterKey("bulwark:rl", reservationKey("bulwark:rl", tag, s.name)); err == nil {
		t.Fatalf("reservation key for %+q parses as a counter key", s)
	}
	return k
}

// pieces are the fragments random values are made of: separators, escapes,
// part types and names that collide when a format is ambiguous.
var pieces = []string{"", "a", "acme", "alice", "{", "}", ":", "%", "#", "%7B", "%7D", "%3A", "t:", "p:", "k:", "{t:acme}",
	"}:p:", ":k:", "rsv", " ", "\x00", "\x7f", "é", "\xff", "rl", strings.Repeat("x", maxKeyPart-2), strings.Repeat("}", 22)}

func randomValue(r *rand.Rand) string {
	var b strings.Builder
	for range r.IntN(4) {
		b.WriteString(pieces[r.IntN(len(pieces))])
	}
	return b.String()
}

// TestCounterKeysUnambiguous is the property test of the key format: over
// many random subjects built from separators, escapes and part types, no two
// distinct (tenant, principal, key, name) share a counter key, and every
// key's hash tag is exactly its first part.
func TestCounterKeysUnambiguous(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(26, 6)) // seeded: a failure reproduces
	seen := map[string]subject{}
	for range 60_000 {
		s := subject{randomValue(r), randomValue(r), randomValue(r), randomValue(r)}
		if s.name == "" || s.tenant == "" && s.principal == "" && s.key == "" {
			continue
		}
		k := checkKey(t, s)
		if prev, ok := seen[k]; ok && prev != s {
			t.Fatalf("%+q and %+q share the counter key %q", prev, s, k)
		}
		seen[k] = s
	}
	if len(seen) < 30_000 {
		t.Fatalf("only %d distinct subjects generated; the generator is too narrow", len(seen))
	}
}

// TestQuotaKeyRegressions pins the collisions of the old format ("{tag}"
// from the tenant, or the principal's own id without one).
func TestQuotaKeyRegressions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		a, b subject
	}{
		{"tenant-less principal named like a tenant", subject{principal: "acme", name: "tokens_per_day"}, subject{tenant: "acme", name: "tokens_per_day"}},
		{"principal id with a closing brace", subject{principal: "acme}x", name: "n"}, subject{tenant: "acme", key: "x", name: "n"}},
		{"opaque key that spells a typed subject", subject{key: "{t:acme}", name: "n"}, subject{tenant: "acme", name: "n"}},
		{"name with separators", subject{tenant: "a", name: "p:b:n"}, subject{tenant: "a", principal: "b", name: "n"}},
		{"escaped text versus escape", subject{tenant: "%7B", name: "n"}, subject{tenant: "{", name: "n"}},
		{"digest-looking value", subject{tenant: "#" + digest(strings.Repeat("a", 100)), name: "n"}, subject{tenant: strings.Repeat("a", 100), name: "n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ka, kb := checkKey(t, tt.a), checkKey(t, tt.b)
			if ka == kb {
				t.Errorf("%+q and %+q share the counter key %q", tt.a, tt.b, ka)
			}
			if tt.a.tenant == "" && hashTag(ka) == hashTag(kb) && tt.b.tenant != "" {
				t.Errorf("%+q lands in tenant %q's hash slot (%q)", tt.a, tt.b.tenant, hashTag(ka))
			}
		})
	}
}

// FuzzCounterKey checks the key invariants for any two subjects: each key
// decodes back to its subject with the intended hash tag, and distinct
// subjects have distinct keys.
func FuzzCounterKey(f *testing.F) {
	f.Add("acme", "", "", "tokens_per_day", "", "acme", "", "tokens_per_day")
	f.Add("acme", "alice", "", "rpm", "acme", "", "alice", "rpm")
	f.Add("", "acme}x", "", "n", "acme", "", "x", "n")
	f.Add("%7B", "", "", "n", "{", "", "", "n")
	f.Add(strings.Repeat("a", 100), "", "", "n", "#"+digest(strings.Repeat("a", 100)), "", "", "n")
	f.Fuzz(func(t *testing.T, t1, p1, k1, n1, t2, p2, k2, n2 string) {
		a, b := subject{t1, p1, k1, n1}, subject{t2, p2, k2, n2}
		var keys []string
		for _, s := range []subject{a, b} {
			if s.name == "" || s.tenant == "" && s.principal == "" && s.key == "" {
				return
			}
			keys = append(keys, checkKey(t, s))
		}
		if a != b && keys[0] == keys[1] {
			t.Fatalf("%+q and %+q share the counter key %q", a, b, keys[0])
		}
	})
}
