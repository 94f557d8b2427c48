package ratelimit

import (
	"sync"
	"sync/atomic"
)

// BreakerState is the state of the circuit breaker in front of Redis.
type BreakerState int32

const (
	// BreakerClosed: Redis answers; checks go to Redis.
	BreakerClosed BreakerState = iota
	// BreakerOpen: Redis failed BreakerThreshold times in a row; checks go
	// straight to the failure mode (no request pays the Redis timeout) while
	// a background probe pings Redis every ProbeInterval.
	BreakerOpen
)

func (s BreakerState) String() string {
	if s == BreakerOpen {
		return "open"
	}
	return "closed"
}

// breaker counts consecutive failed Redis calls. Opening starts the probe
// (via onOpen); a successful probe or call closes it.
type breaker struct {
	threshold int64
	fails     atomic.Int64
	state     atomic.Int32
	mu        sync.Mutex
	onChange  func(BreakerState)
}

func (b *breaker) open() bool { return BreakerState(b.state.Load()) == BreakerOpen }

func (b *breaker) success() {
	b.fails.Store(0)
	if b.open() {
		b.set(BreakerOpen, BreakerClosed)
	}
}

func (b *breaker) failure() {
	if b.fails.Add(1) >= b.threshold && !b.open() {
		b.set(BreakerClosed, BreakerOpen)
	}
}

func (b *breaker) set(from, to BreakerState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.state.CompareAndSwap(int32(from), int32(to)) {
		return
	}
	if b.onChange != nil {
		b.onChange(to)
	}
}
