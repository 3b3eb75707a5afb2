package masking

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"runtime"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/schema"
)

// bombBatch is a one-record magic-2 batch (valid CRC) whose payload,
// compressed with codec, inflates to size zero bytes.
func bombBatch(t *testing.T, codec int, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zeros := make([]byte, 1<<20)
	switch codec {
	case 1:
		w, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		for i := 0; i < size>>20; i++ {
			w.Write(zeros)
		}
		w.Close()
	case 3:
		w := lz4.NewWriter(&buf)
		if err := w.Apply(lz4.ChecksumOption(false), lz4.BlockSizeOption(lz4.Block4Mb)); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < size>>20; i++ {
			w.Write(zeros)
		}
		w.Close()
	case 4:
		w, _ := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
		for i := 0; i < size>>20; i++ {
			w.Write(zeros)
		}
		w.Close()
	}
	b := kmsg.RecordBatch{Magic: 2, Attributes: int16(codec), NumRecords: 1, Records: buf.Bytes(),
		FirstTimestamp: 1, MaxTimestamp: 1, ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1}
	b.Length = int32(49 + buf.Len())
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[offCRC:], crc32.Checksum(out[offAttributes:], crc32c))
	return out
}

// A batch of a few KB must not make the gateway allocate hundreds of MB:
// lz4frame.go refuses content past maxBatchContent (128 MiB), but that refusal
// falls back to franz-go's reader, and gzip/snappy/zstd use franz-go's
// DefaultDecompressor, whose bound is math.MaxInt32 (2 GiB).
func TestDecompressionBombBounded(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	for _, codec := range []int{1, 3, 4} {
		t.Run(codecNames[codec], func(t *testing.T) {
			in := bombBatch(t, codec, 512<<20)
			m := newMasker(t, staticSource{9: s}, TopicConfig{}, &filter.Obligations{Mask: demoRules})
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := RewriteBatches(nil, in, m)
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("input batch %d bytes, err %v, allocated %d MiB", len(in), err, alloc>>20)
			if !errors.Is(err, ErrCorruptBatch) {
				t.Fatalf("a batch inflating to 512 MiB rewrote: %v", err)
			}
			// What a decoder allocates while its output grows to the
			// bound (several copies), not what the batch claims.
			if alloc > 4*maxBatchContent {
				t.Fatalf("a %d-byte batch made the rewrite allocate %d MiB (bound %d MiB)", len(in), alloc>>20, maxBatchContent>>20)
			}
		})
	}
}

// A snappy block's header claims its decoded length: one claiming more
// than the bound is refused before anything is allocated for it, raw or in
// a xerial frame.
func TestSnappyClaimBounded(t *testing.T) {
	claim := binary.AppendUvarint(nil, 1<<30)
	claim = append(claim, 0, 0, 0, 0)
	if _, err := unsnappy(nil, claim); !errors.Is(err, errInflate) {
		t.Fatalf("raw block claiming 1 GiB: %v", err)
	}
	x := append(append([]byte{}, xerialMagic...), 0, 0, 0, 1, 0, 0, 0, 1)
	x = binary.BigEndian.AppendUint32(x, uint32(len(claim)))
	x = append(x, claim...)
	if _, err := unsnappy(nil, x); !errors.Is(err, errInflate) {
		t.Fatalf("xerial block claiming 1 GiB: %v", err)
	}
}
