package identity

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/bulwark-ai/bulwark/internal/filelock"
)

// ErrNoChange is what an UpdateKeysFile function returns to say that the
// file is fine as it is: nothing is written and UpdateKeysFile returns nil.
var ErrNoChange = errors.New("identity: keys file unchanged")

// UpdateKeysFile is the one way to change a keys file: it takes an exclusive
// OS lock on path+".lock" (flock, so it holds across processes: `bulwark keys`
// and every replica's AdminService), reads the file, lets fn change it, and
// writes it back atomically (temp file, fsync, rename, fsync of the
// directory) before the lock is released. Two writers can therefore never
// both start from the same old content, and a revocation one of them wrote
// is never undone by the other's write. fn returning ErrNoChange leaves the
// file alone; any other error is returned as is. ctx bounds the wait for the
// lock.
func UpdateKeysFile(ctx context.Context, path string, fn func(*KeysFile) error) error {
	unlock, err := lockKeysFile(ctx, path)
	if err != nil {
		return err
	}
	defer unlock()
	kf, err := ReadKeysFile(path)
	if err != nil {
		return err
	}
	switch err := fn(kf); {
	case errors.Is(err, ErrNoChange):
		return nil
	case err != nil:
		return err
	}
	return writeKeysFile(path, kf)
}

// RevokeInKeysFile marks key id revoked at the given time in the keys file
// at path, under UpdateKeysFile, unless it already is: the file's twin of
// RedisKeyStore.Revoke. match, when not nil, must accept the record, else
// the key is treated as absent. rec is a copy of the record as stored after
// the call (nil when absent), and changed says whether this call revoked it
// (and so rewrote the file).
func RevokeInKeysFile(ctx context.Context, path, id string, at time.Time, match func(KeyRecord) bool) (rec *KeyRecord, changed bool, err error) {
	err = UpdateKeysFile(ctx, path, func(kf *KeysFile) error {
		r := kf.Find(id)
		if r == nil || (match != nil && !match(*r)) {
			return ErrNoChange
		}
		changed = r.RevokedAt.IsZero()
		if changed {
			r.RevokedAt = at
		}
		c := *r
		rec = &c
		if !changed {
			return ErrNoChange
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return rec, changed, nil
}

// lockKeysFile takes the exclusive lock beside path, polling so that ctx
// can end the wait; the returned func releases it.
func lockKeysFile(ctx context.Context, path string) (func(), error) {
	name := path + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600) // #nosec G304 -- beside the operator's keys file
	if err != nil {
		return nil, fmt.Errorf("lock keys file: %w", err)
	}
	wait := time.Millisecond
	for {
		ok, err := filelock.TryLock(f)
		if err != nil {
			_ = f.Close() // the lock error is the one to report
			return nil, fmt.Errorf("lock keys file %s: %w", name, err)
		}
		if ok {
			return func() { _ = f.Close() }, nil // closing the descriptor releases the lock
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			_ = f.Close()
			return nil, fmt.Errorf("lock keys file %s: %w", name, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 4*time.Millisecond)
	}
}

// syncDir makes a rename in dir durable. File systems that cannot sync a
// directory (EINVAL) have nothing to make durable that way.
func syncDir(dir string) error {
	d, err := os.Open(dir) // #nosec G304 -- the keys file's own directory
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}
