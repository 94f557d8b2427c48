package identity

import (
	"context"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// FuzzAuthenticate feeds arbitrary header values through every credential
// path: no panic, and nothing but a verified credential yields a principal.
func FuzzAuthenticate(f *testing.F) {
	k := keysOnce()
	path, plain := writeKeys(f, f.TempDir(), KeyRecord{ID: "a", Roles: []string{"user"}})
	a, _ := jwtAuth(f, Config{KeysFile: path, Pepper: testPepper, TrustXFCC: true, JWTCacheSize: -1, JWKSMinRefreshInterval: time.Hour, JWKSRefreshInterval: time.Hour})
	good := signJWT(f, jose.ES256, k.ec, "ec", stdClaims(t0))
	for _, s := range []string{
		"", "Bearer", "Bearer ", "Basic x", "Bearer " + plain["a"], "Bearer " + good,
		"Bearer " + good[:len(good)-3], "Bearer a.b.c", "Bearer bwk_a_" + strings.Repeat("x", 43),
		"Bearer " + unsignedJWT(map[string]any{"alg": "none"}, stdClaims(t0), ""),
		"Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYTEifQ.e30.", "\x00\xff",
	} {
		f.Add(s, "", "")
	}
	f.Add("", plain["a"], "")
	f.Add("", "", `By=x;URI=spiffe://a/b;Subject="CN=\"q\""`)
	f.Fuzz(func(t *testing.T, authz, apiKey, xfcc string) {
		p := a.Authenticate(context.Background(), Request{Authorization: authz, APIKey: apiKey, XFCC: xfcc})
		switch {
		case p.Kind == KindAnonymous:
			if p.ID != "" || p.Roles != nil {
				t.Fatalf("anonymous principal with identity: %+v", p)
			}
		case p.Error != "":
			t.Fatalf("authenticated principal with error: %+v", p)
		case p.Kind == KindAPIKey && !strings.Contains(authz+apiKey, plain["a"]):
			t.Fatalf("API key principal without the key: %+v", p)
		case p.Kind == KindJWT && !strings.Contains(authz, good):
			t.Fatalf("JWT principal without the signed token: %+v", p)
		}
	})
}

// FuzzParseKeysFile checks that any keys file either fails cleanly or yields
// records that validate and can be loaded.
func FuzzParseKeysFile(f *testing.F) {
	good := HashAPIKey([]byte(testPepper), "bwk_a_0123456789abcdefghij")
	f.Add([]byte("keys:\n- id: a\n  roles: [user]\n  hash: " + good + "\n"))
	f.Add([]byte(`{"keys":[{"id":"a","hash":"` + good + `","expires_at":"2031-01-01T00:00:00Z","disabled":true}]}`))
	f.Add([]byte("keys: [ {id: broken"))
	f.Add([]byte("keys:\n- &a {id: x}\n- *a\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := ParseKeysFile(data)
		if err != nil {
			return
		}
		if _, err := newKeySet(kf); err != nil {
			t.Fatalf("parsed file does not load: %v", err)
		}
	})
}

// FuzzParseAPIKey checks that accepted keys round-trip to their parts.
func FuzzParseAPIKey(f *testing.F) {
	f.Add("bwk_a_0123456789abcdefghij")
	f.Add("bwk__x")
	f.Add("bwk_a-b_c_d_eeeeeeeeeeeeeeeeeeee")
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, ok := ParseAPIKey(s)
		if ok && APIKeyPrefix+id+"_"+secret != s {
			t.Fatalf("ParseAPIKey(%q) = %q, %q", s, id, secret)
		}
	})
}

// FuzzParseXFCC checks the XFCC parser never panics and that identities it
// returns are non-empty.
func FuzzParseXFCC(f *testing.F) {
	f.Add(`By=spiffe://a/b;Hash=468ed3;Subject="/C=US/CN=\"Test, Client\"";URI=spiffe://c/d;DNS=x.test, By=z;URI=spiffe://e/f`)
	f.Add(`a="b`)
	f.Add(`a=b;;c=d`)
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := ParseXFCC(s); err != nil {
			return
		}
		if id, ok := xfccIdentity(s); ok && id == "" {
			t.Fatal("empty identity")
		}
	})
}

// FuzzParseJWKS checks that whatever an issuer serves, only asymmetric
// public keys come out.
func FuzzParseJWKS(f *testing.F) {
	k := keysOnce()
	f.Add(jwksJSON(f, map[string]any{"a": &k.rsa1.PublicKey, "b": &k.ec.PublicKey}))
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))
	f.Add([]byte(`<html>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := parseJWKS(data)
		if err != nil {
			return
		}
		for _, jk := range keys {
			if !isAsymmetricPublic(jk.Key) || !jk.IsPublic() {
				t.Fatalf("unsafe key %T", jk.Key)
			}
		}
	})
}
