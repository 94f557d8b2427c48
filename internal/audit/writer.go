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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

// Config configures a Writer.
type Config struct {
	// Path is the log file; rotated files are Path.<n> (1 = most recent).
	Path string
	// MaxBytes rotates the file once it grows past this size (default 100 MiB).
	MaxBytes int64
	// KeyFile, when set, holds the HMAC key every line is signed with.
	KeyFile string
	// Buffer is how many records may wait to be written (default 4096).
	Buffer int
	// Overflow is OverflowDrop (default) or OverflowBlock.
	Overflow Overflow
	// FlushInterval bounds how long a record may sit in memory (default 200ms).
	FlushInterval time.Duration
}

// Writer appends records to the chained log from one goroutine. Log is safe
// for concurrent use.
type Writer struct {
	cfg    Config
	key    []byte
	mac    hash.Hash // HMAC keyed with key, used by the writer goroutine only
	logger *slog.Logger

	ch      chan Record
	dropped atomic.Uint64
	done    chan struct{}
	mu      sync.RWMutex // guards closed against Log racing Close
	closed  bool

	f    *os.File
	bw   *bufio.Writer
	size int64
	seq  uint64
	prev string

	written  prometheus.Counter
	lost     prometheus.Counter
	failures prometheus.Counter
	healthy  atomic.Bool
}

// Open starts a Writer. An existing log is continued: the chain resumes from
// its last line (seq and hash), so restarts do not break it.
func Open(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Writer, error) {
	if cfg.Path == "" {
		return nil, errors.New("audit: no path")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 100 << 20
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
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w := &Writer{cfg: cfg, logger: logger, ch: make(chan Record, cfg.Buffer), done: make(chan struct{}),
		written:  prometheus.NewCounter(prometheus.CounterOpts{Name: "bulwark_audit_records_written_total", Help: "Audit records written."}),
		lost:     prometheus.NewCounter(prometheus.CounterOpts{Name: "bulwark_audit_records_dropped_total", Help: "Audit records dropped because the buffer was full."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "bulwark_audit_write_errors_total", Help: "Failed audit writes."}),
	}
	healthy := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bulwark_audit_sink_healthy",
		Help: "1 while the last audit write succeeded, 0 after a failed write."}, func() float64 {
		if w.healthy.Load() {
			return 1
		}
		return 0
	})
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bulwark_audit_queue_length",
		Help: "Audit records waiting to be written (the buffer holds --audit-buffer)."}, func() float64 { return float64(len(w.ch)) })
	if reg != nil {
		for _, c := range []prometheus.Collector{w.written, w.lost, w.failures, healthy, queued} {
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
	}
	if err := w.resume(); err != nil {
		return nil, err
	}
	if err := w.openFile(); err != nil {
		return nil, err
	}
	w.healthy.Store(true)
	go w.run()
	return w, nil
}

// resume reads the last line of an existing log to continue its chain.
func (w *Writer) resume() error {
	last, err := lastLine(w.cfg.Path)
	if err != nil || last == "" {
		return err
	}
	r, err := parseLine(last)
	if err != nil {
		return fmt.Errorf("audit: cannot continue %s: last line: %w", w.cfg.Path, err)
	}
	w.seq, w.prev = r.Seq, lineHash([]byte(last))
	return nil
}

func (w *Writer) openFile() error {
	if err := os.MkdirAll(filepath.Dir(w.cfg.Path), 0o750); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	f, err := os.OpenFile(w.cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640) // #nosec G302 -- group-readable for a log shipper; records hold no secrets (SECURITY.md)
	if err != nil {
		return fmt.Errorf("audit: open %s: %w", w.cfg.Path, err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close() // the Stat error is the one to report
		return fmt.Errorf("audit: %w", err)
	}
	w.f, w.bw, w.size = f, bufio.NewWriterSize(f, 64<<10), st.Size()
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

// Healthy reports whether the last write succeeded, for /readyz and metrics.
func (w *Writer) Healthy() bool { return w.healthy.Load() }

// Close drains the buffer, flushes and closes the file, waiting at most until
// ctx is done.
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

func (w *Writer) run() {
	defer close(w.done)
	tick := time.NewTicker(w.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case r, ok := <-w.ch:
			if !ok {
				w.flush()
				if err := w.f.Close(); err != nil {
					w.fail(err)
				}
				return
			}
			w.write(r)
			if len(w.ch) == 0 {
				w.flush()
			}
		case <-tick.C:
			w.flush()
		}
	}
}

func (w *Writer) write(r Record) {
	w.seq++
	r.Seq = w.seq
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	r.Prev = w.prev
	r.Dropped = w.dropped.Swap(0)
	if len(w.key) > 0 && w.mac == nil {
		w.mac = newMAC(w.key)
	}
	line, err := encode(&r, w.mac)
	if err != nil {
		w.fail(err)
		return
	}
	if w.size > 0 && w.size+int64(len(line))+1 > w.cfg.MaxBytes {
		if err := w.rotate(); err != nil {
			w.fail(err)
		}
	}
	if _, err = w.bw.Write(line); err == nil {
		err = w.bw.WriteByte('\n')
	}
	if err != nil {
		w.fail(err)
		return
	}
	w.size += int64(len(line)) + 1
	w.prev = lineHash(line)
	w.written.Inc()
	w.healthy.Store(true)
}

func (w *Writer) fail(err error) {
	w.failures.Inc()
	w.healthy.Store(false)
	w.logger.Error("audit write failed", "error", err)
}

func (w *Writer) flush() {
	if err := w.bw.Flush(); err != nil {
		w.fail(err)
	}
}

// rotate shifts Path.<n> to Path.<n+1> and Path to Path.1, then starts a new
// Path; the chain (seq, prev) simply continues into it.
func (w *Writer) rotate() error {
	w.flush()
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("audit: rotate: %w", err)
	}
	n := 1
	for ; ; n++ {
		if _, err := os.Stat(fmt.Sprintf("%s.%d", w.cfg.Path, n)); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	for ; n > 1; n-- {
		if err := os.Rename(fmt.Sprintf("%s.%d", w.cfg.Path, n-1), fmt.Sprintf("%s.%d", w.cfg.Path, n)); err != nil {
			return fmt.Errorf("audit: rotate: %w", err)
		}
	}
	if err := os.Rename(w.cfg.Path, w.cfg.Path+".1"); err != nil {
		return fmt.Errorf("audit: rotate: %w", err)
	}
	return w.openFile()
}

// lastLine returns the last non-empty line of a file ("" if none).
func lastLine(path string) (string, error) {
	f, err := os.Open(path) // #nosec G304 -- the audit path is operator configuration, trusted (SECURITY.md)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	const chunk = 1 << 20
	off := max(st.Size()-chunk, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	s := strings.TrimRight(string(buf), "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	} else if off > 0 {
		return "", errors.New("last line longer than 1 MiB")
	}
	return s, nil
}
