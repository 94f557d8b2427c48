package rls

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/bulwark-ai/bulwark/internal/ratelimit"
	"github.com/bulwark-ai/bulwark/test/redisserver"
)

// benchConfig is the config both servers are measured with: one descriptor
// per client address, a limit no run reaches.
const benchConfig = `domain: bench
descriptors:
  - key: remote_address
    rate_limit:
      unit: hour
      requests_per_unit: 4000000000
`

const benchValues = 1000 // distinct client addresses

func benchRequests() []*rlsv3.RateLimitRequest {
	reqs := make([]*rlsv3.RateLimitRequest, benchValues)
	for i := range reqs {
		reqs[i] = &rlsv3.RateLimitRequest{Domain: "bench", Descriptors: []*rlv3.RateLimitDescriptor{
			{Entries: []*rlv3.RateLimitDescriptor_Entry{{Key: "remote_address", Value: "10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256)}}},
		}}
	}
	return reqs
}

// BenchmarkShouldRateLimit measures the door in process against a real
// redis-server, many callers at once: Go CPU (this process) and Redis CPU
// per call.
//
//	go test -run '^$' -bench ShouldRateLimit -benchtime 100000x ./internal/rls
func BenchmarkShouldRateLimit(b *testing.B) {
	srv := redisserver.Start(b)
	lim, err := ratelimit.New(ratelimit.Config{RedisURL: "redis://" + srv.Addr}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer lim.Close()
	path := filepath.Join(b.TempDir(), "rls.yaml")
	if err := os.WriteFile(path, []byte(benchConfig), 0o600); err != nil {
		b.Fatal(err)
	}
	s, err := New(Options{Path: path}, lim, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	reqs := benchRequests()
	var seq, over atomic.Int64
	cpu0, redis0 := processCPU(), redisCPU(b, rc)
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			resp, err := s.ShouldRateLimit(ctx, reqs[seq.Add(1)%benchValues])
			if err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OK {
				over.Add(1)
			}
		}
	})
	b.StopTimer()
	if over.Load() > 0 {
		b.Fatalf("%d calls failed or limited", over.Load())
	}
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "go-cpu-µs/op")
	b.ReportMetric(float64((redisCPU(b, rc)-redis0).Microseconds())/float64(b.N), "redis-cpu-µs/op")
}

// BenchmarkRLSServer drives a RateLimitService server in another process
// over gRPC (Bulwark's or envoy/ratelimit's, serving benchConfig) and
// reports that process's CPU and its Redis's CPU per call. Skipped unless
// RLS_BENCH_ADDR (host:port), RLS_BENCH_PID and RLS_BENCH_REDIS
// (host:port) are set; README, "Envoy's rate-limit service", has the
// commands that start both servers.
func BenchmarkRLSServer(b *testing.B) {
	addr, pidS, redisAddr := os.Getenv("RLS_BENCH_ADDR"), os.Getenv("RLS_BENCH_PID"), os.Getenv("RLS_BENCH_REDIS")
	if addr == "" || pidS == "" || redisAddr == "" {
		b.Skip("RLS_BENCH_ADDR, RLS_BENCH_PID and RLS_BENCH_REDIS not set")
	}
	pid, err := strconv.Atoi(pidS)
	if err != nil {
		b.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := rlsv3.NewRateLimitServiceClient(conn)
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rc.Close()
	reqs := benchRequests()
	// Warm up: connections, scripts, counters.
	for i := range 200 {
		if _, err := client.ShouldRateLimit(context.Background(), reqs[i%benchValues]); err != nil {
			b.Fatal(err)
		}
	}
	var seq, failed atomic.Int64
	cpu0, redis0 := pidCPU(b, pid), redisCPU(b, rc)
	start := time.Now()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := client.ShouldRateLimit(ctx, reqs[seq.Add(1)%benchValues])
			cancel()
			if err != nil || resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
				failed.Add(1)
			}
		}
	})
	b.StopTimer()
	elapsed := time.Since(start)
	if failed.Load() > 0 {
		b.Fatalf("%d calls failed or limited", failed.Load())
	}
	server, red := pidCPU(b, pid)-cpu0, redisCPU(b, rc)-redis0
	b.ReportMetric(float64(server.Microseconds())/float64(b.N), "server-cpu-µs/op")
	b.ReportMetric(float64(red.Microseconds())/float64(b.N), "redis-cpu-µs/op")
	b.ReportMetric(float64((server+red).Microseconds())/float64(b.N), "total-cpu-µs/op")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pidCPU is a process's user+system CPU from /proc/<pid>/stat.
func pidCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the parenthesised command name: utime is the 14th field
	// of the line, stime the 15th, in clock ticks (100 per second on Linux).
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// redisCPU is redis-server's own CPU (INFO cpu: used_cpu_sys + used_cpu_user).
func redisCPU(tb testing.TB, rc *redis.Client) time.Duration {
	tb.Helper()
	info, err := rc.Info(context.Background(), "cpu").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var total float64
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// edgeConfig is 100 calls per second for one client.
const edgeConfig = `domain: edge
descriptors:
  - key: client
    rate_limit:
      unit: second
      requests_per_unit: 100
`

// BenchmarkWindowEdge measures what a server admits across a window edge:
// 200 calls 100 ms before a second starts, 200 more 50 ms after it (the
// burst a fixed window admits twice). It reports the calls admitted within
// that span (span-ms: from the first call to the last answer; 150 ms on an
// idle machine); a limit of 100 per second should let through about 100
// (+ 15 refilled in 150 ms by GCRA), a fixed window 200. Same environment
// as BenchmarkRLSServer; the server serves edgeConfig.
//
//	RLS_BENCH_ADDR=... RLS_BENCH_PID=... RLS_BENCH_REDIS=... go test -run '^$' -bench WindowEdge -benchtime 3x ./internal/rls
func BenchmarkWindowEdge(b *testing.B) {
	if _, err := Parse("edge.yaml", []byte(edgeConfig)); err != nil {
		b.Fatalf("edgeConfig, which the server under test must serve: %v", err)
	}
	addr := os.Getenv("RLS_BENCH_ADDR")
	if addr == "" {
		b.Skip("RLS_BENCH_ADDR not set")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := rlsv3.NewRateLimitServiceClient(conn)
	burst := func(client rlsv3.RateLimitServiceClient, req *rlsv3.RateLimitRequest, n int) int64 {
		var ok atomic.Int64
		done := make(chan struct{}, n)
		for range n {
			go func() {
				defer func() { done <- struct{}{} }()
				resp, err := client.ShouldRateLimit(context.Background(), req)
				if err == nil && resp.GetOverallCode() == rlsv3.RateLimitResponse_OK {
					ok.Add(1)
				}
			}()
		}
		for range n {
			<-done
		}
		return ok.Load()
	}
	var total int64
	var span time.Duration
	for i := 0; i < b.N; i++ {
		req := &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{
			{Entries: []*rlv3.RateLimitDescriptor_Entry{{Key: "client", Value: "c" + strconv.FormatInt(time.Now().UnixNano(), 10)}}},
		}}
		// 100 ms before the next whole second.
		now := time.Now()
		next := now.Truncate(time.Second).Add(time.Second)
		if next.Sub(now) < 300*time.Millisecond {
			next = next.Add(time.Second)
		}
		time.Sleep(time.Until(next.Add(-100 * time.Millisecond)))
		t0 := time.Now()
		a := burst(client, req, 200)
		time.Sleep(time.Until(next.Add(50 * time.Millisecond)))
		c := burst(client, req, 200)
		// On a loaded machine the bursts take longer than planned: GCRA
		// then rightly admits 100 per second of the span on top of 100.
		span += time.Since(t0)
		total += a + c
	}
	b.ReportMetric(float64(total)/float64(b.N), "admitted")
	b.ReportMetric(float64(span.Milliseconds())/float64(b.N), "span-ms")
}
