package bench

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// pin, from SLUICE_BENCH_PIN="BENCH:GATEWAY" (CPU lists such as "0:1"),
// splits the machine: this process (the cluster and the load generator)
// runs on the BENCH CPUs, every gateway process on the GATEWAY CPUs. The
// default, unset, lets everything share every CPU, so that the gateway's
// CPU is taken from the clients and brokers; split, each side has its own
// cores, as when the gateway runs on its own machine, and the ratio shows
// what the gateway's hop costs the clients when it is not competing with
// them for CPU.
var pin = os.Getenv("SLUICE_BENCH_PIN")

// pinCPUs parses a CPU list ("0", "0,2", "0-3").
func pinCPUs(b testing.TB, list string) []int {
	var cpus []int
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		l, err := strconv.Atoi(lo)
		h := l
		if isRange {
			h, err = strconv.Atoi(hi)
		}
		if err != nil || l < 0 || h < l {
			b.Fatalf("SLUICE_BENCH_PIN: bad CPU list %q", list)
		}
		for c := l; c <= h; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// pinSplit returns the bench and gateway CPU lists, or "" and "" if the
// machine is shared.
func pinSplit(b testing.TB) (benchCPUs, gatewayCPUs string) {
	if pin == "" {
		return "", ""
	}
	bc, gc, ok := strings.Cut(pin, ":")
	if !ok || bc == "" || gc == "" {
		b.Fatalf("SLUICE_BENCH_PIN=%q: want BENCH_CPUS:GATEWAY_CPUS, such as 0:1", pin)
	}
	return bc, gc
}

// pinnedCommand wraps a gateway command line in taskset when the machine
// is split; the gateway's Go runtime then sizes GOMAXPROCS to its CPUs.
func pinnedCommand(b testing.TB, argv []string) []string {
	_, gc := pinSplit(b)
	if gc == "" {
		return argv
	}
	pinCPUs(b, gc) // validate
	return append([]string{"taskset", "-c", gc}, argv...)
}
