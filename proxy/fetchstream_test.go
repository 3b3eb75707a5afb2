package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// advHost is an advertiser whose host has a chosen length, so that tests
// reach both the padded and the dropped NodeEndpoints cases.
type advHost string

func (a advHost) advertise(id int32) (string, int32) { return string(a), 19000 + id }

// randFetchResponse builds a Fetch response of version v exercising every
// field the streaming relay walks.
func randFetchResponse(rng *rand.Rand, v int16, upstreamHost string) *kmsg.FetchResponse {
	r := kmsg.NewPtrFetchResponse()
	r.SetVersion(v)
	r.ThrottleMillis = rng.Int31n(100)
	r.ErrorCode = int16(rng.Intn(2))
	r.SessionID = rng.Int31()
	flex := v >= 12
	for ti := rng.Intn(4); ti > 0; ti-- {
		t := kmsg.NewFetchResponseTopic()
		t.Topic = fmt.Sprintf("topic-%d-%s", ti, strings.Repeat("x", rng.Intn(40)))
		rng.Read(t.TopicID[:])
		if flex && rng.Intn(3) == 0 {
			t.UnknownTags.Set(uint32(rng.Intn(5)), []byte("topic-tag"))
		}
		for pi := rng.Intn(5); pi > 0; pi-- {
			p := kmsg.NewFetchResponseTopicPartition()
			p.Partition = int32(pi)
			p.ErrorCode = int16(rng.Intn(3))
			p.HighWatermark, p.LastStableOffset, p.LogStartOffset = rng.Int63(), rng.Int63(), rng.Int63()
			for ai := rng.Intn(3); ai > 0; ai-- {
				a := kmsg.NewFetchResponseTopicPartitionAbortedTransaction()
				a.ProducerID, a.FirstOffset = rng.Int63(), rng.Int63()
				if flex && rng.Intn(2) == 0 {
					a.UnknownTags.Set(3, []byte{1, 2})
				}
				p.AbortedTransactions = append(p.AbortedTransactions, a)
			}
			p.PreferredReadReplica = rng.Int31n(3) - 1
			switch rng.Intn(4) {
			case 0:
				p.RecordBatches = nil
			case 1:
				p.RecordBatches = make([]byte, rng.Intn(100))
			default: // larger than the relay's small-copy threshold
				p.RecordBatches = make([]byte, 4<<10+rng.Intn(200<<10))
			}
			rng.Read(p.RecordBatches)
			if flex {
				if rng.Intn(2) == 0 {
					p.CurrentLeader.LeaderID, p.CurrentLeader.LeaderEpoch = 2, 9
				}
				if rng.Intn(3) == 0 {
					p.DivergingEpoch.Epoch, p.DivergingEpoch.EndOffset = 4, 77
				}
				if rng.Intn(4) == 0 {
					p.UnknownTags.Set(7, make([]byte, rng.Intn(6<<10)))
				}
			}
			t.Partitions = append(t.Partitions, p)
		}
		r.Topics = append(r.Topics, t)
	}
	if flex {
		for bi := rng.Intn(4); bi > 0; bi-- {
			b := kmsg.NewFetchResponseBroker()
			b.NodeID, b.Host, b.Port = int32(bi), fmt.Sprintf("%s-%d", upstreamHost, bi), 9092
			if rng.Intn(2) == 0 {
				rack := "rack-a"
				b.Rack = &rack
			}
			r.Brokers = append(r.Brokers, b)
		}
		if rng.Intn(3) == 0 {
			r.UnknownTags.Set(uint32(1+rng.Intn(3)), []byte("response-tag"))
		}
	}
	return r
}

// fetchFrame encodes resp as an upstream response frame: size, correlation
// id, the header's tag byte on flexible versions, body.
func fetchFrame(resp *kmsg.FetchResponse) []byte {
	return appendResponseFrame(nil, 42, 1, resp.Version, resp)
}

// relay runs the streaming relay over frame followed by trailer, and
// returns what it wrote and what it left unread.
func relay(t testing.TB, frame, trailer []byte, version int16, adv advertiser) ([]byte, []byte, error) {
	return relayWith(t, frame, trailer, version, adv, nil)
}

func relayWith(t testing.TB, frame, trailer []byte, version int16, adv advertiser, hooks *fetchHooks) ([]byte, []byte, error) {
	t.Helper()
	src := bytes.NewReader(append(append([]byte{}, frame[8:]...), trailer...))
	var dst bytes.Buffer
	size := int32(binary.BigEndian.Uint32(frame))
	err := relayFetchResponse(&dst, src, frame[:8], size, version, func(r *kmsg.FetchResponse) bool {
		return rewriteAddresses(r, adv, nil)
	}, hooks)
	rest := make([]byte, src.Len())
	_, _ = src.Read(rest)
	return dst.Bytes(), rest, err
}

func decodeFetch(t testing.TB, frame []byte, version int16) *kmsg.FetchResponse {
	t.Helper()
	off, err := responseBodyOffset(frame[4:], 1, version)
	if err != nil {
		t.Fatal(err)
	}
	r := kmsg.NewPtrFetchResponse()
	r.SetVersion(version)
	if err := r.ReadFrom(frame[4+off:]); err != nil {
		t.Fatalf("relayed v%d response does not decode: %v", version, err)
	}
	return r
}

// TestRelayFetch streams random responses of every version and checks that
// the client gets the response the decoding path would have sent: the
// same bytes when nothing is rewritten, the same size always, every
// endpoint a gateway address, and every other field intact.
func TestRelayFetch(t *testing.T) {
	if kmsg.NewPtrFetchResponse().MaxVersion() != fetchStreamMaxVersion {
		t.Fatalf("kmsg knows Fetch v%d; check the v%d+ layout in fetchstream.go and raise fetchStreamMaxVersion",
			kmsg.NewPtrFetchResponse().MaxVersion(), fetchStreamMaxVersion+1)
	}
	rng := rand.New(rand.NewSource(1))
	trailer := []byte("next-response")
	advs := []advHost{"gw", "gateway.example.com", advHost(strings.Repeat("g", 300))}
	padded, dropped := 0, 0
	for v := int16(4); v <= fetchStreamMaxVersion; v++ {
		for i := 0; i < 60; i++ {
			adv := advs[i%len(advs)]
			in := randFetchResponse(rng, v, "kafka-broker.internal")
			frame := fetchFrame(in)
			out, rest, err := relay(t, frame, trailer, v, adv)
			if err != nil {
				t.Fatalf("v%d: %v", v, err)
			}
			if !bytes.Equal(rest, trailer) {
				t.Fatalf("v%d: relay read %d bytes past the response", v, len(trailer)-len(rest))
			}
			if len(out) != len(frame) || !bytes.Equal(out[:4], frame[:4]) {
				t.Fatalf("v%d: relayed %d bytes of a %d-byte frame", v, len(out), len(frame))
			}
			if len(in.Brokers) == 0 {
				if !bytes.Equal(out, frame) {
					t.Fatalf("v%d: response without endpoints changed", v)
				}
				continue
			}
			got := decodeFetch(t, out, v)
			want := decodeFetch(t, frame, v)
			rewriteAddresses(want, adv, nil)
			if len(got.Brokers) == 0 {
				dropped++
				want.Brokers = nil
			} else {
				padded++
			}
			for _, b := range got.Brokers {
				if b.Host != string(adv) {
					t.Fatalf("v%d: endpoint %s:%d relayed", v, b.Host, b.Port)
				}
			}
			var tags kmsg.Tags
			got.UnknownTags.Each(func(k uint32, val []byte) {
				if k < fillerTag {
					tags.Set(k, val)
				} else if !bytes.Equal(val, make([]byte, len(val))) {
					t.Fatalf("v%d: padding field %d is not zeros", v, k)
				}
			})
			got.UnknownTags = tags
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("v%d: relayed response differs from the rewritten one:\n got %+v\nwant %+v", v, got, want)
			}
		}
	}
	if padded == 0 || dropped == 0 {
		t.Fatalf("padded %d, dropped %d: both paths must be exercised", padded, dropped)
	}
}

// TestRelayFetchMalformed cuts and corrupts valid responses: the relay
// returns an error or relays exactly the frame, never reads past it, and
// never panics.
func TestRelayFetchMalformed(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for v := int16(4); v <= fetchStreamMaxVersion; v++ {
		for i := 0; i < 40; i++ {
			frame := fetchFrame(randFetchResponse(rng, v, "kafka"))
			bad := append([]byte{}, frame...)
			if len(bad) > 12 && i%2 == 0 {
				// A shorter declared size: the structure runs past it.
				cut := 8 + rng.Intn(len(bad)-8)
				bad = bad[:cut]
				binary.BigEndian.PutUint32(bad, uint32(cut-4))
			} else {
				for j := 0; j < 4; j++ {
					bad[8+rng.Intn(len(bad)-8)] = byte(rng.Intn(256))
				}
			}
			out, rest, err := relay(t, bad, []byte("trailer"), v, advHost("gw"))
			if string(rest) != "trailer" && err == nil {
				t.Fatalf("v%d: relay read past the frame without an error", v)
			}
			if err == nil && len(out) != len(bad) {
				t.Fatalf("v%d: relayed %d bytes of a %d-byte frame", v, len(out), len(bad))
			}
		}
	}
}

// TestEncodeFetchTagsEverySize pads a section to every size from its own
// length up, including the sizes where one padding field cannot land; a
// one-byte gap cannot be filled.
func TestEncodeFetchTagsEverySize(t *testing.T) {
	r := kmsg.NewPtrFetchResponse()
	r.SetVersion(16)
	b := kmsg.NewFetchResponseBroker()
	b.NodeID, b.Host, b.Port = 1, "gw", 9092
	r.Brokers = append(r.Brokers, b)
	r.UnknownTags.Set(5, []byte("x"))
	base := len(r.AppendTo(nil)) - 11
	for size := base; size < base+20000; size++ {
		out, ok := encodeFetchTags(r, size)
		if size == base+1 {
			if ok {
				t.Fatal("a one-byte gap was filled")
			}
			continue
		}
		if !ok || len(out) != size {
			t.Fatalf("size %d: ok=%v len=%d", size, ok, len(out))
		}
		if size%997 != 0 && size > base+300 {
			continue
		}
		body := append(make([]byte, 10), 1)
		got := kmsg.NewPtrFetchResponse()
		got.SetVersion(16)
		if err := got.ReadFrom(append(body, out...)); err != nil || len(got.Brokers) != 1 || got.Brokers[0].Host != "gw" {
			t.Fatalf("size %d: decodes to %+v (%v)", size, got.Brokers, err)
		}
	}
	if _, ok := encodeFetchTags(r, base-1); ok {
		t.Fatal("a section was squeezed below its own size")
	}
}

// FuzzFetchStream: any bytes as an upstream Fetch response never panic the
// relay, never make it read past the frame, and whatever it relays that
// decodes carries gateway addresses only.
func FuzzFetchStream(f *testing.F) {
	rng := rand.New(rand.NewSource(3))
	for _, v := range []int16{4, 11, 12, 13, 16, fetchStreamMaxVersion} {
		resp := randFetchResponse(rng, v, "kafka")
		for i := range resp.Topics {
			for j := range resp.Topics[i].Partitions {
				resp.Topics[i].Partitions[j].RecordBatches = []byte("records")
			}
		}
		f.Add(v, fetchFrame(resp)[8:])
	}
	f.Fuzz(func(t *testing.T, v int16, body []byte) {
		if v < 0 || v > fetchStreamMaxVersion {
			return
		}
		frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)+4))
		frame = binary.BigEndian.AppendUint32(frame, 42)
		frame = append(frame, body...)
		out, rest, err := relay(t, frame, []byte("T"), v, advHost("gw"))
		if err != nil {
			return
		}
		if string(rest) != "T" || len(out) != len(frame) {
			t.Fatalf("relayed %d of %d bytes, left %q", len(out), len(frame), rest)
		}
		off, err := responseBodyOffset(out[4:], 1, v)
		if err != nil {
			return
		}
		r := kmsg.NewPtrFetchResponse()
		r.SetVersion(v)
		if r.ReadFrom(out[4+off:]) != nil {
			return
		}
		for _, b := range r.Brokers {
			if b.Host != "gw" {
				t.Fatalf("endpoint %s:%d relayed", b.Host, b.Port)
			}
		}
		if v < 12 {
			return
		}
		// Through hooks that withhold every other topic: nothing of a
		// withheld topic's records reaches the client.
		withhold := func(name string, id [16]byte) bool { return (len(name)+int(id[0]))%2 == 0 }
		hooks := &fetchHooks{delivered: map[string]filter.Stats{}, count: true, topic: func(name string, id [16]byte) (int16, string) {
			if withhold(name, id) {
				return 29, name
			}
			return 0, name
		}}
		out, rest, err = relayWith(t, frame, []byte("T"), v, advHost("gw"), hooks)
		if err != nil {
			return
		}
		if string(rest) != "T" || len(out) != len(frame) {
			t.Fatalf("withholding: relayed %d of %d bytes, left %q", len(out), len(frame), rest)
		}
		w := kmsg.NewPtrFetchResponse()
		w.SetVersion(v)
		if w.ReadFrom(out[4+off:]) != nil {
			return
		}
		for _, tp := range w.Topics {
			if !withhold(tp.Topic, tp.TopicID) {
				continue
			}
			for _, p := range tp.Partitions {
				if len(p.RecordBatches) != 0 || p.ErrorCode != 29 {
					t.Fatalf("withheld topic %q partition %d relayed with code %d and %d record bytes", tp.Topic, p.Partition, p.ErrorCode, len(p.RecordBatches))
				}
			}
		}
	})
}

func BenchmarkRelayFetch(b *testing.B) {
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(16)
	for ti := 0; ti < 3; ti++ {
		t := kmsg.NewFetchResponseTopic()
		t.TopicID[0] = byte(ti)
		for pi := 0; pi < 6; pi++ {
			p := kmsg.NewFetchResponseTopicPartition()
			p.Partition, p.RecordBatches = int32(pi), make([]byte, 64<<10)
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	frame := fetchFrame(resp)
	size := int32(binary.BigEndian.Uint32(frame))
	src := bytes.NewReader(nil)
	rw := func(r *kmsg.FetchResponse) bool { return rewriteAddresses(r, advHost("gw"), nil) }
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(frame[8:])
		if err := relayFetchResponse(discard{}, src, frame[:8], size, 16, rw, nil); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// realBatches returns 1-3 valid magic-2 batches, sometimes a control batch
// or a trailing partial batch.
func realBatches(rng *rand.Rand) []byte {
	var out []byte
	for i := rng.Intn(3) + 1; i > 0; i-- {
		n := rng.Intn(5) + 1
		var recs []byte
		for j := 0; j < n; j++ {
			rec := kmsg.Record{Value: make([]byte, rng.Intn(300))}
			rec.Length = int32(len(rec.AppendTo(nil)) - 1)
			recs = rec.AppendTo(recs)
		}
		b := kmsg.RecordBatch{PartitionLeaderEpoch: -1, Magic: 2, LastOffsetDelta: int32(n - 1), NumRecords: int32(n), Records: recs}
		if rng.Intn(5) == 0 {
			b.Attributes = 0x20 // control
		}
		enc := b.AppendTo(nil)
		binary.BigEndian.PutUint32(enc[8:], uint32(len(enc)-12))
		out = append(out, enc...)
	}
	if rng.Intn(3) == 0 {
		out = append(out, make([]byte, 30)...) // partial: a header's worth
		binary.BigEndian.PutUint32(out[len(out)-30+8:], 5000)
	}
	return out
}

// TestRelayFetchWithholds streams responses through topic hooks that
// withhold some topics: withheld partitions carry the code and nothing
// else (no records, offsets -1) at the size the upstream sent, the others
// arrive unchanged, and what was delivered is counted per topic as the
// audit filter counts a decoded response.
func TestRelayFetchWithholds(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	withheldParts, passed, failures := 0, 0, 0
	for v := int16(12); v <= fetchStreamMaxVersion; v++ {
		for i := 0; i < 80; i++ {
			in := randFetchResponse(rng, v, "kafka")
			in.Brokers = nil
			for ti := range in.Topics {
				for pi := range in.Topics[ti].Partitions {
					if rng.Intn(2) == 0 {
						in.Topics[ti].Partitions[pi].RecordBatches = realBatches(rng)
					}
				}
			}
			key := func(name string, id [16]byte) string {
				if v >= 13 {
					return fmt.Sprintf("%x", id)
				}
				return name
			}
			codes := map[string]int16{}
			for _, tp := range in.Topics {
				if rng.Intn(2) == 0 {
					codes[key(tp.Topic, tp.TopicID)] = int16(29 + rng.Intn(3))
				}
			}
			hooks := &fetchHooks{delivered: map[string]filter.Stats{}, count: true, topic: func(name string, id [16]byte) (int16, string) {
				k := key(name, id)
				return codes[k], k
			}}
			frame := fetchFrame(in)
			out, rest, err := relayWith(t, frame, []byte("next"), v, advHost("gw"), hooks)
			if err != nil {
				if !errors.Is(err, errFetchStream) {
					t.Fatalf("v%d: %v", v, err)
				}
				failures++ // a partition that cannot be withheld at its size: the connection closes
				continue
			}
			if string(rest) != "next" || len(out) != len(frame) {
				t.Fatalf("v%d: relayed %d of %d bytes, left %q", v, len(out), len(frame), rest)
			}
			got := decodeFetch(t, out, v)
			want := map[string]filter.Stats{}
			for ti, tp := range in.Topics {
				k := key(tp.Topic, tp.TopicID)
				gt := got.Topics[ti]
				if key(gt.Topic, gt.TopicID) != k || len(gt.Partitions) != len(tp.Partitions) {
					t.Fatalf("v%d: topic %d (%s, %d partitions) relayed as %s with %d", v, ti, k, len(tp.Partitions), key(gt.Topic, gt.TopicID), len(gt.Partitions))
				}
				for pi, p := range tp.Partitions {
					gp := gt.Partitions[pi]
					if code := codes[k]; code != 0 {
						withheldParts++
						if gp.Partition != p.Partition || gp.ErrorCode != code || len(gp.RecordBatches) != 0 ||
							gp.HighWatermark != -1 || gp.LastStableOffset != -1 || gp.LogStartOffset != -1 ||
							len(gp.AbortedTransactions) != 0 || gp.PreferredReadReplica != -1 || gp.CurrentLeader.LeaderID != -1 {
							t.Fatalf("v%d: withheld partition %d relayed with code %d, %d record bytes, offsets %d/%d/%d, %d aborted, replica %d, leader %d",
								v, gp.Partition, gp.ErrorCode, len(gp.RecordBatches), gp.HighWatermark, gp.LastStableOffset, gp.LogStartOffset,
								len(gp.AbortedTransactions), gp.PreferredReadReplica, gp.CurrentLeader.LeaderID)
						}
						gp.UnknownTags.Each(func(tag uint32, val []byte) {
							if tag < fillerTag || !bytes.Equal(val, make([]byte, len(val))) {
								t.Fatalf("v%d: withheld partition carries tag %d %x", v, tag, val)
							}
						})
						continue
					}
					passed++
					if !reflect.DeepEqual(gp, p) {
						t.Fatalf("v%d: relayed partition %d differs from the upstream's", v, p.Partition)
					}
					r, b := filter.CountBatches(p.RecordBatches)
					w := want[k]
					w.Records += r
					w.Bytes += b
					want[k] = w
				}
			}
			for k, w := range want {
				if hooks.delivered[k] != w {
					t.Fatalf("v%d: delivered %+v for %s, want %+v", v, hooks.delivered[k], k, w)
				}
			}
		}
	}
	if withheldParts == 0 || passed == 0 {
		t.Fatalf("withheld %d, passed %d partitions: both paths must be exercised", withheldParts, passed)
	}
	if failures > 5 {
		t.Fatalf("%d responses could not be withheld at their size", failures)
	}
	t.Logf("withheld %d partitions, passed %d, %d responses refused", withheldParts, passed, failures)
}
