package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const testPepper = "test-pepper-0123456789abcdef"

// t0 is the fake "now" of most tests.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func setClock(a *Authenticator, c Clock) {
	a.clock = c
	if a.jwt != nil && a.jwt.jwks != nil {
		a.jwt.jwks.clock = c
	}
}

// testKeys are generated once: RSA generation is slow.
type testKeys struct {
	rsa1, rsa2 *rsa.PrivateKey
	ec         *ecdsa.PrivateKey
	ed         ed25519.PrivateKey
}

var keysOnce = sync.OnceValue(func() testKeys {
	r1, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	r2, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return testKeys{rsa1: r1, rsa2: r2, ec: ec, ed: ed}
})

// jwksJSON returns a JWKS document with the public halves of keys by kid.
func jwksJSON(t testing.TB, keys map[string]any) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for kid, k := range keys {
		jk := jose.JSONWebKey{Key: k, KeyID: kid, Use: "sig"}
		set.Keys = append(set.Keys, jk.Public())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signJWT(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	sk := jose.SigningKey{Algorithm: alg, Key: key}
	if kid != "" {
		sk.Key = jose.JSONWebKey{Key: key, KeyID: kid}
	}
	s, err := jose.NewSigner(sk, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// unsignedJWT builds a token with an arbitrary header and no signature check
// possible (alg none and friends).
func unsignedJWT(header, claims map[string]any, sig string) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "." + sig
}

func stdClaims(now time.Time) map[string]any {
	return map[string]any{
		"sub":    "alice",
		"iss":    "https://issuer.test",
		"aud":    "bulwark",
		"iat":    now.Unix(),
		"exp":    now.Add(time.Hour).Unix(),
		"roles":  []string{"user"},
		"tenant": "acme",
	}
}

func with(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
			continue
		}
		out[k] = kv[i+1]
	}
	return out
}

// jwksServer is an httptest JWKS endpoint whose document, status and delay
// can change, and which counts requests.
type jwksServer struct {
	*httptest.Server
	mu    sync.Mutex
	body  []byte
	code  int
	delay time.Duration
	cache string // Cache-Control of the answers; "" for none
	hits  atomic.Int64
}

func newJWKSServer(t testing.TB, body []byte) *jwksServer {
	s := &jwksServer{body: body, code: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, code, delay, cache := s.body, s.code, s.delay, s.cache
		s.mu.Unlock()
		if cache != "" {
			w.Header().Set("Cache-Control", cache)
		}
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) setCacheControl(v string) {
	s.mu.Lock()
	s.cache = v
	s.mu.Unlock()
}

func (s *jwksServer) set(body []byte, code int, delay time.Duration) {
	s.mu.Lock()
	s.body, s.code, s.delay = body, code, delay
	s.mu.Unlock()
}

// writeKeys writes a keys file with one key per (id, roles) and returns the
// path and the plaintext keys by id.
func writeKeys(t testing.TB, dir string, recs ...KeyRecord) (string, map[string]string) {
	t.Helper()
	path := filepath.Join(dir, "keys.yaml")
	plain := map[string]string{}
	kf := &KeysFile{}
	for _, r := range recs {
		k, err := NewAPIKey(nil, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		plain[r.ID] = k
		r.Hash = HashAPIKey([]byte(testPepper), k)
		kf.Keys = append(kf.Keys, r)
	}
	if err := writeKeysFile(path, kf); err != nil {
		t.Fatal(err)
	}
	return path, plain
}

func newAuth(t testing.TB, cfg Config) *Authenticator {
	t.Helper()
	a, err := New(cfg, nil, nil, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(a.Close)
	return a
}

func mustWrite(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
