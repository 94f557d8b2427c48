package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// errOverloaded is what a call beyond the bounds gets, at once: UNAVAILABLE,
// so Envoy's failure_mode_allow / status_on_error applies and a retry policy
// may try another replica.
var errOverloaded = status.Error(codes.Unavailable, "overloaded")

// OverloadConfig bounds the work the gRPC server takes on. Zero means
// unlimited.
type OverloadConfig struct {
	// MaxInFlight bounds decisions being computed at once: unary calls while
	// they run, and stream messages between their arrival and their answer.
	MaxInFlight int
	// MaxStreams bounds open streams (ext_proc: one per HTTP exchange) over
	// all connections; an open stream waiting for Envoy's next message
	// costs a goroutine, not CPU, so it has its own, larger bound.
	MaxStreams int
	// Window is how long rejections must go on (or stay away) before health
	// turns NOT_SERVING (or SERVING again).
	Window time.Duration
}

// overloadExempt are the methods never bounded: health must answer exactly
// when Bulwark is overloaded, and reflection is a debugging aid.
var overloadExempt = []string{"/grpc.health.v1.Health/", "/grpc.reflection."}

func exempt(method string) bool {
	for _, p := range overloadExempt {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

// Overload is a non-blocking admission gate for gRPC calls: an atomic
// counter per bound, no queue. A call over a bound is rejected with
// UNAVAILABLE without waiting. It also tracks whether rejections have gone
// on for a sustained window, which takes Bulwark out of rotation through
// health.
type Overload struct {
	maxInFlight int64
	maxStreams  int64
	window      time.Duration

	inflight   atomic.Int64
	streams    atomic.Int64
	rejections atomic.Uint64

	rejectInFlight, rejectStreams prometheus.Counter

	overloaded atomic.Bool

	streamMethods atomic.Pointer[map[string]bool] // see SetStreaming

	mu         sync.Mutex // guards the sampling state below (observe)
	lastCount  uint64
	lastSample time.Time
	busySince  time.Time // start of the current run of samples that saw rejections
	calmSince  time.Time // start of the current run of samples that saw none
}

// NewOverload returns the gate for cfg, registering its metrics on reg
// (which may be nil).
func NewOverload(cfg OverloadConfig, reg prometheus.Registerer) *Overload {
	o := &Overload{maxInFlight: int64(cfg.MaxInFlight), maxStreams: int64(cfg.MaxStreams), window: cfg.Window}
	if o.window <= 0 {
		o.window = 5 * time.Second
	}
	rejections := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_overload_rejections_total",
		Help: "gRPC calls and stream messages refused with UNAVAILABLE because a bound was reached (limit: max_in_flight, max_streams).",
	}, []string{"limit"})
	o.rejectInFlight = rejections.WithLabelValues("max_in_flight")
	o.rejectStreams = rejections.WithLabelValues("max_streams")
	if reg != nil {
		reg.MustRegister(rejections,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "bulwark_inflight",
				Help: "Decisions being computed now: unary calls running and stream messages not yet answered.",
			}, func() float64 { return float64(o.inflight.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "bulwark_streams",
				Help: "Open gRPC streams (ext_proc exchanges).",
			}, func() float64 { return float64(o.streams.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "bulwark_overloaded",
				Help: "1 while rejections have gone on for the overload window (health NOT_SERVING).",
			}, func() float64 {
				if o.overloaded.Load() {
					return 1
				}
				return 0
			}),
		)
	}
	return o
}

// tryAcquire takes one unit of counter if that keeps it at or under limit
// (limit 0: always). The compare-and-swap loop never lets the count pass
// the limit, even transiently, so a caller is never refused because
// another was being refused at the same moment.
func tryAcquire(counter *atomic.Int64, limit int64) bool {
	if limit <= 0 {
		counter.Add(1)
		return true
	}
	for {
		n := counter.Load()
		if n >= limit {
			return false
		}
		if counter.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (o *Overload) reject(c prometheus.Counter) error {
	o.rejections.Add(1)
	c.Inc()
	return errOverloaded
}

// Tap admits or refuses a call as its headers are read, in the
// connection's reader goroutine, before any goroutine or buffer is spent on
// it (grpc.InTapHandle). This is where admission must happen under CPU
// overload: a saturated server reads new calls only between decisions, so
// a gate in the handler sees at most one waiting call at a time, and the
// queue forms in front of it, unbounded, in socket buffers and the
// scheduler's run queue. At the tap, every call read in the same batch
// past the bound is refused at once, and an admitted call waits for at
// most the decisions already admitted.
//
// A unary call takes an in-flight slot, released when the handler ends
// (or when the call's context is done if the handler never runs). A
// stream takes a MaxStreams slot and no in-flight slot: it is refused at
// once while every in-flight slot is taken, but its messages take slots
// only while they are decided (Stream), so a stream that opens and says
// nothing holds none: idle streams cannot starve decisions.
func (o *Overload) Tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if exempt(info.FullMethodName) {
		return ctx, nil
	}
	a := &admission{o: o}
	if o.streaming(info.FullMethodName) {
		if o.maxInFlight > 0 && o.inflight.Load() >= o.maxInFlight {
			return nil, o.reject(o.rejectInFlight) // its first message would be refused
		}
		if !tryAcquire(&o.streams, o.maxStreams) {
			return nil, o.reject(o.rejectStreams)
		}
		a.stream.Store(true)
	} else {
		if !tryAcquire(&o.inflight, o.maxInFlight) {
			return nil, o.reject(o.rejectInFlight)
		}
		a.inflight.Store(true)
	}
	a.stop = context.AfterFunc(ctx, a.releaseAll)
	return context.WithValue(ctx, admissionKey{}, a), nil
}

// SetStreaming tells Tap which methods are streams (from
// grpc.Server.GetServiceInfo, once every service is registered); any other
// method is treated as unary.
func (o *Overload) SetStreaming(services map[string]grpc.ServiceInfo) {
	m := make(map[string]bool)
	for name, svc := range services {
		for _, md := range svc.Methods {
			if md.IsClientStream || md.IsServerStream {
				m["/"+name+"/"+md.Name] = true
			}
		}
	}
	o.streamMethods.Store(&m)
}

func (o *Overload) streaming(method string) bool {
	m := o.streamMethods.Load()
	return m != nil && (*m)[method]
}

type admissionKey struct{}

// admission is the slots Tap took for one call. Each is released exactly
// once, by the handler's end or by the context's (whichever comes first).
type admission struct {
	o        *Overload
	stream   atomic.Bool // holds a MaxStreams slot
	inflight atomic.Bool // holds an in-flight slot (a unary call)
	stop     func() bool // cancels the context-done release
}

func admissionFrom(ctx context.Context) *admission {
	a, _ := ctx.Value(admissionKey{}).(*admission)
	return a
}

func (a *admission) releaseInFlight() {
	if a.inflight.CompareAndSwap(true, false) {
		a.o.inflight.Add(-1)
	}
}

func (a *admission) releaseAll() {
	a.releaseInFlight()
	if a.stream.CompareAndSwap(true, false) {
		a.o.streams.Add(-1)
	}
}

// done releases what the admission still holds, at the handler's end.
func (a *admission) done() {
	if a.stop != nil {
		a.stop()
	}
	a.releaseAll()
}

// Unary is the unary server interceptor: a call counts as in flight from
// its admission (Tap) until its handler returns. Without Tap (a server
// built without it), the call is admitted here.
func (o *Overload) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if exempt(info.FullMethod) {
		return handler(ctx, req)
	}
	if a := admissionFrom(ctx); a != nil {
		defer a.done()
		yieldBeforeDeciding()
		return handler(ctx, req)
	}
	if !tryAcquire(&o.inflight, o.maxInFlight) {
		return nil, o.reject(o.rejectInFlight)
	}
	defer o.inflight.Add(-1)
	return handler(ctx, req)
}

// Stream is the stream server interceptor: a stream counts against
// MaxStreams while open (from Tap, or from here without it), and each
// message it receives counts as in flight from its arrival until the
// handler sends an answer or asks for the next message. The stream's first
// message is admitted under MaxInFlight, or the stream ends with
// UNAVAILABLE; later messages of an admitted exchange are counted but
// never refused, because failing an exchange halfway wastes the work done
// and fails a request Envoy has already let through. An open stream
// waiting for Envoy's next message, its first included, holds no
// in-flight slot.
func (o *Overload) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if exempt(info.FullMethod) {
		return handler(srv, ss)
	}
	ls := &limitedStream{ServerStream: ss, o: o}
	if a := admissionFrom(ss.Context()); a != nil {
		defer a.done()
	} else {
		if !tryAcquire(&o.streams, o.maxStreams) {
			return o.reject(o.rejectStreams)
		}
		defer o.streams.Add(-1)
	}
	err := handler(srv, ls)
	ls.finish()
	if ls.rejected.Load() {
		return errOverloaded
	}
	return err
}

// limitedStream counts a stream's received message as in flight until the
// next send or receive. Recv and Send may run on different goroutines
// (one each), hence the atomics; received belongs to the receiving one,
// which may still be in RecvMsg when the handler returns (a handler that
// reads on its own goroutine stops waiting on a deadline): finished makes
// a message that arrives then give its slot straight back.
type limitedStream struct {
	grpc.ServerStream
	o        *Overload
	received bool // a message has been received
	holding  atomic.Bool
	rejected atomic.Bool
	finished atomic.Bool
}

func (s *limitedStream) RecvMsg(m any) error {
	if s.rejected.Load() {
		return errOverloaded
	}
	if s.received {
		s.release() // asking for the next message: done with the previous one
	}
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if s.received {
		s.o.inflight.Add(1) // later messages are counted, never refused
	} else if !tryAcquire(&s.o.inflight, s.o.maxInFlight) {
		s.rejected.Store(true)
		return s.o.reject(s.o.rejectInFlight)
	}
	s.holding.Store(true)
	s.received = true
	if s.finished.Load() {
		s.release() // the handler has returned: nobody will answer it
	}
	yieldBeforeDeciding()
	return nil
}

// yieldBeforeDeciding lets every goroutine already waiting run before a
// decision starts: on a saturated core, the transport's writer goroutines
// would otherwise send the answers (and refusals) already computed only
// after this decision, adding a whole decision to their latency. With a
// core to spare it returns at once.
func yieldBeforeDeciding() { runtime.Gosched() }

func (s *limitedStream) SendMsg(m any) error {
	s.release() // the answer is ready: no longer a decision in flight
	return s.ServerStream.SendMsg(m)
}

func (s *limitedStream) release() {
	if s.holding.CompareAndSwap(true, false) {
		s.o.inflight.Add(-1)
	}
}

// finish releases the slot at the handler's end, and any a message still
// being received takes later.
func (s *limitedStream) finish() {
	s.finished.Store(true)
	s.release()
}

// InFlight is the number of decisions being computed now.
func (o *Overload) InFlight() int64 { return o.inflight.Load() }

// Streams is the number of open bounded streams.
func (o *Overload) Streams() int64 { return o.streams.Load() }

// Overloaded reports whether rejections have gone on for the window (and
// not yet stayed away for as long).
func (o *Overload) Overloaded() bool { return o.overloaded.Load() }

// observe samples the rejection count at now and updates Overloaded. It
// must be called at a steady period well below the window (see period);
// rejections count as continuous when every sample saw some. It returns
// whether Overloaded changed.
func (o *Overload) observe(now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := o.rejections.Load()
	busy := n != o.lastCount
	o.lastCount = n
	// A sample speaks for the time since the previous one.
	since := o.lastSample
	if since.IsZero() {
		since = now
	}
	o.lastSample = now
	was := o.overloaded.Load()
	if busy {
		o.calmSince = time.Time{}
		if o.busySince.IsZero() {
			o.busySince = since
		}
		if !was && now.Sub(o.busySince) >= o.window {
			o.overloaded.Store(true)
			return true
		}
		return false
	}
	o.busySince = time.Time{}
	if o.calmSince.IsZero() {
		o.calmSince = since
	}
	if was && now.Sub(o.calmSince) >= o.window {
		o.overloaded.Store(false)
		return true
	}
	return false
}

// period is how often observe samples: a tenth of the window, between 10 ms
// and 1 s.
func (o *Overload) period() time.Duration {
	return min(max(o.window/10, 10*time.Millisecond), time.Second)
}

// watch samples until ctx is done, calling changed after each flip.
func (o *Overload) watch(ctx context.Context, logger *slog.Logger, changed func()) {
	tick := time.NewTicker(o.period())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if !o.observe(now) {
				continue
			}
			if o.Overloaded() {
				logger.Warn("overloaded: rejecting calls for the whole window; health NOT_SERVING",
					"window", o.window, "max_in_flight", o.maxInFlight, "max_streams", o.maxStreams)
			} else {
				logger.Info("overload over: no rejections for the whole window; health follows readiness again", "window", o.window)
			}
			changed()
		}
	}
}

// readinessCheck is the overload component of /readyz and gRPC health.
func (o *Overload) readinessCheck() ReadinessCheck {
	return ReadinessCheck{
		Name: "overload",
		Check: func() error {
			if o.Overloaded() {
				return fmt.Errorf("overloaded: calls rejected continuously for %s", o.window)
			}
			return nil
		},
		Detail: func() any {
			return map[string]any{"in_flight": o.inflight.Load(), "max_in_flight": o.maxInFlight,
				"streams": o.streams.Load(), "max_streams": o.maxStreams, "rejections": o.rejections.Load()}
		},
	}
}
