package masking

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/pierrec/lz4/v4"
)

// TestAppendLz4Frame: contents of the sizes and shapes that matter (empty,
// under a block, at and around the 64 KiB block size, several blocks,
// nothing to compress) frame as Kafka's producers frame them and read back
// with the standard reader, with the batch reader, and block by block on
// their own (independent blocks); what does not compress is stored, and
// what does comes out smaller.
func TestAppendLz4Frame(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 150<<10)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	text := bytes.Repeat([]byte("sluice masks records per grant; "), 7000)
	for name, in := range map[string][]byte{
		"empty": {}, "one byte": {7}, "short": text[:40], "64KiB-1": text[:lz4Block-1], "64KiB": text[:lz4Block],
		"64KiB+1": text[:lz4Block+1], "text": text, "random": random, "zeros": make([]byte, 300<<10),
	} {
		frame, err := appendLz4Frame([]byte("before"), in)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(frame[:6]) != "before" {
			t.Fatalf("%s: dst overwritten", name)
		}
		frame = frame[6:]
		if len(frame) < 11 || binary.LittleEndian.Uint32(frame) != lz4Magic || frame[4] != 0x60 || frame[5] != 0x40 {
			t.Fatalf("%s: header % x", name, frame[:min(len(frame), 7)])
		}
		got, err := io.ReadAll(lz4.NewReader(bytes.NewReader(frame)))
		if err != nil || !bytes.Equal(got, in) {
			t.Fatalf("%s: standard reader: %d of %d bytes, err %v", name, len(got), len(in), err)
		}
		if got, ok := decodeLz4Frame(nil, frame); !ok || !bytes.Equal(got, in) {
			t.Fatalf("%s: batch reader: ok %v", name, ok)
		}
		stored, p := 0, 7
		for off := 0; ; off += lz4Block {
			size := binary.LittleEndian.Uint32(frame[p:])
			p += 4
			if size == 0 {
				if off < len(in) || p != len(frame) {
					t.Fatalf("%s: end mark after %d of %d bytes", name, off, len(in))
				}
				break
			}
			want := in[off:min(off+lz4Block, len(in))]
			n := int(size &^ lz4Stored)
			b := frame[p : p+n]
			p += n
			if size&lz4Stored != 0 {
				stored++
				if !bytes.Equal(b, want) {
					t.Fatalf("%s: stored block at %d differs", name, off)
				}
				continue
			}
			out := make([]byte, lz4Block)
			if k, err := lz4.UncompressBlock(b, out); err != nil || !bytes.Equal(out[:k], want) {
				t.Fatalf("%s: block at %d alone: %d bytes, err %v", name, off, k, err)
			}
		}
		switch name {
		case "random":
			if stored != 3 {
				t.Errorf("random: %d of 3 blocks stored", stored)
			}
		case "64KiB+1": // its second block, one byte, does not compress
			if stored != 1 || len(frame)*4 > len(in) {
				t.Errorf("%s: %d bytes framed in %d, %d blocks stored", name, len(in), len(frame), stored)
			}
		case "text", "zeros", "64KiB":
			if stored > 0 || len(frame)*4 > len(in) {
				t.Errorf("%s: %d bytes framed in %d, %d blocks stored", name, len(in), len(frame), stored)
			}
		}
	}
}

// FuzzAppendLz4Frame: any content frames and reads back.
func FuzzAppendLz4Frame(f *testing.F) {
	f.Add(bytes.Repeat([]byte("sluice masks records "), 40))
	f.Add([]byte{0, 1, 2, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		frame, err := appendLz4Frame(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(lz4.NewReader(bytes.NewReader(frame)))
		if err != nil || !bytes.Equal(got, in) {
			t.Fatalf("%d bytes: %d back, err %v", len(in), len(got), err)
		}
	})
}
