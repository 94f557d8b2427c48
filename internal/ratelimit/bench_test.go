package ratelimit

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/test/redisserver"
	dto "github.com/prometheus/client_model/go"
)

// BenchmarkCheckRedis measures Check against a real local redis-server with
// many concurrent callers (as many in-flight requests as a busy replica has),
// each check carrying two limits (requests per minute and tokens per day) of
// one of 10,000 principals. It reports checks/s and the p99 latency.
//
//	go test -run '^$' -bench CheckRedis -benchtime 200000x ./internal/ratelimit
func BenchmarkCheckRedis(b *testing.B) {
	srv := redisserver.Start(b)
	cases := []struct {
		name string
		cfg  Config
		par  int // callers per GOMAXPROCS; 0 = benchParallelism
	}{
		{"batched", Config{}, 0},
		{"batched-workers2", Config{BatchWorkers: 2}, 0},
		{"batched-workers4", Config{BatchWorkers: 4}, 0},
		{"batched-window100us", Config{BatchWindow: 100 * time.Microsecond}, 0},
		{"unbatched", Config{BatchMax: 1, BatchWorkers: 64, PoolSize: 64}, 0},
		// Light load: one caller per GOMAXPROCS, so most script calls carry
		// one check (the per-check cost a lightly loaded server pays).
		{"light", Config{}, 1},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			cfg := c.cfg
			cfg.RedisURL = "redis://" + srv.Addr
			cfg.KeyPrefix = "bench-" + c.name
			l := newRedisLimiter(b, cfg)
			par := c.par
			if par == 0 {
				par = benchParallelism
			}
			benchParallel(b, l, par)
		})
	}
}

// BenchmarkCheckLocal measures the in-process limiter on the same workload.
func BenchmarkCheckLocal(b *testing.B) {
	l := newRedisLimiter(b, Config{})
	benchParallel(b, l, benchParallelism)
}

// benchParallelism × GOMAXPROCS callers run at once. In a closed loop
// latency ≈ callers / throughput, so this sets the latency/throughput point.
var benchParallelism = 8

func benchParallel(b *testing.B, l *Limiter, parallelism int) {
	const principals = 10_000
	limits := make([][]Limit, principals)
	for i := range limits {
		tenant, p := "t"+strconv.Itoa(i%100), "p"+strconv.Itoa(i)
		limits[i] = []Limit{
			{Name: "rpm", Tenant: tenant, Principal: p, Limit: 1_000_000, Period: time.Minute},
			{Name: "tpd", Tenant: tenant, Principal: p, Limit: 1_000_000_000, Period: 24 * time.Hour, Cost: 500},
		}
	}
	var seq atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var errs, denied, degraded atomic.Int64
	cpu0 := processCPU()
	redis0 := l.redisCPU()
	b.SetParallelism(parallelism)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		ctx := context.Background()
		for pb.Next() {
			i := seq.Add(1)
			t0 := time.Now()
			res, err := l.Check(ctx, "", limits[i%principals])
			local = append(local, time.Since(t0))
			if err != nil {
				errs.Add(1)
			} else if res.Degraded {
				degraded.Add(1)
			} else if !res.Allowed {
				denied.Add(1)
			}
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	goCPU := processCPU() - cpu0
	redisCPU := l.redisCPU() - redis0
	if errs.Load() > 0 || denied.Load() > 0 {
		b.Fatalf("%d errors, %d denied", errs.Load(), denied.Load())
	}
	b.ReportMetric(float64(degraded.Load()), "degraded")
	b.ReportMetric(float64(goCPU.Microseconds())/float64(b.N), "go-cpu-µs/op")
	if l.client != nil {
		b.ReportMetric(float64(redisCPU.Microseconds())/float64(b.N), "redis-cpu-µs/op")
		var m dto.Metric
		_ = l.m.batchSize.Write(&m)
		if n := m.GetHistogram().GetSampleCount(); n > 0 {
			b.ReportMetric(m.GetHistogram().GetSampleSum()/float64(n), "checks/batch")
		}
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)]) / float64(time.Millisecond) }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "checks/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisCPU is redis-server's own CPU time (INFO cpu), 0 without Redis.
func (l *Limiter) redisCPU() time.Duration {
	if l.client == nil {
		return 0
	}
	info, err := l.client.Info(context.Background(), "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}
