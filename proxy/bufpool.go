package proxy

import "sync"

// Frame buffers are pooled by size class so that the hot path does not
// allocate per request. Frames above the largest class are allocated and
// left to the garbage collector rather than pinned in a pool.
//
// The classes above 8 MiB hold Fetch responses (a consumer's fetch.max.bytes
// is 50 MiB by default) and large Produce requests: allocated fresh, each
// such frame was zeroed and page-faulted in anew (with masking's own pool,
// masked consume went from 2.42 to 2.13 ms of CPU per MB). The pools empty
// themselves over two garbage collections, so an idle gateway keeps none.
var bufClasses = [...]int{4 << 10, 64 << 10, 1 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20, 128 << 20}

var bufPools [len(bufClasses)]sync.Pool

// getBuf returns a zero-length buffer with capacity at least n.
func getBuf(n int) *[]byte {
	for i, size := range bufClasses {
		if n <= size {
			if b, ok := bufPools[i].Get().(*[]byte); ok {
				*b = (*b)[:0]
				return b
			}
			b := make([]byte, 0, size)
			return &b
		}
	}
	b := make([]byte, 0, n)
	return &b
}

// putBuf returns a buffer to its pool. Buffers that grew past their class
// or exceed the largest class are dropped.
func putBuf(b *[]byte) {
	if b == nil {
		return
	}
	c := cap(*b)
	for i, size := range bufClasses {
		if c == size {
			bufPools[i].Put(b)
			return
		}
	}
}
