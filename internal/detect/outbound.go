package detect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// This file holds what the remote detectors (the remote classifier, the
// moderation model) share: the outcome of one outbound call, the HTTP POST
// that makes it under a deadline, and the circuit breaker in front of it.

// Reasons an outbound call gave no verdict (the verdicts' Error field, and
// the result label of their calls_total metrics).
const (
	remoteOK          = "ok"
	remoteTimeout     = "timeout"
	remoteStatus      = "status"
	remoteBadResponse = "bad_response"
	remoteTransport   = "transport"
	remoteCanceled    = "canceled"
	remoteCircuitOpen = "circuit_open"
)

// remoteResults are every value of the result label, so that each series
// exists (at 0) from the start.
var remoteResults = []string{remoteOK, remoteTimeout, remoteStatus, remoteBadResponse, remoteTransport, remoteCanceled, remoteCircuitOpen}

// maxRemoteAnswer bounds the answer body read from a remote detector.
const maxRemoteAnswer = 1 << 20

// Clock is the time source of the circuit breakers.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// newHTTPClient is the client a remote detector uses when its caller gives
// none: one host, many concurrent decisions, so keep their connections.
func newHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: t}
}

// poster makes one JSON POST to a remote detector under a deadline.
type poster struct {
	client  *http.Client
	url     string
	timeout time.Duration
	// token, when set, is sent as a bearer token. It is never logged.
	token string
}

// post sends body as JSON and hands a 200 answer's body (at most
// maxRemoteAnswer bytes) to decode. It returns remoteOK or why the call
// failed; the caller's own end (its context done) is remoteCanceled, never
// a failure of the remote side. timeout applies on top of ctx's deadline.
func (p poster) post(ctx context.Context, body any, decode func(io.Reader) error) string {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	// failed names a failure of the call: the caller's own end first.
	failed := func(otherwise string) string {
		switch {
		case parent.Err() != nil:
			return remoteCanceled
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			return remoteTimeout
		}
		return otherwise
	}
	b, err := json.Marshal(body)
	if err != nil {
		return failed(remoteTransport)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(b))
	if err != nil {
		return failed(remoteTransport)
	}
	req.Header.Set("Content-Type", "application/json")
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return failed(remoteTransport)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096)) // drain so the connection is reused
		return failed(remoteStatus)
	}
	if err := decode(io.LimitReader(resp.Body, maxRemoteAnswer)); err != nil {
		return failed(remoteBadResponse)
	}
	return remoteOK
}

// breaker is a circuit breaker: after failuresToOpen consecutive failed
// calls it lets none through for cooldown, then lets one trial call
// through, whose success closes it and whose failure opens it again. A
// call the caller abandoned (remoteCanceled) teaches it nothing. It is
// safe for concurrent use.
type breaker struct {
	failuresToOpen int
	cooldown       time.Duration
	clock          Clock
	// open is 1 while open (or half-open), opens counts openings.
	open  prometheus.Gauge
	opens prometheus.Counter

	mu        sync.Mutex
	failures  int
	openUntil time.Time
	trial     bool // a half-open trial call is in flight
}

// allow reports whether a call may go out: the circuit is closed, or it is
// half-open and no other trial is in flight.
func (b *breaker) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures < b.failuresToOpen {
		return true
	}
	if b.clock.Now().Before(b.openUntil) || b.trial {
		return false
	}
	b.trial = true
	return true
}

// record moves the breaker after a call that ended with reason.
func (b *breaker) record(reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trial = false
	switch reason {
	case remoteCanceled:
		// The caller went away: nothing learnt about the remote side.
	case remoteOK:
		b.failures = 0
		b.open.Set(0)
	default:
		b.failures++
		if b.failures >= b.failuresToOpen {
			b.openUntil = b.clock.Now().Add(b.cooldown)
			b.open.Set(1)
			b.opens.Inc()
		}
	}
}
