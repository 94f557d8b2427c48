package extproc_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/bulwark-ai/bulwark/internal/app/core"
	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/exchange"
	"github.com/bulwark-ai/bulwark/internal/extauthz"
	"github.com/bulwark-ai/bulwark/internal/extproc"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/test/fixture"
)

// settlements records what the exchange settled its reservations to, on
// their way to the real in-process limiter.
type settlements struct {
	next exchange.Reconciler
	mu   sync.Mutex
	got  map[string]int64
	done chan string
}

func (s *settlements) Reconcile(ctx context.Context, id string, actual int64) error {
	s.mu.Lock()
	s.got[id] = actual
	s.mu.Unlock()
	defer func() { s.done <- id }()
	return s.next.Reconcile(ctx, id, actual)
}

// TestReservationSettledAtExchangeEnd: whatever ends an exchange, its token
// reservation is settled exactly once: to the model's usage when reported,
// else to an estimate (nothing when the model refused it; the prompt's
// estimated tokens plus the answer seen when the client went away).
func TestReservationSettledAtExchangeEnd(t *testing.T) {
	t.Parallel()
	st := fixture.NewStack(t, fixture.StackOptions{Keys: []fixture.Key{{ID: "app", Roles: []string{"user"}, Tenant: "acme"}},
		Deps: core.Deps{Pepper: pepper, NoGreyZone: true}})
	pipe, scanner, limiter, keys := st.Pipeline, st.Scanner, st.Limiter, st.Secrets
	rec := &settlements{next: limiter, got: map[string]int64{}, done: make(chan string, 16)}
	core := exchange.New(pipe, scanner, rec, exchange.Options{MaxBodyBytes: 4096}, nil, nil)
	f := serveStack(t, extproc.New(core, extproc.Options{}, nil, nil))

	prompt := strings.Repeat("abcd", 100) // 100 estimated tokens
	reqBody := `{"model":"gpt-4o","stream":true,"max_tokens":500,"messages":[{"role":"user","content":"` + prompt + `"}]}`
	sse := func(body string) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte(body)}}}
	}
	respHeaders := func(status string) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
			Headers: extproc.EnvoyHeaders(map[string]string{":status": status, "content-type": "text/event-stream"})}}}
	}
	chunk := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + strings.Repeat("x", 300) + "\"}}]}\n\n"
	usage := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":90,\"completion_tokens\":7,\"total_tokens\":97}}\n\ndata: [DONE]\n\n"
	jsonHeaders := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: extproc.EnvoyHeaders(map[string]string{":status": "200", "content-type": "application/json"})}}}
	part := func(n int, last bool) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
			Body: []byte(strings.Repeat("y", n)), EndOfStream: last}}}
	}
	cases := []struct {
		name  string
		after []*extprocv3.ProcessingRequest // after the request phase
		end   func(st extprocv3.ExternalProcessor_ProcessClient, cancel context.CancelFunc)
		want  int64
		// lastRefused: the last message is answered with an immediate response.
		lastRefused bool
	}{
		{"client gone before the answer", nil, func(_ extprocv3.ExternalProcessor_ProcessClient, c context.CancelFunc) { c() }, 100, false},
		{"stream closed before the answer", nil, func(st extprocv3.ExternalProcessor_ProcessClient, _ context.CancelFunc) { st.CloseSend() }, 100, false},
		{"model answered 500", []*extprocv3.ProcessingRequest{respHeaders("500")},
			func(st extprocv3.ExternalProcessor_ProcessClient, _ context.CancelFunc) { st.CloseSend() }, 0, false},
		{"client gone mid-answer", []*extprocv3.ProcessingRequest{respHeaders("200"), sse(chunk)},
			func(_ extprocv3.ExternalProcessor_ProcessClient, c context.CancelFunc) { c() }, 100 + int64(len(chunk)+3)/4, false},
		{"usage reported", []*extprocv3.ProcessingRequest{respHeaders("200"), sse(chunk),
			{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte(usage), EndOfStream: true}}}},
			func(st extprocv3.ExternalProcessor_ProcessClient, _ context.CancelFunc) { st.CloseSend() }, 97, false},
		// The answer outgrows what is inspected (4096 bytes here) and is
		// refused, but the model produced it: its bytes count, capped at
		// the reservation's 500 tokens.
		{"answer too large to inspect", []*extprocv3.ProcessingRequest{jsonHeaders, part(3000, false), part(3000, true)},
			func(st extprocv3.ExternalProcessor_ProcessClient, _ context.CancelFunc) { st.CloseSend() }, 100 + 500, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st, err := f.client.Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var decisionID string
			msgs := append([]*extprocv3.ProcessingRequest{
				{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: extproc.EnvoyHeaders(map[string]string{
					":method": "POST", ":path": "/v1/chat/completions", "authorization": "Bearer " + keys["app"], "content-type": "application/json"})}}},
				{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(reqBody), EndOfStream: true}}},
			}, tc.after...)
			for i, m := range msgs {
				if err := st.Send(m); err != nil {
					t.Fatal(err)
				}
				resp, err := st.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if refused := resp.GetImmediateResponse() != nil; refused != (tc.lastRefused && i == len(msgs)-1) {
					t.Fatalf("message %d: refused %v: %v", i, refused, resp)
				}
				if i == 1 {
					for _, h := range resp.GetRequestBody().GetResponse().GetHeaderMutation().GetSetHeaders() {
						if h.GetHeader().GetKey() == "x-bulwark-decision-id" {
							decisionID = string(h.GetHeader().GetRawValue())
						}
					}
				}
			}
			tc.end(st, cancel)
			select {
			case id := <-rec.done:
				if id != decisionID {
					t.Fatalf("settled %q, want the request body's decision %q", id, decisionID)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the reservation was never settled")
			}
			rec.mu.Lock()
			got := rec.got[decisionID]
			rec.mu.Unlock()
			if got != tc.want {
				t.Fatalf("settled to %d tokens, want %d", got, tc.want)
			}
			select {
			case id := <-rec.done:
				t.Fatalf("settled twice (%s)", id)
			case <-time.After(50 * time.Millisecond):
			}
		})
	}

	// Bulwark's own API: CheckPrompt replays only the request phases; the
	// caller takes the prompt to the model itself, so its reservation stands
	// (settling it to the prompt would let the answer go uncharged).
	t.Run("request-only API exchange keeps its reservation", func(t *testing.T) {
		ctx := context.Background()
		x := core.Start("api")
		x.KeepReservation()
		res, err := x.RequestHeaders(ctx, exchange.Head{Check: envoy.HeadersCheckRequest(map[string]string{
			":method": "POST", ":path": "/v1/chat/completions", "authorization": "Bearer " + keys["app"], "content-type": "application/json"}, nil, nil)})
		if err != nil || res.Deny != nil {
			t.Fatalf("refused: %+v %v", res.Deny, err)
		}
		if res, err = x.RequestBody(ctx, []byte(reqBody)); err != nil || res.Deny != nil {
			t.Fatalf("refused: %+v %v", res.Deny, err)
		}
		x.End(ctx)
		select {
		case id := <-rec.done:
			t.Fatalf("a CheckPrompt reservation was settled (%s)", id)
		case <-time.After(50 * time.Millisecond):
		}
	})

	// Behind ext_authz: its (verified) decision id names no reservation of
	// this exchange's; a GET without a body makes none either. Nothing is
	// settled, so no reconciliation of an unknown reservation is attempted.
	t.Run("forwarded ext_authz decision without a reservation", func(t *testing.T) {
		v, err := identity.NewVoucher(identity.RandomVouchKey(), 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		ok, err := extauthz.New(pipe, extauthz.Options{Voucher: v}).Check(context.Background(), envoy.NewCheckRequest(envoy.HTTPRequest{
			Method: "GET", Path: "/v1/models", Headers: map[string]string{"authorization": "Bearer " + keys["app"]}}))
		if err != nil || ok.GetStatus().GetCode() != 0 {
			t.Fatalf("ext_authz: %v %v", ok.GetStatus(), err)
		}
		g := serveStack(t, extproc.New(exchange.New(pipe, scanner, rec, exchange.Options{}, nil, nil), extproc.Options{Voucher: v}, nil, nil))
		st, err := g.client.Process(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{EndOfStream: true,
				Headers: extproc.EnvoyHeaders(map[string]string{":method": "GET", ":path": "/v1/models"})}},
			MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{envoy.AuthzNamespace: ok.GetDynamicMetadata()}},
		}); err != nil {
			t.Fatal(err)
		}
		if resp, err := st.Recv(); err != nil || resp.GetImmediateResponse() != nil {
			t.Fatalf("not believed: %v %v", resp, err)
		}
		st.CloseSend()
		select {
		case id := <-rec.done:
			t.Fatalf("settled %s, which this exchange never reserved", id)
		case <-time.After(100 * time.Millisecond):
		}
	})
}
