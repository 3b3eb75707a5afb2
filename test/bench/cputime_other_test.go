//go:build !linux

package bench

func processCPU(int) (float64, bool) { return 0, false }
