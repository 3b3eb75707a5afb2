package masking

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// maxBatchContent bounds what one compressed batch may inflate to. A few
// kilobytes of zeros compress to a gigabyte, and the batch's record count
// and lengths can be checked only once it is inflated, so every codec
// stops at this bound and the batch fails (as corrupt) instead of the
// gateway allocating what a producer, or a broker, claims. Kafka's own
// batches are bounded by the topic's max.message.bytes (1 MiB by default).
const maxBatchContent = 128 << 20

var errInflate = fmt.Errorf("batch inflates past %d MiB", maxBatchContent>>20)

// decompress returns the records of a batch compressed with codec, in a
// pooled buffer (decBytes), at most maxBatchContent bytes of them. lz4
// frames of the common shape are read by decodeLz4Frame.
func decompress(raw []byte, codec int) ([]byte, error) {
	dst := decBytes.GetDecompressBytes(raw, 0)
	var out []byte
	var err error
	switch codec {
	case 1:
		out, err = gunzip(dst, raw)
	case 2:
		out, err = unsnappy(dst, raw)
	case codecLz4:
		var ok bool
		if out, ok = decodeLz4Frame(dst, raw); !ok {
			out, err = unlz4(out[:0], raw)
		}
	case 4:
		out, err = unzstd(dst, raw)
	default:
		out, err = dst, errors.New("unknown codec")
	}
	if err != nil {
		decBytes.PutDecompressBytes(out[:0])
		return nil, fmt.Errorf("%w: decompress: %v", ErrCorruptBatch, err)
	}
	return out, nil
}

// readBounded appends what r yields to dst, failing with errInflate past
// maxBatchContent: the buffer grows at most to the bound and a byte.
func readBounded(dst []byte, r io.Reader) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			if len(dst) > maxBatchContent {
				return dst, errInflate
			}
			dst = slices.Grow(dst, min(max(len(dst), 64<<10), maxBatchContent+1-len(dst)))
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst) > maxBatchContent {
			return dst, errInflate
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

type gzipReader struct {
	src bytes.Reader
	r   gzip.Reader
}

var gzipReaders sync.Pool

func gunzip(dst, src []byte) ([]byte, error) {
	g, _ := gzipReaders.Get().(*gzipReader)
	if g == nil {
		g = new(gzipReader)
	}
	defer gzipReaders.Put(g)
	g.src.Reset(src)
	if err := g.r.Reset(&g.src); err != nil {
		return dst, err
	}
	return readBounded(dst, &g.r)
}

type lz4Reader struct {
	src bytes.Reader
	r   *lz4.Reader
}

var lz4Readers = sync.Pool{New: func() any { return &lz4Reader{r: lz4.NewReader(nil)} }}

// unlz4 reads lz4 frames decodeLz4Frame does not (dependent blocks, a
// dictionary, several frames, small block sizes).
func unlz4(dst, src []byte) ([]byte, error) {
	l := lz4Readers.Get().(*lz4Reader)
	defer lz4Readers.Put(l)
	l.src.Reset(src)
	l.r.Reset(&l.src)
	return readBounded(dst, l.r)
}

type zstdReader struct {
	src bytes.Reader
	d   *zstd.Decoder
}

var zstdReaders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(maxBatchContent))
	if err != nil {
		panic(err) // static options; cannot fail
	}
	return &zstdReader{d: d}
}}

// unzstd streams the frames of src through readBounded (DecodeAll grows
// its output by appending, about five times the bound in copies).
func unzstd(dst, src []byte) ([]byte, error) {
	z := zstdReaders.Get().(*zstdReader)
	defer zstdReaders.Put(z)
	z.src.Reset(src)
	if err := z.d.Reset(&z.src); err != nil {
		return dst, err
	}
	out, err := readBounded(dst, z.d)
	if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		err = errInflate
	}
	return out, err
}

// xerialMagic starts snappy payloads framed as the Java client writes
// them: the magic, a version and a compatible version (4 bytes each), then
// blocks, each a 4-byte big-endian length and a raw snappy block.
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

func unsnappy(dst, src []byte) ([]byte, error) {
	if len(src) < 16 || !bytes.HasPrefix(src, xerialMagic) {
		return snappyBlock(dst, src)
	}
	for p := 16; p < len(src); {
		if len(src)-p < 4 {
			return dst, errors.New("snappy: truncated block length")
		}
		n := int(binary.BigEndian.Uint32(src[p:]))
		p += 4
		if n > len(src)-p {
			return dst, errors.New("snappy: block past the payload")
		}
		var err error
		if dst, err = snappyBlock(dst, src[p:p+n]); err != nil {
			return dst, err
		}
		p += n
	}
	return dst, nil
}

// snappyBlock appends the raw snappy block b to dst, its decoded length
// (from its header) checked against what is left of the bound first.
func snappyBlock(dst, b []byte) ([]byte, error) {
	l, err := s2.DecodedLen(b)
	if err != nil {
		return dst, err
	}
	if l > maxBatchContent-len(dst) {
		return dst, errInflate
	}
	dst = slices.Grow(dst, l)
	out, err := s2.Decode(dst[len(dst):len(dst)+l], b)
	if err != nil {
		return dst, err
	}
	return dst[:len(dst)+len(out)], nil
}
