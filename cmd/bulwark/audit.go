package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/bulwark-ai/bulwark/internal/audit"
)

// runAudit implements `bulwark audit verify FILE... [--key-file F]
// [--checkpoint F | --no-checkpoint]`: files oldest first (rotated
// audit.log.N ... audit.log.1, then audit.log). It exits non-zero and names
// the first broken, reordered or missing record, and, against the log's
// checkpoint (by default the last file's FILE.checkpoint), a cut head or tail.
func runAudit(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		if sub, ok := auditKeyCommands[args[0]]; ok {
			return sub(ctx, args[1:], stdin, stdout, stderr)
		}
	}
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, "usage: bulwark audit verify FILE... [--key-file F] [--checkpoint F | --no-checkpoint]")
		fmt.Fprintln(stderr, "       bulwark audit keygen --out KEYSET [--kek-file F]")
		fmt.Fprintln(stderr, "       bulwark audit read FILE... --audit-keyset KEYSET [--kek-file F]")
		fmt.Fprintln(stderr, "       bulwark audit rotate --audit-keyset KEYSET [--kek-file F]")
		fmt.Fprintln(stderr, "       bulwark audit rewrap --audit-keyset KEYSET [--kek-file F] --new-kek-file F")
		fmt.Fprintln(stderr, "       bulwark audit erase --subject ID --audit-keyset KEYSET [--kek-file F]")
		fmt.Fprintln(stderr, "       bulwark audit export --out ARCHIVE.tar.gz FILE...")
		fmt.Fprintln(stderr, "       bulwark audit timeline --principal ID [--from T] [--to T] [--json] [--audit-keyset KEYSET] FILE...")
		return &exitError{2, errors.New("audit: want verify, keygen, read, rotate, rewrap, erase, export or timeline")}
	}
	fs := flag.NewFlagSet("bulwark audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key-file", "", "HMAC key the log was signed with (checks every record's and the checkpoint's signature)")
	cpFile := fs.String("checkpoint", "", "the log's checkpoint (default: the last file given + .checkpoint)")
	noCP := fs.Bool("no-checkpoint", false, "check the chain only: a cut head or tail then goes unseen")
	files, err := parseWithFiles(fs, args[1:])
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return &exitError{2, errors.New("audit verify: no files given")}
	}
	for _, f := range files {
		if strings.HasSuffix(f, ".checkpoint") || strings.HasSuffix(f, ".lock") {
			return &exitError{2, fmt.Errorf("audit verify: %s is a log's checkpoint or lock file, not a log file (list the log files: audit.log.N … audit.log.1 audit.log)", f)}
		}
	}
	if *noCP && *cpFile != "" {
		return &exitError{2, errors.New("audit verify: --checkpoint and --no-checkpoint exclude each other")}
	}
	var key []byte
	if *keyFile != "" {
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("audit verify: key file: %w", err)
		}
		key = []byte(strings.TrimSpace(string(b)))
	}
	var cp *audit.Checkpoint
	var rep audit.Report
	if !*noCP {
		path := *cpFile
		if path == "" {
			path = audit.CheckpointPath(files[len(files)-1])
		}
		if cp, err = audit.ReadCheckpoint(path, key); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("audit verify: FAILED: no checkpoint at %s, so a cut head or tail cannot be detected "+
					"(give --checkpoint F, or --no-checkpoint to check the chain only)", path)
			}
			return fmt.Errorf("audit verify: FAILED: %w", err)
		}
	}
	rep, err = audit.Verify(files, key, cp)
	if err != nil {
		return fmt.Errorf("audit verify: FAILED after %d good records: %w", rep.Records, err)
	}
	fmt.Fprintf(stdout, "ok: %d records, seq %d..%d", rep.Records, rep.FirstSeq, rep.LastSeq)
	if rep.Dropped > 0 {
		fmt.Fprintf(stdout, ", %d dropped under load (recorded on the chain)", rep.Dropped)
	}
	if len(rep.Lost) > 0 {
		fmt.Fprintf(stdout, ", %d lost to write errors (recorded on the chain:", rep.LostRecords())
		for _, g := range rep.Lost {
			fmt.Fprintf(stdout, " seq %d..%d", g.FirstSeq, g.LastSeq)
		}
		fmt.Fprint(stdout, ")")
	}
	if rep.TornLines > 0 {
		fmt.Fprintf(stdout, ", %d torn line(s) cut off at a start (recorded on the chain)", rep.TornLines)
	}
	if rep.TornTail > 0 {
		fmt.Fprintf(stdout, "; ends in a partial line of %d bytes (a write in progress or cut short), not verified", rep.TornTail)
	}
	switch {
	case cp != nil:
		fmt.Fprintf(stdout, "; checkpoint seq %d..%d holds", cp.FirstSeq, cp.LastSeq)
		if rep.AfterCheckpoint > 0 {
			fmt.Fprintf(stdout, " (%d later records not yet covered by it)", rep.AfterCheckpoint)
		}
	case rep.StartsMidChain:
		fmt.Fprint(stdout, "; starts mid-chain (its first link points into an older file not given)")
	}
	if cp == nil {
		fmt.Fprint(stdout, "; no checkpoint: a cut head or tail would go unseen")
	}
	if len(key) > 0 {
		fmt.Fprint(stdout, "; signatures valid")
	}
	if rep.Records > 0 {
		fmt.Fprintf(stdout, "; retained range seq %d..%d, %s to %s", rep.FirstSeq, rep.LastSeq,
			rep.FirstTime.UTC().Format(time.RFC3339), rep.LastTime.UTC().Format(time.RFC3339))
		if rep.StartsAtSegment {
			fmt.Fprint(stdout, " (starts at a segment start: earlier segments were removed by retention)")
		}
	}
	if rep.Encrypted > 0 {
		fmt.Fprintf(stdout, "; %d encrypted records checked as ciphertext (key ids %s), not decrypted", rep.Encrypted, keyIDCounts(rep.KeyIDs))
	}
	fmt.Fprintln(stdout)
	return nil
}
