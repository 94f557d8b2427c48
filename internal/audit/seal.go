package audit

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/tink-crypto/tink-go/v2/tink"
)

// Encrypted records. With an audit keyset, a record's line keeps in the
// clear only what the chain and retention need (seq, time, type, dropped,
// prev, mac); everything else is the Tink AEAD ciphertext in "enc", under
// the keyset's primary data key, with the seq and type as associated data
// (a ciphertext moved to another record does not decrypt). Inside it, the
// principal id and the personal fields are encrypted once more, under the
// subject's own key (crypto-shredding), and the subject is named by its
// keyed pseudonym. Records the verifier must read (records_lost, torn_line,
// segment_start) stay in the clear: they hold counts and hashes only.

// sealable reports whether records of type t are encrypted.
func sealable(t string) bool {
	switch t {
	case TypeRecordsLost, TypeTornLine, TypeSegmentStart:
		return false
	}
	return true
}

// body is what "enc" holds.
type body struct {
	DecisionID     string            `json:"decision_id,omitempty"`
	TraceID        string            `json:"trace_id,omitempty"`
	Principal      *Principal        `json:"principal,omitempty"`
	Phase          string            `json:"phase,omitempty"`
	Route          string            `json:"route,omitempty"`
	Allowed        *bool             `json:"allowed,omitempty"`
	HTTPStatus     int               `json:"http_status,omitempty"`
	Reason         string            `json:"reason,omitempty"`
	PolicyRevision string            `json:"policy_revision,omitempty"`
	DryRun         bool              `json:"dry_run,omitempty"`
	Signals        map[string]any    `json:"signals,omitempty"`
	Limits         []string          `json:"limits_exceeded,omitempty"`
	Details        map[string]any    `json:"details,omitempty"`
	Personal       map[string]string `json:"personal,omitempty"`
	// Subject, SubjectKey and Sealed: the subject's pseudonym, the id of
	// its key and its personal fields (personalBody) under that key.
	Subject    string `json:"subject,omitempty"`
	SubjectKey string `json:"subject_key,omitempty"`
	Sealed     []byte `json:"sealed,omitempty"`
}

// personalBody is what a subject's key encrypts.
type personalBody struct {
	PrincipalID string            `json:"principal_id,omitempty"`
	Personal    map[string]string `json:"personal,omitempty"`
}

func recordAD(seq uint64, typ string) []byte {
	return []byte("bulwark-audit-record/v1 seq=" + strconv.FormatUint(seq, 10) + " type=" + typ)
}

func personalAD(seq uint64, sub, kid string) []byte {
	return []byte("bulwark-audit-personal/v1 seq=" + strconv.FormatUint(seq, 10) + " sub=" + sub + " kid=" + kid)
}

// sealer encrypts records in the writer goroutine.
type sealer struct {
	keys  *Keys
	subj  *subjectKeys
	pseud map[string]string // principal id → pseudonym, bounded
}

func newSealer(k *Keys) *sealer {
	return &sealer{keys: k, subj: newSubjectKeys(k), pseud: map[string]string{}}
}

// setKeys switches to a reloaded keyset (a rotation): new records go under
// its primary; the subject keys already made stay valid (the old data key
// that wraps them is still in the keyset).
func (s *sealer) setKeys(k *Keys) {
	s.keys = k
	s.subj.keys = k
}

func (s *sealer) pseudonym(id string) string {
	if p, ok := s.pseud[id]; ok {
		return p
	}
	if len(s.pseud) >= 10000 {
		clear(s.pseud)
	}
	p := s.keys.Pseudonym(id)
	s.pseud[id] = p
	return p
}

// seal replaces r's content by its ciphertext; r.Seq and r.Type are set.
func (s *sealer) seal(r *Record) error {
	b := body{DecisionID: r.DecisionID, TraceID: r.TraceID, Principal: r.Principal, Phase: r.Phase, Route: r.Route,
		Allowed: r.Allowed, HTTPStatus: r.HTTPStatus, Reason: r.Reason, PolicyRevision: r.PolicyRevision, DryRun: r.DryRun,
		Signals: r.Signals, Limits: r.Limits, Details: r.Details, Personal: r.Personal}
	if r.Principal != nil && r.Principal.ID != "" {
		sub := s.pseudonym(r.Principal.ID)
		k, err := s.subj.get(sub)
		if err != nil {
			return fmt.Errorf("audit: subject key: %w", err)
		}
		pb, err := json.Marshal(personalBody{PrincipalID: r.Principal.ID, Personal: r.Personal})
		if err != nil {
			return fmt.Errorf("audit: encode personal fields: %w", err)
		}
		if b.Sealed, err = k.aead.Encrypt(pb, personalAD(r.Seq, sub, k.kid)); err != nil {
			return fmt.Errorf("audit: encrypt personal fields: %w", err)
		}
		p := *r.Principal
		p.ID = ""
		b.Principal, b.Personal, b.Subject, b.SubjectKey = &p, nil, sub, k.kid
	}
	pt, err := json.Marshal(&b)
	if err != nil {
		return fmt.Errorf("audit: encode record: %w", err)
	}
	ct, err := s.keys.aead.Encrypt(pt, recordAD(r.Seq, r.Type))
	if err != nil {
		return fmt.Errorf("audit: encrypt record: %w", err)
	}
	*r = Record{Seq: r.Seq, Time: r.Time, Type: r.Type, Enc: ct, Dropped: r.Dropped, Prev: r.Prev}
	return nil
}

// KeyID is the Tink key id a ciphertext names (its 5-byte prefix: 0x01 and
// the id, big-endian), or false when it names none.
func KeyID(ct []byte) (uint32, bool) {
	if len(ct) < 5 || ct[0] != 1 {
		return 0, false
	}
	return binary.BigEndian.Uint32(ct[1:5]), true
}

// Opener decrypts records with a keyset and its subject keys.
type Opener struct {
	keys *Keys
	subj map[string]tink.AEAD // "pseudonym kid" → key
	// Revealed counts the subjects whose principal id was decrypted.
	Revealed map[string]bool
}

// NewOpener loads the subject keys of k.
func NewOpener(k *Keys) (*Opener, error) {
	lines, err := readSubjectLines(SubjectsPath(k.Path))
	if err != nil {
		return nil, err
	}
	o := &Opener{keys: k, subj: map[string]tink.AEAD{}, Revealed: map[string]bool{}}
	for _, l := range lines {
		raw, err := k.aead.Decrypt(l.Key, subjectAD(k, l.Sub, l.KID))
		if err != nil {
			id, _ := KeyID(l.Key)
			return nil, fmt.Errorf("audit subject keys %s: key %s of subject %s does not unwrap under key id %d of keyset %s (deployment %s)",
				SubjectsPath(k.Path), l.KID, l.Sub, id, k.Path, k.Deployment)
		}
		a, err := newSubjectAEAD(raw)
		if err != nil {
			return nil, err
		}
		o.subj[l.Sub+" "+l.KID] = a
	}
	return o, nil
}

// Open decrypts r in place (a record in the clear is left as it is). A
// subject whose key was erased comes back with Erased set and no principal
// id or personal fields.
func (o *Opener) Open(r *Record) error {
	if r.Enc == nil {
		return nil
	}
	id, ok := KeyID(r.Enc)
	if !ok {
		return errors.New("encrypted body names no key id (not a Tink ciphertext)")
	}
	if !o.keys.IDs[id] {
		return fmt.Errorf("encrypted under key id %d, which keyset %s (deployment %s, key ids %s) does not hold: another deployment's keyset, or one older than this segment",
			id, o.keys.Path, o.keys.Deployment, o.keys.idList())
	}
	pt, err := o.keys.aead.Decrypt(r.Enc, recordAD(r.Seq, r.Type))
	if err != nil {
		return fmt.Errorf("does not decrypt under key id %d of keyset %s (deployment %s): altered, moved from another record, or another deployment's key", id, o.keys.Path, o.keys.Deployment)
	}
	var b body
	if err := json.Unmarshal(pt, &b); err != nil {
		return fmt.Errorf("decrypted body under key id %d is not a record: %w", id, err)
	}
	*r = Record{Seq: r.Seq, Time: r.Time, Type: r.Type, DecisionID: b.DecisionID, TraceID: b.TraceID, Principal: b.Principal,
		Phase: b.Phase, Route: b.Route, Allowed: b.Allowed, HTTPStatus: b.HTTPStatus, Reason: b.Reason,
		PolicyRevision: b.PolicyRevision, DryRun: b.DryRun, Signals: b.Signals, Limits: b.Limits, Details: b.Details,
		Personal: b.Personal, Subject: b.Subject, Dropped: r.Dropped, Prev: r.Prev}
	if b.Subject == "" {
		return nil
	}
	a, ok := o.subj[b.Subject+" "+b.SubjectKey]
	if !ok {
		r.Erased = true
		return nil
	}
	ppt, err := a.Decrypt(b.Sealed, personalAD(r.Seq, b.Subject, b.SubjectKey))
	if err != nil {
		return fmt.Errorf("personal fields of subject %s do not decrypt under its key %s: altered", b.Subject, b.SubjectKey)
	}
	var p personalBody
	if err := json.Unmarshal(ppt, &p); err != nil {
		return fmt.Errorf("personal fields of subject %s: %w", b.Subject, err)
	}
	if r.Principal == nil {
		r.Principal = &Principal{}
	}
	r.Principal.ID, r.Personal = p.PrincipalID, p.Personal
	o.Revealed[b.Subject] = true
	return nil
}

func (k *Keys) idList() string {
	var b []byte
	for id := range k.IDs {
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(id), 10)
	}
	return string(b)
}

// ReadLog reads the records of files (oldest first), decrypting each with
// o (nil: no decryption), and hands them to emit. A record that cannot be
// parsed or decrypted stops it with a *Problem naming the file, line, seq
// and key id; a partial last line of the last file (a write in progress)
// is skipped. It does not check the chain: that is Verify's job.
func ReadLog(files []string, o *Opener, emit func(*Record) error) (int, error) {
	n := 0
	for fi, name := range files {
		f, err := os.Open(name) // #nosec G304 -- the operator names the files to read
		if err != nil {
			return n, fmt.Errorf("audit read: %w", err)
		}
		err = readRecords(f, name, fi == len(files)-1, o, func(r *Record) error {
			n++
			return emit(r)
		})
		_ = f.Close() // read-only
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// readRecords is the segment reader: lines of JSON records, decrypted.
func readRecords(rd io.Reader, name string, last bool, o *Opener, emit func(*Record) error) error {
	br := bufio.NewReaderSize(rd, 64<<10)
	for n := 1; ; n++ {
		raw, err := readLine(br)
		if len(raw) == 0 && errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return &Problem{File: name, Line: n, What: err.Error()}
		}
		complete := err == nil
		line := bytes.TrimSuffix(raw, []byte("\n"))
		if len(line) == 0 {
			continue
		}
		r, perr := parseLine(string(line))
		if perr != nil {
			if !complete && last {
				return nil // a write in progress or cut short
			}
			return &Problem{File: name, Line: n, What: perr.Error()}
		}
		if o != nil {
			if err := o.Open(r); err != nil {
				return &Problem{File: name, Line: n, Seq: r.Seq, What: err.Error()}
			}
		}
		if err := emit(r); err != nil {
			return err
		}
		if !complete {
			return nil
		}
	}
}
