package identity

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/bulwark-ai/bulwark/test/redisserver"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		cfg       Config
		wantField string
	}{
		{name: "zero", cfg: Config{}},
		{name: "full", cfg: Config{KeysFile: "k", Pepper: testPepper, JWKSURL: "https://x/jwks", Issuer: "https://x", Audience: "bulwark",
			Algorithms: []string{"PS256", "ES384"}}},
		{name: "jwks without issuer", cfg: Config{JWKSURL: "https://x/jwks", Audience: "bulwark"}, wantField: "Issuer"},
		{name: "jwt keys without audience", cfg: Config{JWTKeysFile: "k", Issuer: "https://x"}, wantField: "Audience"},
		{name: "unchecked issuer and audience, opted in", cfg: Config{JWKSURL: "https://x/jwks", InsecureSkipIssuerAudience: true}},
		{name: "alg none", cfg: Config{Algorithms: []string{"none"}}, wantField: "Algorithms"},
		{name: "alg HS256", cfg: Config{Algorithms: []string{"RS256", "HS256"}}, wantField: "Algorithms"},
		{name: "both peppers", cfg: Config{Pepper: testPepper, PepperFile: "p"}, wantField: "Pepper"},
		{name: "short pepper", cfg: Config{Pepper: "short"}, wantField: "Pepper"},
		{name: "keys without pepper", cfg: Config{KeysFile: "k"}, wantField: "PepperFile"},
		{name: "bad jwks url", cfg: Config{JWKSURL: "file:///etc/passwd"}, wantField: "JWKSURL"},
		{name: "negative leeway", cfg: Config{Leeway: -time.Second}, wantField: "Leeway"},
		{name: "refresh below min", cfg: Config{JWKSRefreshInterval: time.Second, JWKSMinRefreshInterval: time.Minute}, wantField: "JWKSRefreshInterval"},
		{name: "wildcard peer", cfg: Config{MTLSPrincipals: map[string]PeerIdentity{"*": {}}}, wantField: "MTLSPrincipals"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if tc.wantField == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantField+":") {
				t.Errorf("Validate() = %v, want error naming %s", err, tc.wantField)
			}
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	t.Parallel()
	d := DefaultConfig()
	if !slices.Equal(d.Algorithms, []string{"RS256", "ES256", "EdDSA"}) || d.RolesClaim != "roles" || d.TenantClaim != "tenant" || d.Leeway <= 0 {
		t.Errorf("DefaultConfig() = %+v", d)
	}
}

func TestGarbageCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path, _ := writeKeys(t, dir, KeyRecord{ID: "a"})
	a, _ := jwtAuth(t, Config{KeysFile: path, Pepper: testPepper, MaxCredentialBytes: 4096})
	big := strings.Repeat("A", 5000)
	tests := []struct {
		name    string
		req     Request
		wantErr string
	}{
		{name: "none", req: Request{}, wantErr: ""},
		{name: "scheme only", req: Request{Authorization: "Bearer"}, wantErr: ReasonMalformed},
		{name: "scheme and space", req: Request{Authorization: "Bearer "}, wantErr: ReasonMalformed},
		{name: "basic", req: Request{Authorization: "Basic dXNlcjpwYXNz"}, wantErr: ReasonUnsupportedScheme},
		{name: "digest", req: Request{Authorization: "Digest username=x"}, wantErr: ReasonUnsupportedScheme},
		{name: "random words", req: Request{Authorization: "hello world"}, wantErr: ReasonUnsupportedScheme},
		{name: "opaque token", req: Request{Authorization: "Bearer abcdef"}, wantErr: ReasonMalformed},
		{name: "two dots junk", req: Request{Authorization: "Bearer a.b.c"}, wantErr: ReasonMalformed},
		{name: "binary", req: Request{Authorization: "Bearer \x00\xff\xfe.\x01.\x02"}, wantErr: ReasonMalformed},
		{name: "invalid utf8 key", req: Request{APIKey: "bwk_a_\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0"}, wantErr: ReasonMalformed},
		{name: "oversized authorization", req: Request{Authorization: "Bearer " + big}, wantErr: ReasonOversized},
		{name: "oversized api key", req: Request{APIKey: "bwk_a_" + big}, wantErr: ReasonOversized},
		{name: "oversized JWT-shaped", req: Request{Authorization: "Bearer " + big + "." + big + "." + big}, wantErr: ReasonOversized},
		{name: "long but allowed junk", req: Request{Authorization: "Bearer " + strings.Repeat("x.", 2) + strings.Repeat("y", 3000)}, wantErr: ReasonMalformed},
		{name: "long api key", req: Request{APIKey: "bwk_a_" + strings.Repeat("y", 3000)}, wantErr: ReasonMalformed},
		{name: "untrusted source principal ignored", req: Request{SourcePrincipal: "spiffe://x/y"}, wantErr: ""},
		{name: "untrusted xfcc ignored", req: Request{XFCC: `URI=spiffe://x/y`}, wantErr: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := a.Authenticate(context.Background(), tc.req)
			if got.Kind != KindAnonymous || got.Error != tc.wantErr || got.ID != "" {
				t.Errorf("Authenticate() = %+v, want anonymous with error %q", got, tc.wantErr)
			}
		})
	}
}

func TestMTLS(t *testing.T) {
	t.Parallel()
	peers := map[string]PeerIdentity{
		"spiffe://mesh.local/ns/app/sa/gateway": {Roles: []string{"gateway"}, Tenant: "acme"},
		"spiffe://mesh.local/ns/batch/*":        {Roles: []string{"batch"}},
		"spiffe://mesh.local/*":                 {Roles: []string{"mesh"}},
	}
	trusted := newAuth(t, Config{TrustSourcePrincipal: true, TrustXFCC: true, MTLSPrincipals: peers})
	tests := []struct {
		name       string
		req        Request
		wantID     string
		wantRoles  []string
		wantTenant string
		wantErr    string
	}{
		{name: "exact", req: Request{SourcePrincipal: "spiffe://mesh.local/ns/app/sa/gateway"}, wantID: "spiffe://mesh.local/ns/app/sa/gateway", wantRoles: []string{"gateway"}, wantTenant: "acme"},
		{name: "longest prefix", req: Request{SourcePrincipal: "spiffe://mesh.local/ns/batch/sa/x"}, wantID: "spiffe://mesh.local/ns/batch/sa/x", wantRoles: []string{"batch"}},
		{name: "short prefix", req: Request{SourcePrincipal: "spiffe://mesh.local/ns/web/sa/y"}, wantID: "spiffe://mesh.local/ns/web/sa/y", wantRoles: []string{"mesh"}},
		{name: "unlisted peer has no roles", req: Request{SourcePrincipal: "CN=client,O=Example"}, wantID: "CN=client,O=Example"},
		{name: "source principal before xfcc", req: Request{SourcePrincipal: "spiffe://mesh.local/a", XFCC: `URI=spiffe://other/b`}, wantID: "spiffe://mesh.local/a", wantRoles: []string{"mesh"}},
		{name: "xfcc uri", req: Request{XFCC: `By=spiffe://mesh.local/bulwark;Hash=abc;Subject="CN=x,O=y";URI=spiffe://mesh.local/ns/app/sa/gateway`}, wantID: "spiffe://mesh.local/ns/app/sa/gateway", wantRoles: []string{"gateway"}, wantTenant: "acme"},
		{name: "xfcc last element wins", req: Request{XFCC: `URI=spiffe://far/x,URI=spiffe://mesh.local/near`}, wantID: "spiffe://mesh.local/near", wantRoles: []string{"mesh"}},
		{name: "xfcc subject", req: Request{XFCC: `Hash=abc;Subject="CN=svc,O=Example"`}, wantID: "CN=svc,O=Example"},
		{name: "xfcc dns", req: Request{XFCC: `Hash=abc;DNS=svc.example.com`}, wantID: "svc.example.com"},
		{name: "xfcc garbage", req: Request{XFCC: `!!!`}, wantErr: ReasonMalformed},
		{name: "xfcc unterminated quote", req: Request{XFCC: `Subject="CN=x`}, wantErr: ReasonMalformed},
		{name: "xfcc no identity", req: Request{XFCC: `Hash=abc`}, wantErr: ReasonMalformed},
		{name: "bearer before peer", req: Request{Authorization: "Bearer junk", SourcePrincipal: "spiffe://mesh.local/a"}, wantErr: ReasonMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := trusted.Authenticate(context.Background(), tc.req)
			wantKind := KindMTLS
			if tc.wantErr != "" {
				wantKind = KindAnonymous
			}
			if got.ID != tc.wantID || got.Kind != wantKind || got.Error != tc.wantErr || got.Tenant != tc.wantTenant || !slices.Equal(got.Roles, tc.wantRoles) {
				t.Errorf("Authenticate() = %+v, want id=%q kind=%q roles=%v tenant=%q error=%q", got, tc.wantID, wantKind, tc.wantRoles, tc.wantTenant, tc.wantErr)
			}
		})
	}
	spiffe := trusted.Authenticate(context.Background(), Request{SourcePrincipal: "spiffe://mesh.local/ns/x"})
	if spiffe.Claims["trust_domain"] != "mesh.local" {
		t.Errorf("claims = %v, want trust_domain", spiffe.Claims)
	}
}

func TestParseXFCC(t *testing.T) {
	t.Parallel()
	els, err := ParseXFCC(`By=spiffe://a/b;Hash=468ed3;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=\"Test, Client\"";URI=spiffe://c/d;DNS=x.test;DNS=y.test, By=z;URI=spiffe://e/f`)
	if err != nil {
		t.Fatal(err)
	}
	if len(els) != 2 || els[0].Subject != `/C=US/ST=CA/L=San Francisco/OU=Lyft/CN="Test, Client"` || !slices.Equal(els[0].DNS, []string{"x.test", "y.test"}) || els[1].URI[0] != "spiffe://e/f" {
		t.Errorf("ParseXFCC = %+v", els)
	}
	for _, bad := range []string{"", "=", "a", "a=b,", `a="b`, "a=b;;c=d", ",a=b"} {
		if _, err := ParseXFCC(bad); err == nil {
			t.Errorf("ParseXFCC(%q) succeeded, want error", bad)
		}
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a, err := New(Config{}, nil, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(Config{}, nil, reg, nil) // second instance shares the collectors
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a.Authenticate(context.Background(), Request{Authorization: "Basic x"})
	b.Authenticate(context.Background(), Request{Authorization: "Basic x"})
	a.Authenticate(context.Background(), Request{})
	if got := counterValue(a.m.auths.WithLabelValues("anonymous", ReasonUnsupportedScheme)); got != 2 {
		t.Errorf("unsupported_scheme count = %v, want 2", got)
	}
	if got := counterValue(a.m.auths.WithLabelValues("anonymous", "ok")); got != 1 {
		t.Errorf("anonymous ok count = %v, want 1", got)
	}
}

func newRedis(t testing.TB) (*redisserver.Server, redis.UniversalClient) {
	t.Helper()
	srv := redisserver.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	return srv, rdb
}

func TestRedisRevocationReachesOtherReplica(t *testing.T) {
	t.Parallel()
	_, rdb := newRedis(t)
	ctx := context.Background()
	store := NewRedisKeyStore(rdb, "bulwark:")
	key, _ := NewAPIKey(nil, "shared")
	if err := store.Create(ctx, KeyRecord{ID: "shared", Roles: []string{"user"}, Hash: HashAPIKey([]byte(testPepper), key)}); err != nil {
		t.Fatal(err)
	}
	if err := store.Create(ctx, KeyRecord{ID: "shared", Hash: HashAPIKey([]byte(testPepper), key)}); err == nil {
		t.Error("second Create with the same id succeeded")
	}
	// Two replicas; the second does not even watch the change channel, so
	// the TTL alone must bound the delay.
	r1, err := New(Config{Pepper: testPepper}, rdb, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r1.Start(ctx)
	r2, err := New(Config{Pepper: testPepper}, rdb, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	for _, r := range []*Authenticator{r1, r2} {
		if p := r.Authenticate(ctx, Request{APIKey: key}); p.ID != "shared" || !slices.Equal(p.Roles, []string{"user"}) {
			t.Fatalf("before revoke: %+v", p)
		}
	}
	revokedAt := time.Now()
	if _, err := store.Revoke(ctx, "shared", revokedAt, nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Authenticator{r1, r2} {
		for r.Authenticate(ctx, Request{APIKey: key}).Error != ReasonRevoked {
			if time.Since(revokedAt) > time.Second {
				t.Fatalf("revocation not seen within 1s")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Logf("revocation seen by both replicas after %s", time.Since(revokedAt))
	recs, err := store.List(ctx)
	if err != nil || len(recs) != 1 || recs[0].RevokedAt.IsZero() {
		t.Errorf("List = %+v, %v", recs, err)
	}
	if _, err := store.Revoke(ctx, "nobody", time.Now(), nil); err == nil {
		t.Error("Revoke of an unknown id succeeded")
	}
}

func TestRedisOverridesFileAndFailsClosed(t *testing.T) {
	t.Parallel()
	srv, rdb := newRedis(t)
	ctx := context.Background()
	dir := t.TempDir()
	path, plain := writeKeys(t, dir, KeyRecord{ID: "f", Roles: []string{"file"}})
	a, err := New(Config{KeysFile: path, Pepper: testPepper, RedisCacheTTL: -1}, rdb, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if p := a.Authenticate(ctx, Request{APIKey: plain["f"]}); p.ID != "f" {
		t.Fatalf("file key: %+v", p)
	}
	// A revoked record in Redis wins over the file.
	store := NewRedisKeyStore(rdb, "bulwark:")
	if err := store.Create(ctx, KeyRecord{ID: "f", Hash: HashAPIKey([]byte(testPepper), plain["f"]), RevokedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if p := a.Authenticate(ctx, Request{APIKey: plain["f"]}); p.Error != ReasonRevoked {
		t.Errorf("after Redis revoke: %+v, want revoked", p)
	}
	// Redis down: fail closed rather than miss a revocation.
	srv.Stop()
	if p := a.Authenticate(ctx, Request{APIKey: plain["f"]}); p.Error != ReasonKeyStoreUnavailable {
		t.Errorf("Redis down: %+v, want key_store_unavailable", p)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
