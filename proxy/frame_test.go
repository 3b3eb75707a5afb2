package proxy

import (
	"encoding/binary"
	"fmt"
	"math"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestParseRequestHeaderEveryVersion encodes a request of every key at every
// version with kmsg's own formatter (header v1, or v2 with tagged fields for
// flexible versions) and checks the parser finds the same header and the
// exact start of the body.
func TestParseRequestHeaderEveryVersion(t *testing.T) {
	clientID := "client-é"
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID(clientID))
	for k := int16(0); k < maxKey; k++ {
		req := kmsg.RequestForKey(k)
		if req == nil {
			continue
		}
		for v := int16(0); v <= req.MaxVersion(); v++ {
			req.SetVersion(v)
			frame := f.AppendRequest(nil, req, 12345)[4:]
			h, err := parseRequestHeader(frame)
			if err != nil {
				t.Fatalf("%s v%d: %v", kmsg.NameForKey(k), v, err)
			}
			if h.Key != k || h.Version != v || h.CorrelationID != 12345 {
				t.Fatalf("%s v%d: parsed %+v", kmsg.NameForKey(k), v, h)
			}
			if h.Flexible != req.IsFlexible() {
				t.Fatalf("%s v%d: flexible %v, kmsg says %v", kmsg.NameForKey(k), v, h.Flexible, req.IsFlexible())
			}
			if k == 7 && v == 0 {
				continue // ControlledShutdown v0 has no client id
			}
			if id := h.ClientID(); id == nil || *id != clientID {
				t.Fatalf("%s v%d: client id %q", kmsg.NameForKey(k), v, h.clientID)
			}
			body := req.AppendTo(nil)
			if got := frame[h.BodyOffset:]; string(got) != string(body) {
				t.Fatalf("%s v%d: body offset %d does not start the body", kmsg.NameForKey(k), v, h.BodyOffset)
			}
		}
	}
}

func TestParseRequestHeaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", nil, errShortHeader},
		{"short", []byte{0, 3, 0, 1}, errShortHeader},
		{"unknown key", []byte{0x27, 0x0f, 0, 0, 0, 0, 0, 1}, errUnknownKey},
		{"client id past end", []byte{0, 3, 0, 1, 0, 0, 0, 1, 0, 9, 'a'}, errShortHeader},
		{"tags past end", []byte{0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 1, 0, 5}, errShortHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseRequestHeader(tc.frame); err != tc.want {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := parseRequestHeader([]byte{0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xfe}); err == nil {
		t.Fatal("negative client id length other than -1 accepted")
	}
}

func TestProduceAcksPeek(t *testing.T) {
	for v := int16(0); v <= kmsg.NewPtrProduceRequest().MaxVersion(); v++ {
		for _, acks := range []int16{0, 1, -1} {
			for _, txn := range []*string{nil, kmsg.StringPtr(""), kmsg.StringPtr("txn-1")} {
				req := kmsg.NewPtrProduceRequest()
				req.SetVersion(v)
				req.Acks = acks
				req.TransactionID = txn
				got, ok := produceAcks(req.AppendTo(nil), v, req.IsFlexible())
				if !ok || got != acks {
					t.Fatalf("v%d txn=%v acks=%d: peeked %d ok=%v", v, txn, acks, got, ok)
				}
			}
		}
	}
}

// A stranger picks the transactional id's length: no length, however
// large, makes the peek read outside the body (a varint near 2^63 once
// overflowed the bounds check and panicked, taking the process down).
func TestProduceAcksPeekHostileLengths(t *testing.T) {
	tail := []byte{0, 1, 0, 0, 0, 0} // acks 1, timeout
	for _, n := range []uint64{math.MaxUint64, math.MaxInt64, math.MaxInt64 - 9, math.MaxInt64 - 10, 1 << 32, 7, 8} {
		body := binary.AppendUvarint(nil, n)
		body = append(body, tail...)
		if acks, ok := produceAcks(body, 9, true); ok && n > 1 {
			t.Errorf("length %d in a %d-byte body: peeked acks %d", n, len(body), acks)
		}
	}
	for _, n := range []int16{math.MaxInt16, 5} {
		body := binary.BigEndian.AppendUint16(nil, uint16(n))
		body = append(body, tail...)
		if acks, ok := produceAcks(body, 8, false); ok {
			t.Errorf("length %d in a %d-byte body: peeked acks %d", n, len(body), acks)
		}
	}
	// The boundary: a 5-byte id leaves exactly acks and nothing more.
	if acks, ok := produceAcks(append(binary.AppendUvarint(nil, 6), 'a', 'b', 'c', 'd', 'e', 0, 1), 9, true); !ok || acks != 1 {
		t.Errorf("acks right at the end: %d %v", acks, ok)
	}
}

func TestResponseHeader(t *testing.T) {
	// ApiVersions always answers with header v0, even at flexible v3+.
	if responseHeaderFlexible(18, 3) {
		t.Fatal("ApiVersions v3 response must use header v0")
	}
	if !responseHeaderFlexible(3, 9) || responseHeaderFlexible(3, 8) {
		t.Fatal("Metadata becomes flexible at v9")
	}
	resp := kmsg.NewPtrMetadataResponse()
	resp.SetVersion(12)
	frame := appendResponseFrame(nil, 77, 3, 12, resp)[4:]
	off, err := responseBodyOffset(frame, 3, 12)
	if err != nil || off != 5 {
		t.Fatalf("flexible body offset %d, %v", off, err)
	}
	got := kmsg.NewPtrMetadataResponse()
	got.SetVersion(12)
	if err := got.ReadFrom(frame[off:]); err != nil {
		t.Fatal(err)
	}
}

func TestApiVersionsIntersection(t *testing.T) {
	up := kmsg.NewPtrApiVersionsResponse()
	add := func(k, lo, hi int16) {
		up.ApiKeys = append(up.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: k, MinVersion: lo, MaxVersion: hi})
	}
	add(0, 3, 99)   // produce: newer than kmsg knows → clamped
	add(1, 4, 10)   // fetch: older range → kept
	add(3, 0, 12)   // metadata
	add(17, 0, 1)   // SASL handshake: served by the gateway only
	add(9999, 0, 3) // vendor key → dropped
	add(18, 0, 2)   // api versions: gateway answers itself
	add(42, 5, 2)   // inverted range → dropped
	add(-1, 0, 3)   // garbage → dropped
	t.Run("no sasl", func(t *testing.T) {
		tbl := intersectVersions(up, false, nil)
		for _, tc := range []struct {
			key, version int16
			want         bool
		}{
			{0, 3, true}, {0, 2, false}, {0, kmsg.NewPtrProduceRequest().MaxVersion(), true},
			{0, kmsg.NewPtrProduceRequest().MaxVersion() + 1, false},
			{1, 4, true}, {1, 11, false}, {3, 12, true},
			{17, 0, false}, {36, 0, false}, {18, 4, true}, {42, 3, false}, {9999, 0, false}, {2, 0, false},
		} {
			if got := tbl.supports(tc.key, tc.version); got != tc.want {
				t.Errorf("supports(%d, %d) = %v, want %v", tc.key, tc.version, got, tc.want)
			}
		}
		resp := tbl.apiVersionsResponse(3, up)
		for _, k := range resp.ApiKeys {
			if apiFor(k.ApiKey) == nil {
				t.Errorf("unknown key %d offered", k.ApiKey)
			}
		}
	})
	t.Run("sasl", func(t *testing.T) {
		tbl := intersectVersions(up, true, nil)
		if !tbl.supports(17, 1) || !tbl.supports(36, 2) {
			t.Fatal("SASL keys not served when client SASL is enabled")
		}
	})
	t.Run("refused keys hidden", func(t *testing.T) {
		tbl := intersectVersions(up, false, func(k int16) bool { return k == 1 })
		if tbl.supports(1, 4) || !tbl.supports(0, 3) {
			t.Fatal("a refused key is still offered, or another key was dropped")
		}
	})
	t.Run("too new", func(t *testing.T) {
		resp := intersectVersions(up, false, nil).apiVersionsResponse(99, up)
		if resp.Version != 0 || resp.ErrorCode != 35 || len(resp.ApiKeys) != 1 || resp.ApiKeys[0].ApiKey != 18 {
			t.Fatalf("unexpected answer to a too-new ApiVersions: %+v", resp)
		}
	})
}

func ExampleapiName() {
	fmt.Println(apiName(0), apiName(3), apiName(9999))
	// Output: Produce Metadata Unknown
}
