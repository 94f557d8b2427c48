package identity

import (
	"context"
	"net/http"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bulwark-ai/bulwark/test/fixture/fakeclock"
)

// TestJWKSWithdrawnKeyEndsCachedTokens: a token verified (and cached) with
// a key stops authenticating once the key leaves the JWKS, at the latest
// when the key set's published cache lifetime ends.
func TestJWKSWithdrawnKeyEndsCachedTokens(t *testing.T) {
	t.Parallel()
	k := keysOnce()
	a, srv := jwtAuth(t, Config{MaxTokenLifetime: -1})
	srv.setCacheControl("public, max-age=60")
	clock := fakeclock.New(t0)
	setClock(a, clock)
	ctx := context.Background()
	// Ten years, roles [admin]: the token of the report.
	long := signJWT(t, jose.RS256, k.rsa1, "rsa1", with(with(stdClaims(t0), "exp", t0.AddDate(10, 0, 0).Unix()), "roles", []string{"admin"}))
	for i := range 2 {
		if got := a.Authenticate(ctx, Request{Authorization: "Bearer " + long}); got.ID != "alice" {
			t.Fatalf("call %d before withdrawal: %+v", i, got)
		}
	}
	if a.jwtCache.len() != 1 {
		t.Fatal("token not cached")
	}
	// The issuer withdraws rsa1; within the cache lifetime the set is kept.
	srv.set(jwksJSON(t, map[string]any{"rsa2": &k.rsa2.PublicKey}), 200, 0)
	clock.Advance(59 * time.Second)
	if got := a.Authenticate(ctx, Request{Authorization: "Bearer " + long}); got.ID != "alice" {
		t.Fatalf("within max-age: %+v", got)
	}
	clock.Advance(2 * time.Second)
	if got := a.Authenticate(ctx, Request{Authorization: "Bearer " + long}); got.Error != ReasonUnknownKey {
		t.Fatalf("after max-age, with the key withdrawn: %+v, want %s", got, ReasonUnknownKey)
	}
	if n := srv.hits.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times, want 2 (once, then when max-age ended)", n)
	}
	// A month later, still refused (the old code cached it until its exp).
	clock.Advance(30 * 24 * time.Hour)
	if got := a.Authenticate(ctx, Request{Authorization: "Bearer " + long}); got.Error == "" {
		t.Fatalf("a month later: %+v", got)
	}
}

// TestJWKSRefreshFollowsCacheLifetime: the key set is fetched again when
// the lifetime its response publishes ends, bounded to [min, max], even
// while every kid is known.
func TestJWKSRefreshFollowsCacheLifetime(t *testing.T) {
	t.Parallel()
	k := keysOnce()
	for _, tc := range []struct {
		name   string
		header string
		ttl    time.Duration // when the second fetch is due
	}{
		{"max-age", "max-age=60", 60 * time.Second},
		{"below the lower bound", "max-age=5", 30 * time.Second},
		{"above the upper bound", "max-age=864000", time.Hour},
		{"no-cache", "no-cache", 30 * time.Second},
		{"absent: the default", "", 5 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, srv := jwtAuth(t, Config{})
			srv.setCacheControl(tc.header)
			clock := fakeclock.New(t0)
			setClock(a, clock)
			auth := func(sub string) Principal {
				tok := signJWT(t, jose.RS256, k.rsa1, "rsa1", with(stdClaims(clock.Now()), "sub", sub))
				return a.Authenticate(context.Background(), Request{Authorization: "Bearer " + tok})
			}
			if got := auth("a"); got.ID != "a" {
				t.Fatal(got)
			}
			clock.Advance(tc.ttl - time.Second)
			if got := auth("b"); got.ID != "b" || srv.hits.Load() != 1 {
				t.Fatalf("before the lifetime ends: %+v, %d fetches; want 1", got, srv.hits.Load())
			}
			clock.Advance(time.Second)
			if got := auth("c"); got.ID != "c" || srv.hits.Load() != 2 {
				t.Fatalf("when the lifetime ends: %+v, %d fetches; want 2", got, srv.hits.Load())
			}
		})
	}
}

func TestJWTMaxTokenLifetime(t *testing.T) {
	t.Parallel()
	k := keysOnce()
	a, _ := jwtAuth(t, Config{})
	clock := fakeclock.New(t0)
	setClock(a, clock)
	noIat := stdClaims(t0)
	delete(noIat, "iat")
	for _, tc := range []struct {
		name    string
		claims  map[string]any
		wantErr string
	}{
		{"23h", with(stdClaims(t0), "exp", t0.Add(23*time.Hour).Unix()), ""},
		{"ten years", with(stdClaims(t0), "exp", t0.AddDate(10, 0, 0).Unix()), ReasonLifetimeTooLong},
		{"25h", with(stdClaims(t0), "exp", t0.Add(25*time.Hour).Unix()), ReasonLifetimeTooLong},
		{"no iat, exp in 23h", with(noIat, "exp", t0.Add(23*time.Hour).Unix()), ""},
		{"no iat, exp in 25h", with(noIat, "exp", t0.Add(25*time.Hour).Unix()), ReasonLifetimeTooLong},
	} {
		tok := signJWT(t, jose.RS256, k.rsa1, "rsa1", tc.claims)
		if got := a.Authenticate(context.Background(), Request{Authorization: "Bearer " + tok}); got.Error != tc.wantErr {
			t.Errorf("%s: %+v, want error %q", tc.name, got, tc.wantErr)
		}
	}
}

func TestCacheLifetime(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		header http.Header
		want   time.Duration
		ok     bool
	}{
		{"none", http.Header{}, 0, false},
		{"max-age", http.Header{"Cache-Control": {"public, max-age=300"}}, 300 * time.Second, true},
		{"max-age upper case, quoted", http.Header{"Cache-Control": {`MAX-AGE="120"`}}, 120 * time.Second, true},
		{"max-age wins over Expires", http.Header{"Cache-Control": {"max-age=10"}, "Expires": {"Tue, 01 Jan 2030 01:00:00 GMT"}}, 10 * time.Second, true},
		{"no-store", http.Header{"Cache-Control": {"no-store"}}, 0, true},
		{"bad max-age", http.Header{"Cache-Control": {"max-age=-1"}}, 0, true},
		{"Expires against Date", http.Header{"Expires": {"Tue, 01 Jan 2030 01:00:00 GMT"}, "Date": {"Tue, 01 Jan 2030 00:30:00 GMT"}}, 30 * time.Minute, true},
		{"Expires against now", http.Header{"Expires": {"Tue, 01 Jan 2030 01:00:00 GMT"}}, time.Hour, true},
		{"Expires in the past", http.Header{"Expires": {"Mon, 31 Dec 2029 01:00:00 GMT"}}, 0, true},
		{"bad Expires", http.Header{"Expires": {"0"}}, 0, true},
	} {
		got, ok := cacheLifetime(tc.header, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: %s, %v; want %s, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzCacheLifetime(f *testing.F) {
	for _, s := range []string{"max-age=60", "public, max-age=0, must-revalidate", "no-cache", `max-age="9"`, "max-age=99999999999999999999", ""} {
		f.Add(s, "Tue, 01 Jan 2030 01:00:00 GMT")
	}
	ttl := cacheTTL{def: 5 * time.Minute, min: 30 * time.Second, max: time.Hour}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, cc, expires string) {
		h := http.Header{"Cache-Control": {cc}, "Expires": {expires}}
		if d, _ := cacheLifetime(h, now); d < 0 {
			t.Fatalf("negative lifetime %s", d)
		}
		if d := ttl.of(h, now); d < ttl.min || d > ttl.max {
			t.Fatalf("ttl %s outside [%s, %s]", d, ttl.min, ttl.max)
		}
	})
}
