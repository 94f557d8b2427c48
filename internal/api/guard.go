package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/bulwark-ai/bulwark/internal/exchange"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
)

// Guard implements bulwark.v1.GuardService.
type Guard struct {
	bulwarkv1.UnimplementedGuardServiceServer
	cfg    Config
	ex     Exchanger
	scan   Scanner
	auth   Authenticator
	limits Limiter
	logger *slog.Logger
}

var _ bulwarkv1.GuardServiceServer = (*Guard)(nil)

// NewGuard returns the GuardService. ex runs the exchanges (the ext_proc
// server Envoy talks to), scan is the detectors for ScanText, auth the
// identity stage ScanText authenticates with, limits the rate limiter that
// counts ScanText calls per principal.
func NewGuard(cfg Config, ex Exchanger, scan Scanner, auth Authenticator, limits Limiter, logger *slog.Logger) (*Guard, error) {
	switch {
	case ex == nil:
		return nil, errNoExchanger
	case scan == nil:
		return nil, errNil("scanner")
	case auth == nil:
		return nil, errNil("authenticator")
	case limits == nil:
		return nil, errNil("rate limiter")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Guard{cfg: cfg.withDefaults(), ex: ex, scan: scan, auth: auth, limits: limits, logger: logger}, nil
}

// ScanText runs the detectors. It is not a policy decision, but the caller
// must hold a valid credential (any role), and is held to
// Config.ScanTextPerMinute calls of at most Config.ScanTextMaxBytes.
func (g *Guard) ScanText(ctx context.Context, req *bulwarkv1.ScanTextRequest) (*bulwarkv1.ScanTextResponse, error) {
	text := req.GetText()
	switch {
	case text == "":
		return nil, invalid("text", "is empty")
	case len(text) > g.cfg.ScanTextMaxBytes:
		return nil, invalid("text", "is %d bytes; at most %d are scanned", len(text), g.cfg.ScanTextMaxBytes)
	}
	if req.InjectionThreshold != nil {
		if t := req.GetInjectionThreshold(); !(t > 0 && t <= 1) {
			return nil, invalid("injection_threshold", "%v is outside (0, 1]", t)
		}
	}
	p := g.auth.Authenticate(ctx, callerOf(ctx).credentials())
	if !p.Authenticated() {
		return nil, unauthenticated(p.Error)
	}
	if err := g.scanAllowed(ctx, p); err != nil {
		return nil, err
	}
	start := time.Now()
	res, err := g.scan.ScanContext(ctx, text)
	if err != nil {
		return nil, undecided(ctx, err)
	}
	elapsed := time.Since(start)
	pi := res.PromptInjection
	detected := pi.Detected
	if req.InjectionThreshold != nil {
		detected = pi.Score >= req.GetInjectionThreshold()
	}
	out := &bulwarkv1.ScanTextResponse{
		PromptInjection: &bulwarkv1.PromptInjection{
			Score:    math.Round(pi.Score*10000) / 10000, // as `bulwark scan` prints it
			Detected: detected,
			Rules:    pi.Rules,
		},
		Findings: make([]*bulwarkv1.Finding, 0, len(res.Findings)),
		Elapsed:  durationpb.New(elapsed),
	}
	for _, f := range res.Findings {
		out.Findings = append(out.Findings, &bulwarkv1.Finding{Detector: f.Detector, Type: f.Type,
			// #nosec G115 -- offsets are at most len(text) <= MaxBodyBytes <= max_recv_msg_bytes <= MaxInt32 (config.Validate)
			Start: int32(f.Start), End: int32(f.End)})
	}
	return out, nil
}

// scanTextLimit is the name of ScanText's per-principal rate limit.
const scanTextLimit = "scan_text_per_minute"

// scanAllowed charges one ScanText call to p's rate limit: RESOURCE_EXHAUSTED
// with RetryInfo when it is spent, UNAVAILABLE when the limiter cannot tell
// (and fails closed).
func (g *Guard) scanAllowed(ctx context.Context, p identity.Principal) error {
	lim := ratelimit.Limit{Name: scanTextLimit, Key: string(p.Kind) + ":" + p.ID,
		Limit: int64(g.cfg.ScanTextPerMinute), Period: time.Minute}
	res, err := g.limits.Check(ctx, "", []ratelimit.Limit{lim})
	if err != nil {
		g.logger.Warn("ScanText rate limit unavailable", "principal", p.ID, "error", err)
		return status.Error(codes.Unavailable, "rate limit could not be checked")
	}
	if res.Allowed {
		return nil
	}
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("%s: at most %d calls per minute", scanTextLimit, g.cfg.ScanTextPerMinute))
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: "rate_limited", Domain: ErrorDomain, Metadata: map[string]string{"limit": scanTextLimit}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(res.RetryAfter)}); err == nil {
		st = d
	}
	return st.Err()
}

// unauthenticated is the error for no credential (reason "") or a rejected
// one, with the policy's reason codes.
func unauthenticated(reason string) error {
	msg, code := "needs a credential: metadata authorization: Bearer <API key or JWT>, or x-api-key", "missing_credential"
	if reason != "" {
		msg, code = "credential rejected: "+reason, "invalid_credential"
	}
	st := status.New(codes.Unauthenticated, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: code, Domain: ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}

// CheckPrompt runs the request phases.
func (g *Guard) CheckPrompt(ctx context.Context, req *bulwarkv1.CheckPromptRequest) (*bulwarkv1.CheckPromptResponse, error) {
	r, err := requestOf(g.cfg.MaxBodyBytes, req.GetPath(), "body", req.GetBody(), req.GetHeaders())
	if err != nil {
		return nil, err
	}
	e := g.start()
	// The caller takes the prompt to the model itself: the reservation
	// stays at its estimate.
	e.x.KeepReservation()
	defer e.x.End(ctx)
	d, body, modified, err := e.request(ctx, callerOf(ctx), r)
	if err != nil {
		return nil, err
	}
	if err := refusal(d); err != nil {
		return nil, err
	}
	out := &bulwarkv1.CheckPromptResponse{Decision: d}
	if d.GetAllowed() {
		out.Body, out.Modified = toValidUTF8(body), modified
	}
	return out, nil
}

// CheckCompletion runs the request phases, then the response phases on the
// whole answer.
func (g *Guard) CheckCompletion(ctx context.Context, req *bulwarkv1.CheckCompletionRequest) (*bulwarkv1.CheckCompletionResponse, error) {
	r, err := requestOf(g.cfg.MaxBodyBytes, req.GetPath(), "request_body", req.GetRequestBody(), req.GetHeaders())
	if err != nil {
		return nil, err
	}
	ct, err := validAnswer(g.cfg.MaxBodyBytes, req.GetBody(), req.GetContentType(), "application/json")
	if err != nil {
		return nil, err
	}
	e := g.start()
	defer e.x.End(ctx)
	d, _, _, err := e.request(ctx, callerOf(ctx), r)
	if err != nil {
		return nil, err
	}
	if !d.GetAllowed() {
		if err := refusal(d); err != nil {
			return nil, err
		}
		return &bulwarkv1.CheckCompletionResponse{Decision: d}, nil
	}
	if d, err := e.responseHeaders(ctx, ct); err != nil || d != nil {
		return completionDenied(d, err)
	}
	answer := []byte(req.GetBody())
	out, d, err := e.responseChunk(ctx, answer, true)
	if err != nil || d != nil {
		return completionDenied(d, err)
	}
	// e.last is the answer's allow, or the stop of a stream the policy cut
	// (its error event ends out).
	return &bulwarkv1.CheckCompletionResponse{Decision: e.last, Body: toValidUTF8(out), Modified: !bytes.Equal(out, answer)}, nil
}

func completionDenied(d *bulwarkv1.Decision, err error) (*bulwarkv1.CheckCompletionResponse, error) {
	if err != nil {
		return nil, err
	}
	if err := refusal(d); err != nil {
		return nil, err
	}
	return &bulwarkv1.CheckCompletionResponse{Decision: d}, nil
}

// RedactStream: start, then chunks, each answered in order.
func (g *Guard) RedactStream(stream grpc.BidiStreamingServer[bulwarkv1.RedactStreamRequest, bulwarkv1.RedactStreamResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return invalid("start", "the stream ended before its start message")
	}
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return invalid("start", "the first message must be start")
	}
	r, err := requestOf(g.cfg.MaxBodyBytes, start.GetPath(), "start.request_body", start.GetRequestBody(), start.GetHeaders())
	if err != nil {
		return err
	}
	ct, err := validContentType("start.content_type", start.GetContentType(), "text/event-stream")
	if err != nil {
		return err
	}
	e := g.start()
	defer e.x.End(ctx)
	d, body, modified, err := e.request(ctx, callerOf(ctx), r)
	if err != nil {
		return err
	}
	if d.GetAllowed() {
		// The stream's headers: Bulwark chooses how to read the body (SSE
		// streamed, JSON buffered); a refusal here replaces the allow.
		rd, err := e.responseHeaders(ctx, ct)
		if err != nil {
			return err
		}
		if rd != nil {
			d = rd
		}
	}
	started := &bulwarkv1.RedactStreamStarted{Decision: d}
	if d.GetAllowed() {
		started.RequestBody, started.Modified = toValidUTF8(body), modified
	}
	if err := refusal(started.Decision); err != nil {
		return err
	}
	if err := stream.Send(&bulwarkv1.RedactStreamResponse{Message: &bulwarkv1.RedactStreamResponse_Started{Started: started}}); err != nil {
		return err
	}
	if !started.GetDecision().GetAllowed() {
		return nil
	}
	total := 0
	for {
		msg, err := stream.Recv()
		last := false
		var data []byte
		switch {
		case errors.Is(err, io.EOF):
			last = true // the client closed its side: release what is held
		case err != nil:
			return err
		case msg.GetChunk() == nil:
			return invalid("chunk", "after start, only chunks")
		default:
			data, last = msg.GetChunk().GetData(), msg.GetChunk().GetLast()
		}
		if total += len(data); e.respMode == exchange.BodyWhole && total > g.cfg.MaxBodyBytes {
			return invalid("chunk", "the answer exceeds %d bytes, the most that is inspected whole", g.cfg.MaxBodyBytes)
		}
		out, denied, err := e.responseChunk(ctx, data, last)
		if err != nil {
			return err
		}
		o := &bulwarkv1.RedactStreamOutput{Data: out, Ended: e.ended}
		if denied != nil {
			// The whole (buffered) answer was refused: its error body is
			// what the client receives.
			o.Data, o.Ended, o.Reason = []byte(denied.GetErrorBody()), true, denied.GetReason()
		} else if e.ended {
			o.Reason = e.last.GetReason()
		}
		if err := stream.Send(&bulwarkv1.RedactStreamResponse{Message: &bulwarkv1.RedactStreamResponse_Output{Output: o}}); err != nil {
			return err
		}
		if last {
			return nil
		}
	}
}
