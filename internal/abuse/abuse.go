// Package abuse keeps, per principal, what the policy needs to recognise a
// principal that abuses the gateway: a baseline of its request and token
// rates (exponentially weighted, so it follows the principal's own habits)
// with the current rate's ratio to it (input.usage_pattern), and its recent
// offences, the denials for prompt injection, secrets or content safety
// within a window (input.history).
//
// The state lives in Redis when there is one, so every replica sees the
// same numbers: each observation is one Lua script on Redis's clock, atomic,
// so concurrent replicas count exactly. Without Redis it lives in the
// process (bounded in size).
//
// Cost: one Redis round trip per exchange (Observe, at the request_headers
// decision), and one more only on a denial that is an offence (Offend).
package abuse

import (
	"context"
	"errors"
	"math"
	"time"
)

// Config tunes a Tracker. The zero value takes the defaults below.
type Config struct {
	// ShortWindow is the time constant of the current-rate average
	// (default 1m): about the last minute's rate.
	ShortWindow time.Duration
	// BaselineWindow is the time constant of the baseline average
	// (default 1h): the principal's habit.
	BaselineWindow time.Duration
	// OffenceWindow is how long an offence counts in input.history
	// (default 15m).
	OffenceWindow time.Duration
	// MaxOffences bounds the offences kept per principal (default 100).
	MaxOffences int
	// Timeout bounds one Redis call (default 50ms).
	Timeout time.Duration
	// Prefix starts every Redis key (default "bulwark:abuse:").
	Prefix string
	// MaxPrincipals bounds the in-process state (default 100000).
	MaxPrincipals int
}

func (c Config) withDefaults() Config {
	if c.ShortWindow <= 0 {
		c.ShortWindow = time.Minute
	}
	if c.BaselineWindow <= 0 {
		c.BaselineWindow = time.Hour
	}
	if c.OffenceWindow <= 0 {
		c.OffenceWindow = 15 * time.Minute
	}
	if c.MaxOffences <= 0 {
		c.MaxOffences = 100
	}
	if c.Timeout <= 0 {
		c.Timeout = 50 * time.Millisecond
	}
	if c.Prefix == "" {
		c.Prefix = "bulwark:abuse:"
	}
	if c.MaxPrincipals <= 0 {
		c.MaxPrincipals = 100000
	}
	return c
}

// Validate names the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.ShortWindow < 0, c.BaselineWindow < 0, c.OffenceWindow < 0, c.Timeout < 0:
		return errors.New("abuse: windows and timeout must not be negative")
	case c.ShortWindow > 0 && c.BaselineWindow > 0 && c.ShortWindow >= c.BaselineWindow:
		return errors.New("abuse: ShortWindow must be shorter than BaselineWindow")
	}
	return nil
}

// Rates are a principal's current and baseline rates, per minute.
type Rates struct {
	// Requests and Tokens are the current rates (ShortWindow's average).
	Requests, Tokens float64
	// BaselineRequests and BaselineTokens are the baseline (BaselineWindow's average).
	BaselineRequests, BaselineTokens float64
	// Age is how long the principal has been observed: a baseline younger
	// than BaselineWindow is still forming, and its ratios say little.
	Age time.Duration
}

// RequestRatio is the current request rate over the baseline (1 when
// there is no baseline yet).
func (r Rates) RequestRatio() float64 { return ratio(r.Requests, r.BaselineRequests) }

// TokenRatio is the current token rate over the baseline.
func (r Rates) TokenRatio() float64 { return ratio(r.Tokens, r.BaselineTokens) }

func ratio(cur, base float64) float64 {
	if base <= 0 {
		if cur <= 0 {
			return 1
		}
		return math.Inf(1)
	}
	return cur / base
}

// Snapshot is what one observation reports: the rates after counting the
// request, and the offences within the window.
type Snapshot struct {
	Rates Rates
	// Offences counts offences within Window, by reason.
	Offences map[string]int
	// Window is the offence window.
	Window time.Duration
}

// Total is the number of offences within the window.
func (s Snapshot) Total() int {
	n := 0
	for _, c := range s.Offences {
		n += c
	}
	return n
}

// Tracker is the abuse state as the pipeline uses it.
type Tracker interface {
	// Observe counts one request of principal (and its tokens, when known)
	// and reports the principal's rates and recent offences.
	Observe(ctx context.Context, principal string, tokens int64) (Snapshot, error)
	// Offend records an offence of principal (the denial decisionID, for
	// reason) so later decisions see it in input.history.
	Offend(ctx context.Context, principal, reason, decisionID string) error
}

// decay folds one event into an exponentially decaying rate: value is the
// rate (events per second) last computed at time last; now the time of the
// new event carrying weight w. The result is a rate: its integral over
// time weights each event by exp(-age/tau)/tau.
func decay(value float64, last, now, tau float64, w float64) float64 {
	dt := now - last
	if dt < 0 {
		dt = 0
	}
	return value*math.Exp(-dt/tau) + w/tau
}
