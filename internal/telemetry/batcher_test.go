package telemetry

import (
	"context"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

type countingExporter struct {
	mu      sync.Mutex
	batches []int
	shut    bool
}

func (e *countingExporter) ExportSpans(_ context.Context, s []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	e.batches = append(e.batches, len(s))
	e.mu.Unlock()
	return nil
}

func (e *countingExporter) Shutdown(context.Context) error {
	e.mu.Lock()
	e.shut = true
	e.mu.Unlock()
	return nil
}

func (e *countingExporter) total() (n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.batches {
		n += b
	}
	return n
}

func spans(b *Batcher, n int) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b))
	tr := tp.Tracer("t")
	for range n {
		_, s := tr.Start(context.Background(), "s")
		s.End()
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBatcherExportsFullBatchesAtOnce(t *testing.T) {
	t.Parallel()
	exp := &countingExporter{}
	b := NewBatcher(exp, BatchConfig{ScheduleDelay: time.Hour, MaxExportBatchSize: 10, MaxQueueSize: 100})
	spans(b, 25)
	waitFor(t, func() bool { return exp.total() >= 10 }) // the first full batch, long before the hour
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if exp.total() != 25 || !exp.shut {
		t.Errorf("exported %d spans (batches %v), shut down %v; want all 25 after Shutdown", exp.total(), exp.batches, exp.shut)
	}
	for _, n := range exp.batches {
		if n > 10 {
			t.Errorf("a batch of %d spans, over MaxExportBatchSize", n)
		}
	}
}

func TestBatcherExportsOnSchedule(t *testing.T) {
	t.Parallel()
	exp := &countingExporter{}
	b := NewBatcher(exp, BatchConfig{ScheduleDelay: 20 * time.Millisecond})
	defer b.Shutdown(context.Background())
	spans(b, 3)
	waitFor(t, func() bool { return exp.total() == 3 })
}

func TestBatcherDropsWhenFull(t *testing.T) {
	t.Parallel()
	exp := &countingExporter{}
	b := NewBatcher(exp, BatchConfig{ScheduleDelay: time.Hour, MaxQueueSize: 5, MaxExportBatchSize: 5})
	b.exportMu.Lock() // the exporter is stuck: nothing leaves the queue
	spans(b, 12)
	b.exportMu.Unlock()
	if err := b.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.Dropped() == 0 || exp.total()+int(b.Dropped()) != 12 {
		t.Errorf("exported %d, dropped %d; want 12 in all, some dropped", exp.total(), b.Dropped())
	}
	_ = b.Shutdown(context.Background())
}

func TestBatchConfigFromEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_BSP_MAX_QUEUE_SIZE": "64", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "junk"}
	c := batchConfigFromEnv(func(k string) string { return env[k] }).withDefaults()
	if c.ScheduleDelay != 100*time.Millisecond || c.MaxQueueSize != 64 || c.MaxExportBatchSize != 64 || c.ExportTimeout != 30*time.Second {
		t.Errorf("config = %+v", c)
	}
}
