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
	// attrs fingerprints the principal's roles, attributes and credential
	// expiry, so a principal re-authenticated with other roles (a
	// credentials reload) or another token never hits the decisions of
	// its former self.
	attrs uint64
}

// entryOf returns p's fingerprint and key hash, memoised per principal
// object in a small direct-mapped table: principals are immutable once
// authenticated, and hashing an attribute map costs more than the rest of a
// cached decision. A slot holds its principal alive until it is overwritten
// (at most printSlots principals).
func (c *cache) entryOf(p *filter.Principal) *printEntry {
	slot := &c.prints[(uintptr(unsafe.Pointer(p))>>4)%printSlots]
	if e := slot.Load(); e != nil && e.p == p {
		return e
	}
	// The credential's expiry is in the input (input.principal.expires),
	// so it is part of the fingerprint: another token of the same
	// principal does not share its decisions.
	pr := c.principalPrint(p.Roles, p.Attributes) ^ uint64(p.Expires.UnixNano())*0xd6e8feb86659fd93
	e := &printEntry{p: p, print: pr, base: c.principalHash(p.ID, p.Org, p.Mechanism, pr)}
	slot.Store(e)
	return e
}

// keyHash sets k.attrs to p's fingerprint and returns k's hash, the
// principal's part of it memoised: one string hashed per lookup, the
// resource's name. k's id, org and mech must be p's.
func (c *cache) keyHash(p *filter.Principal, k *cacheKey) uint64 {
	e := c.entryOf(p)
	k.attrs = e.print
	return c.nameHash(e.base, k)
}

const printSlots = 256

type printEntry struct {
	p     *filter.Principal
	print uint64
	base  uint64                   // principalHash of p
	term  atomic.Pointer[ast.Term] // input.principal, built on first miss
}

// principalInput returns p's input term, memoised beside its fingerprint.
func (c *cache) principalInput(p *filter.Principal) *ast.Term {
	e := c.entryOf(p)
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

// hash is k's hash: principalHash of its principal's fields, mixed with
// its resource name, action and type by nameHash.
func (c *cache) hash(k *cacheKey) uint64 {
	return c.nameHash(c.principalHash(k.id, k.org, k.mech, k.attrs), k)
}

func (c *cache) principalHash(id, org, mech string, attrs uint64) uint64 {
	h := (maphash.String(c.seed, id) ^ attrs) * 0x9e3779b97f4a7c15
	h = (h ^ maphash.String(c.seed, org)) * 0xbf58476d1ce4e5b9
	return h ^ maphash.String(c.seed, mech) ^ uint64(len(mech))<<40
}

func (c *cache) nameHash(base uint64, k *cacheKey) uint64 {
	h := (maphash.String(c.seed, k.name) ^ base ^ uint64(k.action)<<8 ^ uint64(k.rtype)) * 0x94d049bb133111eb
	return h ^ h>>31
}

// get returns the cached decision for k (whose hash is h) if it is still
// valid at now.
func (c *cache) get(k *cacheKey, h uint64, now int64) (*Decision, bool) {
	s := &c.shards[h%cacheShards]
	s.mu.RLock()
	e, ok := s.m[h]
	s.mu.RUnlock()
	if !ok || now >= e.exp || e.key != *k {
		return nil, false
	}
	return e.d, true
}

func (c *cache) put(k *cacheKey, h uint64, d *Decision, exp int64) {
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
