package ratelimit

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// Counter keys are built here and only here, so that two different counters
// can never share a key, whatever ids and tenant names callers choose.
//
// A limit's subject is up to three typed parts, in this order: its tenant
// ("t"), its principal ("p") and an opaque policy-defined key ("k"); empty
// parts are left out. The first part present is the Redis Cluster hash tag:
//
//	tenant acme                    {t:acme}
//	principal alice of tenant acme {t:acme}:p:alice
//	principal acme, no tenant      {p:acme}
//	key gpt-4o of tenant acme      {t:acme}:k:gpt-4o
//
// and the counter of limit <name> is "<prefix>:<subject>:<name>". Every part
// value and the name are escaped: '%', '{', '}', ':', '#', spaces, control
// bytes and DEL become %XX, so a value can neither end the hash tag nor
// forge a separator or a part type. A value whose escaped form is longer
// than maxKeyPart bytes is replaced by '#' and its SHA-256 (base64url):
// keys stay short, and as '#' is always escaped in plain values, a digest
// never equals a plain value. A reservation key ("<prefix>:{tag}:rsv:<id>")
// has an even number of fields after the tag, a counter key an odd number,
// so they never meet either.

// maxKeyPart bounds one escaped part value (and the escaped name) in a
// counter key; longer values are hashed.
const maxKeyPart = 64

// Part types of a subject key.
const (
	partTenant    = 't'
	partPrincipal = 'p'
	partKey       = 'k'
)

// SubjectKey is the canonical, unambiguous text of a limit subject: the
// counter key without its prefix and limit name (see the package comment).
// Distinct (tenant, principal, key) triples always give distinct texts, and
// the text's Redis hash tag is exactly the first non-empty part. It returns
// "" when all three are empty. The Admin API and logs show counters by it.
func SubjectKey(tenant, principal, key string) string {
	var buf [256]byte
	return string(appendSubject(buf[:0], tenant, principal, key))
}

// SubjectKey is the limit's subject as SubjectKey renders it.
func (l Limit) SubjectKey() string { return SubjectKey(l.Tenant, l.Principal, l.Key) }

// SubjectKey is the counter's subject as SubjectKey renders it.
func (s LimitState) SubjectKey() string { return SubjectKey(s.Tenant, s.Principal, s.Key) }

func appendSubject(b []byte, tenant, principal, key string) []byte {
	first := true
	for _, p := range [...]struct {
		typ byte
		v   string
	}{{partTenant, tenant}, {partPrincipal, principal}, {partKey, key}} {
		if p.v == "" {
			continue
		}
		if first {
			b = append(b, '{', p.typ, ':')
			b = appendKeyValue(b, p.v)
			b = append(b, '}')
			first = false
			continue
		}
		b = append(b, ':', p.typ, ':')
		b = appendKeyValue(b, p.v)
	}
	return b
}

// counterKey is the Redis key of the limit's counter:
// "<prefix>:<SubjectKey>:<escaped name>". The prefix has no braces
// (Config.Validate), so the key's hash tag is the subject's first part.
func counterKey(prefix string, l Limit) string {
	var buf [256]byte // on the stack: the string conversion is the one allocation
	b := append(buf[:0], prefix...)
	b = append(b, ':')
	b = appendSubject(b, l.Tenant, l.Principal, l.Key)
	b = append(b, ':')
	b = appendKeyValue(b, l.Name)
	return string(b)
}

// reservationKey holds a token reservation in the same slot as its counters
// (tag is their hash tag, without braces).
func reservationKey(prefix, tag, decisionID string) string {
	var buf [256]byte
	b := append(buf[:0], prefix...)
	b = append(b, ":{"...)
	b = append(b, tag...)
	b = append(b, "}:rsv:"...)
	b = appendKeyValue(b, decisionID)
	return string(b)
}

// hashTag returns the Redis Cluster hash tag of key ("" if it has none): the
// text between the first '{' and the next '}', when non-empty.
func hashTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return ""
	}
	return key[i+1 : i+1+j]
}

func needsEscape(c byte) bool {
	return c <= ' ' || c == 0x7f || c == '%' || c == '{' || c == '}' || c == ':' || c == '#'
}

// appendKeyValue appends v escaped, or '#' and its digest when the escaped
// form would be longer than maxKeyPart.
func appendKeyValue(b []byte, v string) []byte {
	n := len(v)
	for i := 0; i < len(v) && n <= maxKeyPart; i++ {
		if needsEscape(v[i]) {
			n += 2
		}
	}
	if n > maxKeyPart {
		sum := sha256.Sum256([]byte(v))
		b = append(b, '#')
		return base64.RawURLEncoding.AppendEncode(b, sum[:])
	}
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(v); i++ {
		c := v[i]
		if needsEscape(c) {
			b = append(b, '%', hex[c>>4], hex[c&0xf])
		} else {
			b = append(b, c)
		}
	}
	return b
}
