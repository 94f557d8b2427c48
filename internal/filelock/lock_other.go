//go:build !unix

package filelock

import (
	"errors"
	"os"
)

// TryLock is unavailable without flock: the files it guards are written
// only where writers can exclude each other.
func TryLock(*os.File) (bool, error) {
	return false, errors.New("file locking is not supported on this system")
}
