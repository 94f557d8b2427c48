// Package extproc adapts Envoy's ext_proc API to the pipeline: one
// bidirectional stream per HTTP exchange, carrying request headers, request
// body, response headers and response body (buffered, or streamed chunk by
// chunk), each answered with exactly one response of the matching type.
//
// Bulwark picks the body modes itself through mode_override on the header
// responses (Envoy's filter needs allow_mode_override): JSON request bodies
// of LLM APIs are buffered and decided on whole; text/event-stream responses
// are streamed and redacted event by event, holding back only the bounded
// tail that could still complete a finding; JSON responses are buffered;
// everything else is left alone. No decision logic lives here: the adapter
// builds the policy input (OPA-Envoy's fields plus llm, signals and usage)
// and enforces the pipeline's Outcome.
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

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/redact"
	"github.com/bulwark-ai/bulwark/internal/telemetry"
)

// Decider is the pipeline as this adapter needs it.
type Decider interface {
	Decide(ctx context.Context, req pipeline.Request) (pipeline.Outcome, error)
}

var _ Decider = (*pipeline.Pipeline)(nil)

// Scanner finds PII, secrets and the like in text, for redaction.
type Scanner interface {
	Scan(text string) detect.Result
}

// Reconciler settles a token reservation with the usage the model reported.
type Reconciler interface {
	Reconcile(ctx context.Context, decisionID string, actual int64) error
}

// Defaults for Options fields left zero.
const (
	DefaultMaxBodyBytes    = 8 << 20
	DefaultStreamStep      = 64
	DefaultStreamLookahead = 512
	DefaultMaxEventBytes   = 1 << 20
	DefaultMessageTimeout  = 200 * time.Millisecond // Envoy's message_timeout default
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

// Options tune the adapter.
type Options struct {
	// StripCredentials keeps credential headers out of input.attributes, as
	// the ext_authz adapter does.
	StripCredentials bool
	// Tracing, when enabled, starts a bulwark.extproc.<phase> span per
	// decision, joined to the trace in the request's headers.
	Tracing *telemetry.Tracing
	// ScanRoles are the message roles whose text the detectors read in the
	// request phase; empty means every role. Text outside the conversation
	// (llmapi.RoleOther: descriptions, schemas, unknown fields) is always
	// read. ext_authz takes the same list, so both doors scan the same text.
	ScanRoles []string
	// TrustedRoles are the roles whose text is the application's own, which
	// the detectors do not read (see envoy.RoleFilter).
	TrustedRoles []string
	// MaxBodyBytes bounds a buffered request or response body (after
	// decompression); a bigger one is denied with 413.
	MaxBodyBytes int
	// StreamStep and StreamLookahead size the streaming redactor's windows:
	// text is released StreamStep bytes at a time once StreamLookahead more
	// bytes are known, so a finding up to StreamLookahead bytes long is
	// caught however the stream was split.
	StreamStep, StreamLookahead int
	// MaxEventBytes bounds one SSE event held while incomplete.
	MaxEventBytes int
	// ClampMaxTokens, when positive, caps the request's max-tokens field.
	ClampMaxTokens int64
	// Canary plants a random marker in the system prompt of every LLM
	// request; a response that repeats it leaked its instructions and is
	// blocked.
	Canary bool
	// RedactKey keys the "hash" redaction action (HMAC-SHA256), so hashed
	// values can be correlated but not guessed.
	RedactKey []byte
	// MessageTimeout and MaxMessageTimeout mirror the Envoy filter's
	// message_timeout and max_message_timeout. When MaxMessageTimeout is
	// set and an answer is not ready after half of MessageTimeout (a large
	// body, a slow policy), Bulwark sends override_message_timeout with
	// MaxMessageTimeout, so Envoy waits for the decision instead of failing
	// the request. Zero MaxMessageTimeout (Envoy's default, which disables
	// the API) never asks; zero MessageTimeout means Envoy's 200ms.
	MessageTimeout, MaxMessageTimeout time.Duration
	// StripUpstreamCredentials removes the headers that carried the client's
	// Bulwark credential (authorization; x-api-key when it was the
	// credential or holds a Bulwark key) from the request Envoy forwards, in
	// the request-headers answer, so the model provider never receives
	// them. Set it only when Bulwark authenticates: otherwise those headers
	// may be the provider's own key.
	StripUpstreamCredentials bool
	// Voucher checks the seal ext_authz put on the principal it forwards in
	// Envoy's dynamic metadata (identity.Voucher, the key every replica
	// shares); only a verified, fresh seal is believed. Nil: forwarded
	// principals are never believed and every exchange authenticates.
	Voucher *identity.Voucher
	// ResponseScanner scans model output; nil means the request scanner.
	// Give it one without the injection detector: the streaming redactor
	// scans every byte several times, and output needs PII and secrets only.
	ResponseScanner Scanner
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
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.StreamStep <= 0 {
		o.StreamStep = DefaultStreamStep
	}
	if o.StreamLookahead <= 0 {
		o.StreamLookahead = DefaultStreamLookahead
	}
	if o.MaxEventBytes <= 0 {
		o.MaxEventBytes = DefaultMaxEventBytes
	}
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
	decider   Decider
	scanner   Scanner
	outScan   Scanner
	reconcile Reconciler
	opts      Options
	scan      func(role string) bool // ScanRoles as a filter; nil: every role
	logger    *slog.Logger
	metrics   *metrics
	// warnedProtocol: an unsupported filter configuration was logged.
	warnedProtocol atomic.Bool
	// buffered is the body bytes all exchanges hold (at most
	// opts.MaxBufferedBytes); see exchange.grow.
	buffered atomic.Int64
}

// New returns a Server. scanner finds what redaction removes (nil: nothing
// is redacted); reconcile settles token reservations (nil: usage is only
// reported to the policy); m comes from NewMetrics (nil: not counted).
func New(d Decider, scanner Scanner, reconcile Reconciler, opts Options, logger *slog.Logger, m *Metrics) *Server {
	opts.defaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = &Metrics{}
	}
	out := opts.ResponseScanner
	if out == nil {
		out = scanner
	}
	return &Server{decider: d, scanner: scanner, outScan: out, reconcile: reconcile, opts: opts, scan: envoy.RoleFilter(opts.ScanRoles, opts.TrustedRoles), logger: logger, metrics: m.m}
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
	x := s.newExchange()
	s.metrics.streamStarted()
	defer func() {
		x.dropPending()
		s.metrics.streamEnded(x.outcome)
	}()
	defer x.finish(ctx) // settle the token reservation however the stream ended
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
				x.outcome = "timeout"
				s.logger.Debug("ext_proc stream ended", "reason", de.msg, "path", x.path)
				return grpcError(ctx, err)
			}
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || ctx.Err() != nil {
				return nil
			}
			return err
		}
		resp, err := s.handleInTime(ctx, stream, x, req)
		if err != nil {
			x.outcome = "error"
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
func (s *Server) handleInTime(ctx context.Context, stream extprocv3.ExternalProcessor_ProcessServer, x *exchange, req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
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
	var ue *unsupportedError
	var de *deadlineError
	switch {
	case errors.As(err, &pe):
		return status.Error(codes.InvalidArgument, pe.msg)
	case errors.As(err, &de):
		return status.Error(codes.DeadlineExceeded, de.msg)
	case errors.As(err, &ue):
		return status.Error(codes.FailedPrecondition, ue.msg)
	case errors.Is(ctx.Err(), context.Canceled):
		return status.Error(codes.Canceled, "caller cancelled the exchange")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "decision not made within the deadline")
	default:
		return status.Error(codes.Unavailable, "decision could not be made")
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

// redactor builds the redactor for a decision's rules; nil when there are
// none or no scanner.
func (s *Server) redactor(rules redact.Rules) *redact.Redactor {
	if len(rules) == 0 || s.scanner == nil {
		return nil
	}
	return redact.New(rules, s.opts.RedactKey)
}

// Exchange is one HTTP exchange driven without Envoy: Bulwark's own API
// (GuardService) replays a prompt or a completion through exactly the
// phases Envoy would send, so both front doors share one pipeline. Messages
// must come in Envoy's order; Handle answers each as Process would.
type Exchange struct{ x *exchange }

// NewExchange starts an exchange. End must be called when it is over.
func (s *Server) NewExchange() *Exchange {
	s.metrics.streamStarted()
	return &Exchange{x: s.newExchange()}
}

// Handle answers one message.
func (e *Exchange) Handle(ctx context.Context, req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	resp, err := e.x.handle(ctx, req)
	if err != nil {
		e.x.outcome = "error"
	}
	return resp, err
}

// End records the exchange's outcome, gives back what it buffered and,
// when the exchange carried an answer (CheckCompletion, RedactStream) that
// reported no usage, settles its token reservation to an estimate. A
// request-only exchange (CheckPrompt) keeps its reservation: the caller takes
// the prompt to the model itself, and the estimate is all Bulwark will know
// of the answer.
func (e *Exchange) End() {
	e.x.dropPending()
	if e.x.resp != nil {
		e.x.finish(context.Background())
	}
	e.x.s.metrics.streamEnded(e.x.outcome)
}

// Cut says why a streamed answer was ended early.
type Cut struct {
	// DecisionID is the decision that ended it; empty when Bulwark could not
	// inspect the stream (Reason says why).
	DecisionID string
	// Reason and Message are the policy's.
	Reason, Message string
}

// Cut reports whether the streamed answer was ended early, and why.
func (e *Exchange) Cut() (Cut, bool) {
	if rs := e.x.resp; rs != nil && rs.cut != nil {
		return *rs.cut, true
	}
	return Cut{}, false
}
