//go:build linux

package bench

import (
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// processCPU reads another process's CPU-time clock (clock_gettime on the
// clock id Linux derives from a pid: CPUCLOCK_SCHED of the whole process,
// user and system time of every thread, exited ones included).
func processCPU(pid int) (float64, bool) {
	const cpuclockSched = 2
	clock := uintptr((^pid)<<3 | cpuclockSched)
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clock, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, false
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9, true
}

// TestProcessCPU checks the clock against the kernel's tick count for this
// process after it has burnt 0.2 s of CPU by that count (however long that
// takes on a loaded machine).
func TestProcessCPU(t *testing.T) {
	deadline := time.Now().Add(20 * time.Second)
	x := 0
	for procTicks(t, os.Getpid()) < 0.2 {
		if time.Now().After(deadline) {
			t.Fatal("did not get 0.2 s of CPU in 20 s")
		}
		for i := range 1 << 20 {
			x += i
		}
	}
	_ = x
	before := procTicks(t, os.Getpid())
	got, ok := processCPU(os.Getpid())
	after := procTicks(t, os.Getpid())
	if !ok {
		t.Fatal("process CPU clock not readable")
	}
	// Ticks are 10 ms and lag the clock by up to one.
	if got < before-0.02 || got > after+0.03+after/10 {
		t.Fatalf("process CPU clock %.3fs, /proc/self/stat %.2f-%.2fs", got, before, after)
	}
}
