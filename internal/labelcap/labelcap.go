// Package labelcap bounds the values of a Prometheus label fed from policy
// output (decision reasons, limit names). A policy may produce any number of
// distinct strings, and every distinct label value is a new time series held
// by Bulwark and by Prometheus forever: a policy bug, or one that puts
// request data in a reason, would otherwise grow memory without bound.
package labelcap

import "sync"

// Other stands for every value past the cap (and, for callers that check a
// value's shape, every value of the wrong shape).
const Other = "other"

// MaxValues is how many distinct values one label keeps: the first
// MaxValues seen since the process started. 64 is far more than a policy's
// reasons and limits, and few enough series to keep per label.
const MaxValues = 64

// MaxLen bounds one value in bytes; a longer value is counted as Other.
const MaxLen = 64

// Set admits the first MaxValues distinct values of one label and maps
// every later new value to Other. It is safe for concurrent use; the zero
// value is ready.
type Set struct {
	mu   sync.RWMutex
	seen map[string]struct{}
}

// Value returns v when v is admitted (already seen, or new while fewer than
// MaxValues are), and Other otherwise. Admitted values cost a read lock and
// a map lookup, no allocation.
func (s *Set) Value(v string) string {
	if len(v) > MaxLen {
		return Other
	}
	s.mu.RLock()
	_, ok := s.seen[v]
	full := len(s.seen) >= MaxValues
	s.mu.RUnlock()
	switch {
	case ok:
		return v
	case full:
		return Other
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[v]; ok {
		return v
	}
	if len(s.seen) >= MaxValues {
		return Other
	}
	if s.seen == nil {
		s.seen = make(map[string]struct{}, MaxValues)
	}
	s.seen[v] = struct{}{}
	return v
}
