package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

var checkInfo = &grpc.UnaryServerInfo{FullMethod: "/envoy.service.auth.v3.Authorization/Check"}

// TestOverloadLimitExact fills the gate with blocked calls from many
// goroutines at once: exactly MaxInFlight run, every other call is refused
// with UNAVAILABLE without waiting.
func TestOverloadLimitExact(t *testing.T) {
	t.Parallel()
	const limit, callers = 3, 50
	reg := prometheus.NewRegistry()
	o := NewOverload(OverloadConfig{MaxInFlight: limit}, reg)
	var running, peak atomic.Int64
	release := make(chan struct{})
	handler := func(ctx context.Context, req any) (any, error) {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		running.Add(-1)
		return "ok", nil
	}
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range callers {
		wg.Go(func() {
			<-start
			_, err := o.Unary(context.Background(), nil, checkInfo, handler)
			errs <- err
		})
	}
	close(start)
	// Every refused call returns while the admitted ones still block.
	for range callers - limit {
		select {
		case err := <-errs:
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("refused call: %v, want UNAVAILABLE", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("refused calls did not return at once")
		}
	}
	if got := o.InFlight(); got != limit {
		t.Errorf("in flight = %d, want %d", got, limit)
	}
	waitFor(t, "the admitted calls in their handler", func() bool { return running.Load() == limit })
	if got := testutil.ToFloat64(o.rejectInFlight); got != callers-limit {
		t.Errorf("rejections metric = %v, want %d", got, callers-limit)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("admitted call: %v", err)
		}
	}
	if peak.Load() != limit || o.InFlight() != 0 {
		t.Errorf("peak = %d, in flight after = %d; want %d and 0", peak.Load(), o.InFlight(), limit)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
		if mf.GetName() == "bulwark_inflight" && mf.GetMetric()[0].GetGauge().GetValue() != 0 {
			t.Errorf("bulwark_inflight = %v after the calls, want 0", mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	for _, name := range []string{"bulwark_inflight", "bulwark_streams", "bulwark_overloaded", "bulwark_overload_rejections_total"} {
		if !seen[name] {
			t.Errorf("metric %s not registered", name)
		}
	}
}

// TestOverloadChurn runs short calls from many goroutines: the bound holds
// at every moment and the counter returns to zero.
func TestOverloadChurn(t *testing.T) {
	t.Parallel()
	const limit = 4
	o := NewOverload(OverloadConfig{MaxInFlight: limit}, nil)
	var running, peak atomic.Int64
	var admitted, refused atomic.Int64
	handler := func(ctx context.Context, req any) (any, error) {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(time.Microsecond)
		running.Add(-1)
		return nil, nil
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 500 {
				if _, err := o.Unary(context.Background(), nil, checkInfo, handler); err != nil {
					refused.Add(1)
				} else {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if peak.Load() > limit {
		t.Errorf("peak concurrency %d over the limit %d", peak.Load(), limit)
	}
	if o.InFlight() != 0 || admitted.Load()+refused.Load() != 16*500 || admitted.Load() == 0 {
		t.Errorf("in flight %d, admitted %d, refused %d", o.InFlight(), admitted.Load(), refused.Load())
	}
}

func TestOverloadUnlimitedAndExempt(t *testing.T) {
	t.Parallel()
	o := NewOverload(OverloadConfig{}, nil)
	for range 100 {
		if !tryAcquire(&o.inflight, o.maxInFlight) {
			t.Fatal("unlimited gate refused")
		}
	}
	full := NewOverload(OverloadConfig{MaxInFlight: 1}, nil)
	full.inflight.Store(1)
	ok := func(context.Context, any) (any, error) { return "ok", nil }
	if _, err := full.Unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}, ok); err != nil {
		t.Errorf("health refused while full: %v", err)
	}
	if _, err := full.Unary(context.Background(), nil, checkInfo, ok); status.Code(err) != codes.Unavailable {
		t.Errorf("Check while full: %v, want UNAVAILABLE", err)
	}
}

// fakeStream is a grpc.ServerStream fed from a channel.
type fakeStream struct {
	grpc.ServerStream
	in   chan string
	sent atomic.Int64
}

func (s *fakeStream) Context() context.Context { return context.Background() }
func (s *fakeStream) RecvMsg(m any) error {
	v, ok := <-s.in
	if !ok {
		return io.EOF
	}
	*m.(*string) = v
	return nil
}
func (s *fakeStream) SendMsg(any) error { s.sent.Add(1); return nil }

var processInfo = &grpc.StreamServerInfo{FullMethod: "/envoy.service.ext_proc.v3.ExternalProcessor/Process"}

// echo answers every message, as an ext_proc handler does; work runs
// between the receive and the answer.
func echo(work func()) grpc.StreamHandler {
	return func(_ any, ss grpc.ServerStream) error {
		for {
			var m string
			if err := ss.RecvMsg(&m); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			work()
			if err := ss.SendMsg(m); err != nil {
				return err
			}
		}
	}
}

// gatedWork is a stream handler's work on each message, held until the
// test lets it go.
type gatedWork struct{ in, proceed chan struct{} }

func newGatedWork() gatedWork { return gatedWork{make(chan struct{}), make(chan struct{})} }
func (g gatedWork) work()     { g.in <- struct{}{}; <-g.proceed }

func TestOverloadStreams(t *testing.T) {
	t.Parallel()
	o := NewOverload(OverloadConfig{MaxInFlight: 1, MaxStreams: 2}, nil)
	ga, gb := newGatedWork(), newGatedWork()
	a, b := &fakeStream{in: make(chan string)}, &fakeStream{in: make(chan string)}
	errA, errB := make(chan error, 1), make(chan error, 1)
	go func() { errA <- o.Stream(nil, a, processInfo, echo(ga.work)) }()
	go func() { errB <- o.Stream(nil, b, processInfo, echo(gb.work)) }()
	waitFor(t, "two open streams", func() bool { return o.Streams() == 2 })
	// Open streams waiting for their next message hold no in-flight slot.
	if o.InFlight() != 0 {
		t.Fatalf("idle streams hold %d in-flight slots", o.InFlight())
	}
	// A third stream is over max_streams.
	if err := o.Stream(nil, &fakeStream{in: make(chan string)}, processInfo, echo(func() {})); status.Code(err) != codes.Unavailable {
		t.Fatalf("third stream: %v, want UNAVAILABLE", err)
	}
	if got := testutil.ToFloat64(o.rejectStreams); got != 1 {
		t.Errorf("max_streams rejections = %v, want 1", got)
	}

	// a's first message takes the only in-flight slot...
	a.in <- "request_headers"
	<-ga.in
	if o.InFlight() != 1 {
		t.Fatalf("in flight = %d, want 1", o.InFlight())
	}
	// ...so b's first message is refused and b ends with UNAVAILABLE.
	b.in <- "request_headers"
	if err := <-errB; status.Code(err) != codes.Unavailable {
		t.Fatalf("first stream message over max_in_flight: %v, want UNAVAILABLE", err)
	}
	ga.proceed <- struct{}{}
	waitFor(t, "a's answer", func() bool { return a.sent.Load() == 1 })
	if o.InFlight() != 0 {
		t.Errorf("in flight after the answer = %d, want 0", o.InFlight())
	}

	// c is admitted and answered; while a works on its next message, c's
	// next message is counted but not refused: c's exchange was admitted.
	gc := newGatedWork()
	c := &fakeStream{in: make(chan string)}
	errC := make(chan error, 1)
	go func() { errC <- o.Stream(nil, c, processInfo, echo(gc.work)) }()
	c.in <- "request_headers"
	<-gc.in
	gc.proceed <- struct{}{}
	waitFor(t, "c's answer", func() bool { return c.sent.Load() == 1 })
	a.in <- "request_body"
	<-ga.in
	c.in <- "request_body"
	<-gc.in
	if o.InFlight() != 2 {
		t.Errorf("in flight = %d, want 2 (a later message of an admitted exchange counts)", o.InFlight())
	}
	ga.proceed <- struct{}{}
	gc.proceed <- struct{}{}
	close(a.in)
	close(c.in)
	if err := <-errA; err != nil {
		t.Errorf("stream a: %v", err)
	}
	if err := <-errC; err != nil {
		t.Errorf("stream c: %v", err)
	}
	if o.Streams() != 0 || o.InFlight() != 0 {
		t.Errorf("after the streams ended: streams %d, in flight %d", o.Streams(), o.InFlight())
	}
}

// TestOverloadStreamWithoutAnswers is an observability-mode exchange: the
// handler answers nothing, and the stream holds no slot between messages.
func TestOverloadStreamWithoutAnswers(t *testing.T) {
	t.Parallel()
	o := NewOverload(OverloadConfig{MaxInFlight: 1}, nil)
	s := &fakeStream{in: make(chan string)}
	errc := make(chan error, 1)
	go func() {
		errc <- o.Stream(nil, s, processInfo, func(_ any, ss grpc.ServerStream) error {
			for {
				var m string
				if err := ss.RecvMsg(&m); err != nil {
					return nil
				}
			}
		})
	}()
	for range 3 {
		s.in <- "request_body"
	}
	s.in <- "last" // the handler has finished with the earlier ones
	if got := o.InFlight(); got > 1 {
		t.Errorf("in flight = %d with one stream", got)
	}
	close(s.in)
	if err := <-errc; err != nil || o.InFlight() != 0 {
		t.Errorf("err %v, in flight %d", err, o.InFlight())
	}
}

// TestOverloadHealthWindow drives observe with a synthetic clock: health
// turns after rejections in every sample for the window, and back after a
// window without any.
func TestOverloadHealthWindow(t *testing.T) {
	t.Parallel()
	const window = 100 * time.Millisecond
	o := NewOverload(OverloadConfig{MaxInFlight: 1, Window: window}, nil)
	now := time.Unix(1000, 0)
	step := func(reject bool) bool {
		if reject {
			_ = o.reject(o.rejectInFlight)
		}
		now = now.Add(o.period())
		return o.observe(now)
	}
	if o.period() != 10*time.Millisecond {
		t.Fatalf("period = %v", o.period())
	}
	// Rejections with a gap shorter than the window never turn health.
	for i := range 30 {
		step(i%8 != 7)
		if o.Overloaded() {
			t.Fatalf("overloaded after %d samples with gaps", i+1)
		}
	}
	// Continuous rejections for the window do.
	flips := 0
	for range 11 {
		if step(true) {
			flips++
		}
	}
	if !o.Overloaded() || flips != 1 {
		t.Fatalf("after a window of rejections: overloaded %v (flips %d)", o.Overloaded(), flips)
	}
	// A short calm does not turn it back; a whole window does.
	for range 5 {
		step(false)
	}
	step(true)
	if !o.Overloaded() {
		t.Fatal("a calm shorter than the window ended the overload")
	}
	for range 10 {
		step(false)
	}
	if o.Overloaded() {
		t.Fatal("still overloaded after a window without rejections")
	}
}

// TestServerOverloadHealth runs the server: sustained rejections take gRPC
// health (every service) and /readyz down, their end brings them back, and
// nothing flips once shutdown has begun.
func TestServerOverloadHealth(t *testing.T) {
	t.Parallel()
	const window = 100 * time.Millisecond
	s := New(Config{GRPCAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MaxRecvMsgBytes: 1 << 20, MaxSendMsgBytes: 1 << 20,
		MaxConcurrentStreams: 10, ShutdownGrace: 5 * time.Second,
		Overload: OverloadConfig{MaxInFlight: 1, MaxStreams: 1, Window: window}}, nil, prometheus.NewRegistry())
	ctx, cancel, conn := serveForTest(t, s)
	hc := healthpb.NewHealthClient(conn)
	health := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health %q: %v", service, err)
		}
		return r.GetStatus()
	}
	readyz := func() int {
		resp, err := http.Get("http://" + s.AdminAddr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Components map[string]componentStatus `json:"components"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Components["overload"].Detail == nil {
			t.Errorf("/readyz lacks the overload component: %+v %v", body, err)
		}
		return resp.StatusCode
	}
	waitFor(t, "SERVING", func() bool { return health("") == healthpb.HealthCheckResponse_SERVING })

	// One call holds the only slot; a loop of callers is refused.
	release := make(chan struct{})
	holding := make(chan struct{})
	go func() {
		_, _ = s.overload.Unary(ctx, nil, checkInfo, func(context.Context, any) (any, error) {
			close(holding)
			<-release
			return nil, nil
		})
	}()
	<-holding
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for {
			select {
			case <-stopLoad:
				return
			default:
			}
			_, _ = s.overload.Unary(ctx, nil, checkInfo, nil)
			time.Sleep(time.Millisecond)
		}
	}()
	waitFor(t, "NOT_SERVING under sustained rejections", func() bool {
		return health("") == healthpb.HealthCheckResponse_NOT_SERVING
	})
	for _, svc := range []string{"envoy.service.auth.v3.Authorization", "envoy.service.ext_proc.v3.ExternalProcessor"} {
		if got := health(svc); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health %s = %v, want NOT_SERVING", svc, got)
		}
	}
	if got := readyz(); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d while overloaded, want 503", got)
	}
	close(stopLoad)
	<-loadDone
	waitFor(t, "SERVING after the rejections stopped", func() bool {
		return health("") == healthpb.HealthCheckResponse_SERVING
	})
	if got := readyz(); got != http.StatusOK {
		t.Errorf("/readyz = %d after the overload, want 200", got)
	}

	// Overloaded again, then shutdown begins while the held call drains:
	// the end of the rejections must not bring health back.
	stopLoad, loadDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(loadDone)
		for {
			select {
			case <-stopLoad:
				return
			default:
			}
			_, _ = s.overload.Unary(ctx, nil, checkInfo, nil)
			time.Sleep(time.Millisecond)
		}
	}()
	waitFor(t, "overloaded again", s.overload.Overloaded)
	cancel()
	waitFor(t, "draining", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.draining })
	close(stopLoad)
	<-loadDone
	time.Sleep(3 * window)
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		r, err := s.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health %q while draining = %v, %v; want NOT_SERVING", svc, r.GetStatus(), err)
		}
	}
	close(release)
}

// serveForTest serves s (startServing) and connects a plaintext client.
func serveForTest(t *testing.T, s *Server) (context.Context, context.CancelFunc, *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := startServing(t, s)
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return ctx, cancel, conn
}

// startServing listens and serves s (its services registered) until the
// test ends or cancel is called.
func startServing(t *testing.T, s *Server) (context.Context, context.CancelFunc) {
	t.Helper()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return ctx, cancel
}

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

// BenchmarkOverloadUnary is the gate's cost per admitted call, from
// parallel callers (the handler does nothing): "tap" is the server's path
// (admitted as the headers are read, released when the handler returns),
// the others the interceptor alone.
func BenchmarkOverloadUnary(b *testing.B) {
	b.Run("tap", func(b *testing.B) {
		o := NewOverload(OverloadConfig{MaxInFlight: 1 << 20}, nil)
		ok := func(context.Context, any) (any, error) { return nil, nil }
		info := &tap.Info{FullMethodName: checkInfo.FullMethod}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				ctx, cancel := context.WithCancel(context.Background())
				ctx, err := o.Tap(ctx, info)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := o.Unary(ctx, nil, checkInfo, ok); err != nil {
					b.Fatal(err)
				}
				cancel()
			}
		})
	})
	for _, bc := range []struct {
		name  string
		limit int
	}{{"limited", 1 << 20}, {"unlimited", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			o := NewOverload(OverloadConfig{MaxInFlight: bc.limit}, nil)
			ok := func(context.Context, any) (any, error) { return nil, nil }
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if _, err := o.Unary(ctx, nil, checkInfo, ok); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
	b.Run("rejected", func(b *testing.B) {
		o := NewOverload(OverloadConfig{MaxInFlight: 1}, nil)
		o.inflight.Store(1)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				_, _ = o.Unary(ctx, nil, checkInfo, nil)
			}
		})
	})
}

// blockingAuthz is an ext_authz server whose Check waits for release.
type blockingAuthz struct {
	authv3.UnimplementedAuthorizationServer
	calls   atomic.Int64
	entered chan struct{}
	release chan struct{}
}

func (b *blockingAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	b.calls.Add(1)
	b.entered <- struct{}{}
	<-b.release
	return &authv3.CheckResponse{}, nil
}

// echoProcessor answers each ext_proc message with an empty response.
type echoProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
	streams atomic.Int64 // handlers run
}

func (e *echoProcessor) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	e.streams.Add(1)
	for {
		if _, err := st.Recv(); err != nil {
			return nil
		}
		if err := st.Send(&extprocv3.ProcessingResponse{}); err != nil {
			return err
		}
	}
}

// TestServerTapAdmission runs the gate at the tap of a real server: a call
// past the bound is refused before its handler runs, and so is a stream
// while every in-flight slot is taken; an open stream holds no in-flight
// slot while it waits for a message, its first included (idle streams
// cannot starve decisions), and holds one while a message is decided;
// slots come back when handlers end, when streams are cancelled and when
// a call names no method.
func TestServerTapAdmission(t *testing.T) {
	t.Parallel()
	s := New(Config{GRPCAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MaxRecvMsgBytes: 1 << 20, MaxSendMsgBytes: 1 << 20,
		MaxConcurrentStreams: 100, ShutdownGrace: 5 * time.Second,
		Overload: OverloadConfig{MaxInFlight: 1, MaxStreams: 2, Window: time.Minute}}, nil, prometheus.NewRegistry())
	authz := &blockingAuthz{entered: make(chan struct{}, 10), release: make(chan struct{})}
	authv3.RegisterAuthorizationServer(s.GRPC(), authz)
	ep := &echoProcessor{}
	extprocv3.RegisterExternalProcessorServer(s.GRPC(), ep)
	ctx, _, conn := serveForTest(t, s)
	ac := authv3.NewAuthorizationClient(conn)
	pc := extprocv3.NewExternalProcessorClient(conn)
	idle := func(what string) {
		t.Helper()
		waitFor(t, what, func() bool { return s.overload.InFlight() == 0 && s.overload.Streams() == 0 })
	}

	// A Check holds the only slot: the next is refused at the tap, and so
	// is a new stream, before its handler runs.
	first := make(chan error, 1)
	go func() { _, err := ac.Check(ctx, &authv3.CheckRequest{}); first <- err }()
	<-authz.entered
	if _, err := ac.Check(ctx, &authv3.CheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("second Check: %v, want UNAVAILABLE", err)
	}
	if n := authz.calls.Load(); n != 1 {
		t.Errorf("Check handler ran %d times, want 1: the refused call reached its handler", n)
	}
	refused, err := pc.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := refused.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream opened while every slot is taken: %v, want UNAVAILABLE", err)
	}
	if n := ep.streams.Load(); n != 0 {
		t.Errorf("Process handler ran %d times, want 0: the refused stream reached its handler", n)
	}
	close(authz.release)
	if err := <-first; err != nil {
		t.Fatalf("first Check: %v", err)
	}
	idle("the Check's slot released")

	// Streams that open and send nothing hold no in-flight slot: Checks
	// still get the only one.
	var silent []extprocv3.ExternalProcessor_ProcessClient
	for range 2 {
		st, err := pc.Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, st)
	}
	waitFor(t, "two streams admitted", func() bool { return s.overload.Streams() == 2 && ep.streams.Load() == 2 })
	if n := s.overload.InFlight(); n != 0 {
		t.Errorf("two silent streams hold %d in-flight slots, want 0", n)
	}
	go func() { <-authz.entered }()
	if _, err := ac.Check(ctx, &authv3.CheckRequest{}); err != nil {
		t.Errorf("Check while streams are silent: %v", err)
	}
	// A message is answered, and its slot released with the answer.
	st := silent[0]
	if err := st.Send(&extprocv3.ProcessingRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the answer releases the slot", func() bool { return s.overload.InFlight() == 0 })
	for _, st := range silent {
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("stream end: %v", err)
		}
	}
	idle("the streams' slots released")

	// Streams cancelled before their first message, and a call to a
	// method nobody serves, give their slots back too.
	for range 3 {
		sctx, scancel := context.WithCancel(ctx)
		if _, err := pc.Process(sctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the stream admitted", func() bool { return s.overload.Streams() == 1 })
		scancel()
		idle("a cancelled stream's slots released")
	}
	if err := conn.Invoke(ctx, "/envoy.service.auth.v3.Authorization/Nope", &authv3.CheckRequest{}, &authv3.CheckResponse{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("unknown method: %v, want UNIMPLEMENTED", err)
	}
	idle("an unknown method's slot released")
}

// TestOverloadLateMessageAfterHandler: a handler that reads on its own
// goroutine can return while that goroutine is still in RecvMsg (the
// ext_proc server does, on its deadlines); a message that arrives then
// must not keep an in-flight slot for ever.
func TestOverloadLateMessageAfterHandler(t *testing.T) {
	t.Parallel()
	o := NewOverload(OverloadConfig{MaxInFlight: 4}, nil)
	s := &fakeStream{in: make(chan string)}
	reading := make(chan grpc.ServerStream, 1)
	if err := o.Stream(nil, s, processInfo, func(_ any, ss grpc.ServerStream) error {
		reading <- ss
		return nil // returns without waiting for the reader
	}); err != nil {
		t.Fatal(err)
	}
	ss := <-reading
	got := make(chan error, 1)
	go func() {
		var m string
		got <- ss.RecvMsg(&m)
	}()
	s.in <- "late"
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if n := o.InFlight(); n != 0 {
		t.Errorf("in flight = %d after a message arrived for a finished handler, want 0", n)
	}
}
