package proxy

import (
	"encoding/binary"
	"net"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Writing a decoded Fetch response without copying its record batches.
//
// A Fetch response a filter changed (masked partitions) is encoded again
// before it is written, and the encoding copied every partition's record
// batches, megabytes, into the frame buffer only for the write to copy them
// into the socket. Instead the structure is encoded around a one-byte
// stand-in for each large partition, and the frame is written as a vector:
// the structure's pieces, each partition's own length prefix, and the
// partition's record batches where they already are.

// vecMinRecords is the size from which a partition's record batches are
// written in place rather than copied into the encoded frame.
const vecMinRecords = 64 << 10

// vecSlot is one partition written in place.
type vecSlot struct {
	p   *kmsg.FetchResponseTopicPartition
	rec []byte
	pos int // where its stand-in is in the encoded structure
}

// fetchFrameVec encodes resp, a Fetch response at version, as a frame
// appended to dst, with the record batches of its large partitions left
// out, and returns the encoded structure and the buffers that make the
// whole frame (the structure's pieces between the records they point
// into). ok is false when nothing is large or the version's layout is not
// one fetchScan follows; dst is then returned as it was, and the caller
// encodes the frame whole. resp is unchanged on return.
func fetchFrameVec(dst []byte, corr int32, version int16, resp *kmsg.FetchResponse) ([]byte, net.Buffers, bool) {
	if version < fetchPrepareMinVersion || version > fetchStreamMaxVersion {
		return dst, nil, false
	}
	var slots []vecSlot
	var present []int // per partition with records, in encoding order: its slot, or -1
	standIn := []byte{0}
	for ti := range resp.Topics {
		for pi := range resp.Topics[ti].Partitions {
			p := &resp.Topics[ti].Partitions[pi]
			switch {
			case inPlace(p):
				present = append(present, len(slots))
				slots = append(slots, vecSlot{p: p, rec: p.RecordBatches})
				p.RecordBatches = standIn
			case len(p.RecordBatches) > 0:
				present = append(present, -1)
			}
		}
	}
	if len(slots) == 0 {
		return dst, nil, false
	}
	defer func() {
		for _, s := range slots {
			s.p.RecordBatches = s.rec
		}
	}()
	start := len(dst)
	enc := appendResponseFrame(dst, corr, kmsg.Fetch.Int16(), version, resp)
	frame := enc[start:]

	// Find the stand-ins: fetchScan reports every partition with records
	// in the order they were encoded.
	flex := version >= 12
	sc := fetchScan{f: &frameFill{b: frame, filled: len(frame)}, pos: 8, flex: flex, version: version}
	k := 0
	sc.scan(func(_ string, _ [16]byte, _ int32, records []byte) {
		if k < len(present) && present[k] >= 0 && len(records) == 1 {
			slots[present[k]].pos = sc.pos
		}
		k++
	})
	prefix := 4 // the stand-in's length: int32 1, or compact uvarint 2
	if flex {
		prefix = 1
	}
	if k != len(present) {
		return dst, nil, false // cannot happen for what kmsg encodes
	}
	for _, s := range slots {
		if s.pos < 8+prefix || !standInAt(frame, s.pos, flex) {
			return dst, nil, false // nor this
		}
	}

	bufs := make(net.Buffers, 0, 3*len(slots)+1)
	lens := make([]byte, 0, binary.MaxVarintLen32*len(slots)) // never reallocated
	last, total := 0, len(frame)
	for _, s := range slots {
		bufs = append(bufs, frame[last:s.pos-prefix])
		at := len(lens)
		if flex {
			lens = binary.AppendUvarint(lens, uint64(len(s.rec))+1)
		} else {
			lens = binary.BigEndian.AppendUint32(lens, uint32(len(s.rec)))
		}
		bufs = append(bufs, lens[at:], s.rec)
		total += len(lens) - at - prefix + len(s.rec) - 1
		last = s.pos + 1
	}
	bufs = append(bufs, frame[last:])
	binary.BigEndian.PutUint32(frame, uint32(total-4))
	return enc, bufs, true
}

// vecEncodeSize is the buffer to encode resp's frame in when it may be
// written as a vector: size, the whole response's, less the partitions
// fetchFrameVec leaves out of the encoding (at least 4 KiB). A masked 8
// MiB response then takes a small buffer for its structure rather than a
// second 8 MiB; should the vector not apply, the encoding grows it.
func vecEncodeSize(resp *kmsg.FetchResponse, size int) int {
	for ti := range resp.Topics {
		for pi := range resp.Topics[ti].Partitions {
			if p := &resp.Topics[ti].Partitions[pi]; inPlace(p) {
				size -= len(p.RecordBatches)
			}
		}
	}
	return max(size, 4<<10)
}

// inPlace reports whether fetchFrameVec writes p's record batches from
// where they are rather than encoding them.
func inPlace(p *kmsg.FetchResponseTopicPartition) bool {
	return len(p.RecordBatches) >= vecMinRecords
}

// standInAt reports whether frame holds a stand-in's length and byte at
// pos.
func standInAt(frame []byte, pos int, flex bool) bool {
	if pos >= len(frame) || frame[pos] != 0 {
		return false
	}
	if flex {
		return frame[pos-1] == 2
	}
	return binary.BigEndian.Uint32(frame[pos-4:]) == 1
}
