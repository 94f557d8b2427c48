package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/bulwark-ai/bulwark/internal/audit"
)

// runAuditTimeline rebuilds one principal's timeline from the audit trail
// for a post-incident review: its decisions and denials, its key changes,
// and the policy and configuration changes in the same time range.
func runAuditTimeline(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bulwark audit timeline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	principal := fs.String("principal", "", "the principal's id (an API key's id, a JWT subject)")
	from := fs.String("from", "", "start of the range, RFC 3339 (default: the log's start)")
	to := fs.String("to", "", "end of the range, RFC 3339, exclusive (default: the log's end)")
	asJSON := fs.Bool("json", false, "write the records as JSON lines instead of text")
	kf := addKeysetFlags(fs)
	files, err := parseWithFiles(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 || *principal == "" {
		return &exitError{2, errors.New("audit timeline: want --principal ID and the log files (oldest first: audit.log.N … audit.log.1 audit.log)")}
	}
	q := audit.TimelineQuery{Principal: *principal}
	for _, b := range []struct {
		flag, v string
		t       *time.Time
	}{{"from", *from, &q.From}, {"to", *to, &q.To}} {
		if b.v == "" {
			continue
		}
		if *b.t, err = time.Parse(time.RFC3339, b.v); err != nil {
			return &exitError{2, fmt.Errorf("audit timeline: --%s: want RFC 3339 (2026-01-02T15:04:05Z): %w", b.flag, err)}
		}
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
		return &exitError{2, errors.New("audit timeline: --from must be before --to")}
	}
	var o *audit.Opener
	if *kf.keyset != "" {
		keys, _, err := kf.open("audit timeline")
		if err != nil {
			return err
		}
		if o, err = audit.NewOpener(keys); err != nil {
			return fmt.Errorf("audit timeline: %w", err)
		}
		// As for `audit read`: the read is recorded before anything is
		// decrypted.
		abs := make([]string, len(files))
		for i, f := range files {
			abs[i], _ = filepath.Abs(f)
		}
		if err := audit.QueueEvent(keys.Path, audit.Event{Type: audit.TypeAuditRead, Details: map[string]any{
			"operator": operator(), "files": abs, "purpose": "timeline"}}); err != nil {
			return fmt.Errorf("audit timeline: the read cannot be recorded, so nothing is decrypted: %w", err)
		}
	}
	tl, err := audit.BuildTimeline(files, o, q)
	if err != nil {
		return fmt.Errorf("audit timeline: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, r := range tl.Records {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	return tl.WriteText(stdout)
}
