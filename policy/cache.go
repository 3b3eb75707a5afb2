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
	key cacheKey
	d   *Decision // immutable once cached
	exp int64     // unix ns after which the entry is stale
}

const cacheShards = 16

// cache is a sharded map of decisions for one revision. The key is hashed
// once (its strings with maphash); the hash picks the shard and indexes a
// map of uint64, and the stored key is compared in full, so a hash collision
// is a miss, never a wrong decision. A full shard evicts an arbitrary entry
// (Go's randomised map iteration), which is cheap and good enough for a
// working set that mostly fits.
type cache struct {
	seed   maphash.Seed
	perCap int
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[uint64]cacheEntry
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
		c.shards[i].m = make(map[uint64]cacheEntry, min(per, 1024))
	}
	return c
}

func (c *cache) hash(k *cacheKey) uint64 {
	h := maphash.String(c.seed, k.name)
	h = (h ^ maphash.String(c.seed, k.id)) * 0x9e3779b97f4a7c15
	if k.org != "" {
		h = (h ^ maphash.String(c.seed, k.org)) * 0xbf58476d1ce4e5b9
	}
	h = (h ^ uint64(len(k.mech))<<40 ^ uint64(k.action)<<8 ^ uint64(k.rtype)) * 0x94d049bb133111eb
	if k.mech != "" {
		h ^= maphash.String(c.seed, k.mech)
	}
	return h ^ h>>31
}

// get returns the cached decision for k if it is still valid at now.
func (c *cache) get(k *cacheKey, now int64) (*Decision, bool) {
	h := c.hash(k)
	s := &c.shards[h%cacheShards]
	s.mu.RLock()
	e, ok := s.m[h]
	s.mu.RUnlock()
	if !ok || now >= e.exp || e.key != *k {
		return nil, false
	}
	return e.d, true
}

func (c *cache) put(k *cacheKey, d *Decision, exp int64) {
	h := c.hash(k)
	s := &c.shards[h%cacheShards]
	s.mu.Lock()
	if _, ok := s.m[h]; !ok && len(s.m) >= c.perCap {
		for old := range s.m {
			delete(s.m, old)
			break
		}
	}
	s.m[h] = cacheEntry{key: *k, d: d, exp: exp}
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
