//go:build linux

package bench

import (
	"math"
	"os"
	"strconv"
	"strings"
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
// process after it burns some CPU.
func TestProcessCPU(t *testing.T) {
	start := time.Now()
	x := 0
	for time.Since(start) < 300*time.Millisecond {
		for i := range 1000 {
			x += i
		}
	}
	_ = x
	got, ok := processCPU(os.Getpid())
	if !ok {
		t.Fatal("process CPU clock not readable")
	}
	raw, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	ticks := (ut + st) / 100
	if got < 0.25 || math.Abs(got-ticks) > 0.03+ticks/10 {
		t.Fatalf("process CPU clock %.3fs, /proc/self/stat %.2fs", got, ticks)
	}
}
