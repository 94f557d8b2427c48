package ratelimit

import (
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"time"
)

// local is the in-process GCRA: the whole limiter when no Redis is configured
// (exact for one replica) and the fail-open fallback otherwise. It runs the
// same arithmetic as the Lua script, on the injected clock, in nanoseconds.
type local struct {
	clock  Clock
	share  float64
	seed   maphash.Seed
	shards [32]localShard

	rmu  sync.Mutex
	rsv  map[string]*localReservation
	rops int
}

type localShard struct {
	mu  sync.Mutex
	tat map[string]int64 // theoretical arrival time, unix ns
	ops int
}

// localCharge is one estimated limit charged locally, kept for Reconcile.
type localCharge struct {
	key      string
	emission float64 // ns per unit
	cost     int64
}

type localReservation struct {
	charges []localCharge
	expires int64
	done    bool
}

func newLocal(clock Clock, share float64) *local {
	l := &local{clock: clock, share: share, seed: maphash.MakeSeed(), rsv: map[string]*localReservation{}}
	for i := range l.shards {
		l.shards[i].tat = map[string]int64{}
	}
	return l
}

// scaled returns the limit the local limiter enforces: LocalShare of it, at
// least 1.
func (l *local) scaled(limit int64) int64 {
	if l.share >= 1 {
		return limit
	}
	return max(1, int64(math.Floor(float64(limit)*l.share)))
}

func (l *local) shard(key string) int {
	return int(maphash.String(l.seed, key) % uint64(len(l.shards)))
}

// check decides limits (with their counter keys) all-or-nothing and fills
// res. It returns the charges of estimated limits for a reservation.
func (l *local) check(limits []Limit, keys []string, res *Result) []localCharge {
	now := l.clock.Now().UnixNano()
	var idx [8]int
	shards := idx[:0]
	for _, k := range keys {
		shards = append(shards, l.shard(k))
	}
	slices.Sort(shards)
	shards = slices.Compact(shards)
	for _, i := range shards {
		l.shards[i].mu.Lock()
	}
	defer func() {
		for _, i := range shards {
			l.shards[i].mu.Unlock()
		}
	}()

	tent := make(map[string]int64, len(keys))
	newTAT := make([]int64, len(limits))
	prev := make([]int64, len(limits))
	res.Allowed = true
	res.RetryAfter = 0
	res.Limits = res.Limits[:0]
	for i, lim := range limits {
		n := l.scaled(lim.Limit)
		em := float64(lim.Period) / float64(n)
		burst := float64(lim.Period)
		tat, ok := tent[keys[i]]
		if !ok {
			tat, ok = l.shards[l.shard(keys[i])].tat[keys[i]]
			if !ok {
				tat = now
			}
		}
		// Relative to now, so float64 keeps sub-nanosecond precision.
		st, nt := gcra(0, float64(max(tat, now)-now), em, burst, float64(lim.cost()), 1000)
		st.of(lim, n)
		if st.Exceeded {
			newTAT[i] = -1
			if !lim.Shadow {
				res.Allowed = false
				res.RetryAfter = max(res.RetryAfter, st.RetryAfter)
			}
		} else {
			newTAT[i] = now + int64(math.Round(nt))
			tent[keys[i]] = newTAT[i]
			prev[i] = max(tat, now) - now
		}
		res.Limits = append(res.Limits, st)
	}
	if !res.Allowed {
		// Nothing is charged: passing limits report their state without
		// this request.
		for i := range res.Limits {
			if s := &res.Limits[i]; !s.Exceeded {
				em := float64(limits[i].Period) / float64(s.Limit)
				s.Remaining = int64(math.Floor((float64(limits[i].Period)-float64(prev[i]))/em + 1e-6))
				s.Reset = time.Duration(prev[i])
			}
		}
		return nil
	}
	var charges []localCharge
	for i, k := range keys {
		if newTAT[i] < 0 {
			continue
		}
		sh := &l.shards[l.shard(k)]
		sh.tat[k] = newTAT[i]
		sh.ops++
		if sh.ops%1024 == 0 {
			for k, t := range sh.tat {
				if t <= now {
					delete(sh.tat, k)
				}
			}
		}
		if limits[i].Estimated {
			charges = append(charges, localCharge{key: k, emission: float64(limits[i].Period) / float64(l.scaled(limits[i].Limit)), cost: limits[i].cost()})
		}
	}
	return charges
}

// gcra is the Generic Cell Rate Algorithm step shared in spirit with the Lua
// script: with emission interval em and burst tolerance burst (= Period, so a
// fresh key admits Limit units at once), a request of cost units arriving at
// now against theoretical arrival time tat (>= now) passes if
// tat + cost*em - burst <= now. eps absorbs float rounding (at most 1 unit of
// time, at most half an emission interval) so Limit units exactly fit.
// Units are whatever now/tat/em/burst use (ns here, µs in Lua); unit is one
// microsecond in those units.
func gcra(now, tat, em, burst, cost, unit float64) (LimitState, float64) {
	var st LimitState
	eps := math.Min(unit, em/2)
	nt := tat + cost*em
	allowAt := nt - burst
	toDur := func(v float64) time.Duration { return time.Duration(math.Ceil(v * float64(time.Microsecond) / unit)) }
	if allowAt-now > eps {
		st.Exceeded = true
		st.Remaining = max(0, int64(math.Floor((burst-(tat-now))/em+1e-6)))
		st.Reset = toDur(tat - now)
		st.RetryAfter = toDur(allowAt - now)
		if cost*em > burst+eps {
			st.RetryAfter = toDur(burst)
		}
		return st, tat
	}
	st.Remaining = max(0, int64(math.Floor((burst-(nt-now))/em+1e-6)))
	st.Reset = toDur(nt - now)
	return st, nt
}

// reserve remembers local charges of an estimated request for Reconcile.
func (l *local) reserve(decisionID string, charges []localCharge, ttl time.Duration) {
	now := l.clock.Now().UnixNano()
	l.rmu.Lock()
	defer l.rmu.Unlock()
	l.rsv[decisionID] = &localReservation{charges: charges, expires: now + int64(ttl)}
	l.rops++
	if l.rops%1024 == 0 {
		for id, r := range l.rsv {
			if r.expires <= now {
				delete(l.rsv, id)
			}
		}
	}
}

// reconcile applies actual-reserved to every charge of the reservation once.
// It reports whether the reservation was known.
func (l *local) reconcile(decisionID string, actual int64) bool {
	now := l.clock.Now().UnixNano()
	l.rmu.Lock()
	r, ok := l.rsv[decisionID]
	if !ok || r.expires <= now {
		l.rmu.Unlock()
		return false
	}
	if r.done {
		l.rmu.Unlock()
		return true
	}
	r.done = true
	l.rmu.Unlock()
	for _, c := range r.charges {
		sh := &l.shards[l.shard(c.key)]
		sh.mu.Lock()
		tat, ok := sh.tat[c.key]
		if !ok || tat < now {
			tat = now
		}
		nt := tat + int64(float64(actual-c.cost)*c.emission)
		if nt > now {
			sh.tat[c.key] = nt
		} else {
			delete(sh.tat, c.key)
		}
		sh.mu.Unlock()
	}
	return true
}
