package audit

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

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

// sealer encrypts records. Two goroutines use it: the sealing stage, which
// encrypts queued records ahead of the writer under the seq they are
// predicted to get, and the writer, which re-seals a record whose seq was
// mispredicted, seals the records it makes itself, and reloads the keys. mu
// guards the keys and both caches; gen counts the reloads that must not
// let a record sealed before them be written after them (an erasure: a
// subject key the file no longer holds).
type sealer struct {
	mu    sync.Mutex
	keys  *Keys
	subj  *subjectKeys
	pseud map[string]string // principal id → pseudonym, bounded
	gen   atomic.Uint64
}

func newSealer(k *Keys) *sealer {
	return &sealer{keys: k, subj: newSubjectKeys(k), pseud: map[string]string{}}
}

// setKeys switches to a reloaded keyset (a rotation): new records go under
// its primary; the subject keys already made stay valid (the old data key
// that wraps them is still in the keyset).
func (s *sealer) setKeys(k *Keys) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = k
	s.subj.keys = k
	// gen stays: a record sealed just before under the old primary is still
	// written as sealed (the keyset keeps that key, readers open it).
}

// primary is the key id new records are sealed under.
func (s *sealer) primary() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys.Primary
}

// refreshSubjects forgets the subject keys the file no longer holds
// (erased); when it forgets any, records sealed before are sealed again.
func (s *sealer) refreshSubjects() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.subj.cache)
	err := s.subj.refresh()
	if len(s.subj.cache) != n {
		s.gen.Add(1)
	}
	return err
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

// sealHead seals a copy of r as record seq and renders its line up to the
// encrypted body (appendSealedHead), with room for the rest. It returns
// the generation of keys it used.
func (s *sealer) sealHead(r Record, seq uint64) ([]byte, uint64, error) {
	r.Seq = seq
	s.mu.Lock()
	gen := s.gen.Load()
	err := s.sealLocked(&r)
	s.mu.Unlock()
	if err != nil {
		return nil, 0, err
	}
	head := make([]byte, 0, 64+len(r.Type)+base64.StdEncoding.EncodedLen(len(r.Enc))+160)
	return appendSealedHead(head, &r), gen, nil
}

// seal replaces r's content by its ciphertext; r.Seq and r.Type are set.
func (s *sealer) seal(r *Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sealLocked(r)
}

// sealLocked is seal, with s.mu held.
func (s *sealer) sealLocked(r *Record) error {
	b := body{DecisionID: r.DecisionID, TraceID: r.TraceID, Principal: r.Principal, Phase: r.Phase, Route: r.Route,
		Allowed: r.Allowed, HTTPStatus: r.HTTPStatus, Reason: r.Reason, PolicyRevision: r.PolicyRevision, DryRun: r.DryRun,
		Signals: r.Signals, Limits: r.Limits, Details: r.Details, Personal: r.Personal}
	if r.Principal != nil && r.Principal.ID != "" {
		sub := s.pseudonym(r.Principal.ID)
		k, err := s.subj.get(sub)
		if err != nil {
			return fmt.Errorf("audit: subject key: %w", err)
		}
		pb, err := appendPersonal(nil, r.Principal.ID, r.Personal)
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
	pt, err := appendBody(make([]byte, 0, 512), &b)
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

// appendBody renders b as JSON by hand for its fixed fields, through
// encoding/json for its maps: reflection over the whole struct would cost as
// much as the encryption. json.Unmarshal reads it back into body.
func appendBody(out []byte, b *body) ([]byte, error) {
	out = append(out, '{')
	str := func(key, v string) {
		if v != "" {
			out = append(out, '"')
			out = append(out, key...)
			out = append(out, '"', ':')
			out = appendJSONString(out, v)
			out = append(out, ',')
		}
	}
	str("decision_id", b.DecisionID)
	str("trace_id", b.TraceID)
	if p := b.Principal; p != nil {
		out = append(out, `"principal":{`...)
		n := len(out)
		str("id", p.ID)
		str("kind", p.Kind)
		str("tenant", p.Tenant)
		if len(out) > n {
			out = out[:len(out)-1]
		}
		out = append(out, '}', ',')
	}
	str("phase", b.Phase)
	str("route", b.Route)
	if b.Allowed != nil {
		out = append(out, `"allowed":`...)
		out = strconv.AppendBool(out, *b.Allowed)
		out = append(out, ',')
	}
	if b.HTTPStatus != 0 {
		out = append(out, `"http_status":`...)
		out = strconv.AppendInt(out, int64(b.HTTPStatus), 10)
		out = append(out, ',')
	}
	str("reason", b.Reason)
	str("policy_revision", b.PolicyRevision)
	if b.DryRun {
		out = append(out, `"dry_run":true,`...)
	}
	var err error
	field := func(key string, v any) {
		if err != nil {
			return
		}
		out = append(out, '"')
		out = append(out, key...)
		out = append(out, '"', ':')
		if out, err = appendAny(out, v); err == nil {
			out = append(out, ',')
		}
	}
	if len(b.Signals) > 0 {
		field("signals", b.Signals)
	}
	if len(b.Limits) > 0 {
		field("limits_exceeded", b.Limits)
	}
	if len(b.Details) > 0 {
		field("details", b.Details)
	}
	if len(b.Personal) > 0 {
		field("personal", b.Personal)
	}
	if err != nil {
		return nil, err
	}
	str("subject", b.Subject)
	str("subject_key", b.SubjectKey)
	if b.Sealed != nil {
		out = append(out, `"sealed":"`...)
		out = base64.StdEncoding.AppendEncode(out, b.Sealed)
		out = append(out, '"', ',')
	}
	if out[len(out)-1] == ',' {
		out = out[:len(out)-1]
	}
	return append(out, '}'), nil
}

// appendAny renders the values records carry (signals, details, tags) as
// JSON without reflection for the common types; anything else goes through
// encoding/json. Map keys are sorted, as json.Marshal sorts them.
func appendAny(out []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(out, "null"...), nil
	case string:
		return appendJSONString(out, x), nil
	case bool:
		return strconv.AppendBool(out, x), nil
	case int:
		return strconv.AppendInt(out, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(out, x, 10), nil
	case uint64:
		return strconv.AppendUint(out, x, 10), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			break // json.Marshal's error
		}
		return strconv.AppendFloat(out, x, 'g', -1, 64), nil
	case map[string]any:
		keys := slices.Sorted(maps.Keys(x))
		out = append(out, '{')
		for i, k := range keys {
			if i > 0 {
				out = append(out, ',')
			}
			out = appendJSONString(out, k)
			out = append(out, ':')
			var err error
			if out, err = appendAny(out, x[k]); err != nil {
				return nil, err
			}
		}
		return append(out, '}'), nil
	case map[string]string:
		keys := slices.Sorted(maps.Keys(x))
		out = append(out, '{')
		for i, k := range keys {
			if i > 0 {
				out = append(out, ',')
			}
			out = appendJSONString(out, k)
			out = append(out, ':')
			out = appendJSONString(out, x[k])
		}
		return append(out, '}'), nil
	case []string:
		out = append(out, '[')
		for i, s := range x {
			if i > 0 {
				out = append(out, ',')
			}
			out = appendJSONString(out, s)
		}
		return append(out, ']'), nil
	}
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(out, j...), nil
}

// appendPersonal renders a personalBody.
func appendPersonal(out []byte, id string, personal map[string]string) ([]byte, error) {
	out = append(out, `{"principal_id":`...)
	out = appendJSONString(out, id)
	if len(personal) > 0 {
		out = append(out, `,"personal":`...)
		out, _ = appendAny(out, personal) // a map of strings always renders
	}
	return append(out, '}'), nil
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
