package identity

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const cryptoSHA256 = crypto.SHA256

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwtVerifier checks signed JWTs against static keys and/or a JWKS.
type jwtVerifier struct {
	algs     []jose.SignatureAlgorithm
	allowed  map[string]bool
	static   *keyRing
	jwks     *jwksSource // nil without JWKSURL
	expected jwt.Expected
	leeway   time.Duration
	// maxLifetime bounds exp - iat (negative: unbounded).
	maxLifetime time.Duration
	subClaim    string
	roles       []string // claim path
	tenant      []string // claim path
}

// jwtHeader is the part of the JOSE header read before verification, to
// give precise reasons ("unsupported_alg") and pick the key.
type jwtHeader struct {
	Alg  string   `json:"alg"`
	Kid  string   `json:"kid"`
	Crit []string `json:"crit"`
}

func parseJWTHeader(tok string) (jwtHeader, string) {
	var h jwtHeader
	seg, _, ok := strings.Cut(tok, ".")
	if !ok || seg == "" || len(seg) > 4096 {
		return h, ReasonMalformed
	}
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return h, ReasonMalformed
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return h, ReasonMalformed
	}
	return h, ""
}

// signer names the key that verified a token: its thumbprint, and whether
// it came from the JWKS (which can withdraw it) or the static keys.
type signer struct {
	fp   [sha256.Size]byte
	jwks bool
}

// stillTrusted reports whether the key that verified a cached token is
// still in the current key set (the JWKS fetched again first if its cache
// lifetime has ended). Static keys are trusted for the process's life.
func (v *jwtVerifier) stillTrusted(ctx context.Context, s signer) bool {
	if !s.jwks {
		return true
	}
	return v.jwks.current(ctx).has(s.fp)
}

// verify returns the principal for tok, its expiry, the key that verified
// it, or a reason code.
func (v *jwtVerifier) verify(ctx context.Context, tok string, now time.Time) (Principal, time.Time, signer, string) {
	var sg signer
	h, reason := parseJWTHeader(tok)
	if reason != "" {
		return Principal{}, time.Time{}, sg, reason
	}
	if !v.allowed[h.Alg] {
		return Principal{}, time.Time{}, sg, ReasonUnsupportedAlg
	}
	if len(h.Crit) > 0 {
		return Principal{}, time.Time{}, sg, ReasonMalformed // no critical extensions are understood
	}
	parsed, err := jwt.ParseSigned(tok, v.algs)
	if err != nil || len(parsed.Headers) != 1 {
		return Principal{}, time.Time{}, sg, ReasonMalformed
	}
	keys := v.static.candidates(h.Kid)
	if len(keys) == 0 && v.jwks != nil {
		var reason string
		sg.jwks = true
		if keys, reason = v.jwks.lookup(ctx, h.Kid); reason != "" {
			return Principal{}, time.Time{}, sg, reason
		}
	}
	if len(keys) == 0 {
		return Principal{}, time.Time{}, sg, ReasonUnknownKey
	}
	var (
		std      jwt.Claims
		all      map[string]any
		verified bool
		tried    int
	)
	for _, k := range keys {
		if !keyFits(h.Alg, k.JSONWebKey) {
			continue
		}
		if tried++; tried > 8 {
			break // kid-less tokens must not make us try a large key set
		}
		std, all = jwt.Claims{}, nil
		if err := parsed.Claims(k.Key, &std, &all); err == nil {
			verified = true
			sg.fp = k.fp
			break
		}
	}
	if tried == 0 {
		return Principal{}, time.Time{}, sg, ReasonUnknownKey
	}
	if !verified {
		return Principal{}, time.Time{}, sg, ReasonBadSignature
	}
	if std.Expiry == nil {
		return Principal{}, time.Time{}, sg, ReasonMissingClaim
	}
	if err := std.ValidateWithLeeway(v.expected.WithTime(now), v.leeway); err != nil {
		return Principal{}, time.Time{}, sg, claimsReason(err)
	}
	if v.maxLifetime > 0 {
		start := now
		if std.IssuedAt != nil {
			start = std.IssuedAt.Time()
		}
		if std.Expiry.Time().Sub(start) > v.maxLifetime {
			return Principal{}, time.Time{}, sg, ReasonLifetimeTooLong
		}
	}
	sub, _ := claimPath(all, []string{v.subClaim}).(string)
	if sub == "" {
		return Principal{}, time.Time{}, sg, ReasonMissingClaim
	}
	tenant, _ := claimPath(all, v.tenant).(string)
	p := Principal{
		ID:     sub,
		Kind:   KindJWT,
		Roles:  rolesFrom(claimPath(all, v.roles)),
		Tenant: tenant,
		Claims: all,
	}
	return p, std.Expiry.Time().Add(v.leeway), sg, ""
}

func claimsReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return ReasonExpired
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return ReasonNotYetValid
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return ReasonBadIssuer
	case errors.Is(err, jwt.ErrInvalidAudience):
		return ReasonBadAudience
	}
	return ReasonMalformed
}

// claimPath follows a dotted claim name through nested objects.
func claimPath(claims map[string]any, path []string) any {
	var cur any = claims
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = m[p]; !ok {
			return nil
		}
	}
	return cur
}

// rolesFrom accepts an array of strings or a space-separated string
// (OAuth "scope"); anything else yields no roles.
func rolesFrom(v any) []string {
	switch v := v.(type) {
	case string:
		return strings.Fields(v)
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// jwtCache remembers verified tokens, keyed by SHA-256 of the token, until
// they expire, so a repeated token costs a hash and a map read. Each entry
// names the key that verified it, for the caller to check it is still
// trusted. It never holds more than max entries: expired ones go first,
// then arbitrary ones.
type jwtCache struct {
	max     int
	mu      sync.RWMutex
	entries map[[sha256.Size]byte]jwtEntry
}

type jwtEntry struct {
	p      Principal
	exp    time.Time
	signer signer
}

func newJWTCache(max int) *jwtCache {
	if max <= 0 {
		return nil
	}
	return &jwtCache{max: max, entries: make(map[[sha256.Size]byte]jwtEntry)}
}

func (c *jwtCache) get(k [sha256.Size]byte, now time.Time) (jwtEntry, bool) {
	if c == nil {
		return jwtEntry{}, false
	}
	c.mu.RLock()
	e, ok := c.entries[k]
	c.mu.RUnlock()
	if !ok || !now.Before(e.exp) {
		return jwtEntry{}, false
	}
	return e, true
}

func (c *jwtCache) drop(k [sha256.Size]byte) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.entries, k)
	c.mu.Unlock()
}

func (c *jwtCache) put(k [sha256.Size]byte, e jwtEntry, now time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for key, e := range c.entries {
			if !now.Before(e.exp) {
				delete(c.entries, key)
			}
		}
		target := c.max - c.max/10
		if target >= c.max {
			target = c.max - 1
		}
		for key := range c.entries {
			if len(c.entries) <= target {
				break
			}
			delete(c.entries, key)
		}
	}
	c.entries[k] = e
}

func (c *jwtCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

func jwtExpected(cfg Config) jwt.Expected {
	e := jwt.Expected{Issuer: cfg.Issuer}
	if cfg.Audience != "" {
		e.AnyAudience = jwt.Audience{cfg.Audience}
	}
	return e
}
