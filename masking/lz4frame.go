package masking

import (
	"encoding/binary"
	"errors"

	"github.com/pierrec/lz4/v4"
)

// Reading an lz4 batch's frame without its content checksum.
//
// Kafka's lz4 payload is one LZ4 frame. Its optional xxHash32 content
// checksum (franz-go's producer writes one, Java's does not) guards bytes
// that the batch's CRC-32C, checked first, already covers; verifying it
// cost a seventh of a masked lz4 rewrite. So the common frame (one frame,
// independent blocks, no dictionary) is decoded block by block here, and
// anything else goes to the standard reader.

const (
	lz4Magic      = 0x184d2204
	maxLz4Content = 128 << 20 // a batch that inflates past this is refused
)

var errLz4Frame = errors.New("masking: lz4 frame")

// decodeLz4Frame appends the content of the lz4 frame src to dst. ok is
// false, with dst as it was, when src is not a frame this reads (or does
// not decode): the caller then uses the standard reader, which also
// reports what is wrong.
func decodeLz4Frame(dst, src []byte) (out []byte, ok bool) {
	if len(src) < 7 || binary.LittleEndian.Uint32(src) != lz4Magic {
		return dst, false
	}
	flg, bd := src[4], src[5]
	const (
		flgVersion      = 0xc0
		flgIndependent  = 0x20
		flgBlockSum     = 0x10
		flgContentSize  = 0x08
		flgContentSum   = 0x04
		flgReservedDict = 0x03 // reserved bit and dictionary id
	)
	if flg&flgVersion != 0x40 || flg&flgIndependent == 0 || flg&flgReservedDict != 0 || bd&0x8f != 0 {
		return dst, false
	}
	code := int(bd>>4) & 7
	if code < 4 {
		return dst, false
	}
	maxBlock := 1 << (2*code + 8) // 64 KiB, 256 KiB, 1 MiB, 4 MiB
	p := 6
	if flg&flgContentSize != 0 {
		p += 8
	}
	p++ // header checksum (the batch CRC covers it)
	start := len(dst)
	for {
		if len(src)-p < 4 {
			return dst[:start], false
		}
		size := binary.LittleEndian.Uint32(src[p:])
		p += 4
		if size == 0 { // end mark
			break
		}
		n := int(size & 0x7fffffff)
		if n > maxBlock || n > len(src)-p || len(dst)-start+maxBlock > maxLz4Content {
			return dst[:start], false
		}
		if size&0x80000000 != 0 { // stored uncompressed
			dst = append(dst, src[p:p+n]...)
		} else {
			if cap(dst)-len(dst) < maxBlock {
				dst = append(dst[:cap(dst)], make([]byte, maxBlock)...)[:len(dst)]
			}
			k, err := lz4.UncompressBlock(src[p:p+n], dst[len(dst):len(dst)+maxBlock])
			if err != nil {
				return dst[:start], false
			}
			dst = dst[:len(dst)+k]
		}
		p += n
		if flg&flgBlockSum != 0 {
			p += 4
		}
	}
	if flg&flgContentSum != 0 {
		p += 4
	}
	if p != len(src) { // concatenated frames, or bytes after the frame
		return dst[:start], false
	}
	return dst, true
}
