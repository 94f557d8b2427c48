// Package diskfull gives tests a real full disk: a small tmpfs they can fill,
// so write(2) returns ENOSPC after a partial write, as on a production
// volume. It needs root or CAP_SYS_ADMIN; without it the test is skipped.
package diskfull

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of size (e.g. "1m") on a fresh directory and returns
// it; it is unmounted when the test ends.
func Mount(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("filling a disk for real needs a small tmpfs (root or CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// Fill writes path until the file system has no room left.
func Fill(t testing.TB, path string) {
	t.Helper()
	f, err := os.Create(path) // #nosec G304 -- a test's own file
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			return
		}
	}
}
