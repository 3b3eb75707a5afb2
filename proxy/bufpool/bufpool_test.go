package bufpool

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestGetCapacity(t *testing.T) {
	for _, n := range []int{0, 1, 4095, 4096, 4097, 1 << 20, 1<<20 + 1, 100 << 20, 128 << 20, 128<<20 + 1} {
		b := Get(n)
		if len(*b) != 0 || cap(*b) < n {
			t.Fatalf("Get(%d): len %d cap %d", n, len(*b), cap(*b))
		}
		Put(b)
	}
}

// TestReuse: a buffer put back is what the next Get of its class returns,
// emptied, including one that grew into a higher class; one past the
// largest class is not kept.
func TestReuse(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	runtime.GC() // two collections empty the pools (their victim cache too)
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // and none empties them during the test
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))  // one P: Put and Get share its local pool

	b := Get(10 << 10)
	*b = append(*b, 1, 2, 3)
	Put(b)
	if got := Get(9 << 10); got != b || len(*got) != 0 {
		t.Fatal("a 16 KiB buffer put back was not reused for a 9 KiB Get")
	}
	grown := Get(5000)
	*grown = append((*grown)[:cap(*grown)], make([]byte, 1<<20)...) // grows past 1 MiB
	Put(grown)
	if got := Get(1 << 20); got != grown {
		t.Fatal("a buffer that grew past 1 MiB was not reused for a 1 MiB Get")
	}
	huge := Get(200 << 20)
	Put(huge)
	if got := Get(200 << 20); got == huge {
		t.Fatal("a buffer past the largest class was pooled")
	}
}
