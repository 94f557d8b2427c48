package filelock

import (
	"os"
	"path/filepath"
	"testing"
)

// TestTryLock: a second descriptor on a locked file is refused without
// waiting, and gets the lock once the first is closed.
func TestTryLock(t *testing.T) {
	t.Parallel()
	name := filepath.Join(t.TempDir(), "f.lock")
	open := func() *os.File {
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		return f
	}
	first, second := open(), open()
	for _, step := range []struct {
		name string
		f    *os.File
		want bool
	}{
		{"first", first, true},
		{"second while the first holds it", second, false},
	} {
		if got, err := TryLock(step.f); err != nil || got != step.want {
			t.Fatalf("%s: TryLock = %v, %v; want %v", step.name, got, err, step.want)
		}
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := TryLock(second); err != nil || !got {
		t.Fatalf("after the first closed: TryLock = %v, %v; want true", got, err)
	}
}
