package audit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwark-ai/bulwark/internal/filelock"
)

// Overflow says what Log does when the buffer is full.
type Overflow string

// The overflow policies: Drop loses the record and counts it (the next
// written record carries the count, so the gap is on the chain); Block waits
// for room, slowing the request that is being audited.
const (
	OverflowDrop  Overflow = "drop"
	OverflowBlock Overflow = "block"
)

// ErrUnavailable is what Err returns while the log cannot be written: a
// caller that must not decide without an audit trail (fail_closed) refuses.
var ErrUnavailable = errors.New("audit: the audit log cannot be written")

// Config configures a Writer.
type Config struct {
	// Path is the log file; rotated files are Path.<n> (1 = most recent).
	// Path.lock holds the writer's exclusive lock and Path.checkpoint its
	// signed checkpoint.
	Path string
	// MaxBytes rotates the file once it grows past this size (default 100 MiB).
	MaxBytes int64
	// MaxFiles is how many rotated files are kept (default 10): rotating
	// deletes the oldest beyond it, so the log never takes more than about
	// (MaxFiles+1) × MaxBytes of disk.
	MaxFiles int
	// KeyFile, when set, holds the HMAC key every line is signed with.
	KeyFile string
	// Buffer is how many records may wait to be written (default 4096).
	Buffer int
	// Overflow is OverflowDrop (default) or OverflowBlock.
	Overflow Overflow
	// FlushInterval bounds how long a record may sit in memory (default 200ms).
	FlushInterval time.Duration
	// CheckpointInterval and CheckpointRecords bound how stale the
	// checkpoint may be (defaults 1s and 1000): records written after the
	// last checkpoint are the only ones a cut of the tail can remove unseen.
	CheckpointInterval time.Duration
	CheckpointRecords  uint64
	// RetryInterval is how often a writer whose writes fail tries again
	// (default 1s).
	RetryInterval time.Duration
	// Keyset, when set, is the audit keyset (KeysetPath) records are
	// encrypted with, unwrapped by KEK. The writer watches the file (every
	// second) and takes a rotated keyset's new primary key without a
	// restart; it also records the key-management events the CLI queues
	// beside it (erasures, reads with the key, rotations).
	Keyset string
	KEK    KEK
	// MaxAge, when set, deletes rotated files whose newest record is older
	// (retention by age, besides MaxFiles); the current file is rotated
	// every RotateEvery (default MaxAge/8) so old records do not stay in it.
	MaxAge      time.Duration
	RotateEvery time.Duration
}

// position is a point in the log: the current file's size and the chain
// (seq, hash of the line) at that point.
type position struct {
	size int64
	seq  uint64
	prev string
}

// failure is a write-error episode: from the first failed write until a
// records_lost record is on the chain again.
type failure struct {
	err      error
	since    time.Time
	firstSeq uint64
}

// Status is the writer's state as /readyz shows it.
type Status struct {
	// Healthy is false while records cannot be written.
	Healthy bool `json:"healthy"`
	// Error and Since describe the current failure.
	Error string     `json:"error,omitempty"`
	Since *time.Time `json:"since,omitempty"`
	// LostRecords counts records lost to write errors since the start.
	LostRecords uint64 `json:"lost_records"`
}

// Writer appends records to the chained log from one goroutine. Log is safe
// for concurrent use. With a keyset, a sealing stage (its own goroutine)
// encrypts queued records ahead of the writer, so encryption and the chain
// run on two cores: encryption then costs little audit throughput, and
// Log still never waits for it.
type Writer struct {
	cfg    Config
	key    []byte
	mac    hash.Hash // HMAC keyed with key, used by the writer goroutine only
	logger *slog.Logger

	ch chan Record
	// in carries the sealing stage's output to the writer (encrypted logs
	// only; nil otherwise). seqOff is the writer's seq minus the records
	// it has taken from in: the stage predicts the n-th record's seq as
	// seqOff+n.
	in      chan presealed
	seqOff  atomic.Uint64
	dropped atomic.Uint64
	done    chan struct{}
	mu      sync.RWMutex // guards closed against Log racing Close
	closed  bool
	lock    *os.File // holds the exclusive flock on Path.lock while open

	// Owned by the writer goroutine (and by Open before it starts).
	f          *os.File
	bw         *bufio.Writer
	size       int64  // bytes of the current file, buffered ones included
	seq        uint64 // last seq given to a record
	prev       string // hash of the last line appended, buffered or not
	bufDropped uint64 // Dropped counts the buffered records carry
	durable    position
	failing    *failure
	pending    []Record // markers from the start, written once writing resumes
	nextRetry  time.Time
	head       position // first record the log must still hold (seq, prev)
	cpSeq      uint64   // last seq the checkpoint covers
	cpTime     time.Time
	seal       *sealer   // nil: records in the clear
	stamps     [2]string // the keyset's and its subject keys' file stamps last seen
	maintained time.Time
	segStart   time.Time     // when the current file was started (or opened)
	taken      uint64        // records taken from in
	resealed   atomic.Uint64 // records whose predicted seq (or keys) were wrong: sealed again by the writer

	written    prometheus.Counter
	lost       prometheus.Counter
	lostOnDisk prometheus.Counter
	failures   prometheus.Counter
	healthy    atomic.Bool
	lostTotal  atomic.Uint64
	status     atomic.Pointer[Status]
}

// Open starts a Writer. It takes an exclusive lock on the log (a second
// process writing the same file gets an error), then continues an existing
// log: the chain resumes from its last line (seq and hash), so restarts do
// not break it. A torn last line (a write cut by a crash or a full disk) is
// cut off and recorded on the chain as a torn_line record.
func Open(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Writer, error) {
	if cfg.Path == "" {
		return nil, errors.New("audit: no path")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 100 << 20
	}
	if cfg.MaxFiles <= 0 {
		cfg.MaxFiles = 10
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 4096
	}
	if cfg.Overflow == "" {
		cfg.Overflow = OverflowDrop
	}
	if cfg.Overflow != OverflowDrop && cfg.Overflow != OverflowBlock {
		return nil, fmt.Errorf("audit: overflow %q: want drop or block", cfg.Overflow)
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 200 * time.Millisecond
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = time.Second
	}
	if cfg.CheckpointRecords == 0 {
		cfg.CheckpointRecords = 1000
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w := &Writer{cfg: cfg, logger: logger, ch: make(chan Record, cfg.Buffer), done: make(chan struct{}),
		written: prometheus.NewCounter(prometheus.CounterOpts{Name: "bulwark_audit_records_written_total", Help: "Audit records written."}),
		lost:    prometheus.NewCounter(prometheus.CounterOpts{Name: "bulwark_audit_records_dropped_total", Help: "Audit records dropped because the buffer was full."}),
		lostOnDisk: prometheus.NewCounter(prometheus.CounterOpts{Name: "bulwark_audit_records_lost_total",
			Help: "Audit records lost because the log could not be written (recorded on the chain by a records_lost record once writing resumes)."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "bulwark_audit_write_errors_total", Help: "Failed audit writes."}),
	}
	if cfg.Keyset != "" {
		w.in = make(chan presealed, sealAhead)
	}
	healthy := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bulwark_audit_sink_healthy",
		Help: "1 while audit records are written, 0 while writes fail (records are then lost and counted)."}, func() float64 {
		if w.healthy.Load() {
			return 1
		}
		return 0
	})
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bulwark_audit_queue_length",
		Help: "Audit records waiting to be written (the buffer holds --audit-buffer)."}, func() float64 { return float64(len(w.ch) + len(w.in)) })
	if reg != nil {
		for _, c := range []prometheus.Collector{w.written, w.lost, w.lostOnDisk, w.failures, healthy, queued} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("audit: register metrics: %w", err)
			}
		}
	}
	if cfg.KeyFile != "" {
		k, err := os.ReadFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("audit: key file: %w", err)
		}
		w.key = []byte(strings.TrimSpace(string(k)))
		if len(w.key) < 16 {
			return nil, errors.New("audit: key must be at least 16 bytes")
		}
		w.mac = newMAC(w.key)
	}
	if cfg.Keyset != "" {
		if cfg.KEK == nil {
			return nil, errors.New("audit: an audit keyset needs its key-encryption key")
		}
		k, err := OpenKeyset(cfg.Keyset, cfg.KEK)
		if err != nil {
			return nil, err
		}
		w.seal = newSealer(k)
		w.stamps = [2]string{fileStamp(cfg.Keyset), fileStamp(SubjectsPath(cfg.Keyset))}
	}
	if cfg.MaxAge > 0 && cfg.RotateEvery <= 0 {
		w.cfg.RotateEvery = cfg.MaxAge / 8
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o750); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := w.takeLock(); err != nil {
		return nil, err
	}
	if err := w.start(); err != nil {
		_ = w.lock.Close() // releases the lock; the start error is the one to report
		if w.f != nil {
			_ = w.f.Close()
		}
		return nil, err
	}
	if w.failing == nil { // a full disk at start: fail already said so
		w.setHealthy()
	}
	if w.seal != nil {
		w.seqOff.Store(w.seq)
		go w.sealStage()
	}
	go w.run()
	return w, nil
}

// takeLock takes an exclusive, non-blocking flock on Path.lock for the
// writer's life: two processes appending to one log would interleave two
// chains and break both.
func (w *Writer) takeLock() error {
	name := w.cfg.Path + ".lock"
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o640) // #nosec G302 G304 -- beside the operator-configured audit log
	if err != nil {
		return fmt.Errorf("audit: lock %s: %w", name, err)
	}
	if ok, err := filelock.TryLock(f); !ok {
		holder, _ := os.ReadFile(name) // #nosec G304 -- the lock file beside the operator-configured audit log
		_ = f.Close()                  // the lock error is the one to report
		if err == nil {
			return fmt.Errorf("audit: %s is being written by another process (pid %s): give each replica its own --audit-log",
				w.cfg.Path, strings.TrimSpace(string(holder)))
		}
		return fmt.Errorf("audit: lock %s: %w", name, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0) // informational only
	}
	w.lock = f
	return nil
}

// start resumes the chain, cuts a torn last line, compares the log with its
// checkpoint and opens the file for appending.
func (w *Writer) start() error {
	torn, err := w.resume()
	if err != nil {
		return err
	}
	cp, err := ReadCheckpoint(CheckpointPath(w.cfg.Path), w.key)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		// Not a reason to stay down (a new key makes the old checkpoint's
		// signature fail): start from the files, and say so loudly.
		w.logger.Error("audit checkpoint unusable; the log's head is taken from its files and the checkpoint rewritten",
			"path", w.cfg.Path, "error", err)
		cp = nil
	}
	if cp == nil {
		if w.head, err = w.oldestHead(); err != nil {
			return err
		}
	} else {
		w.head = position{seq: cp.FirstSeq, prev: cp.FirstPrev}
		w.cpSeq = cp.LastSeq
	}
	if w.head.seq == 0 { // a new log: its first record is the next one
		w.head = position{seq: w.seq + 1, prev: w.prev}
	}
	if err := w.openFile(); err != nil {
		return err
	}
	w.durable = position{size: w.size, seq: w.seq, prev: w.prev}
	if cp != nil && (cp.LastSeq > w.seq || (cp.LastSeq == w.seq && cp.LastHash != w.prev)) {
		// The tail the checkpoint vouched for is gone: record the gap under
		// the seqs it had, so they are never reused and verify names it.
		w.logger.Error("audit log is shorter than its checkpoint: records were cut from its tail while no writer ran",
			"path", w.cfg.Path, "log_last_seq", w.seq, "checkpoint_last_seq", cp.LastSeq)
		first := w.seq + 1
		if cp.LastSeq == w.seq {
			first = w.seq
		}
		w.seq = cp.LastSeq
		w.startMarker(Record{Type: TypeRecordsLost, Details: map[string]any{
			"cause": LostMissingAtStart, "first_seq": first, "last_seq": w.seq, "records": w.seq + 1 - first,
		}})
	}
	if torn != nil {
		w.logger.Warn("audit log ended in a torn line (a write was cut); it is cut off and recorded on the chain",
			"path", w.cfg.Path, "bytes", torn["bytes"])
		w.startMarker(Record{Type: TypeTornLine, Details: torn})
	}
	if w.failing == nil {
		if err := w.checkpoint(); err != nil {
			w.logger.Error("audit checkpoint not written at start", "error", err)
		}
	}
	return nil
}

// startMarker writes a record that opens the log; when the disk is full,
// the writer starts failing (no outage: fail_open decides on) and writes it
// once writing resumes.
func (w *Writer) startMarker(r Record) {
	if w.failing == nil {
		err := w.appendNow(r)
		if err == nil {
			return
		}
		_ = w.f.Truncate(w.durable.size) // best effort, as in fail
		w.fail(err)
	}
	w.pending = append(w.pending, r)
}

// resume reads the last complete line of an existing log to continue its
// chain. Bytes after the last newline are a torn write: they are cut off
// and described in the returned details (nil when there are none).
func (w *Writer) resume() (map[string]any, error) {
	last, torn, err := tail(w.cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("audit: cannot continue %s: %w", w.cfg.Path, err)
	}
	var details map[string]any
	if len(torn) > 0 {
		st, err := os.Stat(w.cfg.Path)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		off := st.Size() - int64(len(torn))
		if err := os.Truncate(w.cfg.Path, off); err != nil {
			return nil, fmt.Errorf("audit: cut the torn last line of %s: %w", w.cfg.Path, err)
		}
		details = map[string]any{"bytes": len(torn), "offset": off, "sha256": lineHash(torn)}
	}
	if last == "" {
		return details, nil
	}
	r, err := parseLine(last)
	if err != nil {
		return nil, fmt.Errorf("audit: cannot continue %s: last line: %w", w.cfg.Path, err)
	}
	w.seq, w.prev = r.Seq, lineHash([]byte(last))
	return details, nil
}

// oldestHead is the first record of the oldest file of a log that has no
// checkpoint yet (zero for an empty log).
func (w *Writer) oldestHead() (position, error) {
	for n := w.cfg.MaxFiles + 1; n >= 0; n-- {
		name := rotatedName(w.cfg.Path, n)
		first, err := firstLine(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return position{}, fmt.Errorf("audit: %s: %w", name, err)
		}
		if first == "" {
			continue
		}
		r, err := parseLine(first)
		if err != nil {
			return position{}, fmt.Errorf("audit: %s: first line: %w", name, err)
		}
		return position{seq: r.Seq, prev: r.Prev}, nil
	}
	return position{}, nil
}

func rotatedName(path string, n int) string {
	if n == 0 {
		return path
	}
	return path + "." + strconv.Itoa(n)
}

// openFile opens Path for appending (w.f, w.size, the buffer). What of it
// is durable (w.durable) is the caller's to say.
func (w *Writer) openFile() error {
	f, err := os.OpenFile(w.cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640) // #nosec G302 -- group-readable for a log shipper; records hold no secrets (SECURITY.md)
	if err != nil {
		return fmt.Errorf("audit: open %s: %w", w.cfg.Path, err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close() // the Stat error is the one to report
		return fmt.Errorf("audit: %w", err)
	}
	if w.bw == nil {
		w.bw = bufio.NewWriterSize(f, 64<<10)
	} else {
		w.bw.Reset(f)
	}
	w.f, w.size = f, st.Size()
	w.bufDropped = 0
	if w.segStart.IsZero() || w.size == 0 {
		w.segStart = time.Now()
	}
	return nil
}

// Log queues a record. With OverflowDrop it never blocks; with OverflowBlock
// it waits for room or for ctx.
func (w *Writer) Log(ctx context.Context, r Record) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.dropped.Add(1)
		w.lost.Inc()
		return
	}
	if w.cfg.Overflow == OverflowBlock {
		select {
		case w.ch <- r:
		case <-ctx.Done():
			w.dropped.Add(1)
			w.lost.Inc()
		}
		return
	}
	select {
	case w.ch <- r:
	default:
		w.dropped.Add(1)
		w.lost.Inc()
	}
}

// Healthy reports whether records are being written, for /readyz and metrics.
func (w *Writer) Healthy() bool { return w.healthy.Load() }

// Err is nil while records are being written and ErrUnavailable while
// writes fail. It costs one atomic load: the pipeline asks it before every
// decision when the audit trail is required (fail_closed).
func (w *Writer) Err() error {
	if w.healthy.Load() {
		return nil
	}
	return ErrUnavailable
}

// Status is the writer's state for /readyz.
func (w *Writer) Status() Status {
	s := *w.status.Load()
	s.LostRecords = w.lostTotal.Load()
	return s
}

func (w *Writer) setHealthy() {
	w.status.Store(&Status{Healthy: true})
	w.healthy.Store(true)
}

// Close drains the buffer, flushes, writes the checkpoint and closes the
// file, waiting at most until ctx is done.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("audit: close: %w", ctx.Err())
	}
}

// sealAhead is how many sealed records may wait for the writer: enough to
// keep both goroutines busy, few enough that a mispredicted seq (a
// rotation's segment_start) costs few re-seals.
const sealAhead = 64

// presealed is a record the sealing stage encrypted ahead of the writer:
// the record in the clear (the writer seals it again when seq turns out
// wrong), and, when sealed, the seq and key generation it was sealed under
// and its line up to the encrypted body.
type presealed struct {
	r    Record
	seq  uint64 // 0: not sealed (not sealable, or sealing failed)
	gen  uint64
	head []byte
}

// sealStage encrypts queued records off the writer goroutine, so the
// encryption and the chain (hash, HMAC, file) run on two cores. It predicts
// each record's seq from seqOff; the writer checks the prediction. Closing
// ch (Close) drains it into in, then closes in.
func (w *Writer) sealStage() {
	defer close(w.in)
	var n uint64
	for r := range w.ch {
		n++
		if r.Time.IsZero() {
			r.Time = time.Now().UTC()
		}
		p := presealed{r: r}
		if sealable(r.Type) {
			seq := w.seqOff.Load() + n
			if head, gen, err := w.seal.sealHead(r, seq); err == nil {
				p.seq, p.gen, p.head = seq, gen, head
			}
		}
		w.in <- p
	}
}

func (w *Writer) run() {
	defer close(w.done)
	tick := time.NewTicker(w.cfg.FlushInterval)
	defer tick.Stop()
	ch, in := w.ch, w.in
	if in != nil { // the sealing stage reads ch
		ch = nil
	}
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				w.shutdown()
				return
			}
			w.write(r)
			if len(w.ch) == 0 {
				w.flush()
			}
		case p, ok := <-in:
			if !ok {
				w.shutdown()
				return
			}
			w.taken++
			w.writeRecord(p.r, &p)
			if len(in) == 0 && len(w.ch) == 0 {
				w.flush()
			}
		case <-tick.C:
			w.flush()
			w.maintain()
		}
		if in != nil {
			w.seqOff.Store(w.seq - w.taken)
		}
	}
}

// shutdown flushes, records a loss still open (one last try) and closes.
func (w *Writer) shutdown() {
	w.flush()
	if w.failing != nil {
		w.nextRetry = time.Time{}
		w.retry()
	}
	if w.f != nil {
		if w.failing == nil {
			if err := w.checkpoint(); err != nil {
				w.logger.Error("audit checkpoint not written at close", "error", err)
			}
		}
		if err := w.f.Close(); err != nil {
			w.logger.Error("audit log close", "error", err)
		}
		w.f = nil
	}
	_ = w.lock.Close() // releases the flock
}

func (w *Writer) write(r Record) { w.writeRecord(r, nil) }

// writeRecord appends r to the chain; p, when set, is r as the sealing
// stage encrypted it, used when its seq and keys are still right.
func (w *Writer) writeRecord(r Record, p *presealed) {
	if w.failing != nil {
		// The record gets its seq, so the records_lost record written when
		// writing resumes accounts for it by range.
		w.seq++
		w.lostOnDisk.Inc()
		w.lostTotal.Add(1)
		return
	}
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	r.Dropped = w.dropped.Swap(0)
	orig := r
	line, err := w.encodeAt(&r, p)
	if err != nil {
		// A record that cannot be encoded is dropped and counted like one
		// the buffer had no room for; its seq is not spent.
		w.dropped.Add(r.Dropped + 1)
		w.lost.Inc()
		w.logger.Error("audit record cannot be encoded; dropped (counted on the chain)", "type", orig.Type, "error", err)
		return
	}
	if w.size > 0 && (w.size+int64(len(line))+1 > w.cfg.MaxBytes ||
		(w.cfg.RotateEvery > 0 && time.Since(w.segStart) >= w.cfg.RotateEvery)) {
		if err := w.rotate(); err != nil {
			w.seq++ // the record is lost with its seq, as the write error says
			w.dropped.Add(r.Dropped)
			w.fail(err)
			return
		}
		// The new file opens with a segment_start: the record follows it.
		r = orig
		if line, err = w.encodeAt(&r, p); err != nil {
			w.dropped.Add(r.Dropped + 1)
			w.lost.Inc()
			w.logger.Error("audit record cannot be encoded; dropped (counted on the chain)", "type", orig.Type, "error", err)
			return
		}
	}
	w.seq++
	w.bufDropped += r.Dropped
	if _, err = w.bw.Write(line); err == nil {
		err = w.bw.WriteByte('\n')
	}
	if err != nil {
		w.fail(err)
		return
	}
	w.size += int64(len(line)) + 1
	w.prev = lineHash(line)
}

// encodeAt renders r as the next record of the chain (seq w.seq+1 after
// w.prev), encrypted when the log has a keyset: from p's sealed head when p
// was sealed under that seq with the keys in force, else sealed here. It
// does not advance the chain.
func (w *Writer) encodeAt(r *Record, p *presealed) ([]byte, error) {
	r.Seq = w.seq + 1
	r.Prev = w.prev
	if w.seal != nil && sealable(r.Type) {
		if p != nil && p.head != nil && p.seq == r.Seq && p.gen == w.seal.gen.Load() {
			line := signLine(appendSealedTail(p.head, r.Dropped, r.Prev), w.mac)
			p.head = nil // spent: a rotation after it seals the record again
			return line, nil
		}
		if p != nil && p.seq != 0 {
			w.resealed.Add(1)
		}
		if err := w.seal.seal(r); err != nil {
			return nil, err
		}
	}
	return encode(r, w.mac)
}

// fail starts (or continues) a write-error episode: what was not written
// whole is cut from the file, every record since the last complete write is
// lost and counted, and the chain is rewound to the last line on disk.
func (w *Writer) fail(err error) {
	w.failures.Inc()
	lost := w.seq - w.durable.seq
	w.lostOnDisk.Add(float64(lost))
	w.lostTotal.Add(lost)
	w.dropped.Add(w.bufDropped)
	w.bufDropped = 0
	if w.failing == nil {
		w.failing = &failure{err: err, since: time.Now().UTC(), firstSeq: w.durable.seq + 1}
		since := w.failing.since
		w.status.Store(&Status{Error: err.Error(), Since: &since})
		w.healthy.Store(false)
		w.logger.Error("audit log cannot be written: records are lost and counted until writing resumes", "error", err)
	}
	w.prev = w.durable.prev
	if w.f != nil {
		// Cut a partial write now: it frees the space and keeps the file
		// ending on a whole line even if this process dies before recovering.
		_ = w.f.Truncate(w.durable.size) // best effort: retry truncates again
		_ = w.f.Close()                  // the write error is the one that counts
		w.f = nil
	}
	w.bw.Reset(io.Discard)
	w.nextRetry = time.Now().Add(w.cfg.RetryInterval)
}

// retry tries to leave a write-error episode: reopen the file, cut it back
// to the last whole line, and write a records_lost record naming the seqs
// that were lost. Until that record is on disk, nothing else is written.
func (w *Writer) retry() {
	now := time.Now()
	if now.Before(w.nextRetry) {
		return
	}
	w.nextRetry = now.Add(w.cfg.RetryInterval)
	f := w.failing
	if err := w.reopen(); err != nil {
		w.logger.Debug("audit log still cannot be written", "error", err)
		return
	}
	var err error
	if w.seq >= f.firstSeq {
		err = w.appendNow(Record{Type: TypeRecordsLost, Details: map[string]any{
			"cause": LostWriteError, "first_seq": f.firstSeq, "last_seq": w.seq, "records": w.seq + 1 - f.firstSeq,
			"since": f.since.Format(time.RFC3339Nano), "error": f.err.Error(),
		}})
		if err == nil {
			f.firstSeq = w.seq + 1 // accounted for, even if a pending marker fails next
		}
	}
	for err == nil && len(w.pending) > 0 {
		if err = w.appendNow(w.pending[0]); err == nil {
			w.pending = w.pending[1:]
		}
	}
	if err != nil {
		w.failures.Inc()
		_ = w.f.Truncate(w.durable.size) // best effort, as in fail
		_ = w.f.Close()                  // the write error is the one that counts
		w.f = nil
		return
	}
	w.failing = nil
	w.setHealthy()
	w.logger.Warn("audit log writing resumed; the loss is recorded on the chain", "since", f.since)
	if err := w.checkpoint(); err != nil {
		w.logger.Error("audit checkpoint not written", "error", err)
	}
}

// reopen opens the log again after a failure, cut back to the last whole
// line written.
func (w *Writer) reopen() error {
	if w.f == nil {
		if err := w.openFile(); err != nil {
			return err
		}
	}
	if w.size < w.durable.size { // shortened by someone else: keep what is there
		w.durable.size = w.size
	}
	if w.size > w.durable.size {
		if err := w.f.Truncate(w.durable.size); err != nil {
			return fmt.Errorf("audit: cut a partial write: %w", err)
		}
		w.size = w.durable.size
	}
	return nil
}

// appendNow writes one record straight to the file (not through the
// buffer), for the markers that open or resume a log. On success the
// record is on disk and durable.
func (w *Writer) appendNow(r Record) error {
	r.Time = time.Now().UTC()
	r.Dropped = w.dropped.Swap(0)
	w.prev = w.durable.prev
	line, err := w.encodeAt(&r, nil)
	if err != nil {
		w.dropped.Add(r.Dropped)
		return err
	}
	line = append(line, '\n')
	if _, err := w.f.Write(line); err != nil {
		w.dropped.Add(r.Dropped)
		return fmt.Errorf("audit: write %s: %w", w.cfg.Path, err)
	}
	w.seq = r.Seq
	w.prev = lineHash(line[:len(line)-1])
	w.size = w.durable.size + int64(len(line))
	w.durable = position{size: w.size, seq: w.seq, prev: w.prev}
	w.written.Inc()
	return nil
}

func (w *Writer) flush() {
	if w.failing != nil {
		w.retry()
		return
	}
	if err := w.bw.Flush(); err != nil {
		w.fail(err)
		return
	}
	if n := w.seq - w.durable.seq; n > 0 {
		w.written.Add(float64(n))
		w.durable = position{size: w.size, seq: w.seq, prev: w.prev}
		w.bufDropped = 0
	}
	if w.durable.seq != w.cpSeq && (w.durable.seq-w.cpSeq >= w.cfg.CheckpointRecords || time.Since(w.cpTime) >= w.cfg.CheckpointInterval) {
		if err := w.checkpoint(); err != nil {
			w.failures.Inc()
			w.logger.Error("audit checkpoint not written", "error", err)
		}
	}
}

// checkpoint records the durable end of the log and the head it must still
// hold.
func (w *Writer) checkpoint() error {
	cp := Checkpoint{FirstSeq: w.head.seq, FirstPrev: w.head.prev, LastSeq: w.durable.seq, LastHash: w.durable.prev,
		Time: time.Now().UTC()}
	if cp.LastSeq < cp.FirstSeq { // nothing written yet
		cp.LastSeq, cp.LastHash = 0, ""
	}
	if err := writeCheckpoint(CheckpointPath(w.cfg.Path), cp, w.key); err != nil {
		return err
	}
	w.cpSeq, w.cpTime = w.durable.seq, time.Now()
	return nil
}

// rotate shifts Path.<n> to Path.<n+1> and Path to Path.1, then starts a new
// Path; the chain (seq, prev) simply continues into it. Files beyond
// MaxFiles are deleted, after the checkpoint names the new head.
func (w *Writer) rotate() error {
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("audit: rotate: %w", err)
	}
	// The record being written has no seq yet: durable is all written.
	w.written.Add(float64(w.seq - w.durable.seq))
	w.durable = position{size: w.size, seq: w.seq, prev: w.prev}
	if err := w.f.Close(); err != nil {
		w.f = nil
		return fmt.Errorf("audit: rotate: %w", err)
	}
	w.f = nil
	n := 1
	for ; ; n++ {
		if _, err := os.Stat(rotatedName(w.cfg.Path, n)); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	for ; n > 1; n-- {
		if err := os.Rename(rotatedName(w.cfg.Path, n-1), rotatedName(w.cfg.Path, n)); err != nil {
			return fmt.Errorf("audit: rotate: %w", err)
		}
	}
	if err := os.Rename(w.cfg.Path, w.cfg.Path+".1"); err != nil {
		return fmt.Errorf("audit: rotate: %w", err)
	}
	w.durable.size = 0
	if err := w.openFile(); err != nil {
		return err
	}
	w.durable.size = w.size // the chain point stays before the record being written
	w.prune()
	return w.segmentStart()
}

// segmentStart opens a new file with a segment_start record: where the
// chain stands (the previous file's last record) and the head the log
// still holds. It is on the chain (and signed with a key), so the oldest
// segment retention keeps proves where the retained range starts.
func (w *Writer) segmentStart() error {
	r := Record{Type: TypeSegmentStart, Time: time.Now().UTC(), Dropped: w.dropped.Swap(0), Details: map[string]any{
		"previous_last_seq": w.seq, "previous_last_hash": w.prev, "log_first_seq": w.head.seq, "log_first_prev": w.head.prev}}
	line, err := w.encodeAt(&r, nil)
	if err != nil {
		w.dropped.Add(r.Dropped)
		return err
	}
	if _, err = w.bw.Write(line); err == nil {
		err = w.bw.WriteByte('\n')
	}
	if err != nil {
		w.dropped.Add(r.Dropped)
		return fmt.Errorf("audit: rotate: %w", err)
	}
	w.seq++
	w.bufDropped += r.Dropped
	w.size += int64(len(line)) + 1
	w.prev = lineHash(line)
	return nil
}

// prune deletes rotated files beyond MaxFiles, oldest first, after the
// checkpoint names the first record of the oldest file kept.
func (w *Writer) prune() {
	if _, err := os.Stat(rotatedName(w.cfg.Path, w.cfg.MaxFiles+1)); err != nil {
		return
	}
	w.pruneTo(w.cfg.MaxFiles, fmt.Sprintf("max_files %d", w.cfg.MaxFiles))
}

// pruneTo deletes the rotated files after Path.<keep> (keep 0: every
// rotated file), after the checkpoint names the first record of the oldest
// file kept as the log's head.
func (w *Writer) pruneTo(keep int, why string) {
	if keep == 0 {
		if err := w.bw.Flush(); err != nil { // the head must be on disk to be read
			w.fail(err)
			return
		}
	}
	first, err := firstLine(rotatedName(w.cfg.Path, keep))
	if err != nil || first == "" {
		w.logger.Error("audit retention: cannot read the oldest file kept; nothing deleted", "error", err)
		return
	}
	r, err := parseLine(first)
	if err != nil {
		w.logger.Error("audit retention: cannot read the oldest file kept; nothing deleted", "error", err)
		return
	}
	w.head = position{seq: r.Seq, prev: r.Prev}
	if keep == 0 { // what was flushed is durable
		w.written.Add(float64(w.seq - w.durable.seq))
		w.durable = position{size: w.size, seq: w.seq, prev: w.prev}
		w.bufDropped = 0
	}
	if err := w.checkpoint(); err != nil {
		w.logger.Error("audit retention: checkpoint not written; nothing deleted", "error", err)
		return
	}
	for n := keep + 1; ; n++ {
		name := rotatedName(w.cfg.Path, n)
		if err := os.Remove(name); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				w.logger.Error("audit retention: cannot delete a rotated file", "file", name, "error", err)
			}
			return
		}
		w.logger.Info("audit retention: deleted the oldest rotated file", "file", name, "rule", why)
	}
}

// retainAge deletes the rotated files whose newest record is older than
// MaxAge (files are in time order: Path.1 is the most recent).
func (w *Writer) retainAge(now time.Time) {
	cutoff := now.Add(-w.cfg.MaxAge)
	for n := 1; ; n++ {
		last, _, err := tail(rotatedName(w.cfg.Path, n))
		if err != nil || last == "" {
			return // no such file (tail reports none), or unreadable: keep everything
		}
		r, err := parseLine(last)
		if err != nil {
			return
		}
		if r.Time.Before(cutoff) {
			w.pruneTo(n-1, "max_age "+w.cfg.MaxAge.String())
			return
		}
	}
}

// maintain runs the writer's periodic duties (at most once a second): take
// a rotated keyset, forget erased subject keys, record the queued
// key-management events, delete segments past their age.
func (w *Writer) maintain() {
	now := time.Now()
	if w.failing != nil || now.Sub(w.maintained) < time.Second {
		return
	}
	w.maintained = now
	if w.seal != nil {
		w.reloadKeys()
		evs, err := takeEvents(w.cfg.Keyset)
		if err != nil {
			w.logger.Error("audit: key-management events not read", "error", err)
		}
		for _, e := range evs {
			w.write(Record{Type: e.Type, Time: e.Time.UTC(), Details: e.Details})
		}
		if len(evs) > 0 {
			w.flush()
		}
	}
	if w.cfg.MaxAge > 0 && w.failing == nil {
		w.retainAge(now)
	}
}

// reloadKeys takes a changed keyset (a rotation: a new primary key) and a
// changed subject-key file (an erasure). A keyset that does not open is
// logged and the one in force kept.
func (w *Writer) reloadKeys() {
	ks, ss := fileStamp(w.cfg.Keyset), fileStamp(SubjectsPath(w.cfg.Keyset))
	if ks != w.stamps[0] {
		k, err := OpenKeyset(w.cfg.Keyset, w.cfg.KEK)
		if err != nil {
			w.logger.Error("audit keyset changed but does not open; the keys in force are kept", "error", err)
		} else {
			if old := w.seal.primary(); k.Primary != old {
				w.logger.Info("audit keyset reloaded: new records use its new primary key", "key_id", k.Primary, "previous_key_id", old)
			}
			w.seal.setKeys(k)
			w.stamps[0] = ks
		}
	}
	if ss != w.stamps[1] {
		if err := w.seal.refreshSubjects(); err != nil {
			w.logger.Error("audit subject keys not reloaded", "error", err)
		} else {
			w.stamps[1] = ss
		}
	}
}

// fileStamp identifies a file's version (size and modification time; ""
// when it does not exist).
func fileStamp(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return ""
	}
	return strconv.FormatInt(st.Size(), 10) + "/" + strconv.FormatInt(st.ModTime().UnixNano(), 10)
}

// tail returns the last complete line of a file ("" if none) and the bytes
// after its last newline (a torn write).
func tail(path string) (last string, torn []byte, err error) {
	f, err := os.Open(path) // #nosec G304 -- the audit path is operator configuration, trusted (SECURITY.md)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", nil, err
	}
	const chunk = 1 << 20
	off := max(st.Size()-chunk, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return "", nil, err
	}
	end := strings.LastIndexByte(string(buf), '\n')
	if end < 0 {
		if off > 0 {
			return "", nil, errors.New("last line longer than 1 MiB")
		}
		return "", buf, nil
	}
	torn = buf[end+1:]
	s := strings.TrimRight(string(buf[:end]), "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	} else if off > 0 {
		return "", nil, errors.New("last line longer than 1 MiB")
	}
	return s, torn, nil
}

// firstLine returns the first line of a file ("" if it is empty).
func firstLine(path string) (string, error) {
	f, err := os.Open(path) // #nosec G304 -- the audit path is operator configuration, trusted (SECURITY.md)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	if sc.Scan() {
		return sc.Text(), nil
	}
	return "", sc.Err()
}
