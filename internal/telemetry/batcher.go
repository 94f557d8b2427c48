package telemetry

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// BatchConfig tunes the span batcher; zero fields take the OTEL_BSP_*
// defaults.
type BatchConfig struct {
	// ScheduleDelay is the longest a finished span waits before it is
	// exported (OTEL_BSP_SCHEDULE_DELAY, default 5s).
	ScheduleDelay time.Duration
	// ExportTimeout bounds one export (OTEL_BSP_EXPORT_TIMEOUT, default 30s).
	ExportTimeout time.Duration
	// MaxQueueSize is how many finished spans may wait; more are dropped
	// (OTEL_BSP_MAX_QUEUE_SIZE, default 2048).
	MaxQueueSize int
	// MaxExportBatchSize is the most spans sent in one export; a queue
	// this long is exported at once (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 512).
	MaxExportBatchSize int
}

func (c BatchConfig) withDefaults() BatchConfig {
	if c.ScheduleDelay <= 0 {
		c.ScheduleDelay = 5 * time.Second
	}
	if c.ExportTimeout <= 0 {
		c.ExportTimeout = 30 * time.Second
	}
	if c.MaxQueueSize <= 0 {
		c.MaxQueueSize = 2048
	}
	if c.MaxExportBatchSize <= 0 || c.MaxExportBatchSize > c.MaxQueueSize {
		c.MaxExportBatchSize = min(512, c.MaxQueueSize)
	}
	return c
}

// batchConfigFromEnv reads the standard OTEL_BSP_* variables (milliseconds
// and counts); unset or malformed ones keep their defaults, as the SDK does.
func batchConfigFromEnv(env func(string) string) BatchConfig {
	num := func(k string) int {
		n, err := strconv.Atoi(env(k))
		if err != nil || n <= 0 {
			return 0
		}
		return n
	}
	return BatchConfig{
		ScheduleDelay:      time.Duration(num("OTEL_BSP_SCHEDULE_DELAY")) * time.Millisecond,
		ExportTimeout:      time.Duration(num("OTEL_BSP_EXPORT_TIMEOUT")) * time.Millisecond,
		MaxQueueSize:       num("OTEL_BSP_MAX_QUEUE_SIZE"),
		MaxExportBatchSize: num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
	}
}

// Batcher is a span processor that queues finished spans under a mutex and
// exports them from one goroutine every ScheduleDelay, or as soon as a
// full batch is queued. Unlike the SDK's batch processor, which hands every
// span to its goroutine over a channel (waking it, two futex calls on an
// idle machine, for each of a decision's five spans), ending a span here
// costs an append: the exporter is woken once per batch.
type Batcher struct {
	exp sdktrace.SpanExporter
	cfg BatchConfig

	mu    sync.Mutex
	queue []sdktrace.ReadOnlySpan

	exportMu sync.Mutex // one export at a time (run and ForceFlush)
	dropped  atomic.Uint64
	kick     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

var _ sdktrace.SpanProcessor = (*Batcher)(nil)

// NewBatcher starts a Batcher exporting to exp.
func NewBatcher(exp sdktrace.SpanExporter, cfg BatchConfig) *Batcher {
	cfg = cfg.withDefaults()
	b := &Batcher{exp: exp, cfg: cfg, queue: make([]sdktrace.ReadOnlySpan, 0, cfg.MaxExportBatchSize),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go b.run()
	return b
}

// OnStart does nothing: spans are queued when they end.
func (b *Batcher) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span; a full queue drops it (counted).
func (b *Batcher) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	b.mu.Lock()
	if len(b.queue) >= b.cfg.MaxQueueSize {
		b.mu.Unlock()
		b.dropped.Add(1)
		return
	}
	b.queue = append(b.queue, s)
	full := len(b.queue) == b.cfg.MaxExportBatchSize
	b.mu.Unlock()
	if full {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// Dropped counts spans lost to a full queue.
func (b *Batcher) Dropped() uint64 { return b.dropped.Load() }

func (b *Batcher) run() {
	defer close(b.done)
	t := time.NewTicker(b.cfg.ScheduleDelay)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		case <-b.kick:
		}
		if err := b.export(context.Background()); err != nil {
			otel.Handle(err)
		}
	}
}

// export sends everything queued, in batches of at most MaxExportBatchSize.
func (b *Batcher) export(ctx context.Context) error {
	b.exportMu.Lock()
	defer b.exportMu.Unlock()
	b.mu.Lock()
	spans := b.queue
	b.queue = make([]sdktrace.ReadOnlySpan, 0, b.cfg.MaxExportBatchSize)
	b.mu.Unlock()
	var errs []error
	for len(spans) > 0 {
		n := min(len(spans), b.cfg.MaxExportBatchSize)
		ectx, cancel := context.WithTimeout(ctx, b.cfg.ExportTimeout)
		if err := b.exp.ExportSpans(ectx, spans[:n]); err != nil {
			errs = append(errs, err)
		}
		cancel()
		spans = spans[n:]
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// ForceFlush exports what is queued now.
func (b *Batcher) ForceFlush(ctx context.Context) error { return b.export(ctx) }

// Shutdown stops the goroutine, exports what is queued and shuts the
// exporter down, waiting at most until ctx is done.
func (b *Batcher) Shutdown(ctx context.Context) error {
	var err error
	b.stopOnce.Do(func() {
		close(b.stop)
		select {
		case <-b.done:
		case <-ctx.Done():
			err = ctx.Err()
			return
		}
		err = errors.Join(b.export(ctx), b.exp.Shutdown(ctx))
	})
	return err
}
