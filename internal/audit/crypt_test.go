package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testKEK(t testing.TB) KEK {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	k, err := NewLocalKEK(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newKeyset(t testing.TB, dir string, kek KEK) *Keys {
	t.Helper()
	k, err := CreateKeyset(filepath.Join(dir, "audit.keyset"), kek)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// logAs writes one decision per principal id through a running writer.
func logAs(t *testing.T, w *Writer, ids ...string) {
	t.Helper()
	ok := false
	for i, id := range ids {
		w.Log(context.Background(), Record{Type: TypeDecision, DecisionID: fmt.Sprintf("d-%s-%d", id, i), Allowed: &ok,
			Route: "POST /v1/chat/completions", Reason: "prompt_injection", Principal: &Principal{ID: id, Kind: "api_key", Tenant: "acme"},
			Personal: map[string]string{"client_address": "203.0.113.7"}})
	}
}

// readAll decrypts a log with keys.
func readAll(t *testing.T, files []string, k *Keys) ([]*Record, error) {
	t.Helper()
	o, err := NewOpener(k)
	if err != nil {
		return nil, err
	}
	var out []*Record
	_, err = ReadLog(files, o, func(r *Record) error { out = append(out, r); return nil })
	return out, err
}

func decisionsBy(recs []*Record) map[string]int {
	m := map[string]int{}
	for _, r := range recs {
		if r.Type != TypeDecision {
			continue
		}
		switch {
		case r.Erased:
			m["erased:"+r.Subject]++
		case r.Principal != nil:
			m[r.Principal.ID]++
		}
	}
	return m
}

// TestEncryptedLog: with a keyset nothing personal or telling is in the
// clear, verify needs no key, and the keyset reads everything back.
func TestEncryptedLog(t *testing.T) {
	dir := t.TempDir()
	kek := testKEK(t)
	keys := newKeyset(t, dir, kek)
	keyFile, mac := writeKeyFile(t, dir)
	cfg := Config{Path: filepath.Join(dir, "audit.log"), Keyset: keys.Path, KEK: kek, KeyFile: keyFile, MaxBytes: 4096}
	w, err := Open(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	logAs(t, w, "alice", "bob", "alice")
	for range 20 {
		logAs(t, w, "carol")
	}
	closeWriter(t, w)
	files := rotatedFiles(cfg.Path)
	if len(files) < 2 {
		t.Fatalf("want rotation, got %v", files)
	}
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		for _, leak := range []string{"alice", "carol", "203.0.113.7", "prompt_injection", "chat/completions", "acme"} {
			if bytes.Contains(raw, []byte(leak)) {
				t.Errorf("%s holds %q in the clear", f, leak)
			}
		}
	}
	rep, err := verifyLog(t, files, mac)
	if err != nil || rep.Encrypted != 23 || len(rep.KeyIDs) != 1 || rep.KeyIDs[keys.Primary] != 23 {
		t.Fatalf("verify without the keyset: %+v %v", rep, err)
	}
	recs, err := readAll(t, files, keys)
	if err != nil {
		t.Fatal(err)
	}
	if got := decisionsBy(recs); got["alice"] != 2 || got["bob"] != 1 || got["carol"] != 20 {
		t.Fatalf("read back %v", got)
	}
	for _, r := range recs {
		if r.Type == TypeDecision && (r.Reason != "prompt_injection" || r.Personal["client_address"] != "203.0.113.7" || r.Principal.Tenant != "acme") {
			t.Fatalf("record read back wrong: %+v", r)
		}
	}
}

// TestKeyRotationWhileWriting: a rotated keyset is taken by the running
// writer; records under the old and the new key read back, the chain holds.
func TestKeyRotationWhileWriting(t *testing.T) {
	dir := t.TempDir()
	kek := testKEK(t)
	keys := newKeyset(t, dir, kek)
	before := filepath.Join(dir, "keyset.before")
	b, _ := os.ReadFile(keys.Path)
	if err := os.WriteFile(before, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Path: filepath.Join(dir, "audit.log"), Keyset: keys.Path, KEK: kek, FlushInterval: 20 * time.Millisecond}
	w, err := Open(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	logAs(t, w, "alice")
	newID, err := RotateKeyset(context.Background(), keys.Path, kek)
	if err != nil {
		t.Fatal(err)
	}
	if err := QueueEvent(keys.Path, Event{Type: TypeKeyRotated, Details: map[string]any{"key_id": newID}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !bytes.Contains(mustRead(t, cfg.Path), []byte(`"type":"`+TypeKeyRotated+`"`)) {
		if time.Now().After(deadline) {
			t.Fatal("the writer did not record the rotation")
		}
		time.Sleep(20 * time.Millisecond)
	}
	logAs(t, w, "bob")
	closeWriter(t, w)
	rep, err := verifyLog(t, []string{cfg.Path}, nil)
	if err != nil || rep.KeyIDs[keys.Primary] == 0 || rep.KeyIDs[newID] == 0 {
		t.Fatalf("verify: %+v %v (want records under %d and %d)", rep, err, keys.Primary, newID)
	}
	rotated, err := OpenKeyset(keys.Path, kek)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := readAll(t, []string{cfg.Path}, rotated)
	if err != nil {
		t.Fatal(err)
	}
	if got := decisionsBy(recs); got["alice"] != 1 || got["bob"] != 1 {
		t.Fatalf("read back %v", got)
	}
	// The keyset as it was before rotation cannot read the new records,
	// and says which key id it lacks.
	old, err := OpenKeyset(before, kek)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(t, []string{cfg.Path}, old); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("key id %d", newID)) ||
		!strings.Contains(err.Error(), "audit.log:") {
		t.Fatalf("pre-rotation keyset: %v, want an error naming the segment and key id %d", err, newID)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return b
}

// TestEraseSubject: after erasure the subject's records stay on the chain
// and verify, their personal fields cannot be read, other subjects are
// untouched, and the erasure is recorded on the chain.
func TestEraseSubject(t *testing.T) {
	dir := t.TempDir()
	kek := testKEK(t)
	keys := newKeyset(t, dir, kek)
	cfg := Config{Path: filepath.Join(dir, "audit.log"), Keyset: keys.Path, KEK: kek}
	w, err := Open(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	logAs(t, w, "alice", "bob", "alice")
	closeWriter(t, w)
	sub, n, err := EraseSubject(context.Background(), keys, "alice")
	if err != nil || n != 1 || sub != keys.Pseudonym("alice") {
		t.Fatalf("erase: %s %d %v", sub, n, err)
	}
	if bytes.Contains(mustRead(t, SubjectsPath(keys.Path)), []byte(sub)) {
		t.Fatal("the subject's key is still in the subject-key file")
	}
	// The next writer records the erasure.
	w, err = Open(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !bytes.Contains(mustRead(t, cfg.Path), []byte(`"type":"`+TypeSubjectErased+`"`)) {
		if time.Now().After(deadline) {
			t.Fatal("the erasure was not recorded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	logAs(t, w, "alice") // a new key: the subject's later records are readable
	closeWriter(t, w)
	if _, err := verifyLog(t, []string{cfg.Path}, nil); err != nil {
		t.Fatalf("verify after erasure: %v", err)
	}
	recs, err := readAll(t, []string{cfg.Path}, keys)
	if err != nil {
		t.Fatal(err)
	}
	got := decisionsBy(recs)
	if got["erased:"+sub] != 2 || got["bob"] != 1 || got["alice"] != 1 {
		t.Fatalf("read back after erasure: %v", got)
	}
	for _, r := range recs {
		if r.Erased && (r.Principal.ID != "" || r.Personal != nil || r.Reason != "prompt_injection") {
			t.Fatalf("erased record shows personal fields or lost its others: %+v", r)
		}
		if r.Type == TypeSubjectErased && r.Details["subject"] != sub {
			t.Fatalf("erasure record %+v", r)
		}
	}
}

// TestBadKeysAndSegments: each wrong key or damaged segment is a clear
// error naming the segment and the key, never a wrong read.
func TestBadKeysAndSegments(t *testing.T) {
	dir := t.TempDir()
	kek := testKEK(t)
	keys := newKeyset(t, dir, kek)
	cfg := Config{Path: filepath.Join(dir, "audit.log"), Keyset: keys.Path, KEK: kek}
	w, err := Open(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	logAs(t, w, "alice", "bob", "carol")
	closeWriter(t, w)
	lines := readLines(t, cfg.Path) // the middle one is damaged: without a checkpoint a change to the last goes unseen

	if _, err := OpenKeyset(keys.Path, testKEK(t)); err == nil || !strings.Contains(err.Error(), "wrong key-encryption key") ||
		!strings.Contains(err.Error(), keys.KEKID) {
		t.Errorf("wrong KEK: %v", err)
	}
	if _, err := LoadKEK(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing KEK file: no error")
	}
	t.Setenv(KEKEnv, "")
	if _, err := LoadKEK(""); err == nil || !strings.Contains(err.Error(), KEKEnv) {
		t.Errorf("no KEK: %v", err)
	}
	other := newKeyset(t, t.TempDir(), kek)
	if _, err := readAll(t, []string{cfg.Path}, other); err == nil || !strings.Contains(err.Error(), "another deployment") ||
		!strings.Contains(err.Error(), "key id") || !strings.Contains(err.Error(), "audit.log:") {
		t.Errorf("another deployment's keyset: %v", err)
	}

	damaged := func(name string, mutate func([]string) []string) string {
		p := filepath.Join(t.TempDir(), "audit.log")
		writeLines(t, p, mutate(append([]string(nil), lines...)))
		return p
	}
	flip := func(l []string) []string {
		i := strings.Index(l[1], `"enc":"`) + 40
		b := []byte(l[1])
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		l[1] = string(b)
		return l
	}
	for _, tc := range []struct {
		name       string
		mutate     func([]string) []string
		wantRead   string
		wantVerify string
	}{
		{"ciphertext altered", flip, "does not decrypt under key id", "broken chain"},
		{"truncated mid-line then continued", func(l []string) []string { l[1] = l[1][:len(l[1])/2]; return l }, "not a JSON record", "not a JSON record"},
		{"record removed", func(l []string) []string { return append(l[:1], l[2:]...) }, "", "missing or reordered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := damaged(tc.name, tc.mutate)
			_, err := readAll(t, []string{p}, keys)
			if tc.wantRead != "" && (err == nil || !strings.Contains(err.Error(), tc.wantRead) || !strings.Contains(err.Error(), p)) {
				t.Errorf("read: %v, want %q naming %s", err, tc.wantRead, p)
			}
			if _, err := Verify([]string{p}, nil, nil); err == nil || !strings.Contains(err.Error(), tc.wantVerify) {
				t.Errorf("verify: %v, want %q", err, tc.wantVerify)
			}
		})
	}
}

// TestRetentionByAge: rotated files past MaxAge are deleted; what is left
// verifies against the checkpoint and starts at a segment start.
func TestRetentionByAge(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Path: filepath.Join(dir, "audit.log"), MaxAge: 1500 * time.Millisecond, RotateEvery: 200 * time.Millisecond,
		FlushInterval: 20 * time.Millisecond}
	w, err := Open(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok := true
	for i := range 40 {
		w.Log(context.Background(), Record{Type: TypeDecision, DecisionID: fmt.Sprint(i), Allowed: &ok})
		time.Sleep(100 * time.Millisecond)
	}
	closeWriter(t, w)
	files := rotatedFiles(cfg.Path)
	rep, err := verifyLog(t, files, nil)
	if err != nil || !rep.StartsAtSegment || rep.FirstSeq <= 1 || rep.FirstSeq != rep.Checkpoint.FirstSeq {
		t.Fatalf("after retention: files %v, %+v %v", files, rep, err)
	}
	if age := time.Since(rep.FirstTime); age > cfg.MaxAge+cfg.RotateEvery+2*time.Second {
		t.Fatalf("oldest record kept is %s old, retention is %s", age, cfg.MaxAge)
	}
}

// FuzzSegmentReader: any bytes as a segment give records or an error,
// never a panic, with and without a keyset.
func FuzzSegmentReader(f *testing.F) {
	dir := f.TempDir()
	kek := testKEK(f)
	keys := newKeyset(f, dir, kek)
	s := newSealer(keys)
	ok := true
	r := Record{Seq: 1, Type: TypeDecision, Allowed: &ok, Principal: &Principal{ID: "alice"}, Reason: "x"}
	if err := s.seal(&r); err != nil {
		f.Fatal(err)
	}
	line, _ := encode(&r, nil)
	f.Add(append(line, '\n'))
	f.Add([]byte(`{"seq":1,"type":"decision","enc":"AQAAAAE=","prev":""}` + "\n"))
	f.Add([]byte(`{"seq":2,"type":"segment_start","details":{"previous_last_seq":1},"prev":"x"}`))
	f.Add([]byte("{\"seq\":1}\n{"))
	o, err := NewOpener(keys)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, op := range []*Opener{nil, o} {
			_ = readRecords(bytes.NewReader(data), "seg", true, op, func(r *Record) error {
				if r == nil {
					t.Fatal("nil record")
				}
				return nil
			})
		}
		p := filepath.Join(dir, "seg") // one per fuzz worker process: each runs its own setup
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = Verify([]string{p}, nil, nil)
	})
}

// TestAppendSealedIsJSON: the hand-rendered line of an encrypted record is
// byte for byte what json.Marshal gives for its fields.
func TestAppendSealedIsJSON(t *testing.T) {
	for _, r := range []Record{
		{Seq: 7, Time: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC), Type: TypeDecision, Enc: []byte{1, 2, 3, 250}, Prev: "abc"},
		{Seq: 1, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)), Type: "odd \"type\" <&>\n", Enc: []byte{0}, Dropped: 3},
	} {
		want, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendSealed(nil, &r); string(got) != string(want) {
			t.Errorf("appendSealed\n got %s\nwant %s", got, want)
		}
	}
}

// TestAppendBodyIsJSON: the hand-rendered body reads back as json.Marshal's.
func TestAppendBodyIsJSON(t *testing.T) {
	yes := false
	for _, b := range []body{
		{},
		{DecisionID: "d", TraceID: "t", Principal: &Principal{Kind: "api_key", Tenant: "a\"<b>"}, Phase: "p", Route: "POST /x",
			Allowed: &yes, HTTPStatus: 403, Reason: "r\n", PolicyRevision: "rev", DryRun: true, Signals: map[string]any{"a": 0.5, "n": 3, "big": 1e21, "b": true, "z": nil, "i64": int64(-2)},
			Limits: []string{"l"}, Details: map[string]any{"x": map[string]any{"y": 1, "s": []string{"q"}}, "t": struct{ A int }{4}, "m": map[string]string{"k": "v"}}, Personal: map[string]string{"ua": "é"},
			Subject: "s", SubjectKey: "k", Sealed: []byte{1, 2, 3}},
		{Principal: &Principal{}},
	} {
		got, err := appendBody(nil, &b)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(&b)
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("appendBody gave invalid JSON %s: %v", got, err)
		}
		_ = json.Unmarshal(want, &w)
		if gj, wj := mustJSON(t, g), mustJSON(t, w); gj != wj {
			t.Errorf("appendBody\n got %s\nwant %s", gj, wj)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAppendJSONStringIsJSON: every byte, alone and inside text, renders as
// json.Marshal renders it (the fast path's table must not pass a byte JSON
// escapes).
func TestAppendJSONStringIsJSON(t *testing.T) {
	for c := range 256 {
		for _, s := range []string{string([]byte{byte(c)}), "ab" + string([]byte{byte(c)}) + "cd"} {
			want, _ := json.Marshal(s)
			if got := appendJSONString(nil, s); string(got) != string(want) {
				t.Errorf("byte %#x: got %s, want %s", c, got, want)
			}
		}
	}
}
