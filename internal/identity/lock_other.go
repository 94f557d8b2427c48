//go:build !unix

package identity

import (
	"errors"
	"os"
)

// tryLock is unavailable without flock: keys files are changed only where
// writers can exclude each other.
func tryLock(*os.File) (bool, error) {
	return false, errors.New("file locking is not supported on this system")
}
