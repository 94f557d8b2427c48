package ratelimit

import (
	"cmp"
	"context"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Operators ask about a principal's or tenant's quota without restating the
// policy: the Limiter remembers the size (Limit, Period) of every counter it
// has checked, and Peek and Reset read and refill counters by that
// definition. Only the definitions are per replica; the counters themselves
// live where Check keeps them (Redis, or in-process).

// maxKnownLimits bounds the remembered definitions; past it, arbitrary old
// ones are forgotten (they come back with the next Check that uses them).
const maxKnownLimits = 100_000

// knownLimits maps a counter key to the limit last checked against it.
type knownLimits struct {
	mu sync.RWMutex
	m  map[string]Limit
}

// note remembers lim under its counter key. The common case (already known,
// same size) costs a read lock and a map lookup, no allocation.
func (k *knownLimits) note(key string, lim Limit) {
	k.mu.RLock()
	old, ok := k.m[key]
	k.mu.RUnlock()
	if ok && old.Limit == lim.Limit && old.Period == lim.Period && old.Shadow == lim.Shadow {
		return
	}
	def := Limit{Name: lim.Name, Tenant: lim.Tenant, Principal: lim.Principal, Key: lim.Key, Limit: lim.Limit, Period: lim.Period, Shadow: lim.Shadow}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = make(map[string]Limit)
	}
	if _, ok := k.m[key]; !ok && len(k.m) >= maxKnownLimits {
		for old := range k.m {
			delete(k.m, old)
			if len(k.m) < maxKnownLimits*9/10 {
				break
			}
		}
	}
	k.m[key] = def
}

// Known returns the limits this Limiter has checked whose definition
// satisfies match (every one when match is nil), sorted by subject (see
// SubjectKey) then Name.
// Each carries the size it had at its latest check; Cost is zero.
func (l *Limiter) Known(match func(Limit) bool) []Limit {
	l.known.mu.RLock()
	var out []Limit
	for _, lim := range l.known.m {
		if match == nil || match(lim) {
			out = append(out, lim)
		}
	}
	l.known.mu.RUnlock()
	slices.SortFunc(out, func(a, b Limit) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Principal, b.Principal), cmp.Compare(a.Key, b.Key), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// peekLua reads one counter on Redis's clock without changing it.
// KEYS[1] = counter; ARGV = limit, burst µs (= period). Returns remaining
// and µs until the counter is full again, as checkLua computes them.
const peekLua = `
local t = redis.call('TIME')
local now = (tonumber(t[1]) - ` + redisEpoch + `) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local burst = tonumber(ARGV[2])
local em = burst / tonumber(ARGV[1])
local rem = math.floor((burst - (tat - now)) / em + 1e-6)
if rem < 0 then rem = 0 end
return {rem, math.ceil(tat - now)}
`

var peekScript = redis.NewScript(peekLua)

// Peek reports each limit's counter as it stands, charging nothing:
// Remaining units and the time until all Limit units are available (Reset).
// With Redis it reads Redis (one call per counter, so limits in different
// hash slots are fine) and fails with ErrUnavailable when Redis does not
// answer; the in-process fallback's share is not reported.
func (l *Limiter) Peek(ctx context.Context, limits []Limit) ([]LimitState, error) {
	out := make([]LimitState, 0, len(limits))
	for _, lim := range limits {
		if err := lim.validate(); err != nil {
			return nil, err
		}
		var st LimitState
		st.of(lim, lim.Limit)
		key := counterKey(l.cfg.KeyPrefix, lim)
		if l.client == nil {
			st.Remaining, st.Reset = l.local.peek(key, lim)
			out = append(out, st)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, l.cfg.CheckTimeout)
		vals, err := peekScript.Run(cctx, l.client, []string{key}, lim.Limit, lim.Period.Microseconds()).Int64Slice()
		cancel()
		if err != nil || len(vals) != 2 {
			l.m.redisErrors.WithLabelValues("peek").Inc()
			return nil, &Error{Code: CodeUnavailable, Reason: "counter could not be read", Err: err}
		}
		st.Remaining, st.Reset = vals[0], time.Duration(vals[1])*time.Microsecond
		out = append(out, st)
	}
	return out, nil
}

// Reset refills each limit's counter: the next check finds all Limit units
// available. With Redis the counters are deleted there (every replica sees
// it) and from the in-process fallback; token reservations still pending
// are settled against the refilled counter. ErrUnavailable when Redis does
// not answer.
func (l *Limiter) Reset(ctx context.Context, limits []Limit) error {
	for _, lim := range limits {
		if err := lim.validate(); err != nil {
			return err
		}
		key := counterKey(l.cfg.KeyPrefix, lim)
		if l.client != nil {
			cctx, cancel := context.WithTimeout(ctx, l.cfg.CheckTimeout)
			err := l.client.Del(cctx, key).Err()
			cancel()
			if err != nil {
				l.m.redisErrors.WithLabelValues("reset").Inc()
				return &Error{Code: CodeUnavailable, Reason: "counter could not be reset", Err: err}
			}
		}
		l.local.reset(key)
	}
	return nil
}

// peek is Peek for the in-process GCRA.
func (l *local) peek(key string, lim Limit) (remaining int64, reset time.Duration) {
	now := l.clock.Now().UnixNano()
	sh := &l.shards[l.shard(key)]
	sh.mu.Lock()
	tat, ok := sh.tat[key]
	sh.mu.Unlock()
	if !ok || tat < now {
		tat = now
	}
	n := l.scaled(lim.Limit)
	em := float64(lim.Period) / float64(n)
	used := float64(tat - now)
	remaining = max(0, int64(math.Floor((float64(lim.Period)-used)/em+1e-6)))
	return remaining, time.Duration(tat - now)
}

// reset forgets key's counter.
func (l *local) reset(key string) {
	sh := &l.shards[l.shard(key)]
	sh.mu.Lock()
	delete(sh.tat, key)
	sh.mu.Unlock()
}
