package bench

import (
	"os"
	"runtime"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// pinSelf moves every thread of this process onto the bench CPUs (threads
// created later inherit the mask of the thread that creates them) and
// sizes GOMAXPROCS to them.
func pinSelf(b testing.TB) {
	bc, _ := pinSplit(b)
	if bc == "" {
		return
	}
	var set unix.CPUSet
	for _, c := range pinCPUs(b, bc) {
		set.Set(c)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		b.Fatal(err)
	}
	for _, t := range tasks {
		tid, _ := strconv.Atoi(t.Name())
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			b.Fatalf("pin thread %d to CPUs %s: %v", tid, bc, err)
		}
	}
	runtime.GOMAXPROCS(set.Count())
	b.Logf("pinned: bench on CPUs %s (GOMAXPROCS %d), gateways on CPUs %s", bc, set.Count(), pin[len(bc)+1:])
}
