package extproc_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/exchange"
	"github.com/bulwark-ai/bulwark/internal/extproc"
)

func headersMsg(h map[string]string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: extproc.EnvoyHeaders(h)}}}
}

func bodyMsg(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

// chatHeaders are a chat request's headers, with the stack's key when
// authenticated.
func (f *stack) chatHeaders(authenticated bool) *extprocv3.ProcessingRequest {
	h := map[string]string{":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json"}
	if authenticated {
		h["authorization"] = "Bearer " + f.key
	}
	return headersMsg(h)
}

// roundTrip sends one message and returns the answer.
func roundTrip(st extprocv3.ExternalProcessor_ProcessClient, r *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	if err := st.Send(r); err != nil && !errors.Is(err, io.EOF) {
		return nil, err // io.EOF: the server ended the stream; Recv says how
	}
	return st.Recv()
}

// TestImmediateResponseEndsExchange: once Bulwark has answered with an
// immediate response the exchange is over: the stream ends (status OK,
// Envoy sends nothing after one anyway), so a client that keeps sending
// body chunks gets nothing read or held; the Exchange API refuses a
// message after one.
func TestImmediateResponseEndsExchange(t *testing.T) {
	var decider exchange.Decider
	f := newStackWith(t, extproc.Options{}, nil, func(d exchange.Decider) exchange.Decider { decider = d; return d }, exchange.Options{MaxBodyBytes: 1024})
	cases := []struct {
		name     string
		msgs     []*extprocv3.ProcessingRequest
		wantCode int32
	}{
		{"401 on the request headers", []*extprocv3.ProcessingRequest{f.chatHeaders(false)}, 401},
		{"413 on a request body", []*extprocv3.ProcessingRequest{f.chatHeaders(true), bodyMsg(make([]byte, 2000), true)}, 413},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := f.client.Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var resp *extprocv3.ProcessingResponse
			for _, m := range tc.msgs {
				if resp, err = roundTrip(st, m); err != nil {
					t.Fatal(err)
				}
			}
			if got := resp.GetImmediateResponse().GetStatus().GetCode(); int32(got) != tc.wantCode {
				t.Fatalf("answer %v, want an immediate %d", resp, tc.wantCode)
			}
			// An attacker's next chunks: the stream is already over.
			resp, err = roundTrip(st, bodyMsg([]byte(strings.Repeat("a", 512)), false))
			if !errors.Is(err, io.EOF) {
				t.Fatalf("a chunk after the immediate response got %v, %v; want the stream ended (io.EOF)", resp, err)
			}
		})
	}

	t.Run("exchange core", func(t *testing.T) {
		// What the Guard API drives: a Session that denied is over.
		ctx := context.Background()
		x := exchange.New(decider, nil, nil, exchange.Options{}, nil, nil).Start("test")
		defer x.End(ctx)
		res, err := x.RequestHeaders(ctx, exchange.Head{Check: envoy.NewCheckRequest(envoy.HTTPRequest{
			Method: "POST", Path: "/v1/chat/completions", Headers: map[string]string{"content-type": "application/json"}, Body: []byte("{}")})})
		if err != nil || res.Deny == nil || res.Deny.Status != 401 {
			t.Fatalf("got %+v, %v; want a 401 denial", res, err)
		}
		if res, err := x.RequestBody(ctx, []byte("{}")); err == nil {
			t.Fatalf("a step after the denial was answered: %+v", res)
		}
	})
}

// TestStreamDeadlines: a stream on which Envoy says nothing for the idle
// timeout (its first message: the first-message timeout), or that lasts
// longer than the maximum duration, ends with DEADLINE_EXCEEDED, so Envoy
// fails the request instead of letting the rest through uninspected.
func TestStreamDeadlines(t *testing.T) {
	cases := []struct {
		name   string
		opts   extproc.Options
		msgs   func(f *stack) []*extprocv3.ProcessingRequest // sent first, each answered
		chunks time.Duration                                 // then a body chunk this often (0: silence)
		// min and max: when the stream must end. max only tells the
		// deadline that fired from the ones that did not (a minute, or the
		// client's 20 s): loaded CI machines take seconds to schedule.
		min, max time.Duration
	}{
		{"silent from the start: first-message timeout (the idle timeout, smaller)",
			extproc.Options{IdleTimeout: 300 * time.Millisecond}, nil, 0, 300 * time.Millisecond, 15 * time.Second},
		{"silent from the start: first-message timeout",
			extproc.Options{IdleTimeout: time.Minute, FirstMessageTimeout: 200 * time.Millisecond}, nil, 0, 200 * time.Millisecond, 15 * time.Second},
		{"silent after an answer: idle timeout",
			extproc.Options{IdleTimeout: 400 * time.Millisecond},
			func(f *stack) []*extprocv3.ProcessingRequest {
				return []*extprocv3.ProcessingRequest{f.chatHeaders(true)}
			},
			0, 400 * time.Millisecond, 15 * time.Second},
		{"busy past the maximum duration",
			extproc.Options{IdleTimeout: time.Minute, MaxStreamDuration: 600 * time.Millisecond},
			func(f *stack) []*extprocv3.ProcessingRequest {
				return []*extprocv3.ProcessingRequest{f.chatHeaders(true)}
			},
			50 * time.Millisecond, 600 * time.Millisecond, 15 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newStack(t, tc.opts)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			began := time.Now()
			st, err := f.client.Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.msgs != nil {
				for _, m := range tc.msgs(f) {
					if resp, err := roundTrip(st, m); err != nil || resp.GetImmediateResponse() != nil {
						t.Fatalf("%v %v", resp, err)
					}
				}
			}
			for {
				if tc.chunks > 0 {
					time.Sleep(tc.chunks)
					_, err = roundTrip(st, bodyMsg([]byte("{"), false))
				} else {
					_, err = st.Recv()
				}
				if err != nil {
					break
				}
			}
			took := time.Since(began)
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("stream ended with %v, want DEADLINE_EXCEEDED", err)
			}
			if took < tc.min || took > tc.max {
				t.Errorf("stream ended after %v, want within [%v, %v]", took, tc.min, tc.max)
			}
		})
	}
}

// TestBodyBudget: the body bytes every exchange holds while chunks
// accumulate share one budget; a chunk it has no room for ends its
// exchange with 503, and bytes come back when a body is complete or its
// exchange ends, however it ends.
func TestBodyBudget(t *testing.T) {
	f := newStack(t, extproc.Options{MaxBufferedBytes: 6000}, exchange.Options{MaxBodyBytes: 4096})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	chunk := []byte(strings.Repeat("a", 3000))
	// hold opens an exchange holding 3000 bytes; the answer to the chunk.
	hold := func(ctx context.Context) (extprocv3.ExternalProcessor_ProcessClient, *extprocv3.ProcessingResponse) {
		t.Helper()
		st, err := f.client.Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := roundTrip(st, f.chatHeaders(true)); err != nil || resp.GetImmediateResponse() != nil {
			t.Fatalf("headers: %v %v", resp, err)
		}
		resp, err := roundTrip(st, bodyMsg(chunk, false))
		if err != nil {
			t.Fatal(err)
		}
		return st, resp
	}
	held := func(what string, resp *extprocv3.ProcessingResponse) {
		t.Helper()
		if !resp.GetRequestBody().GetResponse().GetBodyMutation().GetClearBody() {
			t.Fatalf("%s: chunk not held: %v", what, resp)
		}
	}
	refused := func(what string, st extprocv3.ExternalProcessor_ProcessClient, resp *extprocv3.ProcessingResponse) {
		t.Helper()
		ir := resp.GetImmediateResponse()
		if ir.GetStatus().GetCode() != 503 || ir.GetDetails() != "bulwark_body_buffer_exhausted" {
			t.Fatalf("%s: got %v, want an immediate 503 body_buffer_exhausted", what, resp)
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("%s: stream after the refusal: %v, want it ended", what, err)
		}
	}

	a, resp := hold(ctx)
	held("a", resp)
	bctx, cancelB := context.WithCancel(ctx)
	b, resp := hold(bctx)
	held("b", resp)
	c, resp := hold(ctx)
	refused("c, over the budget", c, resp)

	// a's body completes: its bytes come back once it is decided.
	if resp, err := roundTrip(a, bodyMsg(nil, true)); err != nil || resp.GetImmediateResponse().GetDetails() == "bulwark_body_buffer_exhausted" {
		t.Fatalf("a's last chunk: %v %v", resp, err)
	}
	d, resp := hold(ctx)
	held("d, after a's body completed", resp)

	// b's client goes away: its bytes come back when its exchange ends.
	cancelB()
	_ = b
	deadline := time.Now().Add(10 * time.Second)
	for {
		e, resp := hold(ctx)
		if resp.GetRequestBody() != nil {
			held("e, after b ended", resp)
			break
		}
		refused("e, before b's end was seen", e, resp)
		if time.Now().After(deadline) {
			t.Fatal("b's bytes never came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = d
}
