//go:build !linux

package bench

import "testing"

// pinSelf: splitting the machine (SLUICE_BENCH_PIN) sets thread affinity,
// which this bench does on Linux only.
func pinSelf(b testing.TB) {
	if bc, _ := pinSplit(b); bc != "" {
		b.Fatal("SLUICE_BENCH_PIN is supported on Linux only")
	}
}
