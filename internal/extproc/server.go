// Package extproc is the door for Envoy's ext_proc API: one bidirectional
// stream per HTTP exchange, carrying request headers, request body, response
// headers and response body (buffered, or streamed chunk by chunk), each
// answered with exactly one response of the matching type.
//
// The door translates the protocol and nothing more: each message becomes a
// step of an exchange.Session, each exchange.Result an ext_proc response.
// Bulwark picks the body modes itself through mode_override on the header
// responses (Envoy's filter needs allow_mode_override), as the Session asks:
// request bodies buffered, server-sent events streamed, JSON answers
// buffered, everything else left alone. What is Envoy's alone lives here:
// the stream's deadlines, override_message_timeout, bodies Envoy sends in
// several chunks (and the memory budget they are held in), the ext_authz
// metadata it forwards and the dynamic metadata it keeps.
package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/exchange"
	"github.com/bulwark-ai/bulwark/internal/identity"
)

// Defaults for Options fields left zero.
const (
	DefaultMessageTimeout = 200 * time.Millisecond // Envoy's message_timeout default
	// DefaultIdleTimeout is twice Envoy's own default stream_idle_timeout
	// (5 min), and the default timeout of OpenAI's SDKs (10 min): the
	// longest a legitimate exchange waits between two messages is the
	// model's time to first byte of a non-streamed answer.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultMaxStreamDuration outlasts the longest streamed answers
	// (about 128k output tokens at 50 tokens/s is 43 min).
	DefaultMaxStreamDuration = time.Hour
	// DefaultFirstMessageTimeout bounds the wait for an exchange's first
	// message: Envoy opens the stream to send it, so only a client that is
	// not Envoy keeps a stream open and silent.
	DefaultFirstMessageTimeout = 10 * time.Second
	// DefaultMaxBufferedBytes bounds the body bytes all exchanges hold
	// together: sixteen bodies of DefaultMaxBodyBytes.
	DefaultMaxBufferedBytes = 128 << 20
)

// Options tune the door; what tunes the exchange itself is exchange.Options.
type Options struct {
	// MessageTimeout and MaxMessageTimeout mirror the Envoy filter's
	// message_timeout and max_message_timeout. When MaxMessageTimeout is
	// set and an answer is not ready after half of MessageTimeout (a large
	// body, a slow policy), Bulwark sends override_message_timeout with
	// MaxMessageTimeout, so Envoy waits for the decision instead of failing
	// the request. Zero MaxMessageTimeout (Envoy's default, which disables
	// the API) never asks; zero MessageTimeout means Envoy's 200ms.
	MessageTimeout, MaxMessageTimeout time.Duration
	// Voucher checks the seal ext_authz put on the principal it forwards in
	// Envoy's dynamic metadata (identity.Voucher, the key every replica
	// shares); only a verified, fresh seal is believed. Nil: forwarded
	// principals are never believed and every exchange authenticates.
	Voucher *identity.Voucher
	// IdleTimeout ends an exchange (DEADLINE_EXCEEDED) when Envoy sends no
	// message for this long; MaxStreamDuration ends it this long after it
	// opened; FirstMessageTimeout (at most IdleTimeout) bounds the wait
	// for the first message. An open stream costs a goroutine and a
	// max_streams slot, so none may be held for ever.
	IdleTimeout, MaxStreamDuration, FirstMessageTimeout time.Duration
	// MaxBufferedBytes bounds the body bytes every exchange of this
	// Server holds together while accumulating a body sent in chunks
	// (STREAMED or BUFFERED_PARTIAL on the filter); a chunk that would
	// pass it ends its exchange with 503 (reason body_buffer_exhausted).
	MaxBufferedBytes int64
}

func (o *Options) defaults() {
	if o.MessageTimeout <= 0 {
		o.MessageTimeout = DefaultMessageTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxStreamDuration <= 0 {
		o.MaxStreamDuration = DefaultMaxStreamDuration
	}
	if o.FirstMessageTimeout <= 0 {
		o.FirstMessageTimeout = DefaultFirstMessageTimeout
	}
	o.FirstMessageTimeout = min(o.FirstMessageTimeout, o.IdleTimeout)
	if o.MaxBufferedBytes <= 0 {
		o.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
}

// Server implements envoy.service.ext_proc.v3.ExternalProcessor.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer
	core    *exchange.Core
	opts    Options
	logger  *slog.Logger
	metrics *metrics
	// warnedProtocol: an unsupported filter configuration was logged.
	warnedProtocol atomic.Bool
	// buffered is the body bytes all exchanges hold (at most
	// opts.MaxBufferedBytes); see stream.grow.
	buffered atomic.Int64
}

// New returns a Server whose exchanges run in core; m comes from
// NewMetrics (nil: not counted).
func New(core *exchange.Core, opts Options, logger *slog.Logger, m *Metrics) *Server {
	opts.defaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = &Metrics{}
	}
	return &Server{core: core, opts: opts, logger: logger, metrics: m.m}
}

// Process runs one exchange. It returns nil when Envoy ends the stream
// (EOF or cancellation are normal ends: Envoy closes early when it has
// nothing more to send) and once an immediate response has been sent (the
// exchange is over: Envoy sends nothing after one, so nothing more is read
// or held); DEADLINE_EXCEEDED when Envoy stays silent past IdleTimeout or
// the exchange outlives MaxStreamDuration (Envoy then fails the request
// rather than let the rest through uninspected); and a gRPC error when no
// decision could be made, so Envoy's failure_mode_allow applies.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	ctx := stream.Context()
	x := s.newStream()
	defer func() {
		x.dropPending()
		x.sess.End(ctx) // settles the token reservation however the stream ended
	}()
	rx := startReceiver(stream)
	defer rx.stop()
	life := time.NewTimer(s.opts.MaxStreamDuration)
	defer life.Stop()
	idle := time.NewTimer(s.opts.FirstMessageTimeout)
	defer idle.Stop()
	for {
		req, err := rx.next(idle.C, life.C)
		if err != nil {
			var de *deadlineError
			if errors.As(err, &de) {
				x.sess.Fail("timeout")
				s.logger.Debug("ext_proc stream ended", "reason", de.msg, "path", x.sess.Path())
				return grpcError(ctx, err)
			}
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || ctx.Err() != nil {
				return nil
			}
			return err
		}
		resp, err := s.handleInTime(ctx, stream, x, req)
		if err != nil {
			x.sess.Fail("error")
			return grpcError(ctx, err)
		}
		if resp == nil { // observability mode: Envoy expects no answer
			idle.Reset(s.opts.IdleTimeout)
			continue
		}
		if err := stream.Send(resp); err != nil {
			if status.Code(err) == codes.Canceled || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("ext_proc send: %w", err)
		}
		if x.ended {
			return nil
		}
		idle.Reset(s.opts.IdleTimeout)
	}
}

// receiver reads the stream on its own goroutine, one message each time
// next asks, so Process can stop waiting when a deadline passes: only the
// handler's return ends a gRPC stream (and unblocks its Recv). Reading
// only on demand keeps Envoy's rhythm: the next message is read after the
// previous one was answered, as the overload gate counts it.
type receiver struct {
	stream extprocv3.ExternalProcessor_ProcessServer
	want   chan struct{}
	got    chan received
	done   chan struct{}
}

type received struct {
	req *extprocv3.ProcessingRequest
	err error
}

func startReceiver(stream extprocv3.ExternalProcessor_ProcessServer) *receiver {
	r := &receiver{stream: stream, want: make(chan struct{}, 1), got: make(chan received, 1), done: make(chan struct{})}
	go r.run()
	return r
}

func (r *receiver) run() {
	for {
		select {
		case <-r.want:
		case <-r.done:
			return
		}
		req, err := r.stream.Recv()
		r.got <- received{req, err} // buffered: one message is asked for at a time
		if err != nil {
			return
		}
	}
}

// next returns the next message, or a *deadlineError when idle or life
// fires first. After a deadline the goroutine stays in Recv until the
// stream ends, which the handler's return brings about at once.
func (r *receiver) next(idle, life <-chan time.Time) (*extprocv3.ProcessingRequest, error) {
	r.want <- struct{}{}
	select {
	case m := <-r.got:
		return m.req, m.err
	case <-idle:
		return nil, &deadlineError{msg: "no message from Envoy within the idle timeout"}
	case <-life:
		return nil, &deadlineError{msg: "exchange open longer than its maximum duration"}
	}
}

// stop ends the goroutine if it is waiting to be asked.
func (r *receiver) stop() { close(r.done) }

// deadlineError ends an exchange that went quiet or lasted too long.
type deadlineError struct{ msg string }

func (e *deadlineError) Error() string { return e.msg }

// handleInTime is x.handle, asking Envoy for more time when the answer is
// not ready after half of its message_timeout: one
// override_message_timeout message, sent only while the answer is still
// being made, so it can never arrive after the answer it extends.
func (s *Server) handleInTime(ctx context.Context, stream extprocv3.ExternalProcessor_ProcessServer, x *stream, req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	if s.opts.MaxMessageTimeout <= 0 || req.GetObservabilityMode() {
		return x.handle(ctx, req)
	}
	var mu sync.Mutex
	answered := false
	t := time.AfterFunc(s.opts.MessageTimeout/2, func() {
		mu.Lock()
		defer mu.Unlock()
		if answered {
			return
		}
		err := stream.Send(&extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(s.opts.MaxMessageTimeout)})
		if err == nil {
			s.metrics.timeoutExtended()
		}
	})
	resp, err := x.handle(ctx, req)
	t.Stop()
	mu.Lock()
	answered = true
	mu.Unlock()
	return resp, err
}

// grpcError is the one place a failure to decide becomes a gRPC status.
func grpcError(ctx context.Context, err error) error {
	var pe *protocolError
	var xe *exchange.ProtocolError
	var ue *unsupportedError
	var de *deadlineError
	switch {
	case errors.As(err, &pe):
		return status.Error(codes.InvalidArgument, pe.msg)
	case errors.As(err, &xe):
		return status.Error(codes.InvalidArgument, xe.Error())
	case errors.As(err, &de):
		return status.Error(codes.DeadlineExceeded, de.msg)
	case errors.As(err, &ue):
		return status.Error(codes.FailedPrecondition, ue.msg)
	default:
		return envoy.Undecided(ctx, err, "exchange")
	}
}

// checkProtocol refuses the exchange when the filter is configured with a
// body mode Bulwark does not speak. In FULL_DUPLEX_STREAMED (and GRPC) mode
// Envoy expects streamed_response answers on its own schedule and ignores
// mode_override, so Bulwark could neither choose its modes nor hold back a
// body it has not decided on: closing the stream is what Envoy's protocol
// says a server should do with a configuration it does not support, and
// Envoy then fails the request (500, or lets it through if the operator
// set failure_mode_allow). The first refusal is logged; every one counts
// as an "error" exchange.
func (s *Server) checkProtocol(pc *extprocv3.ProtocolConfiguration) error {
	for _, m := range []struct {
		body string
		mode filterv3.ProcessingMode_BodySendMode
	}{{"request_body_mode", pc.GetRequestBodyMode()}, {"response_body_mode", pc.GetResponseBodyMode()}} {
		switch m.mode {
		case filterv3.ProcessingMode_NONE, filterv3.ProcessingMode_STREAMED,
			filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_BUFFERED_PARTIAL:
			continue
		}
		err := &unsupportedError{msg: fmt.Sprintf("the ext_proc filter's processing_mode.%s is %v, which Bulwark does not support: "+
			"leave it NONE with allow_mode_override: true (Bulwark picks the modes), or use STREAMED, BUFFERED or BUFFERED_PARTIAL", m.body, m.mode)}
		if s.warnedProtocol.CompareAndSwap(false, true) {
			s.logger.Error("refusing ext_proc exchanges: unsupported filter configuration (logged once)", "error", err.msg)
		}
		return err
	}
	return nil
}

// unsupportedError is a filter configuration Bulwark cannot serve.
type unsupportedError struct{ msg string }

func (e *unsupportedError) Error() string { return e.msg }

// protocolError is a message Envoy would never send in this state: the
// exchange cannot continue.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return e.msg }
