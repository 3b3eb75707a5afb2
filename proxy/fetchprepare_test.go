package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math/rand"
	"testing"
	"unsafe"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// trickle reads at most n bytes per Read, and counts what it gave.
type trickle struct {
	r    io.Reader
	n    int
	read int
}

func (t *trickle) Read(p []byte) (int, error) {
	if len(p) > t.n {
		p = p[:t.n]
	}
	k, err := t.r.Read(p)
	t.read += k
	return k, err
}

// offsetIn is where sub starts in b (sub a part of b's memory).
func offsetIn(b, sub []byte) int {
	return int(uintptr(unsafe.Pointer(unsafe.SliceData(sub))) - uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

type preparedPart struct {
	topic     string
	id        [16]byte
	partition int32
	records   []byte
	readAt    int // bytes of the body read when it was handed over
}

// recordingPreparer records FetchPartition calls.
type recordingPreparer struct {
	src   *trickle
	parts []preparedPart
	reads int
}

func (r *recordingPreparer) PrepareFetch(*filter.Exchange) bool { return true }
func (r *recordingPreparer) FetchPartition(_ context.Context, _ *filter.Exchange, topic string, id [16]byte, partition int32, records []byte) {
	r.parts = append(r.parts, preparedPart{topic, id, partition, records, r.src.read})
}
func (r *recordingPreparer) FetchRead(*filter.Exchange) { r.reads++ }

// TestReadFetchPrepared: for every Fetch version the scan follows, a
// response read in small pieces reads whole and byte for byte, hands over
// every partition with records, in order, as the very bytes the decode
// then finds (the same memory), and hands each over before the bytes after
// it are read, not once the response is in.
func TestReadFetchPrepared(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	for v := int16(fetchPrepareMinVersion); v <= fetchStreamMaxVersion; v++ {
		for round := range 20 {
			resp := randFetchResponse(rng, v, "kafka")
			frame := fetchFrame(resp)
			b := make([]byte, len(frame))
			copy(b, frame[:8])
			src := &trickle{r: bytes.NewReader(append(append([]byte{}, frame[8:]...), "next"...)), n: 1 + rng.Intn(700)}
			rp := &recordingPreparer{src: src}
			x := &filter.Exchange{Key: 1, Version: v}
			if err := readFetchPrepared(context.Background(), src, b, x, []filter.FetchPreparer{rp}); err != nil {
				t.Fatalf("v%d round %d: %v", v, round, err)
			}
			if !bytes.Equal(b, frame) || src.read != len(frame)-8 {
				t.Fatalf("v%d: read %d bytes of %d, equal %v", v, src.read, len(frame)-8, bytes.Equal(b, frame))
			}
			got := decodeFetch(t, b, v)
			var want []preparedPart
			for _, tp := range got.Topics {
				for _, p := range tp.Partitions {
					if len(p.RecordBatches) > 0 {
						want = append(want, preparedPart{topic: tp.Topic, id: tp.TopicID, partition: p.Partition, records: p.RecordBatches})
					}
				}
			}
			if v >= 13 {
				for i := range want {
					want[i].topic = ""
				}
			}
			if len(rp.parts) != len(want) {
				t.Fatalf("v%d: %d partitions handed over, want %d", v, len(rp.parts), len(want))
			}
			for i, g := range rp.parts {
				w := want[i]
				if g.topic != w.topic || g.id != w.id || g.partition != w.partition ||
					unsafe.SliceData(g.records) != unsafe.SliceData(w.records) || len(g.records) != len(w.records) {
					t.Fatalf("v%d partition %d: got %s/%x/%d (%d bytes), want %s/%x/%d (%d bytes) at the same place",
						v, i, g.topic, g.id[:2], g.partition, len(g.records), w.topic, w.id[:2], w.partition, len(w.records))
				}
				// Handed over no later than a read after its last
				// byte: the records end at this offset of the body.
				end := offsetIn(b, g.records) - 8 + len(g.records)
				if g.readAt > end+src.n {
					t.Fatalf("v%d partition %d: handed over at %d bytes read, its records end at %d", v, i, g.readAt, end)
				}
			}
		}
	}
}

// TestReadFetchPreparedShort: a response that ends early fails the read,
// having handed over only partitions that were complete.
func TestReadFetchPreparedShort(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	resp := randFetchResponse(rng, 16, "kafka")
	frame := fetchFrame(resp)
	b := make([]byte, len(frame))
	copy(b, frame[:8])
	src := &trickle{r: bytes.NewReader(frame[8 : len(frame)/2]), n: 1000}
	rp := &recordingPreparer{src: src}
	err := readFetchPrepared(context.Background(), src, b, &filter.Exchange{Key: 1, Version: 16}, []filter.FetchPreparer{rp})
	if err == nil {
		t.Fatal("a short response read without error")
	}
	for _, p := range rp.parts {
		if end := offsetIn(b, p.records) + len(p.records); end > len(frame)/2 {
			t.Fatalf("partition %d handed over with bytes never read", p.partition)
		}
	}
}

// FuzzFetchPrepare: any bytes as an upstream Fetch response read whole and
// unchanged, and every partition handed over lies inside the frame.
func FuzzFetchPrepare(f *testing.F) {
	rng := rand.New(rand.NewSource(3))
	for _, v := range []int16{4, 11, 12, 13, 16, fetchStreamMaxVersion} {
		resp := randFetchResponse(rng, v, "kafka")
		f.Add(v, fetchFrame(resp)[8:])
	}
	f.Fuzz(func(t *testing.T, v int16, body []byte) {
		if v < fetchPrepareMinVersion || v > fetchStreamMaxVersion {
			return
		}
		frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)+4))
		frame = binary.BigEndian.AppendUint32(frame, 42)
		frame = append(frame, body...)
		b := make([]byte, len(frame))
		copy(b, frame[:8])
		src := &trickle{r: bytes.NewReader(append(append([]byte{}, body...), 'T')), n: 333}
		rp := &recordingPreparer{src: src}
		if err := readFetchPrepared(context.Background(), src, b, &filter.Exchange{Key: 1, Version: v}, []filter.FetchPreparer{rp}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, frame) || src.read != len(body) {
			t.Fatalf("read %d of %d bytes", src.read, len(body))
		}
		for _, p := range rp.parts {
			start := offsetIn(b, p.records)
			if start < 8 || start+len(p.records) > len(b) || cap(p.records) != len(p.records) {
				t.Fatalf("partition records at %d+%d outside the %d-byte frame", start, len(p.records), len(b))
			}
		}
	})
}
