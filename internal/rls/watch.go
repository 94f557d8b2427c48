package rls

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch reloads the configuration when its file or directory changes
// (debounced), until ctx ends. A file's directory is watched, not the file:
// editors and Kubernetes ConfigMaps replace files rather than write them.
func (s *Server) Watch(ctx context.Context, debounce time.Duration) error {
	target := s.opts.Path
	if st, err := os.Stat(target); err == nil && !st.IsDir() {
		target = filepath.Dir(target)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("rls watch: %w", err)
	}
	defer w.Close()
	if err := w.Add(target); err != nil {
		return fmt.Errorf("rls watch %s: %w", target, err)
	}
	if debounce <= 0 {
		debounce = 100 * time.Millisecond
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			s.logger.Warn("rls watch error", "error", err)
		case <-timer.C:
			_ = w.Add(target) // the directory may have been replaced
			_ = s.Reload()    // failures are logged, counted and kept in Status
		}
	}
}
