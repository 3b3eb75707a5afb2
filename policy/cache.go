package policy

import (
	"hash/maphash"
	"sync"
)

// cacheKey identifies a decision within one revision. It holds only strings
// the caller already has, so a lookup does not allocate.
type cacheKey struct {
	id, org, mech string
	name          string
	action        Action
	rtype         ResourceType
}

type cacheEntry struct {
	d   *Decision // immutable once cached
	exp int64     // unix ns after which the entry is stale
}

const cacheShards = 16

// cache is a sharded map of decisions for one revision. A full shard evicts
// an arbitrary entry (Go's randomised map iteration), which is cheap and
// good enough for a working set that mostly fits.
type cache struct {
	seed   maphash.Seed
	perCap int
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[cacheKey]cacheEntry
	_  [40]byte // keep shards on separate cache lines
}

func newCache(size int) *cache {
	if size <= 0 {
		return nil
	}
	per := size / cacheShards
	if per < 1 {
		per = 1
	}
	c := &cache{seed: maphash.MakeSeed(), perCap: per}
	for i := range c.shards {
		c.shards[i].m = make(map[cacheKey]cacheEntry, min(per, 1024))
	}
	return c
}

func (c *cache) shard(k *cacheKey) *cacheShard {
	h := maphash.String(c.seed, k.name) ^ maphash.String(c.seed, k.id)
	return &c.shards[h%cacheShards]
}

// get returns the cached decision for k if it is still valid at now.
func (c *cache) get(k *cacheKey, now int64) (*Decision, bool) {
	s := c.shard(k)
	s.mu.RLock()
	e, ok := s.m[*k]
	s.mu.RUnlock()
	if !ok || now >= e.exp {
		return nil, false
	}
	return e.d, true
}

func (c *cache) put(k *cacheKey, d *Decision, exp int64) {
	s := c.shard(k)
	s.mu.Lock()
	if _, ok := s.m[*k]; !ok && len(s.m) >= c.perCap {
		for old := range s.m {
			delete(s.m, old)
			break
		}
	}
	s.m[*k] = cacheEntry{d: d, exp: exp}
	s.mu.Unlock()
}

func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
