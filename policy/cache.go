package policy

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// cacheKey identifies a decision within one revision. It holds only strings
// the caller already has, so a lookup does not allocate.
type cacheKey struct {
	id, org, mech string
	name          string
	action        Action
	rtype         ResourceType
	// attrs fingerprints the principal's roles and attributes, so a
	// principal re-authenticated with other roles (a credentials reload)
	// never hits the decisions of its former self.
	attrs uint64
}

// printOf returns p's fingerprint, memoised per principal object in a small
// direct-mapped table: principals are immutable once authenticated, and
// hashing an attribute map costs more than the rest of a cached decision.
// A slot holds its principal alive until it is overwritten (at most
// printSlots principals).
func (c *cache) printOf(p *filter.Principal) uint64 {
	slot := &c.prints[(uintptr(unsafe.Pointer(p))>>4)%printSlots]
	if e := slot.Load(); e != nil && e.p == p {
		return e.print
	}
	pr := c.principalPrint(p.Roles, p.Attributes)
	slot.Store(&printEntry{p: p, print: pr})
	return pr
}

const printSlots = 256

type printEntry struct {
	p     *filter.Principal
	print uint64
	term  atomic.Pointer[ast.Term] // input.principal, built on first miss
}

// principalInput returns p's input term, memoised beside its fingerprint.
func (c *cache) principalInput(p *filter.Principal) *ast.Term {
	slot := &c.prints[(uintptr(unsafe.Pointer(p))>>4)%printSlots]
	e := slot.Load()
	if e == nil || e.p != p {
		return principalTerm(p)
	}
	if t := e.term.Load(); t != nil {
		return t
	}
	t := principalTerm(p)
	e.term.Store(t)
	return t
}

// principalPrint hashes roles (in order) and attributes (order-free).
func (c *cache) principalPrint(roles []string, attrs map[string]string) uint64 {
	var h uint64
	for _, r := range roles {
		h = (h ^ maphash.String(c.seed, r)) * 0x9e3779b97f4a7c15
	}
	var a uint64
	for k, v := range attrs {
		a += (maphash.String(c.seed, k) ^ 0xff51afd7ed558ccd) * (maphash.String(c.seed, v) | 1)
	}
	return h ^ a ^ uint64(len(roles))<<56 ^ uint64(len(attrs))<<48
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
	prints [printSlots]atomic.Pointer[printEntry]
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
	h = (h ^ k.attrs ^ uint64(len(k.mech))<<40 ^ uint64(k.action)<<8 ^ uint64(k.rtype)) * 0x94d049bb133111eb
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
