package masking

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Errors of the binary walker. They describe a record that does not decode
// under its schema.
var (
	errShort    = errors.New("masking: avro value truncated")
	errVarint   = errors.New("masking: bad avro varint")
	errLength   = errors.New("masking: bad avro length")
	errIndex    = errors.New("masking: avro union or enum index out of range")
	errDepth    = errors.New("masking: avro value nested too deeply")
	errTrailing = errors.New("masking: trailing bytes after avro value")
)

const (
	maxDepth = 64
	// maxZeroItems bounds the zero-byte collection items (nulls, empty
	// records) of one value, whose count the input bytes do not bound.
	maxZeroItems = 1 << 16
)

// walker walks one Avro binary value, copying untouched bytes from src to
// dst and appending replacements for masked values.
type walker struct {
	src   []byte
	pos   int
	dst   []byte
	mark  int // src[mark:pos] is pending copy to dst
	depth int
	write bool // false: only validate
	// zeroItems counts the zero-byte collection items walked so far
	// (bounded by maxZeroItems in all).
	zeroItems int64

	found     []byte // actExtract: the encoded value found
	foundNode *node
}

// long reads a zigzag varint; the one-byte case is inlined.
func (w *walker) long() (int64, error) {
	if p := w.pos; uint(p) < uint(len(w.src)) {
		if b := w.src[p]; b < 0x80 {
			w.pos = p + 1
			return int64(b>>1) ^ -int64(b&1), nil
		}
	}
	return w.longSlow()
}

func (w *walker) longSlow() (int64, error) {
	u, n := binary.Uvarint(w.src[w.pos:])
	if n <= 0 {
		if n == 0 {
			return 0, errShort
		}
		return 0, errVarint
	}
	w.pos += n
	return int64(u>>1) ^ -int64(u&1), nil
}

// varintEnd returns the position after the varint at b[p:] without
// decoding it, or -1 when b ends first and -2 when it runs past ten bytes
// or overflows 64 bits (errShort and errVarint, as longSlow reports them).
// It is small enough to be inlined.
func varintEnd(b []byte, p int) int {
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if uint(p) >= uint(len(b)) {
			return -1
		}
		c := b[p]
		p++
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return -2
			}
			return p
		}
	}
	return -2
}

func varintErr(end int) error {
	if end == -1 {
		return errShort
	}
	return errVarint
}

func (w *walker) int() (int64, error) {
	start := w.pos
	v, err := w.long()
	if err == nil && (w.pos-start > 5 || v < -1<<31 || v > 1<<31-1) {
		return 0, errVarint
	}
	return v, err
}

func (w *walker) advance(n int) error {
	if n > len(w.src)-w.pos {
		return errShort
	}
	w.pos += n
	return nil
}

// skipLenFast advances over a bytes or string value in a record walk, its
// length prefix and content, when the prefix is one byte and the content
// fits, and reports whether it did; skipLenSlow takes every other case,
// errors included (a length that is negative or runs past the value is
// errLength). The fast half is small enough to be inlined.
func (w *walker) skipLenFast() bool {
	// A one-byte zigzag varint below 0x80 with its low bit clear is the
	// length b>>1.
	if p := w.pos; uint(p) < uint(len(w.src)) {
		if b := w.src[p]; b&0x81 == 0 && int(b>>1) < len(w.src)-p {
			w.pos = p + 1 + int(b>>1)
			return true
		}
	}
	return false
}

func (w *walker) skipLenSlow() error {
	l, err := w.long()
	if err != nil {
		return err
	}
	if l < 0 || l > int64(len(w.src)-w.pos) {
		return errLength
	}
	w.pos += int(l)
	return nil
}

// lenPrefixed reads a bytes/string length prefix and returns the content.
func (w *walker) lenPrefixed() ([]byte, error) {
	var l int64
	if p := w.pos; p < len(w.src) && w.src[p] < 0x80 {
		b := w.src[p]
		l, w.pos = int64(b>>1)^-int64(b&1), p+1
	} else {
		var err error
		if l, err = w.longSlow(); err != nil {
			return nil, err
		}
	}
	if l < 0 {
		return nil, errLength
	}
	if l > int64(len(w.src)-w.pos) {
		return nil, errShort
	}
	b := w.src[w.pos : w.pos+int(l)]
	w.pos += int(l)
	return b, nil
}

// value walks one value of n.
func (w *walker) value(n *node) error {
	if !n.deep {
		return w.skip(n)
	}
	if n.act != nil {
		start := w.pos
		if err := w.skip(n); err != nil {
			return err
		}
		if n.act.kind == actExtract {
			w.found, w.foundNode = w.src[start:w.pos], n
		} else if w.write {
			w.replace(n, start)
		}
		return nil
	}
	// Errors abort the whole walk, so depth is only restored on success.
	w.depth++
	if w.depth > maxDepth {
		return errDepth
	}
	switch n.kind {
	case kRecord:
		for _, f := range n.fields {
			if !f.deep {
				// Inline the common untouched leaves.
				switch f.kind {
				case kString, kBytes:
					if !w.skipLenFast() {
						if err := w.skipLenSlow(); err != nil {
							return err
						}
					}
					continue
				case kLong:
					p := varintEnd(w.src, w.pos)
					if p < 0 {
						return varintErr(p)
					}
					w.pos = p
					continue
				case kDouble, kFloat, kFixed:
					if f.size > len(w.src)-w.pos {
						return errShort
					}
					w.pos += f.size
					continue
				}
				if err := w.skip(f); err != nil {
					return err
				}
				continue
			}
			if a := f.act; a != nil && w.write && a.kind != actExtract && (f.kind == kString || f.kind == kBytes) {
				// Inline the common masked leaf: skip it as above,
				// then write its replacement.
				start := w.pos
				if !w.skipLenFast() {
					if err := w.skipLenSlow(); err != nil {
						return err
					}
				}
				w.replace(f, start)
				continue
			}
			if err := w.value(f); err != nil {
				return err
			}
		}
	case kUnion:
		i, err := w.long()
		if err != nil {
			return err
		}
		if i < 0 || i >= int64(len(n.branches)) {
			return errIndex
		}
		if err := w.value(n.branches[i]); err != nil {
			return err
		}
	case kArray, kMap:
		if err := w.blocks(n, true); err != nil {
			return err
		}
	default:
		if err := w.skip(n); err != nil {
			return err
		}
	}
	w.depth--
	return nil
}

// blocks walks the blocks of an array or map. When descending (deep) into a
// block that carries a byte size, the size would no longer be right after
// masking, so the block header is rewritten as a plain count. Sized blocks
// are always walked (and their size checked), so invalid input never passes.
func (w *walker) blocks(n *node, deep bool) error {
	for {
		hdr := w.pos
		count, err := w.long()
		if err != nil {
			return err
		}
		if count == 0 {
			return nil
		}
		end := -1
		if count < 0 {
			if count == -1<<63 {
				return errLength
			}
			count = -count
			size, err := w.long()
			if err != nil {
				return err
			}
			if size < 0 || size > int64(len(w.src)-w.pos) {
				return errLength
			}
			end = w.pos + int(size)
			if deep && w.write {
				w.dst = append(w.dst, w.src[w.mark:hdr]...)
				w.dst = appendLong(w.dst, count)
				w.mark = w.pos
			}
		}
		if n.elem.zero {
			// Zero-byte items cost a loop turn each and no input: bound
			// their total in the value, not per block (a 3-byte block
			// header can claim 65536 of them).
			if count > maxZeroItems-w.zeroItems { // compared before adding: a sum could wrap
				return errLength
			}
			w.zeroItems += count
		} else if count > int64(len(w.src)-w.pos) {
			return errLength
		}
		for ; count > 0; count-- {
			if n.kind == kMap {
				if _, err := w.lenPrefixed(); err != nil {
					return err
				}
			}
			if deep {
				err = w.value(n.elem)
			} else {
				err = w.skip(n.elem)
			}
			if err != nil {
				return err
			}
		}
		if end >= 0 && w.pos != end {
			return errLength
		}
	}
}

// skip advances over one value of n, validating it.
func (w *walker) skip(n *node) error {
	switch n.kind {
	case kNull:
		return nil
	case kBool:
		if w.pos >= len(w.src) {
			return errShort
		}
		if w.src[w.pos] > 1 {
			return fmt.Errorf("masking: bad avro boolean %d", w.src[w.pos])
		}
		w.pos++
		return nil
	case kInt:
		_, err := w.int()
		return err
	case kLong:
		_, err := w.long()
		return err
	case kEnum:
		i, err := w.int()
		if err == nil && (i < 0 || i >= int64(n.size)) {
			return errIndex
		}
		return err
	case kFloat, kDouble, kFixed:
		return w.advance(n.size)
	case kBytes, kString:
		_, err := w.lenPrefixed()
		return err
	}
	w.depth++
	if w.depth > maxDepth {
		return errDepth
	}
	switch n.kind {
	case kRecord:
		for _, f := range n.fields {
			// Inline the common leaves; recurse for the rest.
			switch f.kind {
			case kString, kBytes:
				if !w.skipLenFast() {
					if err := w.skipLenSlow(); err != nil {
						return err
					}
				}
				continue
			case kLong:
				p := varintEnd(w.src, w.pos)
				if p < 0 {
					return varintErr(p)
				}
				w.pos = p
				continue
			case kDouble, kFloat, kFixed:
				if f.size > len(w.src)-w.pos {
					return errShort
				}
				w.pos += f.size
				continue
			}
			if err := w.skip(f); err != nil {
				return err
			}
		}
	case kUnion:
		i, err := w.long()
		if err != nil {
			return err
		}
		if i < 0 || i >= int64(len(n.branches)) {
			return errIndex
		}
		if err := w.skip(n.branches[i]); err != nil {
			return err
		}
	case kArray, kMap:
		if err := w.blocks(n, false); err != nil {
			return err
		}
	default:
		return fmt.Errorf("masking: unknown node kind %d", n.kind)
	}
	w.depth--
	return nil
}

// replace writes the replacement of the value at src[start:pos].
func (w *walker) replace(n *node, start int) {
	w.dst = append(w.dst, w.src[w.mark:start]...)
	w.mark = w.pos
	a := n.act
	if a.kind == actConst {
		w.dst = append(w.dst, a.konst...)
		return
	}
	// String or bytes: skip the length prefix of the original.
	v := w.src[start:w.pos]
	for i := 0; i < len(v); i++ {
		if v[i] < 0x80 {
			v = v[i+1:]
			break
		}
	}
	switch a.kind {
	case actPartial:
		if len(a.maskChar) == 1 && isASCII(v) {
			// One pass: the output has the input's length.
			w.dst = appendLong(w.dst, int64(len(v)))
			w.dst = appendPartialASCII(w.dst, v, a.keepFirst, a.keepLast, a.maskChar[0])
			return
		}
		w.dst = appendLong(w.dst, int64(partialLen(v, a.keepFirst, a.keepLast, a.maskChar)))
		w.dst = appendPartial(w.dst, v, a.keepFirst, a.keepLast, a.maskChar)
	case actHash:
		w.dst = appendLong(w.dst, HashHexLen)
		w.dst = a.key.appendHex(w.dst, v)
	case actToken:
		w.dst = appendLong(w.dst, int64(TokenLen))
		w.dst = a.key.appendToken(w.dst, v)
	}
}
