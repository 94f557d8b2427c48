package identity

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestUpdateKeysFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keys.yaml")
	rec := func(id string) KeyRecord {
		return KeyRecord{ID: id, Roles: []string{"user"}, Hash: HashAPIKey([]byte(testPepper), "k")}
	}
	ctx := context.Background()
	t.Run("writers in parallel lose nothing", func(t *testing.T) {
		// Each call opens its own descriptor, so flock excludes them as it
		// excludes processes (the cross-process race is in cmd/bulwark).
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				err := UpdateKeysFile(ctx, path, func(kf *KeysFile) error {
					kf.Keys = append(kf.Keys, rec(fmt.Sprintf("k%d", i)))
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		kf, err := ReadKeysFile(path)
		if err != nil || len(kf.Keys) != 40 {
			t.Fatalf("%d keys, %v; want 40", len(kf.Keys), err)
		}
	})
	t.Run("no change writes nothing", func(t *testing.T) {
		before, _ := os.Stat(path)
		time.Sleep(10 * time.Millisecond)
		if err := UpdateKeysFile(ctx, path, func(*KeysFile) error { return ErrNoChange }); err != nil {
			t.Fatal(err)
		}
		if after, _ := os.Stat(path); !after.ModTime().Equal(before.ModTime()) {
			t.Error("ErrNoChange rewrote the file")
		}
	})
	t.Run("an error is returned and writes nothing", func(t *testing.T) {
		boom := errors.New("boom")
		err := UpdateKeysFile(ctx, path, func(kf *KeysFile) error { kf.Keys = nil; return boom })
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want boom", err)
		}
		if kf, _ := ReadKeysFile(path); len(kf.Keys) != 40 {
			t.Fatal("a failed update changed the file")
		}
	})
	t.Run("waiting for the lock honours ctx", func(t *testing.T) {
		unlock, err := lockKeysFile(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		err = UpdateKeysFile(short, path, func(*KeysFile) error { return nil })
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the deadline while another writer holds the lock", err)
		}
	})
}

// TestRedisKeyUpdatesAreAtomic races revocations against another
// read-modify-write of the same records: with compare-and-swap neither
// writer's change is lost, and an acknowledged revocation stays.
func TestRedisKeyUpdatesAreAtomic(t *testing.T) {
	t.Parallel()
	_, rdb := newRedis(t)
	ctx := context.Background()
	store := NewRedisKeyStore(rdb, "race:")
	const n = 300
	for i := range n {
		if err := store.Create(ctx, KeyRecord{ID: fmt.Sprintf("k%d", i), Roles: []string{"user"}, Hash: HashAPIKey([]byte(testPepper), "k")}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for _, w := range []func(id string) error{
		func(id string) error { _, err := store.Revoke(ctx, id, time.Now(), nil); return err },
		func(id string) error {
			_, err := store.update(ctx, id, func(r *KeyRecord) error { r.Disabled = true; return nil })
			return err
		},
	} {
		for half := range 2 { // two goroutines per writer, working from both ends
			wg.Go(func() {
				for i := range n {
					if half == 1 {
						i = n - 1 - i
					}
					if err := w(fmt.Sprintf("k%d", i)); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	recs, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.RevokedAt.IsZero() || !r.Disabled {
			t.Errorf("%s: revoked_at %v, disabled %v: a concurrent write was lost", r.ID, r.RevokedAt, r.Disabled)
		}
	}
	if _, err := store.Revoke(ctx, "k0", time.Now(), func(r KeyRecord) bool { return r.Tenant == "other" }); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Revoke outside the match: %v, want ErrKeyNotFound", err)
	}
}

func TestRevokeInKeysFile(t *testing.T) {
	t.Parallel()
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	earlier := at.Add(-time.Hour)
	path, _ := writeKeys(t, t.TempDir(),
		KeyRecord{ID: "live", Roles: []string{"user"}, Tenant: "acme"},
		KeyRecord{ID: "gone", Roles: []string{"user"}, Tenant: "acme", RevokedAt: earlier},
		KeyRecord{ID: "other", Roles: []string{"user"}, Tenant: "beta"},
	)
	acme := func(r KeyRecord) bool { return r.Tenant == "acme" }
	tests := []struct {
		name        string
		id          string
		match       func(KeyRecord) bool
		wantFound   bool
		wantChanged bool
		wantRevoked time.Time // as stored after the call
	}{
		{"absent", "nobody", nil, false, false, time.Time{}},
		{"outside match", "other", acme, false, false, time.Time{}},
		{"active", "live", acme, true, true, at},
		{"already revoked keeps its time", "gone", nil, true, false, earlier},
	}
	for _, tt := range tests {
		rec, changed, err := RevokeInKeysFile(context.Background(), path, tt.id, at, tt.match)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if (rec != nil) != tt.wantFound || changed != tt.wantChanged {
			t.Errorf("%s: found %v changed %v, want %v and %v", tt.name, rec != nil, changed, tt.wantFound, tt.wantChanged)
		}
		kf, err := ReadKeysFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if r := kf.Find(tt.id); r != nil && !r.RevokedAt.Equal(tt.wantRevoked) {
			t.Errorf("%s: stored revoked_at %v, want %v", tt.name, r.RevokedAt, tt.wantRevoked)
		}
		if rec != nil && !rec.RevokedAt.Equal(tt.wantRevoked) {
			t.Errorf("%s: returned revoked_at %v, want %v", tt.name, rec.RevokedAt, tt.wantRevoked)
		}
	}
}
