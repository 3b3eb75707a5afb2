package proxy

import (
	"bytes"
	"math/rand"
	"testing"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestFetchFrameVec: for random Fetch responses of every version the vector
// covers, the buffers written make exactly the frame kmsg encodes, large
// partitions' record batches are written from where they are (not copied),
// the buffer the proxy sizes for the structure is large enough and smaller
// than the frame, and the response is left as it was.
func TestFetchFrameVec(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	vectored := 0
	for v := int16(0); v <= fetchStreamMaxVersion; v++ {
		for i := 0; i < 60; i++ {
			resp := randFetchResponse(rng, v, "kafka")
			want := appendResponseFrame(nil, 42, 1, v, resp)
			large := 0
			for _, tp := range resp.Topics {
				for _, p := range tp.Partitions {
					if len(p.RecordBatches) >= vecMinRecords {
						large++
					}
				}
			}
			dst := []byte("before")
			enc, bufs, ok := fetchFrameVec(dst, 42, v, resp)
			if string(enc[:len(dst)]) != "before" {
				t.Fatalf("v%d: what dst held was overwritten", v)
			}
			if !ok {
				if large > 0 && v >= fetchPrepareMinVersion {
					t.Fatalf("v%d: %d large partitions, not vectored", v, large)
				}
				if len(enc) != len(dst) {
					t.Fatalf("v%d: not vectored, but %d bytes appended", v, len(enc)-len(dst))
				}
				continue
			}
			vectored++
			// The buffer the proxy sizes for it holds the structure
			// without growing.
			if n, size := len(enc)-len(dst), vecEncodeSize(resp, len(want)+256); n > size || size >= len(want) && len(want) > 8<<10 {
				t.Fatalf("v%d: structure of %d bytes, frame of %d, buffer sized %d", v, n, len(want), size)
			}
			if large == 0 || v < fetchPrepareMinVersion {
				t.Fatalf("v%d: vectored with %d large partitions", v, large)
			}
			inPlace := 0
			for _, b := range bufs {
				for _, tp := range resp.Topics {
					for _, p := range tp.Partitions {
						if len(b) > 0 && len(p.RecordBatches) == len(b) && unsafe.SliceData(b) == unsafe.SliceData(p.RecordBatches) {
							inPlace++
						}
					}
				}
			}
			if inPlace != large {
				t.Fatalf("v%d: %d of %d large partitions written in place", v, inPlace, large)
			}
			var got bytes.Buffer
			if _, err := bufs.WriteTo(&got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("v%d: vectored frame (%d bytes) differs from the encoding (%d)", v, got.Len(), len(want))
			}
			if again := appendResponseFrame(nil, 42, 1, v, resp); !bytes.Equal(again, want) {
				t.Fatalf("v%d: the response was changed", v)
			}
		}
	}
	if vectored < 50 {
		t.Fatalf("only %d responses vectored", vectored)
	}
}

// TestFetchFrameVecTCP writes a vectored frame to a TCP connection (writev)
// and reads the frame kmsg encodes.
func TestFetchFrameVecTCP(t *testing.T) {
	rng := rand.New(rand.NewSource(12))
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(16)
	for ti := 0; ti < 2; ti++ {
		tp := kmsg.NewFetchResponseTopic()
		tp.TopicID[0] = byte(ti + 1)
		for pi := 0; pi < 3; pi++ {
			p := kmsg.NewFetchResponseTopicPartition()
			p.Partition = int32(pi)
			p.RecordBatches = make([]byte, []int{1 << 20, 100, 300 << 10}[pi])
			rng.Read(p.RecordBatches)
			tp.Partitions = append(tp.Partitions, p)
		}
		resp.Topics = append(resp.Topics, tp)
	}
	want := appendResponseFrame(nil, 7, 1, 16, resp)
	_, bufs, ok := fetchFrameVec(nil, 7, 16, resp)
	if !ok || len(bufs) != 3*4+1 {
		t.Fatalf("vectored %v in %d buffers", ok, len(bufs))
	}
	w, r := tcpPair(t)
	got := readAsync(t, r, len(want))
	if n, err := bufs.WriteTo(w); err != nil || n != int64(len(want)) {
		t.Fatalf("wrote %d of %d bytes: %v", n, len(want), err)
	}
	if !bytes.Equal(<-got, want) {
		t.Fatal("the frame read differs from the encoding")
	}
}

// FuzzFetchFrameVec decodes arbitrary Fetch response bodies, makes some of
// their partitions large, and checks that the vectored frame is exactly
// the frame kmsg encodes.
func FuzzFetchFrameVec(f *testing.F) {
	rng := rand.New(rand.NewSource(13))
	for v := int16(fetchPrepareMinVersion); v <= fetchStreamMaxVersion; v += 3 {
		resp := randFetchResponse(rng, v, "kafka")
		for ti := range resp.Topics { // small seeds: the fuzzer grows partitions itself
			for pi := range resp.Topics[ti].Partitions {
				p := &resp.Topics[ti].Partitions[pi]
				p.RecordBatches = p.RecordBatches[:min(len(p.RecordBatches), 16)]
				p.UnknownTags = kmsg.Tags{}
			}
		}
		f.Add(int8(v), resp.AppendTo(nil), uint8(0x55))
	}
	f.Fuzz(func(t *testing.T, version int8, body []byte, grow uint8) {
		v := int16(version)
		if v < 0 || v > fetchStreamMaxVersion {
			return
		}
		resp := kmsg.NewPtrFetchResponse()
		resp.SetVersion(v)
		if resp.ReadFrom(body) != nil {
			return
		}
		i := 0
		for ti := range resp.Topics {
			for pi := range resp.Topics[ti].Partitions {
				if grow&(1<<(i%8)) != 0 {
					p := &resp.Topics[ti].Partitions[pi]
					p.RecordBatches = append(p.RecordBatches, make([]byte, vecMinRecords)...)
				}
				i++
			}
		}
		want := appendResponseFrame(nil, 3, 1, v, resp)
		_, bufs, ok := fetchFrameVec(nil, 3, v, resp)
		if !ok {
			return
		}
		var got bytes.Buffer
		_, _ = bufs.WriteTo(&got)
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("v%d: vectored frame (%d bytes) differs from the encoding (%d)", v, got.Len(), len(want))
		}
		if again := appendResponseFrame(nil, 3, 1, v, resp); !bytes.Equal(again, want) {
			t.Fatalf("v%d: the response was changed", v)
		}
	})
}
