package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/test/diskfull"
)

// The sealing stage encrypts records under the seq it predicts; these tests
// drive the paths where the writer spends a seq the stage did not foresee
// (a rotation's segment_start, a records_lost record after a write-error
// episode, key-management events) or reloads the keys while records are in
// flight. Each one verifies the chain and decrypts every record: a record
// written under a mispredicted seq does not decrypt (the seq is its
// associated data), and a head used after the keys changed is caught by
// the generation check.

// loggedIDs logs n decisions named prefix-i, alternating two principals.
func loggedIDs(w *Writer, prefix string, n int) []string {
	ok := true
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
		w.Log(context.Background(), Record{Type: TypeDecision, DecisionID: ids[i], Allowed: &ok, Reason: "allowed",
			Principal: &Principal{ID: []string{"alice", "bob"}[i%2], Kind: "api_key"}, Personal: map[string]string{"client_address": "203.0.113.7"}})
	}
	return ids
}

// readBackDecisions decrypts files with keys and returns the decision ids
// in chain order, failing the test on any record that does not decrypt or
// whose principal did not come back.
func readBackDecisions(t *testing.T, files []string, keys *Keys) []string {
	t.Helper()
	recs, err := readAll(t, files, keys)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	var ids []string
	for _, r := range recs {
		if r.Type != TypeDecision {
			continue
		}
		if r.Principal == nil || (r.Principal.ID != "alice" && r.Principal.ID != "bob") || r.Personal["client_address"] != "203.0.113.7" {
			t.Fatalf("record %s read back without its principal or personal fields: %+v", r.DecisionID, r)
		}
		ids = append(ids, r.DecisionID)
	}
	return ids
}

func TestSealStageRotationMidStream(t *testing.T) {
	dir := t.TempDir()
	kek := testKEK(t)
	keys := newKeyset(t, dir, kek)
	keyFile, mac := writeKeyFile(t, dir)
	cfg := Config{Path: filepath.Join(dir, "audit.log"), Keyset: keys.Path, KEK: kek, KeyFile: keyFile,
		MaxBytes: 3000, MaxFiles: 1000, Buffer: 10000, Overflow: OverflowBlock}
	w, err := Open(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := loggedIDs(w, "r", 600)
	closeWriter(t, w)
	files := rotatedFiles(cfg.Path)
	if len(files) < 20 {
		t.Fatalf("want many rotations, got %d files", len(files))
	}
	if w.resealed.Load() == 0 {
		t.Fatal("no record was sealed again: the rotations did not exercise a mispredicted seq")
	}
	t.Logf("%d files, %d records sealed again by the writer", len(files), w.resealed.Load())
	rep, err := verifyLog(t, files, mac)
	if err != nil || rep.Dropped != 0 || rep.Encrypted != 600 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	if got := readBackDecisions(t, files, keys); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("read back %d records, want the %d logged in order", len(got), len(want))
	}
}

func TestSealStageWriteFailureEpisode(t *testing.T) {
	disk := diskfull.Mount(t, "8m")
	dir := t.TempDir()
	kek := testKEK(t)
	keys := newKeyset(t, dir, kek)
	keyFile, mac := writeKeyFile(t, dir)
	path := filepath.Join(disk, "audit.log")
	w, err := Open(Config{Path: path, Keyset: keys.Path, KEK: kek, KeyFile: keyFile, Buffer: 10000, Overflow: OverflowBlock,
		FlushInterval: 10 * time.Millisecond, RetryInterval: 20 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := loggedIDs(w, "before", 20)
	waitFor(t, "the first records on disk", func() bool { b, _ := os.ReadFile(path); return strings.Count(string(b), "\n") >= 20 })
	// Records keep coming while the writer resumes: those sealed before the
	// records_lost record took its seq carry a wrong one. Whether one is in
	// flight at that moment is up to the scheduler, so episodes repeat
	// (at most 5) until the writer has had to seal one again.
	logged := len(before)
	filler := filepath.Join(disk, "filler")
	for ep := 0; ep < 5 && w.resealed.Load() == 0; ep++ {
		diskfull.Fill(t, filler)
		logged += len(loggedIDs(w, fmt.Sprintf("full%d", ep), 50))
		waitFor(t, "the writer to notice the full disk", func() bool { return !w.Healthy() })
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for i := 0; !w.Healthy(); i++ {
			logged += len(loggedIDs(w, fmt.Sprintf("after%d-%d", ep, i), 5))
			if time.Now().After(deadline) {
				t.Fatal("writing did not resume")
			}
			time.Sleep(100 * time.Microsecond)
		}
		logged += len(loggedIDs(w, fmt.Sprintf("resumed%d", ep), 20))
	}
	closeWriter(t, w)
	lost := w.Status().LostRecords
	if w.resealed.Load() == 0 {
		t.Fatal("no record was sealed again in 5 episodes: the records_lost record did not exercise a mispredicted seq")
	}
	rep, err := verifyLog(t, []string{path}, mac)
	if err != nil || len(rep.Lost) == 0 || rep.LostRecords() != lost {
		t.Fatalf("verify: %+v %v (writer counted %d lost)", rep, err, lost)
	}
	got := readBackDecisions(t, []string{path}, keys)
	// Every record logged before the disk filled, or after it had room
	// again, is on the chain; the lost ones are accounted for by range.
	have := map[string]bool{}
	for _, id := range got {
		have[id] = true
	}
	for _, id := range before {
		if !have[id] {
			t.Errorf("%s, written before the disk filled, is missing", id)
		}
	}
	if uint64(len(got)) != rep.Records-uint64(len(rep.Lost)) || uint64(logged) != uint64(len(got))+rep.LostRecords()+rep.Dropped {
		t.Fatalf("%d decisions read back, %d lost, %d dropped: want all %d accounted for", len(got), rep.LostRecords(), rep.Dropped, logged)
	}
	t.Logf("%d logged, %d read back, %d lost, %d sealed again", logged, len(got), rep.LostRecords(), w.resealed.Load())
}

func TestSealStageKeysetReloadDuringWriting(t *testing.T) {
	dir := t.TempDir()
	kek := testKEK(t)
	keys := newKeyset(t, dir, kek)
	// A small buffer that blocks keeps the producer just ahead of the
	// writer: the sealing stage always has records in flight when the
	// writer records a queued key event (a seq it did not predict).
	cfg := Config{Path: filepath.Join(dir, "audit.log"), Keyset: keys.Path, KEK: kek, Buffer: 256, Overflow: OverflowBlock,
		FlushInterval: 5 * time.Millisecond}
	w, err := Open(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var newIDs []uint32
	stop := make(chan struct{})
	logged := make(chan []string)
	go func() {
		var ids []string
		for i := 0; ; i++ {
			select {
			case <-stop:
				logged <- ids
				return
			default:
			}
			ids = append(ids, loggedIDs(w, fmt.Sprintf("k%d", i), 10)...)
		}
	}()
	for range 1 {
		time.Sleep(1100 * time.Millisecond) // the writer looks at the keyset once a second
		id, err := RotateKeyset(context.Background(), keys.Path, kek)
		if err != nil {
			t.Fatal(err)
		}
		newIDs = append(newIDs, id)
		if err := QueueEvent(keys.Path, Event{Type: TypeKeyRotated, Details: map[string]any{"key_id": id}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the rotation on the chain", func() bool {
		return strings.Contains(string(mustRead(t, cfg.Path)), `"type":"`+TypeKeyRotated+`"`)
	})
	time.Sleep(100 * time.Millisecond) // records under the new key
	close(stop)
	want := <-logged
	closeWriter(t, w)
	rep, err := verifyLog(t, []string{cfg.Path}, nil)
	if err != nil || rep.Dropped != 0 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	for _, id := range append([]uint32{keys.Primary}, newIDs...) {
		if rep.KeyIDs[id] == 0 {
			t.Errorf("no record under key id %d: the reload was not taken while writing (%v)", id, rep.KeyIDs)
		}
	}
	if w.resealed.Load() == 0 {
		t.Fatal("no record was sealed again: the reloads and events did not exercise the re-seal path")
	}
	rotated, err := OpenKeyset(keys.Path, kek)
	if err != nil {
		t.Fatal(err)
	}
	if got := readBackDecisions(t, []string{cfg.Path}, rotated); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("read back %d records, want the %d logged in order", len(got), len(want))
	}
	t.Logf("%d records, %d sealed again, key ids %v", len(want), w.resealed.Load(), rep.KeyIDs)
}
