package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead/subtle"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// Subject keys (crypto-shredding). Each subject (a principal id, named by
// its pseudonym) gets its own AES-256-GCM key; the personal fields of its
// records are encrypted under it. The keys live in KEYSET.subjects, one JSON
// line each, wrapped by the keyset's data key. Erasing a subject rewrites
// that file without the subject's keys: its records stay on the chain, their
// personal fields can no longer be decrypted by anyone.

// subjectLine is one subject key as stored.
type subjectLine struct {
	Sub string `json:"sub"`
	KID string `json:"kid"`
	Key []byte `json:"key"`
}

// SubjectsPath is where the subject keys of the keyset at path live.
func SubjectsPath(keysetPath string) string { return keysetPath + ".subjects" }

// EventsPath is the queue of key-management events (erasures, reads with
// the key, rotations) the CLI leaves for the audit writer to record: the
// writer holds the log, so the CLI cannot append to it while a server runs.
func EventsPath(keysetPath string) string { return keysetPath + ".events" }

func subjectAD(k *Keys, sub, kid string) []byte {
	return []byte("bulwark-audit-subject-key/v1 " + k.Deployment + " " + sub + " " + kid)
}

// readSubjectLines reads the subject-key file (none: empty).
func readSubjectLines(path string) ([]subjectLine, error) {
	b, err := os.ReadFile(path) // #nosec G304 -- beside the operator-named keyset
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit subject keys: %w", err)
	}
	var out []subjectLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var l subjectLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Sub == "" || l.KID == "" {
			return nil, fmt.Errorf("audit subject keys %s:%d: not a subject key", path, n)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("audit subject keys %s: %w", path, err)
	}
	return out, nil
}

// subjectKeys is the writer's cache of subject keys it created, by
// pseudonym. A key is created the first time a process sees a subject, and
// dropped when the file no longer holds it (erased).
type subjectKeys struct {
	keys  *Keys
	cache map[string]subjectKey
}

type subjectKey struct {
	kid  string
	aead tink.AEAD
}

func newSubjectKeys(k *Keys) *subjectKeys {
	return &subjectKeys{keys: k, cache: map[string]subjectKey{}}
}

// get returns the subject's key, creating and storing it (wrapped) if this
// process has none yet.
func (s *subjectKeys) get(sub string) (subjectKey, error) {
	if k, ok := s.cache[sub]; ok {
		return k, nil
	}
	raw := make([]byte, 32)
	id := make([]byte, 8)
	if _, err := rand.Read(raw); err != nil {
		return subjectKey{}, err
	}
	if _, err := rand.Read(id); err != nil {
		return subjectKey{}, err
	}
	kid := hex.EncodeToString(id)
	a, err := newSubjectAEAD(raw)
	if err != nil {
		return subjectKey{}, err
	}
	wrapped, err := s.keys.aead.Encrypt(raw, subjectAD(s.keys, sub, kid))
	if err != nil {
		return subjectKey{}, err
	}
	line, err := json.Marshal(subjectLine{Sub: sub, KID: kid, Key: wrapped})
	if err != nil {
		return subjectKey{}, err
	}
	if err := appendLocked(s.keys.Path, SubjectsPath(s.keys.Path), append(line, '\n')); err != nil {
		return subjectKey{}, err
	}
	k := subjectKey{kid: kid, aead: a}
	s.cache[sub] = k
	return k, nil
}

// refresh drops cached keys the file no longer holds (erased), so the
// subject's next record gets a new key.
func (s *subjectKeys) refresh() error {
	lines, err := readSubjectLines(SubjectsPath(s.keys.Path))
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, l := range lines {
		have[l.Sub+" "+l.KID] = true
	}
	for sub, k := range s.cache {
		if !have[sub+" "+k.kid] {
			delete(s.cache, sub)
		}
	}
	return nil
}

// appendLocked appends b to file under the keyset's lock.
func appendLocked(keysetPath, file string, b []byte) error {
	unlock, err := lockKeyset(context.Background(), keysetPath)
	if err != nil {
		return err
	}
	defer unlock()
	f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) // #nosec G304 -- beside the operator-named keyset
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit: append %s: %w", file, err)
	}
	return nil
}

// Event is a key-management action queued for the audit log: the CLI
// cannot write a log a server holds, so it leaves the event in
// KEYSET.events and the writer using that keyset records it (within a
// second while it runs, or when it next starts).
type Event struct {
	Type    string         `json:"type"`
	Time    time.Time      `json:"time"`
	Details map[string]any `json:"details,omitempty"`
}

// Event types, recorded on the chain as records of the same type.
const (
	TypeSubjectErased   = "subject_erased"
	TypeAuditRead       = "audit_read"
	TypeKeyRotated      = "audit_key_rotated"
	TypeKeysetRewrapped = "audit_keyset_rewrapped"
	// TypeSegmentStart opens every segment after the first: it carries the
	// chain's position and the head the log still holds, so a set of
	// retained segments shows where it starts.
	TypeSegmentStart = "segment_start"
)

// QueueEvent leaves e for the audit writer using the keyset at keysetPath.
func QueueEvent(keysetPath string, e Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("audit: event: %w", err)
	}
	return appendLocked(keysetPath, EventsPath(keysetPath), append(b, '\n'))
}

// takeEvents empties the event queue and returns what it held.
func takeEvents(keysetPath string) ([]Event, error) {
	name := EventsPath(keysetPath)
	if st, err := os.Stat(name); err != nil || st.Size() == 0 {
		return nil, nil //nolint:nilerr // no queue: nothing to record
	}
	unlock, err := lockKeyset(context.Background(), keysetPath)
	if err != nil {
		return nil, err
	}
	defer unlock()
	b, err := os.ReadFile(name) // #nosec G304 -- beside the operator-named keyset
	if err != nil {
		return nil, fmt.Errorf("audit events: %w", err)
	}
	var out []Event
	for _, l := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		var e Event
		if err := json.Unmarshal(l, &e); err != nil || e.Type == "" {
			e = Event{Type: "audit_event_unreadable", Time: time.Now().UTC(), Details: map[string]any{"bytes": len(l)}}
		}
		out = append(out, e)
	}
	if err := os.Truncate(name, 0); err != nil {
		return nil, fmt.Errorf("audit events: %w", err)
	}
	return out, nil
}

// EraseSubject crypto-shreds one subject: the subject-key file is rewritten
// without the keys of principal id, so no record's personal fields written
// for it can be decrypted again. The erasure is queued for the audit log
// (by pseudonym: the log does not learn the id). It returns the pseudonym
// and how many keys were destroyed.
func EraseSubject(ctx context.Context, k *Keys, id string) (string, int, error) {
	sub := k.Pseudonym(id)
	unlock, err := lockKeyset(ctx, k.Path)
	if err != nil {
		return sub, 0, err
	}
	lines, err := readSubjectLines(SubjectsPath(k.Path))
	if err != nil {
		unlock()
		return sub, 0, err
	}
	var keep bytes.Buffer
	n := 0
	for _, l := range lines {
		if l.Sub == sub {
			n++
			continue
		}
		b, err := json.Marshal(l)
		if err != nil {
			unlock()
			return sub, 0, fmt.Errorf("audit erase: %w", err)
		}
		keep.Write(append(b, '\n'))
	}
	if n > 0 {
		err = writeAtomic(SubjectsPath(k.Path), keep.Bytes(), 0o600)
	}
	unlock()
	if err != nil {
		return sub, 0, fmt.Errorf("audit erase: %w", err)
	}
	err = QueueEvent(k.Path, Event{Type: TypeSubjectErased, Details: map[string]any{"subject": sub, "keys_destroyed": n}})
	return sub, n, err
}

// newSubjectAEAD is the AEAD of one subject key: AES-256-GCM through Tink.
func newSubjectAEAD(raw []byte) (tink.AEAD, error) {
	a, err := subtle.NewAESGCM(raw)
	if err != nil {
		return nil, fmt.Errorf("audit subject key: %w", err)
	}
	return a, nil
}
