package proxy

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// divergentCount is the compact array count 0x80000001 in five bytes.
// franz-go's kmsg reads int32(0x80000001)-1, a negative length: an empty
// array. The relay's uvarint reads 0x80000001-1 = 2^31 elements.
var divergentCount = []byte{0x81, 0x80, 0x80, 0x80, 0x08}

// fetchV12Frame wraps a v12 response body (after the header's tag byte)
// in a frame: size, correlation id 42, header tags.
func fetchV12Frame(body []byte) []byte {
	f := binary.BigEndian.AppendUint32(nil, uint32(4+1+len(body)))
	f = binary.BigEndian.AppendUint32(f, 42)
	f = append(f, 0)
	return append(f, body...)
}

// TestStreamDivergentCountWithheldTopic: an upstream Fetch v12 response whose
// first topic's partition count is five-byte varint 0x80000001 is read by
// the relay as 2^31 partitions and by kmsg (franz-go clients) as none. The
// second topic ("secret", which the hooks withhold) is relayed as if it
// were more partitions of the first; the relay's last region ends at the
// frame's end, so the client has the whole frame before the relay fails.
func TestStreamDivergentCountWithheldTopic(t *testing.T) {
	const R = 5000
	records := append([]byte("SECRET-RECORDS"), make([]byte, R-14)...)
	var b []byte
	b = append(b, make([]byte, 10)...) // throttle, error code, session id
	b = append(b, 3)                   // 2 topics
	b = append(b, 2, 'a')              // topic "a"
	b = append(b, divergentCount...)   // kmsg: no partitions; relay: 2^31
	// kmsg: topic a's tags, then topic "secret".
	b = append(b, 0)
	b = append(b, 7)
	b = append(b, "secret"...)
	b = append(b, 2)                  // 1 partition
	b = append(b, 0, 0, 0, 0)         // partition 0
	b = append(b, 0, 0)               // error code
	b = append(b, make([]byte, 8)...) // high watermark
	b = append(b, make([]byte, 8)...) // last stable offset (its last byte: the relay's null aborted array)
	// log start offset: bytes 0-3 the relay's preferred replica, 4-5 its
	// records length (a varint reaching the frame's end)
	b = append(b, 0, 0, 0, 0)
	b = binary.AppendUvarint(b, uint64(2+1+4+2+R+3)+1)
	b = append(b, 0, 0)
	b = append(b, 1)                      // aborted: empty
	b = append(b, 0xff, 0xff, 0xff, 0xff) // preferred read replica
	b = binary.AppendUvarint(b, R+1)
	b = append(b, records...)
	b = append(b, 0, 0, 0) // partition, topic, response tags
	frame := fetchV12Frame(b)

	// kmsg reads the upstream frame as topic a (empty) and topic secret.
	in := decodeFetch(t, frame, 12)
	if len(in.Topics) != 2 || in.Topics[1].Topic != "secret" {
		t.Fatalf("setup: kmsg reads %+v", in.Topics)
	}

	var asked []string
	hooks := &fetchHooks{delivered: map[string]filter.Stats{}, count: true, topic: func(name string, id [16]byte) (int16, string) {
		asked = append(asked, name)
		if name == "secret" {
			return 29, name // TOPIC_AUTHORIZATION_FAILED
		}
		return 0, name
	}}
	out, _, err := relayWith(t, frame, nil, 12, advHost("gw"), hooks)
	t.Logf("relay error: %v; hooks asked about %q; client got %d of %d bytes", err, asked, len(out), len(frame))
	if len(out) == len(frame) {
		got := decodeFetch(t, out, 12)
		for _, tp := range got.Topics {
			for _, p := range tp.Partitions {
				if tp.Topic == "secret" && bytes.Contains(p.RecordBatches, []byte("SECRET-RECORDS")) {
					t.Fatalf("withheld topic %q delivered to the client with %d record bytes (the whole frame went out before the relay failed)", tp.Topic, len(p.RecordBatches))
				}
			}
		}
	}
}

// TestStreamDivergentCountNodeEndpoints: with the topic count 0x80000001, kmsg
// reads no topics and then the response's tagged fields, whose
// NodeEndpoints name the real broker; the relay reads those bytes as a
// topic and relays them unrewritten.
func TestStreamDivergentCountNodeEndpoints(t *testing.T) {
	const host = "kafka-1.internal" // 16 bytes
	const F = 5000
	var b []byte
	b = append(b, make([]byte, 10)...) // throttle, error code, session id
	b = append(b, divergentCount...)   // kmsg: no topics; relay: 2^31
	// kmsg: the response's tagged fields.
	b = append(b, 2)     // 2 tags
	b = append(b, 0, 38) // tag 0 (NodeEndpoints), 38 bytes
	b = append(b, 2)     // 1 broker
	b = append(b, 0, 0, 0, 1)
	b = append(b, byte(len(host)+1))
	b = append(b, host...)
	b = binary.BigEndian.AppendUint32(b, 9092)
	// rack, 10 bytes: 3 in the relay's fixed fields, a null aborted array,
	// preferred replica, and a varint reaching the frame's end
	b = append(b, 11, 'r', 'k', 'a', 0, 'r', 'a', 'c', 'k')
	b = binary.AppendUvarint(b, uint64(4+F)+1)
	b = append(b, 0) // broker tags
	b = append(b, 1) // tag 1 (unknown)
	b = binary.AppendUvarint(b, F)
	b = append(b, make([]byte, F)...)
	frame := fetchV12Frame(b)

	in := decodeFetch(t, frame, 12)
	if len(in.Brokers) != 1 || in.Brokers[0].Host != host {
		t.Fatalf("setup: kmsg reads brokers %+v", in.Brokers)
	}

	out, _, err := relay(t, frame, nil, 12, advHost("gw"))
	t.Logf("relay error: %v; client got %d of %d bytes", err, len(out), len(frame))
	if len(out) == len(frame) {
		got := decodeFetch(t, out, 12)
		for _, br := range got.Brokers {
			if strings.Contains(br.Host, "internal") {
				t.Fatalf("client decodes NodeEndpoints %s:%d, the upstream's address (the whole frame went out before the relay failed)", br.Host, br.Port)
			}
		}
	}
}

// TestFindCoordinatorNegativeNodeBlanked: a FindCoordinator response
// whose coordinator has a negative node id but a host keeps the upstream's
// host and port (the Java consumer builds its coordinator Node from the
// host and port, not the node id).
func TestFindCoordinatorNegativeNodeBlanked(t *testing.T) {
	for _, v := range []int16{0, 3, 4, 6} {
		r := kmsg.NewPtrFindCoordinatorResponse()
		r.SetVersion(v)
		if v < 4 {
			r.NodeID, r.Host, r.Port = -1, "kafka-1.internal", 9092
		} else {
			c := kmsg.NewFindCoordinatorResponseCoordinator()
			c.Key, c.NodeID, c.Host, c.Port = "g", -1, "kafka-1.internal", 9092
			r.Coordinators = append(r.Coordinators, c)
		}
		rewriteAddresses(r, advHost("gw"), nil)
		// What the client gets: the response encoded, decoded.
		enc := r.AppendTo(nil)
		got := kmsg.NewPtrFindCoordinatorResponse()
		got.SetVersion(v)
		if err := got.ReadFrom(enc); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(got.Host, "internal") {
			t.Errorf("v%d: coordinator %d at %s:%d forwarded", v, got.NodeID, got.Host, got.Port)
		}
		for _, c := range got.Coordinators {
			if strings.Contains(c.Host, "internal") {
				t.Errorf("v%d: coordinator %d at %s:%d forwarded", v, c.NodeID, c.Host, c.Port)
			}
		}
	}
}

// Two NodeEndpoints tags, the first with the upstream's broker and the
// second empty: kmsg keeps the last (no brokers), but the first's bytes
// must not go out as they came.
func TestStreamDuplicateNodeEndpointsTag(t *testing.T) {
	const host = "kafka-1.internal"
	var ep []byte
	ep = append(ep, 2) // 1 broker
	ep = append(ep, 0, 0, 0, 1)
	ep = append(ep, byte(len(host)+1))
	ep = append(ep, host...)
	ep = binary.BigEndian.AppendUint32(ep, 9092)
	ep = append(ep, 0) // null rack
	ep = append(ep, 0) // broker tags
	var tail []byte
	tail = append(tail, 2)                // 2 tags
	tail = append(tail, 0, byte(len(ep))) // tag 0: the broker
	tail = append(tail, ep...)
	tail = append(tail, 0, 1, 1) // tag 0 again: no brokers
	out, err := rewriteFetchTags(tail, 12, func(r *kmsg.FetchResponse) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(tail) || bytes.Contains(out, []byte(host)) {
		t.Fatalf("tags %q (%d bytes, was %d) still name the upstream", out, len(out), len(tail))
	}
}
