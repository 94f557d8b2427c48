package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/test/redisserver"
)

const keysTestPepper = "cli-test-pepper-0123456789"

func keysRun(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = runKeys(context.Background(), args, strings.NewReader(stdin), &o, &e)
	return o.String(), e.String(), err
}

func keysPepperFile(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "pepper")
	if err := os.WriteFile(p, []byte(keysTestPepper+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKeysCreateRevokeList(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "keys.yaml")
	pepper := keysPepperFile(t, dir)

	out, _, err := keysRun(t, "", "create", "--keys-file", keysFile, "--pepper-file", pepper, "--id", "ci", "--roles", "user, admin,user", "--tenant", "acme", "--principal", "ci-bot", "--expires", "90d")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	key := strings.TrimSpace(out)
	if id, _, ok := identity.ParseAPIKey(key); !ok || id != "ci" {
		t.Fatalf("create printed %q, want a bwk_ci_ key", out)
	}
	raw, _ := os.ReadFile(keysFile)
	_, secret, _ := identity.ParseAPIKey(key)
	if strings.Contains(string(raw), secret) {
		t.Fatal("keys file contains the secret")
	}
	if st, _ := os.Stat(keysFile); st.Mode().Perm() != 0o600 {
		t.Errorf("keys file mode = %v, want 0600", st.Mode().Perm())
	}

	// The server side accepts the key with its roles.
	a, err := identity.New(identity.Config{KeysFile: keysFile, PepperFile: pepper}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	p := a.Authenticate(context.Background(), identity.Request{Authorization: "Bearer " + key})
	if p.ID != "ci-bot" || !slices.Equal(p.Roles, []string{"user", "admin"}) || p.Tenant != "acme" {
		t.Fatalf("Authenticate = %+v", p)
	}

	if _, _, err := keysRun(t, "", "create", "--keys-file", keysFile, "--pepper-file", pepper, "--id", "ci", "--roles", "user"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("duplicate create: %v, want already exists", err)
	}
	// Pepper from stdin.
	if _, _, err := keysRun(t, keysTestPepper+"\n", "create", "--keys-file", keysFile, "--pepper-file", "-", "--id", "other", "--roles", "user"); err != nil {
		t.Fatalf("create with stdin pepper: %v", err)
	}

	out, _, err = keysRun(t, "", "list", "--keys-file", keysFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "ci-bot") || !strings.Contains(out, "active") || strings.Contains(out, "hmac-sha256") || strings.Contains(out, secret) {
		t.Errorf("list output:\n%s", out)
	}

	if out, _, err := keysRun(t, "", "revoke", "--keys-file", keysFile, "--id", "ci"); err != nil || !strings.Contains(out, "revoked ci") {
		t.Fatalf("revoke: %q, %v", out, err)
	}
	if err := a.ReloadKeys(); err != nil {
		t.Fatal(err)
	}
	if p := a.Authenticate(context.Background(), identity.Request{APIKey: key}); p.Error != identity.ReasonRevoked {
		t.Errorf("after revoke: %+v, want revoked", p)
	}
	out, _, err = keysRun(t, "", "list", "--keys-file", keysFile, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var statuses []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var l struct{ ID, Status, Hash string }
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("list --json line %q: %v", line, err)
		}
		if l.Hash != "" {
			t.Error("list --json printed a hash")
		}
		statuses = append(statuses, l.ID+"="+l.Status)
	}
	if !slices.Equal(statuses, []string{"ci=revoked", "other=active"}) {
		t.Errorf("statuses = %v", statuses)
	}
	if _, _, err := keysRun(t, "", "revoke", "--keys-file", keysFile, "--id", "nobody"); err == nil {
		t.Error("revoke of unknown id succeeded")
	}
}

func TestKeysErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kf := filepath.Join(dir, "keys.yaml")
	pepper := keysPepperFile(t, dir)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abc"), 0o600)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "no command", args: nil, wantErr: "missing command"},
		{name: "unknown command", args: []string{"rotate"}, wantErr: "unknown command"},
		{name: "no store", args: []string{"list"}, wantErr: "--keys-file"},
		{name: "no id", args: []string{"create", "--keys-file", kf, "--pepper-file", pepper, "--roles", "u"}, wantErr: "--id"},
		{name: "bad id", args: []string{"create", "--keys-file", kf, "--pepper-file", pepper, "--id", "a_b", "--roles", "u"}, wantErr: "--id"},
		{name: "no roles", args: []string{"create", "--keys-file", kf, "--pepper-file", pepper, "--id", "a"}, wantErr: "--roles"},
		{name: "bad expires", args: []string{"create", "--keys-file", kf, "--pepper-file", pepper, "--id", "a", "--roles", "u", "--expires", "soon"}, wantErr: "--expires"},
		{name: "past expires", args: []string{"create", "--keys-file", kf, "--pepper-file", pepper, "--id", "a", "--roles", "u", "--expires", "2001-01-01T00:00:00Z"}, wantErr: "future"},
		{name: "short pepper", args: []string{"create", "--keys-file", kf, "--pepper-file", short, "--id", "a", "--roles", "u"}, wantErr: "pepper"},
		{name: "missing pepper file", args: []string{"create", "--keys-file", kf, "--pepper-file", filepath.Join(dir, "nope"), "--id", "a", "--roles", "u"}, wantErr: "pepper"},
		{name: "unknown flag", args: []string{"list", "--keys-file", kf, "--secret"}, wantErr: "flag provided but not defined"},
		{name: "stray argument", args: []string{"list", "--keys-file", kf, "extra"}, wantErr: "unexpected argument"},
		{name: "bad redis url", args: []string{"list", "--redis-url", "http://x"}, wantErr: "--redis-url"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := keysRun(t, "", tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("runKeys(%q) = %v, want error containing %q", tc.args, err, tc.wantErr)
			}
		})
	}
	if _, err := os.Stat(kf); err == nil {
		t.Error("failed commands wrote a keys file")
	}
	if _, _, err := keysRun(t, "", "--help"); err != nil {
		t.Errorf("--help: %v", err)
	}
}

func TestKeysParseExpires(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"1h":                   now.Add(time.Hour),
		"30d":                  now.AddDate(0, 0, 30),
		"2031-06-01T00:00:00Z": time.Date(2031, 6, 1, 0, 0, 0, 0, time.UTC),
	} {
		got, err := keysParseExpires(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("keysParseExpires(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "d", "-1h", "1.5d", "x1d", "tomorrow"} {
		if _, err := keysParseExpires(bad, now); err == nil {
			t.Errorf("keysParseExpires(%q) succeeded", bad)
		}
	}
}

func TestKeysRedis(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	url := "redis://" + srv.Addr
	dir := t.TempDir()
	pepper := keysPepperFile(t, dir)
	out, _, err := keysRun(t, "", "create", "--redis-url", url, "--pepper-file", pepper, "--id", "r1", "--roles", "user")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	key := strings.TrimSpace(out)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	a, err := identity.New(identity.Config{PepperFile: pepper}, rdb, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	if p := a.Authenticate(ctx, identity.Request{APIKey: key}); p.ID != "r1" {
		t.Fatalf("before revoke: %+v", p)
	}
	if _, _, err := keysRun(t, "", "revoke", "--redis-url", url, "--id", "r1"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for a.Authenticate(ctx, identity.Request{APIKey: key}).Error != identity.ReasonRevoked {
		if time.Since(start) > time.Second {
			t.Fatal("revocation not seen within 1s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	out, _, err = keysRun(t, "", "list", "--redis-url", url)
	if err != nil || !strings.Contains(out, "revoked") || !strings.Contains(out, "redis") {
		t.Errorf("list: %q, %v", out, err)
	}
}
