//go:build !linux

package masking

import "testing"

func cpuLoop(b *testing.B, body func()) {
	for b.Loop() {
		body()
	}
}
