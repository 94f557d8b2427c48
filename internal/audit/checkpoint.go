package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Checkpoint is the small file beside a log (Path.checkpoint) that says
// which records the log must hold: from FirstSeq (whose prev is FirstPrev:
// "" for a log's first record, else the hash of a record in a file retention
// deleted) to at least LastSeq (whose line hashes to LastHash). The writer
// replaces it every CheckpointRecords records or CheckpointInterval, at
// rotation and at close. With a key it is HMAC-signed, so it cannot be
// rewritten to match a cut log without the key.
type Checkpoint struct {
	FirstSeq  uint64    `json:"first_seq"`
	FirstPrev string    `json:"first_prev"`
	LastSeq   uint64    `json:"last_seq"`
	LastHash  string    `json:"last_hash"`
	Time      time.Time `json:"time"`
	MAC       string    `json:"mac,omitempty"`
}

// namesRecords reports whether c vouches for any records: a checkpoint
// written before the log's first record names none (LastSeq 0).
func (c *Checkpoint) namesRecords() bool {
	return c != nil && c.LastSeq >= c.FirstSeq && c.LastSeq > 0
}

// CheckpointPath is where the checkpoint of the log at path lives.
func CheckpointPath(path string) string { return path + ".checkpoint" }

// signed is what the checkpoint's MAC covers; the prefix keeps a record
// line's MAC from ever passing for a checkpoint's.
func (c Checkpoint) signed() []byte {
	return fmt.Appendf(nil, "bulwark-audit-checkpoint/v1 first_seq=%d first_prev=%s last_seq=%d last_hash=%s time=%s",
		c.FirstSeq, c.FirstPrev, c.LastSeq, c.LastHash, c.Time.UTC().Format(time.RFC3339Nano))
}

func (c Checkpoint) sum(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(c.signed())
	return hex.EncodeToString(m.Sum(nil))
}

// writeCheckpoint replaces the checkpoint atomically (temporary file, then
// rename), so a reader never sees half of one.
func writeCheckpoint(path string, c Checkpoint, key []byte) error {
	c.MAC = ""
	if len(key) > 0 {
		c.MAC = c.sum(key)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("audit: checkpoint: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("audit: checkpoint: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o640) // #nosec G302 -- readable like the log it describes
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name()) // best effort; the write error is the one to report
		return fmt.Errorf("audit: checkpoint: %w", err)
	}
	return nil
}

// ReadCheckpoint reads and, with key, authenticates a checkpoint. A missing
// file is an error wrapping os.ErrNotExist.
func ReadCheckpoint(path string, key []byte) (*Checkpoint, error) {
	b, err := os.ReadFile(path) // #nosec G304 -- beside the operator-configured or operator-named log
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	var c Checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("checkpoint %s: not a checkpoint: %w", path, err)
	}
	if len(key) > 0 {
		if c.MAC == "" {
			return nil, fmt.Errorf("checkpoint %s: %w", path, errors.New("not signed"))
		}
		if !hmac.Equal([]byte(c.MAC), []byte(c.sum(key))) {
			return nil, fmt.Errorf("checkpoint %s: bad signature: altered or signed with another key", path)
		}
	}
	return &c, nil
}
