package abuse

import (
	"context"
	"sync"
	"time"
)

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Local is a Tracker kept in the process (one replica, no Redis). It keeps
// at most MaxPrincipals principals: when full, those not seen for a
// BaselineWindow are forgotten first, and a new principal that still finds
// no room is observed without being remembered.
type Local struct {
	cfg   Config
	clock Clock

	mu    sync.Mutex
	state map[string]*localState
}

type localState struct {
	last, first    time.Time
	rs, ks, rb, kb float64 // per second
	offences       []offence
}

type offence struct {
	at     time.Time
	reason string
}

var _ Tracker = (*Local)(nil)

// NewLocal returns an in-process Tracker; clock nil: the system clock.
func NewLocal(cfg Config, clock Clock) (*Local, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if clock == nil {
		clock = systemClock{}
	}
	return &Local{cfg: cfg.withDefaults(), clock: clock, state: map[string]*localState{}}, nil
}

func (l *Local) get(principal string, now time.Time) *localState {
	st, ok := l.state[principal]
	if ok {
		return st
	}
	st = &localState{last: now, first: now}
	if len(l.state) >= l.cfg.MaxPrincipals {
		for k, v := range l.state {
			if now.Sub(v.last) > l.cfg.BaselineWindow {
				delete(l.state, k)
			}
		}
	}
	if len(l.state) < l.cfg.MaxPrincipals {
		l.state[principal] = st
	}
	return st
}

// Observe implements Tracker.
func (l *Local) Observe(_ context.Context, principal string, tokens int64) (Snapshot, error) {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.get(principal, now)
	last, n := float64(st.last.UnixNano())/1e9, float64(now.UnixNano())/1e9
	short, base, w := l.cfg.ShortWindow.Seconds(), l.cfg.BaselineWindow.Seconds(), float64(max(tokens, 0))
	st.rs, st.ks = decay(st.rs, last, n, short, 1), decay(st.ks, last, n, short, w)
	st.rb, st.kb = decay(st.rb, last, n, base, 1), decay(st.kb, last, n, base, w)
	if now.After(st.last) {
		st.last = now
	}
	st.prune(now.Add(-l.cfg.OffenceWindow))
	s := Snapshot{Window: l.cfg.OffenceWindow, Offences: map[string]int{}, Rates: Rates{
		Requests: st.rs * 60, Tokens: st.ks * 60, BaselineRequests: st.rb * 60, BaselineTokens: st.kb * 60,
		Age: now.Sub(st.first),
	}}
	for _, o := range st.offences {
		s.Offences[o.reason]++
	}
	return s, nil
}

// Offend implements Tracker.
func (l *Local) Offend(_ context.Context, principal, reason, _ string) error {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.get(principal, now)
	st.prune(now.Add(-l.cfg.OffenceWindow))
	st.offences = append(st.offences, offence{at: now, reason: reason})
	if n := len(st.offences) - l.cfg.MaxOffences; n > 0 {
		st.offences = st.offences[n:]
	}
	return nil
}

// prune drops the offences at or before cutoff.
func (st *localState) prune(cutoff time.Time) {
	i := 0
	for i < len(st.offences) && !st.offences[i].at.After(cutoff) {
		i++
	}
	st.offences = st.offences[i:]
}
