package identity

import (
	"context"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
)

func BenchmarkAPIKey(b *testing.B) {
	path, plain := writeKeys(b, b.TempDir(), KeyRecord{ID: "bench", Roles: []string{"user"}, Tenant: "acme"})
	a, err := New(Config{KeysFile: path, Pepper: testPepper}, nil, prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	req := Request{Authorization: "Bearer " + plain["bench"]}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if p := a.Authenticate(ctx, req); p.ID != "bench" {
			b.Fatal(p)
		}
	}
}

func BenchmarkAPIKeyParallel(b *testing.B) {
	path, plain := writeKeys(b, b.TempDir(), KeyRecord{ID: "bench", Roles: []string{"user"}})
	a, err := New(Config{KeysFile: path, Pepper: testPepper}, nil, prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	req := Request{APIKey: plain["bench"]}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if p := a.Authenticate(context.Background(), req); p.ID != "bench" {
				b.Error(p)
				return
			}
		}
	})
}

func BenchmarkJWTCached(b *testing.B) {
	k := keysOnce()
	a, _ := jwtAuth(b, Config{})
	req := Request{Authorization: "Bearer " + signJWT(b, jose.RS256, k.rsa1, "rsa1", stdClaims(t0))}
	ctx := context.Background()
	if p := a.Authenticate(ctx, req); p.ID != "alice" {
		b.Fatal(p)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if p := a.Authenticate(ctx, req); p.ID != "alice" {
			b.Fatal(p)
		}
	}
}

// BenchmarkJWTFirstSeenRS256 measures an uncached RS256 token: header parse,
// signature check, claims validation and mapping.
func BenchmarkJWTFirstSeenRS256(b *testing.B) {
	k := keysOnce()
	a, _ := jwtAuth(b, Config{JWTCacheSize: -1})
	req := Request{Authorization: "Bearer " + signJWT(b, jose.RS256, k.rsa1, "rsa1", stdClaims(t0))}
	ctx := context.Background()
	if p := a.Authenticate(ctx, req); p.ID != "alice" {
		b.Fatal(p)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if p := a.Authenticate(ctx, req); p.ID != "alice" {
			b.Fatal(p)
		}
	}
}

func BenchmarkAnonymous(b *testing.B) {
	a, _ := New(Config{}, nil, nil, nil)
	defer a.Close()
	b.ReportAllocs()
	for b.Loop() {
		a.Authenticate(context.Background(), Request{})
	}
}

// BenchmarkAPIKeyRedisCached measures a Redis-stored key between refreshes
// of its short-lived local copy.
func BenchmarkAPIKeyRedisCached(b *testing.B) {
	_, rdb := newRedis(b)
	key, _ := NewAPIKey(nil, "bench")
	ctx := context.Background()
	if err := NewRedisKeyStore(rdb, "bulwark:").Create(ctx, KeyRecord{ID: "bench", Roles: []string{"user"}, Hash: HashAPIKey([]byte(testPepper), key)}); err != nil {
		b.Fatal(err)
	}
	a, err := New(Config{Pepper: testPepper, RedisCacheTTL: time.Hour}, rdb, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	req := Request{APIKey: key}
	b.ReportAllocs()
	for b.Loop() {
		if p := a.Authenticate(ctx, req); p.ID != "bench" {
			b.Fatal(p)
		}
	}
}
