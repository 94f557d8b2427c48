package identity

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bulwark-ai/bulwark/test/fixture/fakeclock"
)

func jwtAuth(t testing.TB, cfg Config) (*Authenticator, *jwksServer) {
	t.Helper()
	k := keysOnce()
	srv := newJWKSServer(t, jwksJSON(t, map[string]any{"rsa1": &k.rsa1.PublicKey, "ec": &k.ec.PublicKey, "ed": k.ed.Public()}))
	cfg.JWKSURL = srv.URL
	if cfg.Issuer == "" {
		cfg.Issuer = "https://issuer.test"
	}
	if cfg.Audience == "" {
		cfg.Audience = "bulwark"
	}
	a := newAuth(t, cfg)
	setClock(a, fakeclock.New(t0))
	return a, srv
}

func TestJWTAuthenticate(t *testing.T) {
	t.Parallel()
	k := keysOnce()
	a, _ := jwtAuth(t, Config{})
	c := stdClaims(t0)
	pubDER, _ := x509.MarshalPKIXPublicKey(&k.rsa1.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	tests := []struct {
		name      string
		token     string
		wantID    string
		wantRoles []string
		wantErr   string
	}{
		{name: "RS256", token: signJWT(t, jose.RS256, k.rsa1, "rsa1", c), wantID: "alice", wantRoles: []string{"user"}},
		{name: "ES256", token: signJWT(t, jose.ES256, k.ec, "ec", c), wantID: "alice", wantRoles: []string{"user"}},
		{name: "EdDSA", token: signJWT(t, jose.EdDSA, k.ed, "ed", c), wantID: "alice", wantRoles: []string{"user"}},
		{name: "no kid tries fitting keys", token: signJWT(t, jose.ES256, k.ec, "", c), wantID: "alice", wantRoles: []string{"user"}},
		{name: "audience list", token: signJWT(t, jose.RS256, k.rsa1, "rsa1", with(c, "aud", []string{"other", "bulwark"})), wantID: "alice", wantRoles: []string{"user"}},
		{name: "within leeway", token: signJWT(t, jose.RS256, k.rsa1, "rsa1", with(c, "exp", t0.Add(-10*time.Second).Unix())), wantID: "alice", wantRoles: []string{"user"}},
		{name: "no roles claim", token: signJWT(t, jose.RS256, k.rsa1, "rsa1", with(c, "roles", nil)), wantID: "alice"},
		{name: "expired", token: signJWT(t, jose.RS256, k.rsa1, "rsa1", with(c, "exp", t0.Add(-time.Minute).Unix())), wantErr: ReasonExpired},
		{name: "not yet valid", token: signJWT(t, jose.RS256, k.rsa1, "rsa1", with(c, "nbf", t0.Add(time.Hour).Unix())), wantErr: ReasonNotYetValid},
		{name: "issued in the future", token: signJWT(t, jose.RS256, k.rsa1, "rsa1", with(c, "iat", t0.Add(time.Hour).Unix())), wantErr: ReasonNotYetValid},
		{name: "wrong issuer", token: signJWT(t, jose.RS256, k.rsa1, "rsa1", with(c, "iss", "https://evil.test")), wantErr: ReasonBadIssuer},
		{name: "wrong audience", token: signJWT(t, jose.RS256, k.rsa1, "rsa1", with(c, "aud", "someone-else")), wantErr: ReasonBadAudience},
		{name: "no exp", token: signJWT(t, jose.RS256, k.rsa1, "rsa1", with(c, "exp", nil)), wantErr: ReasonMissingClaim},
		{name: "no sub", token: signJWT(t, jose.RS256, k.rsa1, "rsa1", with(c, "sub", nil)), wantErr: ReasonMissingClaim},
		{name: "forged: other key, known kid", token: signJWT(t, jose.RS256, k.rsa2, "rsa1", c), wantErr: ReasonBadSignature},
		{name: "RSA key used as ES256", token: signJWT(t, jose.ES256, k.ec, "rsa1", c), wantErr: ReasonUnknownKey},
		{name: "alg none", token: unsignedJWT(map[string]any{"alg": "none", "kid": "rsa1"}, c, ""), wantErr: ReasonUnsupportedAlg},
		{name: "alg None", token: unsignedJWT(map[string]any{"alg": "None"}, c, ""), wantErr: ReasonUnsupportedAlg},
		{name: "HS256 with public key as secret", token: signJWT(t, jose.HS256, pubPEM, "rsa1", c), wantErr: ReasonUnsupportedAlg},
		{name: "RS384 not allowed", token: signJWT(t, jose.RS384, k.rsa1, "rsa1", c), wantErr: ReasonUnsupportedAlg},
		{name: "crit header", token: unsignedJWT(map[string]any{"alg": "RS256", "kid": "rsa1", "crit": []string{"x"}, "x": 1}, c, "AAAA"), wantErr: ReasonMalformed},
		{name: "signature stripped", token: strings.TrimRight(signJWT(t, jose.RS256, k.rsa1, "rsa1", c), "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), wantErr: ReasonBadSignature},
		{name: "payload swapped", token: swapPayload(signJWT(t, jose.RS256, k.rsa1, "rsa1", c), with(c, "roles", []string{"admin"})), wantErr: ReasonBadSignature},
		{name: "header not base64", token: "!!!.e30.AAAA", wantErr: ReasonMalformed},
		{name: "header not json", token: "bm90IGpzb24.e30.AAAA", wantErr: ReasonMalformed},
		{name: "empty parts", token: "..", wantErr: ReasonMalformed},
		{name: "JWE-like", token: "eyJhbGciOiJSUzI1NiJ9.a.b.c.d", wantErr: ReasonMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := a.Authenticate(context.Background(), Request{Authorization: "Bearer " + tc.token})
			wantKind := KindJWT
			if tc.wantErr != "" {
				wantKind = KindAnonymous
			}
			if got.ID != tc.wantID || got.Kind != wantKind || got.Error != tc.wantErr || !slices.Equal(got.Roles, tc.wantRoles) {
				t.Errorf("Authenticate() = %+v, want id=%q kind=%q roles=%v error=%q", got, tc.wantID, wantKind, tc.wantRoles, tc.wantErr)
			}
			if tc.wantErr == "" && (got.Tenant != "acme" || got.Claims["sub"] != "alice") {
				t.Errorf("tenant/claims = %q, %v", got.Tenant, got.Claims)
			}
		})
	}
}

func swapPayload(tok string, claims map[string]any) string {
	parts := strings.Split(tok, ".")
	other := unsignedJWT(map[string]any{}, claims, "")
	parts[1] = strings.Split(other, ".")[1]
	return strings.Join(parts, ".")
}

func TestJWTClaimMapping(t *testing.T) {
	t.Parallel()
	k := keysOnce()
	tests := []struct {
		name       string
		cfg        Config
		claims     map[string]any
		wantRoles  []string
		wantTenant string
	}{
		{name: "scope string", cfg: Config{RolesClaim: "scope"}, claims: map[string]any{"scope": "read  write"}, wantRoles: []string{"read", "write"}, wantTenant: "acme"},
		{name: "nested roles", cfg: Config{RolesClaim: "realm_access.roles", TenantClaim: "org.id"}, claims: map[string]any{"realm_access": map[string]any{"roles": []string{"admin"}}, "org": map[string]any{"id": "o1"}}, wantRoles: []string{"admin"}, wantTenant: "o1"},
		{name: "roles of wrong type", cfg: Config{}, claims: map[string]any{"roles": 42, "tenant": []string{"x"}}, wantRoles: nil, wantTenant: ""},
		{name: "mixed roles array", cfg: Config{}, claims: map[string]any{"roles": []any{"a", 1, "", "b"}}, wantRoles: []string{"a", "b"}, wantTenant: "acme"},
		{name: "custom subject", cfg: Config{SubjectClaim: "email"}, claims: map[string]any{"email": "alice"}, wantRoles: []string{"user"}, wantTenant: "acme"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, _ := jwtAuth(t, tc.cfg)
			c := stdClaims(t0)
			for kk, v := range tc.claims {
				c[kk] = v
			}
			got := a.Authenticate(context.Background(), Request{Authorization: "Bearer " + signJWT(t, jose.RS256, k.rsa1, "rsa1", c)})
			if got.Error != "" || !slices.Equal(got.Roles, tc.wantRoles) || got.Tenant != tc.wantTenant || got.ID != "alice" {
				t.Errorf("got %+v, want roles=%v tenant=%q", got, tc.wantRoles, tc.wantTenant)
			}
		})
	}
}

func TestJWTStaticKeysFile(t *testing.T) {
	t.Parallel()
	k := keysOnce()
	dir := t.TempDir()
	der, _ := x509.MarshalPKIXPublicKey(&k.rsa2.PublicKey)
	pemPath := filepath.Join(dir, "pub.pem")
	mustWrite(t, pemPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	jwksPath := filepath.Join(dir, "jwks.json")
	mustWrite(t, jwksPath, jwksJSON(t, map[string]any{"ed": k.ed.Public()}))

	for _, tc := range []struct {
		name, file string
		token      string
	}{
		{"pem without kid", pemPath, signJWT(t, jose.RS256, k.rsa2, "", stdClaims(t0))},
		{"jwks file", jwksPath, signJWT(t, jose.EdDSA, k.ed, "ed", stdClaims(t0))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAuth(t, Config{JWTKeysFile: tc.file, Issuer: "https://issuer.test", Audience: "bulwark"})
			setClock(a, fakeclock.New(t0))
			if got := a.Authenticate(context.Background(), Request{Authorization: "Bearer " + tc.token}); got.ID != "alice" {
				t.Errorf("got %+v", got)
			}
			forged := signJWT(t, jose.RS256, k.rsa1, "", stdClaims(t0))
			if got := a.Authenticate(context.Background(), Request{Authorization: "Bearer " + forged}); got.Error == "" {
				t.Errorf("forged token accepted: %+v", got)
			}
		})
	}

	bad := filepath.Join(dir, "bad.json")
	mustWrite(t, bad, []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))
	if _, err := New(Config{JWTKeysFile: bad, InsecureSkipIssuerAudience: true}, nil, nil, nil); err == nil {
		t.Error("New accepted a JWKS file with only a symmetric key")
	}
}

func TestJWKSRotation(t *testing.T) {
	t.Parallel()
	k := keysOnce()
	a, srv := jwtAuth(t, Config{JWKSMinRefreshInterval: time.Millisecond, JWKSRefreshInterval: time.Hour})
	clock := fakeclock.New(t0)
	setClock(a, clock)
	ctx := context.Background()
	old := signJWT(t, jose.RS256, k.rsa1, "rsa1", stdClaims(t0))
	if got := a.Authenticate(ctx, Request{Authorization: "Bearer " + old}); got.ID != "alice" {
		t.Fatalf("before rotation: %+v", got)
	}
	// The issuer rotates: a new kid appears, the old one is gone.
	srv.set(jwksJSON(t, map[string]any{"rsa2": &k.rsa2.PublicKey}), 200, 0)
	clock.Advance(time.Second)
	rotated := signJWT(t, jose.RS256, k.rsa2, "rsa2", with(stdClaims(t0), "sub", "bob"))
	if got := a.Authenticate(ctx, Request{Authorization: "Bearer " + rotated}); got.ID != "bob" {
		t.Fatalf("after rotation: %+v", got)
	}
	// A token not seen before with the retired kid no longer verifies.
	clock.Advance(time.Second)
	retired := signJWT(t, jose.RS256, k.rsa1, "rsa1", with(stdClaims(t0), "sub", "carol"))
	if got := a.Authenticate(ctx, Request{Authorization: "Bearer " + retired}); got.Error != ReasonUnknownKey {
		t.Fatalf("retired kid: %+v, want unknown_key", got)
	}
}

func TestJWKSUnknownKidFloodIsRateLimited(t *testing.T) {
	t.Parallel()
	k := keysOnce()
	a, srv := jwtAuth(t, Config{JWKSMinRefreshInterval: time.Hour, JWKSRefreshInterval: time.Hour})
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 500; i++ {
		wg.Go(func() {
			tok := signJWT(t, jose.ES256, k.ec, fmt.Sprintf("bogus-%d", i), stdClaims(t0))
			if got := a.Authenticate(ctx, Request{Authorization: "Bearer " + tok}); got.Error != ReasonUnknownKey {
				t.Errorf("bogus kid %d: %+v, want unknown_key", i, got)
			}
		})
	}
	wg.Wait()
	// One fetch on first use, then nothing within the minimum interval.
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times, want 1", n)
	}
}

func TestJWKSIssuerFailures(t *testing.T) {
	t.Parallel()
	k := keysOnce()
	tok := func(sub string) string {
		return "Bearer " + signJWT(t, jose.RS256, k.rsa1, "rsa1", with(stdClaims(t0), "sub", sub))
	}
	tests := []struct {
		name  string
		body  []byte
		code  int
		delay time.Duration
	}{
		{name: "server error", body: []byte(`oops`), code: 503},
		{name: "not found", body: nil, code: 404},
		{name: "junk", body: []byte(`<html>hello</html>`), code: 200},
		{name: "empty set", body: []byte(`{"keys":[]}`), code: 200},
		{name: "only symmetric key", body: []byte(`{"keys":[{"kty":"oct","kid":"rsa1","k":"c2VjcmV0c2VjcmV0"}]}`), code: 200},
		{name: "slow", body: jwksJSON(t, map[string]any{"rsa1": &k.rsa1.PublicKey}), code: 200, delay: 5 * time.Second},
		{name: "huge", body: []byte(`{"keys":[` + strings.Repeat(" ", maxJWKSBytes) + `]}`), code: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Cold start: no keys ever fetched.
			a, srv := jwtAuth(t, Config{JWKSFetchTimeout: 200 * time.Millisecond, JWKSMinRefreshInterval: time.Millisecond})
			clock := fakeclock.New(t0)
			setClock(a, clock)
			srv.set(tc.body, tc.code, tc.delay)
			start := time.Now()
			if got := a.Authenticate(context.Background(), Request{Authorization: tok("a")}); got.Error != ReasonJWKSUnavailable {
				t.Errorf("cold: %+v, want jwks_unavailable", got)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("cold failure took %s, want about the fetch timeout", d)
			}
			if a.Ready() == nil {
				t.Error("Ready() = nil without any JWKS")
			}

			// Warm: good keys fetched, then the issuer breaks; keys are kept.
			srv.set(jwksJSON(t, map[string]any{"rsa1": &k.rsa1.PublicKey}), 200, 0)
			clock.Advance(time.Second)
			if got := a.Authenticate(context.Background(), Request{Authorization: tok("b")}); got.ID != "b" {
				t.Fatalf("recovered: %+v", got)
			}
			srv.set(tc.body, tc.code, tc.delay)
			clock.Advance(time.Second)
			_ = a.jwt.jwks.refresh(context.Background(), true)
			if got := a.Authenticate(context.Background(), Request{Authorization: tok("c")}); got.ID != "c" {
				t.Errorf("after failed refresh: %+v, want last good keys", got)
			}
		})
	}
}

func TestJWKSDown(t *testing.T) {
	t.Parallel()
	k := keysOnce()
	a, srv := jwtAuth(t, Config{JWKSFetchTimeout: 200 * time.Millisecond})
	srv.Close()
	tok := signJWT(t, jose.RS256, k.rsa1, "rsa1", stdClaims(t0))
	if got := a.Authenticate(context.Background(), Request{Authorization: "Bearer " + tok}); got.Error != ReasonJWKSUnavailable {
		t.Errorf("got %+v, want jwks_unavailable", got)
	}
}

func TestJWKSBackgroundRefresh(t *testing.T) {
	t.Parallel()
	a, srv := jwtAuth(t, Config{JWKSRefreshInterval: 20 * time.Millisecond, JWKSMinRefreshInterval: 10 * time.Millisecond,
		JWKSMinCacheTTL: 20 * time.Millisecond})
	setClock(a, systemClock{})
	a.Start(t.Context())
	waitFor(t, 5*time.Second, func() bool { return srv.hits.Load() >= 3 })
	if err := a.Ready(); err != nil {
		t.Errorf("Ready() = %v", err)
	}
	a.Close()
	n := srv.hits.Load()
	time.Sleep(60 * time.Millisecond)
	if m := srv.hits.Load(); m != n {
		t.Errorf("fetches continued after Close: %d -> %d", n, m)
	}
}

func TestJWTRequestContextCancelled(t *testing.T) {
	t.Parallel()
	k := keysOnce()
	a, srv := jwtAuth(t, Config{JWKSFetchTimeout: 5 * time.Second})
	srv.set(jwksJSON(t, map[string]any{"rsa1": &k.rsa1.PublicKey}), 200, 3*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	got := a.Authenticate(ctx, Request{Authorization: "Bearer " + signJWT(t, jose.RS256, k.rsa1, "rsa1", stdClaims(t0))})
	if got.Error != ReasonJWKSUnavailable || time.Since(start) > time.Second {
		t.Errorf("got %+v after %s, want jwks_unavailable within the request deadline", got, time.Since(start))
	}
}

func TestJWTCache(t *testing.T) {
	t.Parallel()
	k := keysOnce()
	a, _ := jwtAuth(t, Config{JWTCacheSize: 3, Leeway: time.Second})
	clock := fakeclock.New(t0)
	setClock(a, clock)
	ctx := context.Background()
	tok := signJWT(t, jose.RS256, k.rsa1, "rsa1", with(stdClaims(t0), "exp", t0.Add(time.Minute).Unix()))
	for i := 0; i < 3; i++ {
		if got := a.Authenticate(ctx, Request{Authorization: "Bearer " + tok}); got.ID != "alice" {
			t.Fatalf("call %d: %+v", i, got)
		}
	}
	if n := a.jwtCache.len(); n != 1 {
		t.Errorf("cache len = %d, want 1", n)
	}
	// A cached token stops working at its expiry (plus leeway).
	clock.Advance(time.Minute + 2*time.Second)
	if got := a.Authenticate(ctx, Request{Authorization: "Bearer " + tok}); got.Error != ReasonExpired {
		t.Errorf("after exp: %+v, want expired", got)
	}
	// The cache stays bounded.
	for i := 0; i < 10; i++ {
		tk := signJWT(t, jose.ES256, k.ec, "ec", with(stdClaims(clock.Now()), "sub", fmt.Sprint("u", i)))
		if got := a.Authenticate(ctx, Request{Authorization: "Bearer " + tk}); got.Error != "" {
			t.Fatal(got)
		}
	}
	if n := a.jwtCache.len(); n > 3 {
		t.Errorf("cache len = %d, want <= 3", n)
	}
}
