package proxy

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// FuzzRequestFrame feeds arbitrary request frames (without the size prefix)
// to the path the read loop takes: header parsing, the acks peek and, for a
// known key at a version kmsg knows, body decoding and re-encoding.
//
// Invariants: no panic; a parsed header's body offset lies inside the frame;
// a body that decodes re-encodes into a frame that parses to the same header.
func FuzzRequestFrame(f *testing.F) {
	fm := kmsg.NewRequestFormatter(kmsg.FormatterClientID("seed"))
	for _, req := range []kmsg.Request{
		kmsg.NewPtrApiVersionsRequest(), kmsg.NewPtrMetadataRequest(), kmsg.NewPtrProduceRequest(),
		kmsg.NewPtrFetchRequest(), kmsg.NewPtrFindCoordinatorRequest(), kmsg.NewPtrSASLHandshakeRequest(),
	} {
		for _, v := range []int16{0, req.MaxVersion() / 2, req.MaxVersion()} {
			req.SetVersion(v)
			f.Add(fm.AppendRequest(nil, req, 7)[4:])
		}
	}
	f.Add([]byte{0x27, 0x0f, 0, 0, 0, 0, 0, 1, 0xff, 0xff})
	// Produce v9 with a transactional id length near 2^63 (once an
	// overflow in the acks peek).
	f.Add([]byte{0, 0, 0, 9, 0, 0, 0, 1, 0, 1, 'x', 0, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, frame []byte) {
		h, err := parseRequestHeader(frame)
		if err != nil {
			return
		}
		if h.BodyOffset < 8 || h.BodyOffset > len(frame) {
			t.Fatalf("body offset %d outside a %d-byte frame", h.BodyOffset, len(frame))
		}
		body := frame[h.BodyOffset:]
		if h.Key == 0 {
			produceAcks(body, h.Version, h.Flexible)
		}
		a := apiFor(h.Key)
		if h.Version < 0 || h.Version > a.maxVersion {
			return
		}
		req := kmsg.RequestForKey(h.Key)
		req.SetVersion(h.Version)
		if err := req.ReadFrom(body); err != nil {
			return
		}
		out := append([]byte{}, frame[:h.BodyOffset]...)
		out = req.AppendTo(out)
		h2, err := parseRequestHeader(out)
		if err != nil || h2.Key != h.Key || h2.Version != h.Version || h2.CorrelationID != h.CorrelationID {
			t.Fatalf("re-encoded frame parses differently: %+v vs %+v (%v)", h2, h, err)
		}
	})
}

// FuzzResponseRewrite feeds arbitrary response bodies of every rewritten API
// to decoding and address rewriting.
//
// Invariants: no panic; after rewriting and a round trip through the wire
// format, no endpoint names an upstream host.
func FuzzResponseRewrite(f *testing.F) {
	for _, key := range []int16{0, 1, 3, 10, 60, 78, 79} {
		maxV := kmsg.ResponseForKey(key).MaxVersion()
		for _, v := range []int16{0, maxV / 2, maxV} {
			if r := upstreamResponse(key, v); r != nil {
				f.Add(key, v, r.AppendTo(nil))
			}
		}
	}
	f.Fuzz(func(t *testing.T, key, version int16, body []byte) {
		if a := apiFor(key); a == nil || version < 0 || version > a.maxVersion || !rewriteNeeded(key, version) {
			return
		}
		resp := kmsg.ResponseForKey(key)
		resp.SetVersion(version)
		if err := resp.ReadFrom(body); err != nil {
			return
		}
		rewriteAddresses(resp, fakeAdv{}, newCluster(zap.NewNop()))
		out := kmsg.ResponseForKey(key)
		out.SetVersion(version)
		if err := out.ReadFrom(resp.AppendTo(nil)); err != nil {
			t.Fatalf("rewritten response does not decode: %v", err)
		}
		for _, e := range endpoints(out) {
			if e.id >= 0 && e.host != "gateway.test" && !(key == 10 && e.host == "" && e.port == 0) {
				t.Fatalf("endpoint %+v not rewritten", e)
			}
		}
	})
}
