package policy

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch reloads the policies whenever a file under Config.Dir (or the bundle
// file) changes, until ctx is done. Bursts of events (an editor's save, a
// ConfigMap's symlink swap) are coalesced over debounce. With an OPA
// bundle source it compiles every bundle the plugin manager activates. A reload that fails
// is logged and counted by Reload; the last good policy stays in force. With
// the embedded policies there is nothing to watch and Watch just waits.
func (e *Engine) Watch(ctx context.Context, debounce time.Duration) error {
	if e.cfg.OPA.ServesPolicy() {
		e.watchOPA(ctx)
		return nil
	}
	target := e.cfg.Dir
	if e.cfg.Bundle != "" {
		target = filepath.Dir(e.cfg.Bundle)
	}
	if target == "" {
		<-ctx.Done()
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("policy watch: %w", err)
	}
	defer w.Close()
	add := func() {
		_ = filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = w.Add(p)
			}
			return nil
		})
	}
	add()
	if debounce <= 0 {
		debounce = 100 * time.Millisecond
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Create) {
				if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
					_ = w.Add(ev.Name)
				}
			}
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			e.logger.Warn("policy watch error", "error", err)
		case <-timer.C:
			add()             // directories may have been replaced (ConfigMap swaps)
			_ = e.Reload(ctx) // failures are logged, counted and kept in Status
		}
	}
}
