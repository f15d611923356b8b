package load

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadCPUTime is the CPU time the calling OS thread has used
// (CLOCK_THREAD_CPUTIME_ID); the caller keeps its goroutine on that
// thread (runtime.LockOSThread) between two readings.
func threadCPUTime(tb testing.TB) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ts.Nano())
}
