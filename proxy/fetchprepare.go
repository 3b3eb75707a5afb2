package proxy

import (
	"context"
	"encoding/binary"
	"io"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// Reading a decoded Fetch response partition by partition, for the chain's
// filter.FetchPreparers.
//
// The frame is read into its buffer as before, but as it fills, its
// structure is parsed up to each partition's record batches, and a
// partition is handed to the preparers as soon as its batches are in. The
// parse only finds where partitions are: it never changes a byte, and a
// response it cannot follow (malformed, or a layout it does not know) is
// read to its end the plain way, the decode after reporting what is wrong
// with it.

// fetchPrepareMinVersion is the oldest Fetch response layout the parser
// follows (aborted transactions and the last stable offset from v4); older
// ones are read whole.
const fetchPrepareMinVersion = 4

// fetchPreparers returns the filters of p's chain that want to see x's
// Fetch response as it arrives.
func fetchPreparers(p *pending) []filter.FetchPreparer {
	if p.x.Key != 1 || p.x.Version < fetchPrepareMinVersion || p.x.Version > fetchStreamMaxVersion {
		return nil
	}
	var out []filter.FetchPreparer
	for _, f := range p.chain {
		if fp, ok := f.(filter.FetchPreparer); ok && fp.PrepareFetch(&p.x) {
			out = append(out, fp)
		}
	}
	return out
}

// frameFill reads a frame into b (its size prefix and correlation id
// already in b[:8]) as far as a parse needs it.
type frameFill struct {
	src    io.Reader
	b      []byte
	filled int
	err    error
}

// need reads until b[:k] is filled; false if the frame is shorter or the
// read failed (err says which).
func (f *frameFill) need(k int) bool {
	if k > len(f.b) {
		return false
	}
	for f.filled < k && f.err == nil {
		n, err := f.src.Read(f.b[f.filled:])
		f.filled += n
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			f.err = err
		}
	}
	return f.filled >= k
}

// readFetchPrepared reads the Fetch response frame b (b[:8] already read)
// from src, calling each preparer's FetchPartition as partitions arrive.
func readFetchPrepared(ctx context.Context, src io.Reader, b []byte, x *filter.Exchange, preps []filter.FetchPreparer) error {
	f := &frameFill{src: src, b: b, filled: 8}
	sc := fetchScan{f: f, pos: 8, flex: x.Version >= 12, version: x.Version}
	sc.scan(func(topic string, id [16]byte, partition int32, records []byte) {
		for _, fp := range preps {
			fp.FetchPartition(ctx, x, topic, id, partition, records)
		}
	})
	f.need(len(b)) // the rest, whether or not the scan followed it all
	if f.filled < len(b) {
		return f.err
	}
	return nil
}

// fetchScan walks a Fetch response body as frameFill brings it in. Each
// read method returns false when the frame ends first or does not parse,
// which ends the scan.
type fetchScan struct {
	f       *frameFill
	pos     int
	flex    bool
	version int16
}

func (s *fetchScan) skip(n int) bool {
	if n < 0 || !s.f.need(s.pos+n) {
		return false
	}
	s.pos += n
	return true
}

// uvarint reads a varint with frame.go's uvarint once the bytes it can
// take are in (the frame's own bytes: they come anyway).
func (s *fetchScan) uvarint() (uint64, bool) {
	s.f.need(min(s.pos+binary.MaxVarintLen64, len(s.f.b)))
	v, next, err := uvarint(s.f.b[:s.f.filled], s.pos)
	if err != nil {
		return 0, false
	}
	s.pos = next
	return v, true
}

func (s *fetchScan) int32() (int32, bool) {
	if !s.f.need(s.pos + 4) {
		return 0, false
	}
	v := int32(binary.BigEndian.Uint32(s.f.b[s.pos:]))
	s.pos += 4
	return v, true
}

// length reads an array count or a bytes/string length: a compact
// (uvarint + 1) one in flexible versions, else int32 (int16 for strings).
// Null is -1. Counts past the frame's end do not parse.
func (s *fetchScan) length(int16Len bool) (int, bool) {
	var n int64
	switch {
	case s.flex:
		u, ok := s.uvarint()
		if !ok || u > uint64(len(s.f.b)) {
			return 0, false
		}
		n = int64(u) - 1
	case int16Len:
		if !s.f.need(s.pos + 2) {
			return 0, false
		}
		n = int64(int16(binary.BigEndian.Uint16(s.f.b[s.pos:])))
		s.pos += 2
	default:
		v, ok := s.int32()
		if !ok {
			return 0, false
		}
		n = int64(v)
	}
	if n < -1 || n > int64(len(s.f.b)-s.pos) {
		return 0, false
	}
	return int(n), true
}

func (s *fetchScan) tags() bool {
	if !s.flex {
		return true
	}
	num, ok := s.uvarint()
	if !ok || num > uint64(len(s.f.b)) {
		return false
	}
	for ; num > 0; num-- {
		if _, ok := s.uvarint(); !ok {
			return false
		}
		size, ok := s.uvarint()
		if !ok || size > uint64(len(s.f.b)) || !s.skip(int(size)) {
			return false
		}
	}
	return true
}

// scan calls part for every partition's record batches, in order, as soon
// as they have been read; it stops at the first thing it cannot follow.
func (s *fetchScan) scan(part func(topic string, id [16]byte, partition int32, records []byte)) {
	if !s.tags() { // response header v1
		return
	}
	fixed := 4 // throttle
	if s.version >= 7 {
		fixed += 6 // error code, session id
	}
	if !s.skip(fixed) {
		return
	}
	topics, ok := s.length(false)
	if !ok {
		return
	}
	for ; topics > 0; topics-- {
		var name string
		var id [16]byte
		if s.version >= 13 {
			if !s.f.need(s.pos + 16) {
				return
			}
			copy(id[:], s.f.b[s.pos:])
			s.pos += 16
		} else {
			n, ok := s.length(true)
			if !ok || n < 0 || !s.f.need(s.pos+n) {
				return
			}
			name = string(s.f.b[s.pos : s.pos+n])
			s.pos += n
		}
		parts, ok := s.length(false)
		if !ok {
			return
		}
		for ; parts > 0; parts-- {
			partition, ok := s.int32()
			// error code, high watermark, last stable offset, log
			// start offset (v5+)
			fixed := 2 + 8 + 8
			if s.version >= 5 {
				fixed += 8
			}
			if !ok || !s.skip(fixed) {
				return
			}
			aborted, ok := s.length(false)
			if !ok {
				return
			}
			for ; aborted > 0; aborted-- {
				if !s.skip(16) || !s.tags() { // producer id, first offset
					return
				}
			}
			if s.version >= 11 && !s.skip(4) { // preferred read replica
				return
			}
			n, ok := s.length(false)
			if !ok {
				return
			}
			if n > 0 {
				if !s.f.need(s.pos + n) {
					return
				}
				part(name, id, partition, s.f.b[s.pos:s.pos+n:s.pos+n])
				s.pos += n
			}
			if !s.tags() {
				return
			}
		}
		if !s.tags() {
			return
		}
	}
}
