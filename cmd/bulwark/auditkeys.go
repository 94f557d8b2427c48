package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/bulwark-ai/bulwark/internal/audit"
)

// auditKeyCommands are the `bulwark audit` commands that manage the
// encrypted log's keys and data (verify needs none of them).
var auditKeyCommands = map[string]func(context.Context, []string, io.Reader, io.Writer, io.Writer) error{
	"keygen": runAuditKeygen,
	"read":   runAuditRead,
	"rotate": runAuditRotate,
	"rewrap": runAuditRewrap,
	"erase":  runAuditErase,
	"export": runAuditExport,
	// timeline reads the log (decrypting it when given a keyset).
	"timeline": runAuditTimeline,
}

// parseWithFiles parses flags given before or after the file names.
func parseWithFiles(fs *flag.FlagSet, args []string) ([]string, error) {
	var files []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, &exitError{2, err}
		}
		args = fs.Args()
		if len(args) > 0 {
			files = append(files, args[0])
			args = args[1:]
		}
	}
	return files, nil
}

// keysetFlags are the flags every key command shares.
type keysetFlags struct {
	keyset, kekFile *string
}

func addKeysetFlags(fs *flag.FlagSet) keysetFlags {
	return keysetFlags{
		keyset:  fs.String("audit-keyset", "", "the audit keyset (made by `bulwark audit keygen`)"),
		kekFile: fs.String("kek-file", "", "file holding the key-encryption key, base64 of 32 bytes (default: $"+audit.KEKEnv+")"),
	}
}

func (k keysetFlags) open(cmd string) (*audit.Keys, audit.KEK, error) {
	if *k.keyset == "" {
		return nil, nil, &exitError{2, fmt.Errorf("%s: --audit-keyset is required", cmd)}
	}
	kek, err := audit.LoadKEK(*k.kekFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cmd, err)
	}
	keys, err := audit.OpenKeyset(*k.keyset, kek)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return keys, kek, nil
}

// operator names who ran a command, for the audit trail of key use.
func operator() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "uid " + strconv.Itoa(os.Getuid())
}

func runAuditKeygen(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bulwark audit keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "where to write the new keyset")
	kekFile := fs.String("kek-file", "", "file holding the key-encryption key, base64 of 32 bytes (default: $"+audit.KEKEnv+")")
	if err := fs.Parse(args); err != nil {
		return &exitError{2, err}
	}
	if *out == "" || fs.NArg() > 0 {
		return &exitError{2, errors.New("audit keygen: want --out KEYSET")}
	}
	kek, err := audit.LoadKEK(*kekFile)
	if err != nil {
		return fmt.Errorf("audit keygen: %w", err)
	}
	k, err := audit.CreateKeyset(*out, kek)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "keyset %s: deployment %s, primary key id %d, wrapped by key-encryption key %s\n", k.Path, k.Deployment, k.Primary, k.KEKID)
	return nil
}

func runAuditRead(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bulwark audit read", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kf := addKeysetFlags(fs)
	files, err := parseWithFiles(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return &exitError{2, errors.New("audit read: no files given (oldest first: audit.log.N … audit.log.1 audit.log)")}
	}
	keys, _, err := kf.open("audit read")
	if err != nil {
		return err
	}
	o, err := audit.NewOpener(keys)
	if err != nil {
		return fmt.Errorf("audit read: %w", err)
	}
	// The read is recorded before anything is decrypted: no record, no read.
	abs := make([]string, len(files))
	for i, f := range files {
		abs[i], _ = filepath.Abs(f)
	}
	if err := audit.QueueEvent(keys.Path, audit.Event{Type: audit.TypeAuditRead, Details: map[string]any{
		"operator": operator(), "files": abs}}); err != nil {
		return fmt.Errorf("audit read: the read cannot be recorded, so nothing is decrypted: %w", err)
	}
	enc := json.NewEncoder(stdout)
	n, err := audit.ReadLog(files, o, func(r *audit.Record) error { return enc.Encode(r) })
	if err != nil {
		return fmt.Errorf("audit read: FAILED after %d records: %w", n, err)
	}
	fmt.Fprintf(stderr, "audit read: %d records, %d subjects revealed\n", n, len(o.Revealed))
	return nil
}

func runAuditRotate(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bulwark audit rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kf := addKeysetFlags(fs)
	if err := fs.Parse(args); err != nil {
		return &exitError{2, err}
	}
	keys, kek, err := kf.open("audit rotate")
	if err != nil {
		return err
	}
	id, err := audit.RotateKeyset(ctx, keys.Path, kek)
	if err != nil {
		return err
	}
	if err := audit.QueueEvent(keys.Path, audit.Event{Type: audit.TypeKeyRotated, Details: map[string]any{
		"operator": operator(), "key_id": id, "previous_key_id": keys.Primary}}); err != nil {
		return fmt.Errorf("audit rotate: rotated to key id %d, but the rotation cannot be queued for the audit log: %w", id, err)
	}
	fmt.Fprintf(stdout, "keyset %s: new primary key id %d (was %d); a running server takes it within a second, older records stay readable\n",
		keys.Path, id, keys.Primary)
	return nil
}

func runAuditRewrap(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bulwark audit rewrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kf := addKeysetFlags(fs)
	newFile := fs.String("new-kek-file", "", "file holding the new key-encryption key (base64 of 32 bytes)")
	if err := fs.Parse(args); err != nil {
		return &exitError{2, err}
	}
	if *newFile == "" {
		return &exitError{2, errors.New("audit rewrap: --new-kek-file is required")}
	}
	keys, kek, err := kf.open("audit rewrap")
	if err != nil {
		return err
	}
	newKEK, err := audit.LoadKEK(*newFile)
	if err != nil {
		return fmt.Errorf("audit rewrap: new key: %w", err)
	}
	if err := audit.RewrapKeyset(ctx, keys.Path, kek, newKEK); err != nil {
		return err
	}
	if err := audit.QueueEvent(keys.Path, audit.Event{Type: audit.TypeKeysetRewrapped, Details: map[string]any{
		"operator": operator(), "kek": newKEK.ID(), "previous_kek": kek.ID()}}); err != nil {
		return fmt.Errorf("audit rewrap: rewrapped, but the change cannot be queued for the audit log: %w", err)
	}
	fmt.Fprintf(stdout, "keyset %s: now wrapped by key-encryption key %s (was %s); give servers the new key before their next restart\n",
		keys.Path, newKEK.ID(), kek.ID())
	return nil
}

func runAuditErase(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bulwark audit erase", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kf := addKeysetFlags(fs)
	subject := fs.String("subject", "", "the principal id to erase")
	if err := fs.Parse(args); err != nil {
		return &exitError{2, err}
	}
	if *subject == "" {
		return &exitError{2, errors.New("audit erase: --subject ID is required")}
	}
	keys, _, err := kf.open("audit erase")
	if err != nil {
		return err
	}
	sub, n, err := audit.EraseSubject(ctx, keys, *subject)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "subject %s: %d key(s) destroyed; its records stay on the chain, their personal fields can no longer be decrypted\n", sub, n)
	return nil
}

// runAuditExport writes the given log files and their checkpoint as one
// gzipped tar: encrypted as they are, verifiable elsewhere with `audit
// verify` and no key.
func runAuditExport(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bulwark audit export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "the archive to write (.tar.gz)")
	files, err := parseWithFiles(fs, args)
	if err != nil {
		return err
	}
	if *out == "" || len(files) == 0 {
		return &exitError{2, errors.New("audit export: want --out ARCHIVE.tar.gz FILE... (oldest first)")}
	}
	// The checkpoint is read first: on a live log the files then hold at
	// least what it names, so the archive verifies.
	cpName := audit.CheckpointPath(files[len(files)-1])
	cp, cpErr := os.ReadFile(cpName) // #nosec G304 G703 -- beside the operator-named log
	if cpErr != nil && !errors.Is(cpErr, os.ErrNotExist) {
		return fmt.Errorf("audit export: %w", cpErr)
	}
	f, err := os.OpenFile(*out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600) // #nosec G304 -- operator-named archive
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	for _, name := range files {
		if err = addToTar(tw, name); err != nil {
			break
		}
	}
	if err == nil && cpErr == nil {
		if err = tw.WriteHeader(&tar.Header{Name: filepath.Base(cpName), Mode: 0o600, Size: int64(len(cp))}); err == nil {
			_, err = tw.Write(cp)
		}
	}
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := gz.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(*out) // half an archive is no backup
		return fmt.Errorf("audit export: %w", err)
	}
	base := make([]string, len(files))
	for i, f := range files {
		base[i] = filepath.Base(f)
	}
	n := len(files)
	if cpErr == nil {
		n++
	}
	fmt.Fprintf(stdout, "%s: %d files; verify elsewhere with: tar xzf %s && bulwark audit verify %s\n",
		*out, n, filepath.Base(*out), strings.Join(base, " "))
	return nil
}

func addToTar(tw *tar.Writer, name string) error {
	f, err := os.Open(name) // #nosec G304 G703 -- operator-named log file
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: filepath.Base(name), Mode: 0o600, Size: st.Size(), ModTime: st.ModTime()}); err != nil {
		return err
	}
	// The file may grow while it is copied (a live log): copy what it held.
	_, err = io.CopyN(tw, f, st.Size())
	return err
}

// keyIDCounts renders key id → records, ids ascending.
func keyIDCounts(m map[uint32]uint64) string {
	ids := make([]uint32, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d: %d", id, m[id])
	}
	return b.String()
}
