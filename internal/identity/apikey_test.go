package identity

import (
	"context"
	"github.com/prometheus/client_golang/prometheus"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/test/fixture/fakeclock"
)

func TestAPIKeyAuthenticate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path, plain := writeKeys(t, dir,
		KeyRecord{ID: "ci", Principal: "ci-bot", Roles: []string{"user"}, Tenant: "acme"},
		KeyRecord{ID: "plain", Roles: []string{"admin", "user"}},
		KeyRecord{ID: "gone", Roles: []string{"user"}, RevokedAt: t0.Add(-time.Hour)},
		KeyRecord{ID: "off", Roles: []string{"user"}, Disabled: true},
		KeyRecord{ID: "old", Roles: []string{"user"}, ExpiresAt: t0.Add(-time.Second)},
		KeyRecord{ID: "later", Roles: []string{"user"}, ExpiresAt: t0.Add(time.Hour)},
	)
	a := newAuth(t, Config{KeysFile: path, Pepper: testPepper})
	setClock(a, fakeclock.New(t0))
	_, ciSecret, _ := ParseAPIKey(plain["ci"])

	tests := []struct {
		name       string
		req        Request
		wantID     string
		wantKind   Kind
		wantRoles  []string
		wantTenant string
		wantErr    string
	}{
		{name: "bearer", req: Request{Authorization: "Bearer " + plain["ci"]}, wantID: "ci-bot", wantKind: KindAPIKey, wantRoles: []string{"user"}, wantTenant: "acme"},
		{name: "bearer lower-case scheme", req: Request{Authorization: "bearer " + plain["ci"]}, wantID: "ci-bot", wantKind: KindAPIKey, wantRoles: []string{"user"}, wantTenant: "acme"},
		{name: "x-api-key", req: Request{APIKey: plain["plain"]}, wantID: "plain", wantKind: KindAPIKey, wantRoles: []string{"admin", "user"}},
		{name: "x-api-key with spaces", req: Request{APIKey: " " + plain["plain"] + " "}, wantID: "plain", wantKind: KindAPIKey, wantRoles: []string{"admin", "user"}},
		{name: "not yet expired", req: Request{APIKey: plain["later"]}, wantID: "later", wantKind: KindAPIKey, wantRoles: []string{"user"}},
		// An unknown id and a wrong secret look the same to the caller.
		{name: "unknown id", req: Request{APIKey: "bwk_nobody_" + ciSecret}, wantKind: KindAnonymous, wantErr: ReasonInvalidKey},
		{name: "wrong secret", req: Request{APIKey: "bwk_ci_" + strings.Repeat("A", 43)}, wantKind: KindAnonymous, wantErr: ReasonInvalidKey},
		{name: "secret of another key", req: Request{APIKey: "bwk_plain_" + ciSecret}, wantKind: KindAnonymous, wantErr: ReasonInvalidKey},
		{name: "truncated secret", req: Request{APIKey: plain["ci"][:len(plain["ci"])-1]}, wantKind: KindAnonymous, wantErr: ReasonInvalidKey},
		{name: "revoked", req: Request{APIKey: plain["gone"]}, wantKind: KindAnonymous, wantErr: ReasonRevoked},
		{name: "disabled", req: Request{APIKey: plain["off"]}, wantKind: KindAnonymous, wantErr: ReasonDisabled},
		{name: "expired", req: Request{APIKey: plain["old"]}, wantKind: KindAnonymous, wantErr: ReasonExpired},
		{name: "no id", req: Request{APIKey: "bwk__" + ciSecret}, wantKind: KindAnonymous, wantErr: ReasonMalformed},
		{name: "short secret", req: Request{APIKey: "bwk_ci_abc"}, wantKind: KindAnonymous, wantErr: ReasonMalformed},
		{name: "prefix only", req: Request{Authorization: "Bearer bwk_"}, wantKind: KindAnonymous, wantErr: ReasonMalformed},
		{name: "not a key", req: Request{APIKey: "hello"}, wantKind: KindAnonymous, wantErr: ReasonMalformed},
		{name: "control char in secret", req: Request{APIKey: "bwk_ci_" + strings.Repeat("a", 20) + "\x00"}, wantKind: KindAnonymous, wantErr: ReasonMalformed},
		{name: "authorization wins over x-api-key", req: Request{Authorization: "Bearer bwk_ci_" + strings.Repeat("A", 43), APIKey: plain["plain"]}, wantKind: KindAnonymous, wantErr: ReasonInvalidKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := a.Authenticate(context.Background(), tc.req)
			if got.ID != tc.wantID || got.Kind != tc.wantKind || got.Error != tc.wantErr || got.Tenant != tc.wantTenant || !slices.Equal(got.Roles, tc.wantRoles) {
				t.Errorf("Authenticate() = %+v, want id=%q kind=%q roles=%v tenant=%q error=%q", got, tc.wantID, tc.wantKind, tc.wantRoles, tc.wantTenant, tc.wantErr)
			}
			if tc.wantErr == "" && got.Claims["key_id"] == nil {
				t.Errorf("Claims = %v, want key_id", got.Claims)
			}
			if tc.wantErr != "" && (got.ID != "" || got.Roles != nil || got.Claims != nil) {
				t.Errorf("rejected principal carries identity: %+v", got)
			}
		})
	}
}

func TestAPIKeyNotConfigured(t *testing.T) {
	t.Parallel()
	a := newAuth(t, Config{})
	k, _ := NewAPIKey(nil, "x")
	got := a.Authenticate(context.Background(), Request{APIKey: k})
	if got.Kind != KindAnonymous || got.Error != ReasonNotConfigured {
		t.Errorf("got %+v, want anonymous/not_configured", got)
	}
}

func TestNewAPIKeyShape(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		k, err := NewAPIKey(nil, "my-key")
		if err != nil {
			t.Fatal(err)
		}
		id, secret, ok := ParseAPIKey(k)
		if !ok || id != "my-key" || len(secret) != secretLen {
			t.Fatalf("ParseAPIKey(%q) = %q, %q, %v", k, id, secret, ok)
		}
		for _, c := range secret {
			if !strings.ContainsRune(base62, c) {
				t.Fatalf("secret %q has non-base62 %q", secret, c)
			}
		}
		if seen[k] {
			t.Fatal("duplicate key")
		}
		seen[k] = true
	}
	for _, bad := range []string{"", "a_b", "with space", strings.Repeat("x", 65), "ü"} {
		if _, err := NewAPIKey(nil, bad); err == nil {
			t.Errorf("NewAPIKey(%q) succeeded, want error", bad)
		}
	}
}

func TestParseKeysFile(t *testing.T) {
	t.Parallel()
	good := HashAPIKey([]byte(testPepper), "bwk_a_0123456789abcdefghij")
	tests := []struct {
		name    string
		data    string
		wantN   int
		wantErr string
	}{
		{name: "empty", data: "", wantN: 0},
		{name: "yaml", data: "keys:\n- id: a\n  roles: [user]\n  hash: " + good + "\n", wantN: 1},
		{name: "json", data: `{"keys":[{"id":"a","hash":"` + good + `","expires_at":"2031-01-01T00:00:00Z"}]}`, wantN: 1},
		{name: "unknown field", data: "keys:\n- id: a\n  role: admin\n  hash: " + good + "\n", wantErr: "unknown field"},
		{name: "duplicate id", data: `{"keys":[{"id":"a","hash":"` + good + `"},{"id":"a","hash":"` + good + `"}]}`, wantErr: "duplicate"},
		{name: "bad id", data: `{"keys":[{"id":"a_b","hash":"` + good + `"}]}`, wantErr: "id"},
		{name: "missing hash", data: `{"keys":[{"id":"a"}]}`, wantErr: "hash"},
		{name: "plaintext hash", data: `{"keys":[{"id":"a","hash":"bwk_a_secret"}]}`, wantErr: "hash"},
		{name: "short hash", data: `{"keys":[{"id":"a","hash":"hmac-sha256:abcd"}]}`, wantErr: "length"},
		{name: "empty role", data: `{"keys":[{"id":"a","roles":[""],"hash":"` + good + `"}]}`, wantErr: "role"},
		{name: "bad time", data: `{"keys":[{"id":"a","hash":"` + good + `","expires_at":"tomorrow"}]}`, wantErr: "parse"},
		{name: "garbage", data: "\x00\x01{{{", wantErr: "parse"},
		{name: "keys not a list", data: "keys: 3", wantErr: "parse"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kf, err := ParseKeysFile([]byte(tc.data))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseKeysFile() error = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKeysFile() error = %v", err)
			}
			if len(kf.Keys) != tc.wantN {
				t.Errorf("got %d keys, want %d", len(kf.Keys), tc.wantN)
			}
		})
	}
}

func TestKeysFileRoundTrip(t *testing.T) {
	t.Parallel()
	path, _ := writeKeys(t, t.TempDir(), KeyRecord{ID: "a", Roles: []string{"x"}, ExpiresAt: t0, CreatedAt: t0})
	kf, err := ReadKeysFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if r := kf.Find("a"); r == nil || !r.ExpiresAt.Equal(t0) || r.Status(t0) != ReasonExpired || r.Status(t0.Add(-1)) != "active" {
		t.Errorf("round trip = %+v", r)
	}
	if kf, err := ReadKeysFile(path + ".missing"); err != nil || len(kf.Keys) != 0 {
		t.Errorf("missing file = %v, %v; want empty set", kf, err)
	}
}

func TestKeysFileHotReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path, plain := writeKeys(t, dir, KeyRecord{ID: "one", Roles: []string{"user"}})
	a := newAuth(t, Config{KeysFile: path, PepperFile: writePepper(t, dir)})
	a.Start(context.Background())
	ctx := context.Background()
	if p := a.Authenticate(ctx, Request{APIKey: plain["one"]}); p.ID != "one" {
		t.Fatalf("before reload: %+v", p)
	}

	// A new file with a new key replaces the old one.
	_, plain2 := writeKeys(t, dir, KeyRecord{ID: "two", Roles: []string{"admin"}})
	waitFor(t, 5*time.Second, func() bool { return a.Authenticate(ctx, Request{APIKey: plain2["two"]}).ID == "two" })
	if p := a.Authenticate(ctx, Request{APIKey: plain["one"]}); p.Error != ReasonInvalidKey {
		t.Errorf("old key after reload: %+v, want invalid_key", p)
	}

	// A malformed file keeps the last good keys and reports not ready.
	mustWrite(t, path, []byte("keys: [ {id: broken"))
	waitFor(t, 5*time.Second, func() bool { return a.Ready() != nil })
	if p := a.Authenticate(ctx, Request{APIKey: plain2["two"]}); p.ID != "two" {
		t.Errorf("after malformed reload: %+v, want last good keys", p)
	}
	// Fixing the file recovers.
	_, plain3 := writeKeys(t, dir, KeyRecord{ID: "three"})
	waitFor(t, 5*time.Second, func() bool { return a.Ready() == nil })
	if p := a.Authenticate(ctx, Request{APIKey: plain3["three"]}); p.ID != "three" {
		t.Errorf("after fix: %+v", p)
	}
}

func TestNewRejectsMalformedKeysFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := dir + "/keys.yaml"
	mustWrite(t, path, []byte("keys: nope"))
	if _, err := New(Config{KeysFile: path, Pepper: testPepper}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "KeysFile") {
		t.Errorf("New() error = %v, want KeysFile error", err)
	}
}

func writePepper(t testing.TB, dir string) string {
	p := dir + "/pepper"
	mustWrite(t, p, []byte(testPepper+"\n"))
	return p
}

func waitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAPIKeyReasonHidesWhichIdsExist: the caller gets one reason for an
// unknown id and a wrong secret; only the server's metrics tell them apart.
func TestAPIKeyReasonHidesWhichIdsExist(t *testing.T) {
	t.Parallel()
	path, plain := writeKeys(t, t.TempDir(), KeyRecord{ID: "ci", Roles: []string{"user"}})
	reg := prometheus.NewRegistry()
	a, err := New(Config{KeysFile: path, Pepper: testPepper}, nil, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	_, secret, _ := ParseAPIKey(plain["ci"])
	unknown := a.Authenticate(context.Background(), Request{APIKey: "bwk_nobody_" + secret})
	wrong := a.Authenticate(context.Background(), Request{APIKey: "bwk_ci_" + strings.Repeat("A", len(secret))})
	if unknown.Error != wrong.Error || unknown.Error != ReasonInvalidKey {
		t.Fatalf("unknown id: %q, wrong secret: %q; want %q for both", unknown.Error, wrong.Error, ReasonInvalidKey)
	}
	for _, r := range []string{ReasonUnknownKey, ReasonBadSecret} {
		if got := counterValue(a.m.auths.WithLabelValues(string(KindAPIKey), r)); got != 1 {
			t.Errorf("metric result=%s = %v, want 1", r, got)
		}
	}
}
