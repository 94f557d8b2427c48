package audit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/test/diskfull"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func logN(w *Writer, prefix string, n int) {
	ok := true
	for i := 0; i < n; i++ {
		w.Log(context.Background(), Record{Type: TypeDecision, DecisionID: fmt.Sprintf("%s-%d", prefix, i), Allowed: &ok,
			Reason: "allowed", Principal: &Principal{ID: "alice", Kind: "api_key"}})
	}
}

func closeWriter(t *testing.T, w *Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func writeKeyFile(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	key := []byte("0123456789abcdef0123")
	p := filepath.Join(dir, "audit.key")
	if err := os.WriteFile(p, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, key
}

// verifyLog verifies a log (files oldest first) against its checkpoint.
func verifyLog(t *testing.T, files []string, key []byte) (Report, error) {
	t.Helper()
	cp, err := ReadCheckpoint(CheckpointPath(files[len(files)-1]), key)
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	return Verify(files, key, cp)
}

// TestWriterSurvivesFullDisk fills a real (tmpfs) disk under the writer:
// it must stop counting itself healthy, count what it loses, resume once
// there is room again, and put the loss on the chain so the log verifies
// with every record accounted for. Before the fix the writer never wrote
// again after the first error.
func TestWriterSurvivesFullDisk(t *testing.T) {
	disk := diskfull.Mount(t, "1m")
	keyFile, key := writeKeyFile(t, t.TempDir())
	path := filepath.Join(disk, "audit.log")
	w, err := Open(Config{Path: path, KeyFile: keyFile, FlushInterval: 10 * time.Millisecond, RetryInterval: 20 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	logN(w, "before", 20)
	waitFor(t, "the first records on disk", func() bool { b, _ := os.ReadFile(path); return strings.Count(string(b), "\n") >= 20 })

	filler := filepath.Join(disk, "filler")
	diskfull.Fill(t, filler)
	logN(w, "full", 50)
	waitFor(t, "the writer to notice the full disk", func() bool { return !w.Healthy() })
	if !errors.Is(w.Err(), ErrUnavailable) {
		t.Errorf("Err() = %v while the disk is full, want ErrUnavailable", w.Err())
	}
	if st := w.Status(); st.Healthy || st.Since == nil || !strings.Contains(st.Error, "no space") {
		t.Errorf("status while the disk is full: %+v", st)
	}
	logN(w, "during", 30)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "writing to resume", w.Healthy)
	if w.Err() != nil {
		t.Errorf("Err() = %v after writing resumed", w.Err())
	}
	logN(w, "after", 10)
	lost := w.Status().LostRecords
	closeWriter(t, w)

	rep, err := verifyLog(t, []string{path}, key)
	if err != nil {
		t.Fatalf("verify after a full disk: %v", err)
	}
	if len(rep.Lost) == 0 || rep.LostRecords() != lost || lost == 0 {
		t.Fatalf("lost ranges %+v (%d records), writer counted %d", rep.Lost, rep.LostRecords(), lost)
	}
	// Every record logged is either on the chain or in a records_lost range.
	t.Logf("lost ranges %+v, %d records on the chain, %d dropped", rep.Lost, rep.Records, rep.Dropped)
	const logged = 20 + 50 + 30 + 10
	got := rep.Records - uint64(len(rep.Lost)) + rep.LostRecords() + rep.Dropped
	if got != logged {
		t.Errorf("records %d - markers %d + lost %d + dropped %d = %d, want %d", rep.Records, len(rep.Lost), rep.LostRecords(), rep.Dropped, got, logged)
	}
	raw, _ := os.ReadFile(path)
	for i := 0; i < 10; i++ {
		if !strings.Contains(string(raw), fmt.Sprintf(`"decision_id":"after-%d"`, i)) {
			t.Errorf("record after-%d, logged once there was room again, is not in the log", i)
		}
	}
	if !strings.Contains(string(raw), `"type":"records_lost"`) || !strings.Contains(string(raw), `"cause":"write_error"`) {
		t.Error("no records_lost record on the chain")
	}
}

// TestTornLastLineIsMarkedAtStart: a write cut short (a crash, a full disk)
// leaves half a line. The next start must not refuse to run (an outage
// where Envoy fails closed) but cut it off and record it on the chain.
func TestTornLastLineIsMarkedAtStart(t *testing.T) {
	dir := t.TempDir()
	keyFile, key := writeKeyFile(t, dir)
	cfg := Config{Path: filepath.Join(dir, "audit.log"), KeyFile: keyFile}
	writeRecords(t, cfg, 10)
	torn := `{"seq":11,"time":"2026-12-07T10:00:00Z","type":"deci`
	f, err := os.OpenFile(cfg.Path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(torn)
	_ = f.Close()

	// Before the writer starts again, verify reports the partial line.
	if rep, err := verifyLog(t, []string{cfg.Path}, key); err != nil || rep.TornTail != len(torn) {
		t.Fatalf("verify with a torn tail: %+v %v", rep, err)
	}
	writeRecords(t, cfg, 5)
	rep, err := verifyLog(t, []string{cfg.Path}, key)
	if err != nil {
		t.Fatal(err)
	}
	if rep.TornLines != 1 || rep.TornTail != 0 || rep.Records != 16 || rep.LastSeq != 16 {
		t.Fatalf("report %+v", rep)
	}
	if raw, _ := os.ReadFile(cfg.Path); !strings.Contains(string(raw), fmt.Sprintf(`"type":"torn_line","details":{"bytes":%d`, len(torn))) {
		t.Errorf("no torn_line record with the cut length in\n%s", raw)
	}
}

// TestFullDiskAtStart: a torn line on a disk that is full when Bulwark
// starts must not keep it from starting: the writer starts failing, and
// the torn_line marker and the loss reach the chain once there is room.
// The log is padded to end exactly on a page, so the marker needs a new
// page of the full tmpfs.
func TestFullDiskAtStart(t *testing.T) {
	disk := diskfull.Mount(t, "1m")
	cfg := Config{Path: filepath.Join(disk, "audit.log"), FlushInterval: 10 * time.Millisecond, RetryInterval: 20 * time.Millisecond}
	writeRecords(t, cfg, 10)
	at := time.Date(2026, 12, 7, 10, 0, 0, 123456789, time.UTC)
	logOne := func(id string) {
		w, err := Open(cfg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		w.Log(context.Background(), Record{Type: TypeDecision, Time: at, DecisionID: id})
		closeWriter(t, w)
	}
	logOne("x") // seq 11: measures a record's length with a 1-byte id
	torn := `{"seq":13,"ti`
	lines := readLines(t, cfg.Path)
	st, _ := os.Stat(cfg.Path)
	k := (2*4096 - int64(len(torn)) - (st.Size()+int64(len(lines[len(lines)-1])))%4096) % 4096
	if k == 0 {
		k = 4096
	}
	logOne(strings.Repeat("p", int(k))) // seq 12: the torn line will end on a page boundary
	f, err := os.OpenFile(cfg.Path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(torn)
	_ = f.Close()
	if st, _ := os.Stat(cfg.Path); st.Size()%4096 != 0 {
		t.Fatalf("padding: size %d", st.Size())
	}
	filler := filepath.Join(disk, "filler")
	diskfull.Fill(t, filler)

	w, err := Open(cfg, nil, nil)
	if err != nil {
		t.Fatalf("start on a full disk: %v", err)
	}
	if w.Healthy() {
		t.Fatal("healthy right after a start on a full disk")
	}
	logN(w, "lost", 5)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "writing to resume", w.Healthy)
	logN(w, "after", 3)
	closeWriter(t, w)
	rep, err := verifyLog(t, []string{cfg.Path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.TornLines != 1 || rep.LostRecords() != 5 || rep.LastSeq != rep.Records+rep.LostRecords() {
		t.Fatalf("report %+v", rep)
	}
}

// TestSecondWriterIsRefused: two processes (replicas) appending to one log
// would interleave two chains; the second gets a clear error.
func TestSecondWriterIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w, err := Open(Config{Path: path}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w2, err := Open(Config{Path: path}, nil, nil); err == nil || !strings.Contains(err.Error(), "another process") {
		if w2 != nil {
			closeWriter(t, w2)
		}
		t.Fatalf("second writer: err = %v, want a lock error", err)
	}
	closeWriter(t, w)
	w, err = Open(Config{Path: path}, nil, nil)
	if err != nil {
		t.Fatalf("after the first writer closed: %v", err)
	}
	closeWriter(t, w)
}

func rotatedFiles(path string) []string {
	var files []string
	for n := 1; ; n++ {
		if _, err := os.Stat(rotatedName(path, n)); err != nil {
			break
		}
		files = append([]string{rotatedName(path, n)}, files...)
	}
	return append(files, path)
}

// TestRetentionBoundsRotatedFiles: rotation deletes the oldest files beyond
// MaxFiles, and the checkpoint moves the log's head with them, so what is
// left still verifies, head included.
func TestRetentionBoundsRotatedFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Path: filepath.Join(dir, "audit.log"), MaxBytes: 2000, MaxFiles: 2}
	writeRecords(t, cfg, 200)
	if _, err := os.Stat(cfg.Path + ".3"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("audit.log.3 exists (err %v): rotated files are not bounded", err)
	}
	files := rotatedFiles(cfg.Path)
	if len(files) != 3 {
		t.Fatalf("files %v, want audit.log.2, audit.log.1, audit.log", files)
	}
	rep, err := verifyLog(t, files, nil)
	if err != nil || rep.LastSeq != rep.Checkpoint.LastSeq ||
		!rep.StartsMidChain || !rep.StartsAtSegment || rep.FirstSeq != rep.Checkpoint.FirstSeq {
		t.Fatalf("retained files: %+v %v", rep, err)
	}
	if _, err := verifyLog(t, files[1:], nil); err == nil || !strings.Contains(err.Error(), "head cut") {
		t.Fatalf("without the oldest retained file: %v, want a head cut", err)
	}
}

// TestVerifyCatchesHeadAndTailCuts: records cut from the head or the tail
// of a log leave an intact chain; the checkpoint catches them.
func TestVerifyCatchesHeadAndTailCuts(t *testing.T) {
	dir := t.TempDir()
	keyFile, key := writeKeyFile(t, dir)
	cfg := Config{Path: filepath.Join(dir, "audit.log"), KeyFile: keyFile, MaxBytes: 3000}
	writeRecords(t, cfg, 60)
	files := rotatedFiles(cfg.Path)
	if len(files) < 3 {
		t.Fatalf("want rotation, got %v", files)
	}
	cp, err := ReadCheckpoint(CheckpointPath(cfg.Path), key)
	if err != nil {
		t.Fatal(err)
	}
	if cp.FirstSeq != 1 || cp.FirstPrev != "" || cp.LastSeq != 60+uint64(len(files)-1) { // one segment_start per rotation
		t.Fatalf("checkpoint at close %+v", cp)
	}
	copyLog := func(t *testing.T) []string {
		out := t.TempDir()
		var got []string
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(out, filepath.Base(f))
			writeLines(t, p, strings.Split(strings.TrimRight(string(b), "\n"), "\n"))
			got = append(got, p)
		}
		return got
	}
	cases := []struct {
		name string
		cut  func(t *testing.T, files []string) []string
		want string // "" = verifies
	}{
		{"intact", func(_ *testing.T, f []string) []string { return f }, ""},
		{"last records of the newest file", func(t *testing.T, f []string) []string {
			l := readLines(t, f[len(f)-1])
			writeLines(t, f[len(f)-1], l[:len(l)-3])
			return f
		}, "tail cut"},
		{"newest file emptied", func(t *testing.T, f []string) []string {
			_ = os.WriteFile(f[len(f)-1], nil, 0o600)
			return f
		}, "tail cut"},
		{"oldest file removed", func(_ *testing.T, f []string) []string { return f[1:] }, "head cut"},
		{"first records of the oldest file", func(t *testing.T, f []string) []string {
			l := readLines(t, f[0])
			writeLines(t, f[0], l[2:])
			return f
		}, "head cut"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(tc.cut(t, copyLog(t)), key, cp)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("intact log: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}

	// A checkpoint edited to match a cut log fails its signature.
	forged := *cp
	forged.LastSeq = 57
	p := filepath.Join(t.TempDir(), "forged.checkpoint")
	if err := writeCheckpoint(p, forged, []byte("not-the-audit-key-0123")); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCheckpoint(p, key); err == nil || !strings.Contains(err.Error(), "bad signature") {
		t.Fatalf("forged checkpoint: %v", err)
	}
	if err := writeCheckpoint(p, forged, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCheckpoint(p, key); err == nil || !strings.Contains(err.Error(), "not signed") {
		t.Fatalf("unsigned checkpoint read with a key: %v", err)
	}
}

// TestTailCutWhileStoppedIsRecorded: a tail cut while no writer ran is
// found at the next start (the log is shorter than its checkpoint): the
// writer starts anyway, records the missing range, and verify fails on it
// for good, though the writer has rewritten the checkpoint since.
func TestTailCutWhileStoppedIsRecorded(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Path: filepath.Join(dir, "audit.log")}
	writeRecords(t, cfg, 30)
	l := readLines(t, cfg.Path)
	writeLines(t, cfg.Path, l[:25])
	writeRecords(t, cfg, 3)
	_, err := verifyLog(t, []string{cfg.Path}, nil)
	var p *Problem
	if !errors.As(err, &p) || !strings.Contains(p.What, "records 26..30 were missing when the writer started") || p.Seq != 31 {
		t.Fatalf("err = %v", err)
	}
}

// TestUnencodableRecordLeavesNoGap: a record that cannot be encoded (a NaN
// score) is dropped and counted, and spends no seq: before the fix it left
// a gap that verify reported as missing records.
func TestUnencodableRecordLeavesNoGap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w, err := Open(Config{Path: path}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Log(context.Background(), Record{Type: TypeDecision})
	w.Log(context.Background(), Record{Type: TypeDecision, Signals: map[string]any{"score": math.NaN()}})
	w.Log(context.Background(), Record{Type: TypeDecision})
	closeWriter(t, w)
	rep, err := verifyLog(t, []string{path}, nil)
	if err != nil || rep.Records != 2 || rep.Dropped != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
}

// TestVerifyRecordsLostRange: a records_lost record accounts only for the
// gap it sits after, never for a repeated or backward seq.
func TestVerifyRecordsLostRange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	writeRecords(t, Config{Path: path}, 5)
	lines := readLines(t, path)
	prev := lineHash([]byte(lines[4]))
	for _, tc := range []struct {
		name, line, want string
	}{
		{"gap accounted for", fmt.Sprintf(`{"seq":9,"type":"records_lost","details":{"cause":"write_error","first_seq":6,"last_seq":8},"prev":%q}`, prev), ""},
		{"range beside the gap", fmt.Sprintf(`{"seq":9,"type":"records_lost","details":{"cause":"write_error","first_seq":7,"last_seq":8},"prev":%q}`, prev), "does not match the gap"},
		{"backward range", fmt.Sprintf(`{"seq":5,"type":"records_lost","details":{"cause":"write_error","first_seq":6,"last_seq":4},"prev":%q}`, prev), "does not match the gap"},
		{"gap without a record", fmt.Sprintf(`{"seq":9,"type":"decision","prev":%q}`, prev), "missing or reordered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "audit.log")
			writeLines(t, p, append(append([]string(nil), lines...), tc.line))
			rep, err := Verify([]string{p}, nil, nil)
			if tc.want == "" {
				if err != nil || rep.LostRecords() != 3 {
					t.Fatalf("%+v %v", rep, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzReadCheckpoint(f *testing.F) {
	key := []byte("0123456789abcdef")
	dir := f.TempDir()
	seed := filepath.Join(dir, "seed")
	if err := writeCheckpoint(seed, Checkpoint{FirstSeq: 1, LastSeq: 9, LastHash: "ab", Time: time.Unix(1, 0)}, key); err != nil {
		f.Fatal(err)
	}
	b, _ := os.ReadFile(seed)
	f.Add(b)
	f.Add([]byte(`{"first_seq":1,"last_seq":0}`))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "cp")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, k := range [][]byte{nil, key} {
			cp, err := ReadCheckpoint(p, k)
			if err != nil {
				continue
			}
			log := filepath.Join(t.TempDir(), "l")
			_ = os.WriteFile(log, []byte("{\"seq\":1,\"prev\":\"\"}\n"), 0o600)
			_, _ = Verify([]string{log}, k, cp)
		}
	})
}
