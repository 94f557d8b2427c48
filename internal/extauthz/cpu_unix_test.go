//go:build unix

package extauthz

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) this process has used: on a
// busy machine a benchmark's CPU per operation is steadier than its wall
// time, and it includes background work (the span processor, GC).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
