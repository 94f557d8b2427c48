package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	maxJWKSBytes = 1 << 20
	maxJWKSKeys  = 100
)

// keyRing is an immutable set of verification keys. A ring from a JWKS
// expires: past expires the JWKS is fetched again before it is trusted.
type keyRing struct {
	byKid   map[string][]ringKey
	all     []ringKey
	fps     map[[sha256.Size]byte]bool
	expires time.Time // zero: never (static keys)
}

// ringKey is a key with its RFC 7638 thumbprint, which names it across
// fetches of the key set.
type ringKey struct {
	jose.JSONWebKey
	fp [sha256.Size]byte
}

func newKeyRing(keys []jose.JSONWebKey) *keyRing {
	r := &keyRing{byKid: make(map[string][]ringKey, len(keys)), fps: make(map[[sha256.Size]byte]bool, len(keys))}
	for _, k := range keys {
		rk := ringKey{JSONWebKey: k}
		if tp, err := k.Thumbprint(cryptoSHA256); err == nil {
			copy(rk.fp[:], tp)
			r.fps[rk.fp] = true
		}
		r.all = append(r.all, rk)
		r.byKid[k.KeyID] = append(r.byKid[k.KeyID], rk)
	}
	return r
}

// candidates returns the keys that may have signed a token with kid; with no
// kid every key is a candidate (the caller filters by algorithm).
func (r *keyRing) candidates(kid string) []ringKey {
	if r == nil {
		return nil
	}
	if kid == "" {
		return r.all
	}
	return r.byKid[kid]
}

// has reports whether the key with thumbprint fp is in the ring.
func (r *keyRing) has(fp [sha256.Size]byte) bool { return r != nil && r.fps[fp] }

// parseJWKS keeps the usable public signing keys of a JWKS document and
// drops the rest: symmetric keys (which would allow HMAC/RSA confusion),
// private parts, encryption keys, unknown key types. No usable key is an
// error, so junk never replaces a good key set.
func parseJWKS(data []byte) ([]jose.JSONWebKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range doc.Keys {
		if len(keys) == maxJWKSKeys {
			break
		}
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if k.Algorithm != "" && !asymmetricAlgorithms[k.Algorithm] {
			continue
		}
		pub := k.Public()
		if !pub.Valid() || !isAsymmetricPublic(pub.Key) {
			continue
		}
		keys = append(keys, pub)
	}
	if len(keys) == 0 {
		return nil, errors.New("jwks: no usable public signing keys")
	}
	return keys, nil
}

// parseStaticKeys accepts a JWKS document or PEM public keys/certificates.
// PEM keys get their RFC 7638 thumbprint as kid.
func parseStaticKeys(data []byte) ([]jose.JSONWebKey, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return parseJWKS(data)
	}
	var keys []jose.JSONWebKey
	for block != nil {
		var pub any
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = c.PublicKey
			}
		default:
			err = fmt.Errorf("unsupported PEM block %q (want PUBLIC KEY or CERTIFICATE)", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("jwt keys: %w", err)
		}
		if !isAsymmetricPublic(pub) {
			return nil, fmt.Errorf("jwt keys: unsupported key type %T", pub)
		}
		k := jose.JSONWebKey{Key: pub, Use: "sig"}
		tp, err := k.Thumbprint(cryptoSHA256)
		if err != nil {
			return nil, fmt.Errorf("jwt keys: %w", err)
		}
		k.KeyID = b64url(tp)
		keys = append(keys, k)
		block, rest = pem.Decode(rest)
	}
	return keys, nil
}

func isAsymmetricPublic(k any) bool {
	switch k := k.(type) {
	case *rsa.PublicKey:
		return k.N != nil && k.N.BitLen() >= 2048
	case *ecdsa.PublicKey, ed25519.PublicKey:
		return true
	}
	return false
}

// keyFits reports whether key may verify alg; a key that declares its own
// algorithm must match it exactly.
func keyFits(alg string, k jose.JSONWebKey) bool {
	if k.Algorithm != "" && k.Algorithm != alg {
		return false
	}
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return key.Curve == elliptic.P256()
		case "ES384":
			return key.Curve == elliptic.P384()
		case "ES512":
			return key.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// jwksSource fetches and caches a remote JWKS. Fetches are single-flight and
// at least minInterval apart, whatever the traffic: a flood of tokens with
// unknown kids costs the issuer one request per minInterval.
type jwksSource struct {
	url         string
	client      *http.Client
	timeout     time.Duration
	minInterval time.Duration
	ttl         cacheTTL
	clock       Clock
	metrics     *metrics
	logger      logger

	ring atomic.Pointer[keyRing]

	mu          sync.Mutex
	lastAttempt time.Time
	lastErr     error
	inflight    chan struct{}
	wg          sync.WaitGroup
	base        context.Context
}

type logger interface {
	Warn(msg string, args ...any)
	Info(msg string, args ...any)
}

// current returns the key set, fetched again first when its cache lifetime
// has ended (the background loop normally does that in time). A failed
// fetch keeps the last good set, and is retried at most every minInterval.
func (s *jwksSource) current(ctx context.Context) *keyRing {
	r := s.ring.Load()
	if r != nil && !s.clock.Now().Before(r.expires) {
		_ = s.refresh(ctx, false) // what came of it shows in the ring
		r = s.ring.Load()
	}
	return r
}

// lookup returns the candidate keys for kid, refreshing the set first when
// kid is unknown and the minimum interval allows. reason is "" on success.
func (s *jwksSource) lookup(ctx context.Context, kid string) ([]ringKey, string) {
	if ks := s.current(ctx).candidates(kid); len(ks) > 0 {
		return ks, ""
	}
	_ = s.refresh(ctx, false) // what came of it shows in the ring below
	if ks := s.ring.Load().candidates(kid); len(ks) > 0 {
		return ks, ""
	}
	if s.ring.Load() == nil {
		return nil, ReasonJWKSUnavailable
	}
	return nil, ReasonUnknownKey
}

// refresh fetches the JWKS unless a fetch ran less than minInterval ago
// (force skips that check, for the background loop) and waits for the
// fetch or ctx. It reports whether the last fetch succeeded.
func (s *jwksSource) refresh(ctx context.Context, force bool) error {
	s.mu.Lock()
	ch := s.inflight
	if ch == nil {
		now := s.clock.Now()
		if !force && !s.lastAttempt.IsZero() && now.Sub(s.lastAttempt) < s.minInterval {
			err := s.lastErr
			s.mu.Unlock()
			return err
		}
		s.lastAttempt = now
		ch = make(chan struct{})
		s.inflight = ch
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			err := s.fetch(s.base)
			s.mu.Lock()
			s.lastErr = err
			s.inflight = nil
			s.mu.Unlock()
			close(ch)
		}()
	}
	s.mu.Unlock()
	select {
	case <-ch:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.lastErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *jwksSource) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := s.fetchOnce(ctx)
	if err != nil {
		s.metrics.jwksFetches.WithLabelValues("error").Inc()
		s.logger.Warn("jwks fetch failed; keeping the last good keys", "url", s.url, "error", err)
		return err
	}
	s.metrics.jwksFetches.WithLabelValues("ok").Inc()
	return nil
}

func (s *jwksSource) fetchOnce(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return fmt.Errorf("jwks: %w", err)
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("jwks: %s returned %s", s.url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return fmt.Errorf("jwks: read: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return fmt.Errorf("jwks: document larger than %d bytes", maxJWKSBytes)
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return err
	}
	r := newKeyRing(keys)
	now := s.clock.Now()
	r.expires = now.Add(s.ttl.of(resp.Header, now))
	s.ring.Store(r)
	return nil
}

// run refreshes in the background until ctx ends: after a success, at nine
// tenths of the key set's cache lifetime (so requests rarely find it stale
// and wait for a fetch); every minInterval after a failure.
func (s *jwksSource) run(ctx context.Context) {
	for {
		wait := s.minInterval
		if err := s.refresh(ctx, true); err == nil {
			if r := s.ring.Load(); r != nil {
				wait = max(r.expires.Sub(s.clock.Now())*9/10, s.minInterval)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// cacheTTL is how long a fetched JWKS is used: the lifetime its response
// gives (Cache-Control max-age, else Expires), or def, bounded to [min, max].
type cacheTTL struct{ def, min, max time.Duration }

func (c cacheTTL) of(h http.Header, now time.Time) time.Duration {
	d, ok := cacheLifetime(h, now)
	if !ok {
		d = c.def
	}
	return min(max(d, c.min), c.max)
}

// cacheLifetime reads the freshness lifetime of an HTTP response as RFC
// 9111 defines it: Cache-Control max-age (no-store and no-cache: zero),
// else Expires minus Date (or now). ok is false when neither says.
func cacheLifetime(h http.Header, now time.Time) (d time.Duration, ok bool) {
	for _, line := range h.Values("Cache-Control") {
		for dir := range strings.SplitSeq(line, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(dir), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store", "no-cache":
				return 0, true
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 64)
				if err != nil || n < 0 {
					return 0, true // invalid: stale (RFC 9111 4.2.1)
				}
				return time.Duration(min(n, int64(365*24*3600))) * time.Second, true
			}
		}
	}
	exp := h.Get("Expires")
	if exp == "" {
		return 0, false
	}
	t, err := http.ParseTime(exp)
	if err != nil {
		return 0, true // invalid Expires: already expired (RFC 9111 5.3)
	}
	base := now
	if date, err := http.ParseTime(h.Get("Date")); err == nil {
		base = date
	}
	return max(t.Sub(base), 0), true
}
