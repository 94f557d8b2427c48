package identity

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// changeLog collects KeyChanges from the reload or watch goroutine.
type changeLog struct {
	mu  sync.Mutex
	got []KeyChange
}

func (c *changeLog) add(k KeyChange) {
	c.mu.Lock()
	c.got = append(c.got, k)
	c.mu.Unlock()
}

func (c *changeLog) all() []KeyChange {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

func summary(cs []KeyChange) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.Action+":"+c.ID+":"+c.Status+":"+strings.Join(c.Fields, "+"))
	}
	return strings.Join(s, " ")
}

func TestDiffKeys(t *testing.T) {
	t.Parallel()
	ks := func(recs ...KeyRecord) keySet {
		kf := &KeysFile{}
		for _, r := range recs {
			r.Hash = HashAPIKey([]byte(testPepper), "bwk_"+r.ID+"_0123456789abcdefghij")
			kf.Keys = append(kf.Keys, r)
		}
		s, err := newKeySet(kf)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := ks(KeyRecord{ID: "a", Roles: []string{"user"}}, KeyRecord{ID: "b", Roles: []string{"user"}}, KeyRecord{ID: "c"})
	tests := []struct {
		name     string
		old, cur keySet
		want     string
	}{
		{"first load reports nothing", nil, base, ""},
		{"unchanged", base, base, ""},
		{"created", base, ks(KeyRecord{ID: "a", Roles: []string{"user"}}, KeyRecord{ID: "b", Roles: []string{"user"}}, KeyRecord{ID: "c"}, KeyRecord{ID: "d", Tenant: "acme"}),
			"created:d:active:"},
		{"revoked and removed", base, ks(KeyRecord{ID: "a", Roles: []string{"user"}, RevokedAt: t0}, KeyRecord{ID: "b", Roles: []string{"user"}}),
			"revoked:a:revoked: removed:c::"},
		{"edited", base, ks(KeyRecord{ID: "a", Roles: []string{"admin"}, Tenant: "x"}, KeyRecord{ID: "b", Roles: []string{"user"}, Disabled: true}, KeyRecord{ID: "c"}),
			"changed:a:active:roles+tenant changed:b:disabled:disabled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := summary(diffKeys(tc.old, tc.cur, t0.Add(-time.Hour))); got != tc.want {
				t.Errorf("diffKeys = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestKeysFileChangesAreReported: a key created and then revoked in the
// keys file of a running Authenticator (as `bulwark keys` does) reaches
// OnKeyChange, with no secret or hash in it.
func TestKeysFileChangesAreReported(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path, _ := writeKeys(t, dir, KeyRecord{ID: "one", Roles: []string{"user"}})
	var log changeLog
	a := newAuth(t, Config{KeysFile: path, PepperFile: writePepper(t, dir), OnKeyChange: log.add})
	a.Start(context.Background())

	kf, err := ReadKeysFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := NewAPIKey(nil, "two")
	kf.Keys = append(kf.Keys, KeyRecord{ID: "two", Roles: []string{"admin"}, Tenant: "acme", Hash: HashAPIKey([]byte(testPepper), key)})
	if err := writeKeysFile(path, kf); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return len(log.all()) == 1 })
	kf.Find("two").RevokedAt = time.Now().UTC()
	if err := writeKeysFile(path, kf); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return len(log.all()) == 2 })
	got := log.all()
	if s := summary(got); s != "created:two:active: revoked:two:revoked:" {
		t.Fatalf("changes = %q", s)
	}
	if c := got[0]; c.Source != SourceKeysFile || c.Tenant != "acme" || c.Principal != "two" || !slices.Equal(c.Roles, []string{"admin"}) {
		t.Errorf("created = %+v", c)
	}
	for _, c := range got {
		if s := strings.Join([]string{c.ID, c.Principal, c.Tenant, c.Status, strings.Join(c.Roles, ",")}, " "); strings.Contains(s, key) || strings.Contains(s, "hmac") {
			t.Errorf("change carries a secret: %+v", c)
		}
	}
}

// TestRedisChangesAreReported: a key created and revoked in Redis by another
// process (`bulwark keys --redis-url`) is reported by a serving replica.
func TestRedisChangesAreReported(t *testing.T) {
	t.Parallel()
	_, rdb := newRedis(t)
	ctx := context.Background()
	var log changeLog
	a, err := New(Config{Pepper: testPepper, OnKeyChange: log.add}, rdb, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.Start(ctx)
	store := NewRedisKeyStore(rdb, "bulwark:")
	key, _ := NewAPIKey(nil, "rk")
	// The subscription starts asynchronously: retry the create's
	// announcement until the watcher has seen one.
	if err := store.Create(ctx, KeyRecord{ID: "rk", Roles: []string{"user"}, Tenant: "t1", Hash: HashAPIKey([]byte(testPepper), key)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool {
		if len(log.all()) > 0 {
			return true
		}
		_ = store.announce(ctx, "rk")
		time.Sleep(50 * time.Millisecond)
		return false
	})
	if _, err := store.Revoke(ctx, "rk", time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(summary(log.all()), "revoked:rk") })
	got := log.all()
	if got[0].Action != KeyCreated || got[0].Source != SourceRedis || got[0].Tenant != "t1" {
		t.Errorf("first change = %+v, want created from redis", got[0])
	}
}
