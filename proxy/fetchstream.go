package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/bufpool"
	"github.com/sluice-gw/sluice/proxy/filter"
)

// Streaming Fetch responses.
//
// A flexible Fetch response that no filter wants still has to be looked at:
// KIP-951 NodeEndpoints (broker addresses) can sit in its trailing tagged
// fields. Reading a multi-megabyte response whole before writing its first
// byte doubles the transfer time a consumer waits for per fetch, so the
// gateway relays it as it arrives instead: the structure (topics,
// partitions, aborted transactions, tagged fields) is parsed from a small
// buffer and copied on, record batches are copied socket to socket through
// a large buffer, and only the response's own tagged fields, which come
// last, are held back and rewritten.
//
// The size prefix has gone out before the tagged fields are seen, so the
// rewritten section must have the original's size. Rewritten NodeEndpoints
// that are shorter are padded with an unknown tagged field of zeros, which
// every client skips (that is what unknown tags are for); ones that would be
// longer are dropped and their room padded the same way: NodeEndpoints is a
// hint, and a client without it refreshes metadata, which the gateway
// rewrites. No upstream address is ever written.

// fillerTag is the tag number of the first padding field (a second one, if
// needed, is fillerTag+1). Tags must ascend within a section; the padding
// goes last, above every tag Kafka defines, with one-byte tag numbers so
// that a gap of two bytes can be filled.
const fillerTag = 126

// fetchStreamMaxVersion is the newest Fetch response layout relayFetch
// knows; newer versions take the decoding path (a test fails when kmsg
// learns a newer one, so that the layout is checked again).
const fetchStreamMaxVersion = 18

// errFetchStream marks an upstream Fetch response that does not parse; the
// connection cannot be saved once part of it has been relayed.
var errFetchStream = errors.New("proxy: malformed upstream fetch response")

var fetchReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}

// fetchRelay is the state of one streamed response.
type fetchRelay struct {
	src  io.Reader // the upstream connection
	lim  io.LimitedReader
	cr   capReader     // reads from lim
	br   *bufio.Reader // reads from cr
	dst  io.Writer
	wb   []byte  // structure read but not yet written
	wbuf *[]byte // the pooled buffer wb grew from
	flex bool

	// hooks, nil to relay every topic as it came and count nothing.
	hooks *fetchHooks
	// bad is the error a frame that does not parse wraps; nil is
	// errFetchStream (producestream.go relays requests).
	bad error
	// conn, if set, is the connection src ends in after its first pre
	// bytes; once those are read, bulk copies read conn directly (so that
	// they can be spliced). limN is lim.N at the start.
	conn      net.Conn
	pre, limN int64
}

// newRelay starts a relay of the n bytes src holds to dst, with hdr
// queued first, on a pooled read buffer and queue that close returns.
func newRelay(dst io.Writer, src io.Reader, n int64, hdr []byte, flex bool) *fetchRelay {
	wb := bufpool.Get(64 << 10)
	r := &fetchRelay{src: src, dst: dst, flex: flex, wb: append(*wb, hdr...), wbuf: wb, limN: n}
	r.lim = io.LimitedReader{R: src, N: n}
	r.cr = capReader{r: &r.lim, n: structAhead}
	r.br = fetchReaders.Get().(*bufio.Reader)
	r.br.Reset(&r.cr)
	return r
}

// structAhead bounds how far the relay's reader reads ahead of the
// structure it parses, at the start and after each bulk copy of a buffer
// or more (relay): what it reads ahead of a record batch goes out through
// memory (a write) instead of socket to socket, and a full 32 KiB read
// there put 32 KiB of every large partition and counted batch through two
// copies. After a smaller region (records under a buffer, an empty
// partition) reads are whole again, so many small partitions or batches of
// a few KiB are still read in few calls.
const structAhead = 256

// capReader bounds each read to n bytes when n > 0.
type capReader struct {
	r io.Reader
	n int
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.n > 0 && len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

func (r *fetchRelay) close() {
	r.br.Reset(nil)
	fetchReaders.Put(r.br)
	*r.wbuf = r.wb[:0]
	bufpool.Put(r.wbuf)
}

func (r *fetchRelay) malformed() error {
	if r.bad != nil {
		return r.bad
	}
	return errFetchStream
}

// fetchHooks let filters withhold topics of a streamed response and learn
// what it delivered (filter.FetchStreamer).
type fetchHooks struct {
	// topic returns 0 to relay a topic, or the error code its partitions
	// carry instead of their records; key names it in delivered.
	topic func(name string, id [16]byte) (code int16, key string)
	// delivered counts the records and bytes relayed per topic key, as
	// the audit filter counts a decoded response, when count is set
	// (filter.FetchCounter).
	delivered map[string]filter.Stats
	count     bool
}

// remaining is how many bytes of the response are still unread.
func (r *fetchRelay) remaining() int64 { return r.lim.N + int64(r.br.Buffered()) }

// take reads n structure bytes, queues them for the client and returns them.
func (r *fetchRelay) take(n int) ([]byte, error) {
	if int64(n) > r.remaining() {
		return nil, fmt.Errorf("%w: field of %d bytes past the end", r.malformed(), n)
	}
	start := len(r.wb)
	r.wb = append(r.wb, make([]byte, n)...)
	if _, err := io.ReadFull(r.br, r.wb[start:]); err != nil {
		return nil, err
	}
	return r.wb[start:], nil
}

func (r *fetchRelay) int32() (int32, error) {
	b, err := r.take(4)
	if err != nil {
		return 0, err
	}
	return int32(binary.BigEndian.Uint32(b)), nil
}

// uvarint reads an unsigned varint byte by byte, queued for the client.
func (r *fetchRelay) uvarint() (uint64, error) { return r.varint31(true) }

// readUvarint reads an unsigned varint without queueing it.
func (r *fetchRelay) readUvarint() (uint64, error) { return r.varint31(false) }

// varint31 reads an unsigned varint of at most five bytes and under 2^31,
// queueing its bytes for the client when queue is set. No count or length
// in a frame is that large, and clients read larger values differently
// (kmsg as a negative int32, Java from 4 bits of the last byte), so the
// relay and the client would part ways on what follows.
func (r *fetchRelay) varint31(queue bool) (uint64, error) {
	var v uint64
	for i := 0; i < binary.MaxVarintLen32; i++ {
		c, err := r.br.ReadByte()
		if err != nil {
			if r.remaining() == 0 { // the frame ended, the connection did not
				return 0, fmt.Errorf("%w: varint past the end", r.malformed())
			}
			if !queue {
				return 0, fmt.Errorf("%w: %v", r.malformed(), err)
			}
			return 0, err
		}
		if queue {
			r.wb = append(r.wb, c)
		}
		if i == binary.MaxVarintLen32-1 && c > 0x07 {
			return 0, fmt.Errorf("%w: varint over 31 bits", r.malformed())
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: varint too long", r.malformed())
}

// arrayLen reads an array length: compact (length+1) on flexible versions.
// A null array is 0 elements.
func (r *fetchRelay) arrayLen() (int64, error) {
	if r.flex {
		u, err := r.uvarint()
		if err != nil || u == 0 {
			return 0, err
		}
		return int64(u) - 1, nil
	}
	n, err := r.int32()
	if n < 0 {
		n = 0
	}
	return int64(n), err
}

// bytesLen reads a (nullable) string or bytes length; null is 0.
func (r *fetchRelay) bytesLen(int16Len bool) (int64, error) {
	switch {
	case r.flex:
		u, err := r.uvarint()
		if err != nil || u == 0 {
			return 0, err
		}
		return int64(u) - 1, nil
	case int16Len:
		b, err := r.take(2)
		if err != nil {
			return 0, err
		}
		return max(int64(int16(binary.BigEndian.Uint16(b))), 0), nil
	default:
		n, err := r.int32()
		return max(int64(n), 0), err
	}
}

// flush writes the queued structure bytes.
func (r *fetchRelay) flush() error {
	if len(r.wb) == 0 {
		return nil
	}
	_, err := r.dst.Write(r.wb)
	r.wb = r.wb[:0]
	return err
}

// relay copies n bytes to the client unparsed: what the buffer holds, then
// straight from the upstream connection.
func (r *fetchRelay) relay(n int64) error {
	if n > r.remaining() {
		return fmt.Errorf("%w: %d bytes past the end", r.malformed(), n)
	}
	if n < 4<<10 {
		r.cr.n = 0
		_, err := r.take(int(n))
		return err
	}
	// After a region of a buffer or more, the next read stops at the
	// next head; after a smaller one it fills the buffer, which then
	// likely holds the next regions whole (batches of a few KiB go out
	// from memory in few calls rather than a splice each).
	ahead := 0
	if n >= int64(r.br.Size()) {
		ahead = structAhead
	}
	// What the reader holds goes out with the queued structure in one
	// write when it is small (as it is after structAhead), before it
	// otherwise.
	if b := int64(r.br.Buffered()); b > 0 {
		b = min(b, n)
		p, _ := r.br.Peek(int(b))
		if b <= 4<<10 {
			r.wb = append(r.wb, p...)
		} else if err := r.flush(); err != nil {
			return err
		} else if _, err := r.dst.Write(p); err != nil {
			return err
		}
		_, _ = r.br.Discard(int(b))
		n -= b
	}
	if err := r.flush(); err != nil {
		return err
	}
	r.cr.n = ahead
	if n == 0 {
		return nil
	}
	src := r.src
	if r.conn != nil {
		// src starts with pre bytes held in memory (read ahead of the
		// relay) and continues in conn: what is left of those goes
		// through src, the rest is read from conn directly, so that it
		// can be spliced. (Taking the whole copy from src while any of
		// the pre bytes was left sent the first record batch of every
		// request through a buffer.)
		if left := r.pre - (r.limN - r.lim.N); left > 0 {
			k := min(left, n)
			if _, err := copyN(r.dst, &r.lim, k); err != nil {
				return err
			}
			if n -= k; n == 0 {
				return nil
			}
		}
		src = r.conn
	}
	w, err := copyN(r.dst, src, n)
	r.lim.N -= w
	return err
}

// skipTags relays a tagged-field section whose fields carry no addresses.
func (r *fetchRelay) skipTags() error {
	num, err := r.uvarint()
	if err != nil {
		return err
	}
	for i := uint64(0); i < num; i++ {
		if _, err := r.uvarint(); err != nil {
			return err
		}
		size, err := r.uvarint()
		if err != nil {
			return err
		}
		if err := r.relay(int64(size)); err != nil {
			return err
		}
	}
	return nil
}

// relayFetchResponse streams the rest of a Fetch response of the given
// version from src to dst. hdr is the 8 bytes already read (size and
// correlation id); size is the frame size from it. rewrite replaces the
// addresses of a FetchResponse holding only NodeEndpoints and reports
// whether it changed any.
func relayFetchResponse(dst io.Writer, src io.Reader, hdr []byte, size int32, version int16,
	rewrite func(*kmsg.FetchResponse) bool, hooks *fetchHooks) error {
	if hooks != nil && version < 12 {
		// Withholding a topic pads its partitions with a tagged field.
		return fmt.Errorf("proxy: internal: fetch v%d cannot be streamed through filters", version)
	}
	r := newRelay(dst, src, int64(size)-4, hdr, version >= 12)
	defer r.close()
	r.hooks = hooks
	if err := r.body(version); err != nil {
		return err
	}
	if !r.flex {
		// Nothing follows the topics; relay anything that does, so
		// that the next response starts where it should.
		if err := r.relay(r.remaining()); err != nil {
			return err
		}
		return r.flush()
	}
	// The response's own tagged fields: held back and rewritten at the
	// same size.
	rest := r.remaining()
	if rest > 64<<20 {
		return fmt.Errorf("%w: %d bytes of trailing tagged fields", errFetchStream, rest)
	}
	tail := make([]byte, rest)
	if _, err := io.ReadFull(r.br, tail); err != nil {
		return err
	}
	out, err := rewriteFetchTags(tail, version, rewrite)
	if err != nil {
		return err
	}
	r.wb = append(r.wb, out...)
	return r.flush()
}

// body relays everything of a Fetch response body before its trailing
// tagged fields, and the flexible response header's tags.
func (r *fetchRelay) body(version int16) error {
	if r.flex { // response header v1
		if err := r.skipTags(); err != nil {
			return err
		}
	}
	fixed := 0
	if version >= 1 {
		fixed += 4 // throttle
	}
	if version >= 7 {
		fixed += 6 // error code, session id
	}
	if _, err := r.take(fixed); err != nil {
		return err
	}
	topics, err := r.arrayLen()
	if err != nil {
		return err
	}
	for ; topics > 0; topics-- {
		var name string
		var id [16]byte
		if version >= 13 {
			b, err := r.take(16) // topic id
			if err != nil {
				return err
			}
			copy(id[:], b)
		} else {
			n, err := r.bytesLen(true)
			if err != nil {
				return err
			}
			if r.hooks != nil {
				b, err := r.take(int(n)) // bounded by what is left
				if err != nil {
					return err
				}
				name = string(b)
			} else if err := r.relay(n); err != nil { // topic name
				return err
			}
		}
		var code int16
		var key string
		if r.hooks != nil {
			code, key = r.hooks.topic(name, id)
		}
		parts, err := r.arrayLen()
		if err != nil {
			return err
		}
		for ; parts > 0; parts-- {
			if code != 0 {
				err = r.withhold(code)
			} else {
				err = r.partition(version, key)
			}
			if err != nil {
				return err
			}
			if len(r.wb) >= 32<<10 {
				if err := r.flush(); err != nil {
					return err
				}
			}
		}
		if r.flex {
			if err := r.skipTags(); err != nil {
				return err
			}
		}
	}
	return nil
}

// partition relays one partition of a Fetch response; key names its topic
// for the delivered counts.
func (r *fetchRelay) partition(version int16, key string) error {
	fixed := 4 + 2 + 8 // partition, error code, high watermark
	if version >= 4 {
		fixed += 8 // last stable offset
	}
	if version >= 5 {
		fixed += 8 // log start offset
	}
	if _, err := r.take(fixed); err != nil {
		return err
	}
	if version >= 4 {
		aborted, err := r.arrayLen()
		if err != nil {
			return err
		}
		if aborted*16 > r.remaining() {
			return fmt.Errorf("%w: %d aborted transactions past the end", r.malformed(), aborted)
		}
		for ; aborted > 0; aborted-- {
			if _, err := r.take(16); err != nil { // producer id, first offset
				return err
			}
			if r.flex {
				if err := r.skipTags(); err != nil {
					return err
				}
			}
		}
	}
	if version >= 11 {
		if _, err := r.take(4); err != nil { // preferred read replica
			return err
		}
	}
	n, err := r.bytesLen(false)
	if err != nil {
		return err
	}
	if r.hooks != nil && r.hooks.count {
		err = r.relayCounted(n, key)
	} else {
		err = r.relay(n)
	}
	if err != nil {
		return err
	}
	if r.flex {
		return r.skipTags()
	}
	return nil
}

// relayCounted relays n bytes of record batches and counts them as the
// audit filter counts a decoded partition (filter.CountBatches): every
// whole batch's bytes, the records of magic 2 data batches, one record per
// legacy message set; a trailing partial batch counts nothing. Headers are
// peeked, not taken, so that each batch goes out whole through relay (its
// bulk socket to socket), not with its header as a small write of its own.
func (r *fetchRelay) relayCounted(n int64, key string) error {
	var st filter.Stats
	defer func() {
		d := r.hooks.delivered[key]
		d.Records += st.Records
		d.Bytes += st.Bytes
		r.hooks.delivered[key] = d
	}()
	if n > r.remaining() {
		return fmt.Errorf("%w: %d bytes past the end", r.malformed(), n)
	}
	for n >= 17 {
		h, err := r.br.Peek(17)
		if err != nil {
			return err
		}
		size := int64(binary.BigEndian.Uint32(h[8:12])) + 12
		magic := h[16]
		if size < 17 || size > n {
			return r.relay(n)
		}
		switch {
		case magic >= 2 && size >= 61:
			h, err := r.br.Peek(61)
			if err != nil {
				return err
			}
			// Attributes at 21, the record count at 57.
			if binary.BigEndian.Uint16(h[21:23])&0x20 == 0 {
				if c := int32(binary.BigEndian.Uint32(h[57:61])); c > 0 {
					st.Records += int64(c)
				}
			}
		case magic < 2:
			st.Records++
		}
		st.Bytes += size
		if err := r.relay(size); err != nil {
			return err
		}
		n -= size
	}
	if n == 0 {
		return nil // not relay(0): that would end the read-ahead bound
	}
	return r.relay(n)
}

// withhold reads one partition and queues in its place one of the same
// size that carries code and nothing else: no records, no aborted
// transactions, offsets -1, its tagged fields replaced by zero padding.
// Nothing read is relayed (flexible versions only).
func (r *fetchRelay) withhold(code int16) error {
	start := r.remaining()
	var idx [4]byte
	if _, err := io.ReadFull(r.br, idx[:]); err != nil {
		return err
	}
	if err := r.discard(2 + 8 + 8 + 8); err != nil { // error code, offsets
		return err
	}
	aborted, err := r.readUvarint()
	if err != nil {
		return err
	}
	if aborted > 0 {
		aborted--
	}
	if int64(aborted)*17 > r.remaining() {
		return fmt.Errorf("%w: %d aborted transactions past the end", r.malformed(), aborted)
	}
	for ; aborted > 0; aborted-- {
		if err := r.discard(16); err != nil {
			return err
		}
		if err := r.discardTags(); err != nil {
			return err
		}
	}
	if err := r.discard(4); err != nil { // preferred read replica
		return err
	}
	n, err := r.readUvarint()
	if err != nil {
		return err
	}
	if n > 0 {
		if err := r.discard(int64(n) - 1); err != nil { // records
			return err
		}
	}
	if err := r.discardTags(); err != nil {
		return err
	}
	orig := int(start - r.remaining())
	out := append(r.wb, idx[:]...)
	out = binary.BigEndian.AppendUint16(out, uint16(code))
	for range 3 { // high watermark, last stable offset, log start offset
		out = binary.BigEndian.AppendUint64(out, math.MaxUint64) // -1
	}
	out = append(out, 0)                                     // aborted transactions: null
	out = binary.BigEndian.AppendUint32(out, math.MaxUint32) // preferred read replica -1
	out = append(out, 1)                                     // records: empty, not null (librdkafka)
	const base = 4 + 2 + 3*8 + 1 + 4 + 1
	tags, ok := padTags(nil, 0, orig-base)
	if !ok {
		return fmt.Errorf("%w: a %d-byte partition cannot be withheld at its size", r.malformed(), orig)
	}
	r.wb = append(out, tags...)
	return nil
}

// discard reads and drops n bytes.
func (r *fetchRelay) discard(n int64) error {
	if n > r.remaining() {
		return fmt.Errorf("%w: %d bytes past the end", r.malformed(), n)
	}
	for n > 0 {
		k, err := r.br.Discard(int(min(n, 1<<30)))
		n -= int64(k)
		if err != nil {
			return err
		}
	}
	return nil
}

// discardTags reads and drops a tagged-field section.
func (r *fetchRelay) discardTags() error {
	num, err := r.readUvarint()
	if err != nil {
		return err
	}
	for i := uint64(0); i < num; i++ {
		if _, err := r.readUvarint(); err != nil {
			return err
		}
		size, err := r.readUvarint()
		if err != nil {
			return err
		}
		if err := r.discard(int64(size)); err != nil {
			return err
		}
	}
	return nil
}

// rewriteFetchTags rewrites the trailing tagged-field section of a flexible
// Fetch response so that it carries no upstream address and keeps its size.
func rewriteFetchTags(tail []byte, version int16, rewrite func(*kmsg.FetchResponse) bool) ([]byte, error) {
	if len(tail) == 0 {
		return nil, fmt.Errorf("%w: no tagged fields", errFetchStream)
	}
	if len(tail) == 1 && tail[0] == 0 {
		return tail, nil // the usual case: no tagged fields
	}
	// Decode the section with kmsg, through an otherwise empty response:
	// throttle, error code and session id (v7+), no topics.
	body := make([]byte, 0, 11+len(tail))
	body = append(body, make([]byte, 10)...)
	body = append(body, 1) // compact array of 0 topics
	body = append(body, tail...)
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(version)
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("%w: trailing tagged fields: %v", errFetchStream, err)
	}
	if len(resp.Brokers) == 0 && !hasTag0(tail) {
		// Only tags kmsg does not know: kept as they are, as the
		// decoding path keeps them. (A NodeEndpoints tag that decodes
		// empty may follow another that does not, which kmsg, keeping
		// the last, does not show: any tag 0 is re-encoded.)
		return tail, nil
	}
	rewrite(resp)
	// The padding goes last: drop unknown tags at or above it (tags
	// must ascend, and nothing Kafka defines is there).
	var kept kmsg.Tags
	resp.UnknownTags.Each(func(k uint32, v []byte) {
		if k < fillerTag {
			kept.Set(k, v)
		}
	})
	resp.UnknownTags = kept
	if out, ok := encodeFetchTags(resp, len(tail)); ok {
		return out, nil
	}
	// Rewritten endpoints do not fit: drop them.
	resp.Brokers = nil
	if out, ok := encodeFetchTags(resp, len(tail)); ok {
		return out, nil
	}
	return nil, fmt.Errorf("%w: cannot keep the size of the tagged fields", errFetchStream)
}

// hasTag0 reports whether the tagged-field section tail (which kmsg has
// parsed whole) holds a field with tag 0, NodeEndpoints.
func hasTag0(tail []byte) bool {
	num, n := binary.Uvarint(tail)
	if n <= 0 {
		return true // cannot tell: re-encode
	}
	p := n
	for ; num > 0; num-- {
		tag, k := binary.Uvarint(tail[p:])
		if k <= 0 {
			return true
		}
		p += k
		if tag == 0 {
			return true
		}
		size, k := binary.Uvarint(tail[p:])
		if k <= 0 || size > uint64(len(tail)-p-k) {
			return true
		}
		p += k + int(size)
	}
	return false
}

// encodeFetchTags encodes resp's trailing tagged fields padded to exactly
// size bytes, if they fit. A gap of one byte cannot be filled (a padding
// field takes two at least); the caller then drops the endpoints.
func encodeFetchTags(resp *kmsg.FetchResponse, size int) ([]byte, bool) {
	enc := resp.AppendTo(nil)
	tags := enc[11:] // after throttle, error code, session id, topics
	if len(tags) == size {
		return tags, true
	}
	if len(tags) > size {
		return nil, false
	}
	num, n := binary.Uvarint(tags)
	if n <= 0 {
		return nil, false
	}
	return padTags(tags[n:], num, size)
}

// padTags returns a tagged-field section of exactly size bytes: the num
// encoded fields, then one or two padding fields of zeros (two when one
// cannot land on the size because its length varint would change width).
// Without fields, a size of 1 is the empty section; 2 cannot be made.
func padTags(fields []byte, num uint64, size int) ([]byte, bool) {
	if num == 0 && size == 1 {
		return []byte{0}, true
	}
	for pads := uint64(1); pads <= 2; pads++ {
		head := binary.AppendUvarint(nil, num+pads)
		room := size - len(head) - len(fields)
		for i := uint64(0); i < pads; i++ {
			room -= uvarintLen(fillerTag + i)
		}
		// room holds the pads' length varints and zero bytes; all
		// but the last pad are empty (a one-byte length).
		room -= int(pads - 1)
		for lenWidth := 1; lenWidth <= 5; lenWidth++ {
			content := room - lenWidth
			if content < 0 || uvarintLen(uint64(content)) != lenWidth {
				continue
			}
			out := make([]byte, 0, size)
			out = append(out, head...)
			out = append(out, fields...)
			for i := uint64(0); i < pads-1; i++ {
				out = binary.AppendUvarint(out, fillerTag+i)
				out = append(out, 0)
			}
			out = binary.AppendUvarint(out, fillerTag+pads-1)
			out = binary.AppendUvarint(out, uint64(content))
			out = append(out, make([]byte, content)...)
			return out, len(out) == size
		}
	}
	return nil, false
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
