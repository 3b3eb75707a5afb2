package masking

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Record batch (magic 2) layout.
const (
	offLength         = 8
	offMagic          = 16
	offCRC            = 17
	offAttributes     = 21
	offNumRecords     = 57
	batchHeaderLen    = 61
	attrCodecMask     = 0x07
	attrControl       = 0x20
	maxBatchRecords   = 1 << 22
	errorHeaderKey    = "sluice-mask-error"
	maxErrorHeaderLen = 256
)

// ErrorHeader is the record header that explains a masking failure; its
// value is a short reason.
const ErrorHeader = errorHeaderKey

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// RecordEdit is what a Transformer decides for one record. The rewriter
// resets it before each record.
type RecordEdit struct {
	// Drop removes the record (row filters). The batch keeps its offset
	// range, so consumers advance past it.
	Drop bool
	// SetKey and SetValue replace the key or value with Key or Value; a
	// nil slice is a null key or value. The slices must stay valid until
	// the next call.
	SetKey, SetValue bool
	Key, Value       []byte
	// Error, if not empty, adds a sluice-mask-error header with this
	// reason (truncated to 256 bytes).
	Error string
}

// Transformer rewrites records. Transform gets the record's key and value
// (nil when null) and fills e. An error fails the whole partition.
type Transformer interface {
	Transform(key, value []byte, e *RecordEdit) error
}

// valueAppender is an optional fast path of a Transformer for the common
// record, whose value alone changes: appendValue appends the new value to
// dst, where the rewriter writes it into the record in place, saving the
// copy through a scratch buffer and RecordEdit. It reports fastDrop when a
// row filter removes the record, and fastNo, with dst unchanged, for every
// record it does not handle (a key to rewrite, a null value, any failure),
// which then goes through Transform.
type valueAppender interface {
	appendValue(dst, value []byte) ([]byte, fastResult)
}

type fastResult uint8

const (
	fastNo fastResult = iota
	fastOK
	fastDrop
)

// RewriteStats counts what a rewrite delivered.
type RewriteStats struct {
	Batches   int // magic-2 data batches seen
	OldMagic  int // message sets of magic 0 or 1, passed through unmasked
	Control   int // control batches (transaction markers), passed through
	Rewritten int // batches re-encoded because a record changed
	Records   int // records delivered
	Dropped   int // records removed by row filters
	Errors    int // records delivered with an error marker
}

// ErrCorruptBatch wraps a batch that cannot be decoded for rewriting.
var ErrCorruptBatch = errors.New("masking: corrupt record batch")

type rewriter struct {
	recs []byte
	comp bytes.Buffer
	lz4  []byte // an lz4 batch's frame (appendLz4Frame)
	edit RecordEdit
}

var (
	rewriters   = sync.Pool{New: func() any { return new(rewriter) }}
	decBytes    = &decompressBytes{}
	compressors [5]compressor
)

// decompressBytes pools the buffers batches are decompressed into
// (kgo.PoolDecompressBytes), so a rewrite does not allocate one per batch.
// The pool holds *[]byte; the holders themselves are pooled too, since
// PutDecompressBytes gets a slice, and taking its address would allocate
// a holder per batch.
type decompressBytes struct{ p, holders sync.Pool }

// maxPooledDecompress is the largest buffer the pool keeps.
const maxPooledDecompress = 16 << 20

func (d *decompressBytes) GetDecompressBytes(src []byte, _ kgo.CompressionCodecType) []byte {
	if h, ok := d.p.Get().(*[]byte); ok {
		b := (*h)[:0]
		*h = nil
		d.holders.Put(h)
		return b
	}
	return make([]byte, 0, 4*len(src)+4096)
}

func (d *decompressBytes) PutDecompressBytes(b []byte) {
	if cap(b) > maxPooledDecompress {
		return // a rare large batch (or a refused bomb) is not kept
	}
	h, ok := d.holders.Get().(*[]byte)
	if !ok {
		h = new([]byte)
	}
	*h = b[:0]
	d.p.Put(h)
}

const codecLz4 = 3

// compressor compresses a rewritten batch's records with its codec, into
// dst or a slice of its own (lz4 batches: appendLz4Frame).
type compressor func(dst *bytes.Buffer, src []byte) ([]byte, error)

func init() {
	for codec, c := range map[int]kgo.CompressionCodec{
		1: kgo.GzipCompression(), 2: kgo.SnappyCompression(), 4: kgo.ZstdCompression(),
	} {
		cmp, err := kgo.DefaultCompressor(c)
		if err != nil {
			panic(err) // static codecs; cannot fail
		}
		compressors[codec] = func(dst *bytes.Buffer, src []byte) ([]byte, error) {
			out, used := cmp.Compress(dst, src)
			if int(used) != codec {
				return nil, fmt.Errorf("masking: recompress with codec %d failed", codec)
			}
			return out, nil
		}
	}
}

// emptyPayload checks that a batch counting no records carries none: its
// payload is empty, or inflates to nothing.
func emptyPayload(raw []byte, codec int) error {
	if len(raw) == 0 {
		return nil
	}
	if codec != 0 {
		out, err := decompress(raw, codec)
		if err != nil {
			return err
		}
		defer decBytes.PutDecompressBytes(out)
		raw = out
	}
	if len(raw) > 0 {
		return fmt.Errorf("%w: %d bytes of records in a batch that counts none", ErrCorruptBatch, len(raw))
	}
	return nil
}

// RewriteBatches appends to dst the record batches of src (one partition's
// Fetch RecordBatches, or a Produce partition's Records) with every record
// of every magic-2 data batch passed through t.
//
// Control batches, batches of older magic (counted in OldMagic: callers that
// must not deliver unmasked data fail on them) and a trailing partial batch
// are copied byte for byte, and so is a batch in which t changed nothing. A
// rewritten batch keeps its base offset, last offset delta, timestamps,
// producer id and epoch, base sequence, partition leader epoch and
// attributes, is recompressed with its codec and gets new lengths and a new
// CRC-32C. Dropped records leave the offset range intact; a batch whose
// records are all dropped stays as a batch of zero records without payload
// or codec (as Kafka's log cleaner writes one), which clients skip past (as
// for compacted topics, KAFKA-5443).
//
// An error (a corrupt batch, or t's error) returns dst unchanged.
func RewriteBatches(dst, src []byte, t Transformer) ([]byte, RewriteStats, error) {
	return rewrite(dst, src, t, true)
}

// VisitRecords passes every record of every magic-2 data batch of src to t
// without producing output; t's edits are ignored. It validates batches as
// RewriteBatches does.
func VisitRecords(src []byte, t Transformer) (RewriteStats, error) {
	_, st, err := rewrite(nil, src, t, false)
	return st, err
}

func rewrite(dst, src []byte, t Transformer, emit bool) ([]byte, RewriteStats, error) {
	var st RewriteStats
	orig := len(dst)
	rw := rewriters.Get().(*rewriter)
	defer rewriters.Put(rw)
	for len(src) > 0 {
		length := int64(-1)
		if len(src) > offMagic {
			length = int64(int32(binary.BigEndian.Uint32(src[offLength:])))
		}
		total := 12 + length
		if length < 0 || total > int64(len(src)) {
			// A trailing partial batch (the broker cuts a partition at
			// the fetch's byte budget, and a later partition of a full
			// response may get nothing but a fragment) is dropped, not
			// passed: its whole records are readable, unmasked and
			// unfiltered, by a client that parses it. Consumers ignore
			// it and fetch again from the next offset; a partition left
			// with no records is what they would have made of it too.
			break
		}
		b := src[:total]
		src = src[total:]
		if len(b) <= offMagic || b[offMagic] == 2 && len(b) < batchHeaderLen {
			return dst[:orig], st, fmt.Errorf("%w: %d-byte batch", ErrCorruptBatch, len(b))
		}
		if b[offMagic] != 2 {
			st.OldMagic++
		}
		if b[offMagic] == 2 && binary.BigEndian.Uint16(b[offAttributes:])&attrControl != 0 {
			st.Control++
		}
		if b[offMagic] != 2 || binary.BigEndian.Uint16(b[offAttributes:])&attrControl != 0 {
			if emit {
				dst = append(dst, b...)
			}
			continue
		}
		st.Batches++
		var err error
		dst, err = rw.batch(dst, b, t, &st, emit)
		if err != nil {
			return dst[:orig], st, err
		}
	}
	return dst, st, nil
}

func (rw *rewriter) batch(dst, b []byte, t Transformer, st *RewriteStats, emit bool) ([]byte, error) {
	if len(b) < batchHeaderLen {
		return dst, fmt.Errorf("%w: %d bytes", ErrCorruptBatch, len(b))
	}
	attrs := binary.BigEndian.Uint16(b[offAttributes:])
	codec := int(attrs & attrCodecMask)
	n := int32(binary.BigEndian.Uint32(b[offNumRecords:]))
	// An uncompressed batch rebuilt in place (direct, below) has its CRC
	// checked as its records are walked, a chunk at a time while the
	// chunk is in the cache, and fails before anything of it is kept;
	// every other is checked before anything else of it is read. One pass
	// over a 1 MiB batch up front came back to the walk from memory.
	direct := emit && codec == 0
	lazyCRC := direct && n > 0
	wantCRC := binary.BigEndian.Uint32(b[offCRC:])
	if !lazyCRC && crc32.Checksum(b[offAttributes:], crc32c) != wantCRC {
		return dst, errCRC
	}
	if codec > 4 {
		return dst, fmt.Errorf("%w: unknown codec %d", ErrCorruptBatch, codec)
	}
	raw := b[batchHeaderLen:]
	if n == 0 {
		// An empty batch (compaction, or all records filtered): nothing
		// to mask, and its payload may be empty even with a codec set.
		// Records after a count of zero are refused, not passed: a
		// consumer that reads the payload to its end rather than by the
		// count would get them unmasked.
		if err := emptyPayload(raw, codec); err != nil {
			return dst, err
		}
		if emit {
			dst = append(dst, b...)
		}
		return dst, nil
	}
	if n < 0 || n > maxBatchRecords {
		return dst, fmt.Errorf("%w: %d records", ErrCorruptBatch, n)
	}
	if codec != 0 {
		var err error
		if raw, err = decompress(raw, codec); err != nil {
			return dst, err
		}
		// Records are copied out of raw before this returns.
		defer decBytes.PutDecompressBytes(raw)
	}
	if n < 0 || n > maxBatchRecords || int(n) > len(raw) {
		return dst, fmt.Errorf("%w: %d records", ErrCorruptBatch, n)
	}
	// Uncompressed batches are rebuilt in place in dst (header first,
	// fixed up at the end); compressed ones collect their records in
	// rw.recs for the compressor.
	out := rw.recs[:0]
	start := len(dst)
	var inCRC, outCRC uint32 // of raw[:inAt] and of out[start+offAttributes:outAt]
	inAt, outAt := 0, 0
	if direct {
		out = append(dst, b[:batchHeaderLen]...)
		// The output's CRC is summed as it is written too, from the
		// header as it is now: only its record count can change, and
		// when it does the CRC is taken again whole.
		inCRC = crc32.Update(0, crc32c, b[offAttributes:batchHeaderLen])
		outCRC, outAt = inCRC, len(out)
	}
	changed := false
	kept := int32(0)
	pos := 0
	var rec rawRecord // on the stack: no write barriers for its slices
	va, _ := t.(valueAppender)
	if !emit {
		va = nil
	}
	for i := int32(0); i < n; i++ {
		if direct && pos-inAt >= crcChunk {
			inCRC = crc32.Update(inCRC, crc32c, raw[inAt:pos])
			outCRC = crc32.Update(outCRC, crc32c, out[outAt:])
			inAt, outAt = pos, len(out)
		}
		r := &rec
		if err := parseRecord(raw, &pos, r); err != nil {
			return dst, err
		}
		if va != nil {
			var res fastResult
			if out, res = appendFast(out, raw, r, va); res == fastOK {
				changed = true
				kept++
				st.Records++
				continue
			} else if res == fastDrop {
				changed = true
				st.Dropped++
				continue
			}
		}
		e := &rw.edit
		*e = RecordEdit{}
		if err := t.Transform(r.key, r.value, e); err != nil {
			return dst, err
		}
		if e.Drop {
			st.Dropped++
			changed = true
			continue
		}
		kept++
		st.Records++
		if e.Error != "" {
			st.Errors++
		}
		if !emit {
			continue
		}
		if !e.SetKey && !e.SetValue && e.Error == "" {
			out = append(out, raw[r.start:r.end]...)
			continue
		}
		changed = true
		out = r.appendEdited(out, raw, e)
	}
	if direct {
		dst = out[:start] // keeps what grew; the batch is written below
	} else {
		rw.recs = out
	}
	if lazyCRC && crc32.Update(inCRC, crc32c, raw[inAt:]) != wantCRC {
		return dst, errCRC
	}
	if pos != len(raw) {
		return dst, fmt.Errorf("%w: %d bytes after the last record", ErrCorruptBatch, len(raw)-pos)
	}
	if !emit {
		return dst, nil
	}
	if !changed {
		if direct {
			return out, nil // the same bytes as b
		}
		return append(dst, b...), nil
	}
	st.Rewritten++
	if kept == 0 {
		// Every record was dropped: write the empty batch as Kafka's log
		// cleaner does (DefaultRecordBatch.writeEmptyHeader): no records,
		// no payload and no codec. librdkafka 2.0 aborts on a compressed
		// batch whose payload decompresses to nothing.
		start := len(dst)
		dst = append(dst, b[:batchHeaderLen]...)
		h := dst[start:]
		binary.BigEndian.PutUint16(h[offAttributes:], attrs&^attrCodecMask)
		binary.BigEndian.PutUint32(h[offLength:], uint32(len(h)-12))
		binary.BigEndian.PutUint32(h[offNumRecords:], 0)
		binary.BigEndian.PutUint32(h[offCRC:], crc32.Checksum(h[offAttributes:], crc32c))
		return dst, nil
	}
	if direct {
		h := out[start:]
		binary.BigEndian.PutUint32(h[offLength:], uint32(len(h)-12))
		crc := crc32.Update(outCRC, crc32c, out[outAt:])
		if kept != n {
			binary.BigEndian.PutUint32(h[offNumRecords:], uint32(kept))
			crc = crc32.Checksum(h[offAttributes:], crc32c)
		}
		binary.BigEndian.PutUint32(h[offCRC:], crc)
		return out, nil
	}
	body := rw.recs
	switch codec {
	case 0:
	case codecLz4:
		var err error
		if rw.lz4, err = appendLz4Frame(rw.lz4[:0], rw.recs); err != nil {
			return dst, fmt.Errorf("masking: recompress with lz4: %w", err)
		}
		body = rw.lz4
	default:
		rw.comp.Reset()
		var err error
		if body, err = compressors[codec](&rw.comp, rw.recs); err != nil {
			return dst, err
		}
	}
	start = len(dst)
	dst = append(dst, b[:batchHeaderLen]...)
	dst = append(dst, body...)
	h := dst[start:]
	binary.BigEndian.PutUint32(h[offLength:], uint32(len(h)-12))
	binary.BigEndian.PutUint32(h[offNumRecords:], uint32(kept))
	binary.BigEndian.PutUint32(h[offCRC:], crc32.Checksum(h[offAttributes:], crc32c))
	return dst, nil
}

var errCRC = fmt.Errorf("%w: crc mismatch", ErrCorruptBatch)

// crcChunk is how many bytes of a batch rebuilt in place are walked
// between two steps of its CRCs: well inside a core's L2 cache, input and
// output both.
const crcChunk = 16 << 10

type rawRecord struct {
	start, end int // the whole record, length prefix included
	body       int // after the length prefix
	pre        int // end of attributes, timestamp delta, offset delta
	key, value []byte
	keyEnd     int // end of key
	valEnd     int // end of value; headers follow
	nHeaders   int64
	hdrStart   int // after the header count
}

// zz reads a zigzag varint at b[p:] and returns it and the position after
// it, or a negative position if there is none (as binary.Uvarint: at most
// ten bytes, no overflow). It is small enough to be inlined.
func zz(b []byte, p int) (int64, int) {
	var u uint64
	for s := uint(0); s < 64; s += 7 {
		if uint(p) >= uint(len(b)) {
			return 0, -1
		}
		c := b[p]
		p++
		if c < 0x80 {
			if s == 63 && c > 1 {
				return 0, -1
			}
			u |= uint64(c) << s
			return int64(u>>1) ^ -int64(u&1), p
		}
		u |= uint64(c&0x7f) << s
	}
	return 0, -1
}

var errBadVarint = fmt.Errorf("%w: bad varint", ErrCorruptBatch)

// parseRecord parses the record at raw[*pos:] into r and moves *pos past
// it. Every field of r is set on success. (A pointer, not a returned
// struct: copying that struct out cost a tenth of a batch rewrite.)
func parseRecord(raw []byte, pos *int, r *rawRecord) error {
	r.start = *pos
	l, p := zz(raw, *pos)
	if p < 0 {
		return errBadVarint
	}
	if l < 1 || l > int64(len(raw)-p) {
		return fmt.Errorf("%w: record length %d", ErrCorruptBatch, l)
	}
	r.body = p
	r.end = p + int(l)
	rec := raw[:r.end]
	_, p = zz(rec, p+1) // attributes, then the timestamp delta
	_, p = zz(rec, p)   // offset delta
	if p < 0 {
		return errBadVarint
	}
	r.pre = p
	var err error
	if r.key, p, err = recordField(rec, p); err != nil {
		return err
	}
	r.keyEnd = p
	if r.value, p, err = recordField(rec, p); err != nil {
		return err
	}
	r.valEnd = p
	if r.nHeaders, p = zz(rec, p); p < 0 {
		return errBadVarint
	}
	if r.nHeaders < 0 || r.nHeaders > int64(len(rec)-p) {
		return fmt.Errorf("%w: %d headers", ErrCorruptBatch, r.nHeaders)
	}
	r.hdrStart = p
	for i := int64(0); i < r.nHeaders; i++ {
		for range 2 {
			var n int64
			if n, p = zz(rec, p); p < 0 {
				return errBadVarint
			}
			if n < -1 || n > int64(len(rec)-p) {
				return fmt.Errorf("%w: header length %d", ErrCorruptBatch, n)
			}
			if n > 0 {
				p += int(n)
			}
		}
	}
	if p != r.end {
		return fmt.Errorf("%w: record length mismatch", ErrCorruptBatch)
	}
	*pos = r.end
	return nil
}

// recordField reads a varint-length-prefixed key or value at rec[p:]; -1
// is null. It returns the position after it.
func recordField(rec []byte, p int) ([]byte, int, error) {
	n, p := zz(rec, p)
	if p < 0 {
		return nil, p, errBadVarint
	}
	if n < -1 || n > int64(len(rec)-p) {
		return nil, p, fmt.Errorf("%w: field length %d", ErrCorruptBatch, n)
	}
	if n == -1 {
		return nil, p, nil
	}
	e := p + int(n)
	return rec[p:e:e], e, nil
}

func varintLen(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63)
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}

func fieldLen(b []byte) int {
	if b == nil {
		return varintLen(-1)
	}
	return varintLen(int64(len(b))) + len(b)
}

func appendField(dst, b []byte) []byte {
	if b == nil {
		return appendLong(dst, -1)
	}
	return append(appendLong(dst, int64(len(b))), b...)
}

// appendFast appends the record r of raw with the value va appends in
// place of its own. The record's length and the value's length are written
// where the original's were, and moved only when their varints change size.
// On anything but fastOK, dst is returned as it was.
func appendFast(dst, raw []byte, r *rawRecord, va valueAppender) ([]byte, fastResult) {
	if r.value == nil {
		return dst, fastNo
	}
	start := len(dst)
	vStart := r.valEnd - len(r.value)
	// The original record length, attributes, deltas, key and value
	// length: the two lengths are placeholders of their old size.
	dst = append(dst, raw[r.start:vStart]...)
	at := len(dst)
	dst, res := va.appendValue(dst, r.value)
	if res != fastOK {
		return dst[:start], res
	}
	vl := len(dst) - at
	if r.end-r.valEnd == 1 {
		dst = append(dst, raw[r.valEnd]) // no headers: not worth a copy call
	} else {
		dst = append(dst, raw[r.valEnd:r.end]...)
	}
	lenW := r.body - r.start
	dst = putVarint(dst, start+lenW+(r.keyEnd-r.body), vStart-r.keyEnd, int64(vl))
	return putVarint(dst, start, lenW, int64(len(dst)-start-lenW)), fastOK
}

// putVarint writes v as a zigzag varint over the w bytes at b[at:],
// moving what follows when v's varint is not w bytes long.
func putVarint(b []byte, at, w int, v int64) []byte {
	if n := varintLen(v); n != w {
		b = resize(b, at, w, n)
	}
	binary.PutUvarint(b[at:], uint64(v<<1)^uint64(v>>63))
	return b
}

// resize makes the w bytes at b[at:] n bytes long, moving what follows.
func resize(b []byte, at, w, n int) []byte {
	if d := n - w; d > 0 {
		b = append(b, make([]byte, d)...)
		copy(b[at+n:], b[at+w:len(b)-d])
		return b
	}
	return append(b[:at+n], b[at+w:]...)
}

// appendEdited appends the record with e applied.
func (r *rawRecord) appendEdited(dst, raw []byte, e *RecordEdit) []byte {
	key, value := r.key, r.value
	if e.SetKey {
		key = e.Key
	}
	if e.SetValue {
		value = e.Value
	}
	reason := e.Error
	if reason == "" && !e.SetKey {
		// Only the value changed: everything around it is copied whole.
		size := (r.end - r.body) - fieldLen(r.value) + fieldLen(value)
		dst = appendLong(dst, int64(size))
		dst = append(dst, raw[r.body:r.keyEnd]...)
		dst = appendField(dst, value)
		return append(dst, raw[r.valEnd:r.end]...)
	}
	if len(reason) > maxErrorHeaderLen {
		reason = reason[:maxErrorHeaderLen]
	}
	nh := r.nHeaders
	hdrs := raw[r.hdrStart:r.end]
	size := (r.pre - r.body) + fieldLen(key) + fieldLen(value) + len(hdrs)
	if reason != "" {
		nh++
		size += varintLen(int64(len(errorHeaderKey))) + len(errorHeaderKey) + varintLen(int64(len(reason))) + len(reason)
	}
	size += varintLen(nh)
	dst = appendLong(dst, int64(size))
	dst = append(dst, raw[r.body:r.pre]...)
	dst = appendField(dst, key)
	dst = appendField(dst, value)
	dst = appendLong(dst, nh)
	dst = append(dst, hdrs...)
	if reason != "" {
		dst = appendLong(dst, int64(len(errorHeaderKey)))
		dst = append(dst, errorHeaderKey...)
		dst = appendLong(dst, int64(len(reason)))
		dst = append(dst, reason...)
	}
	return dst
}
