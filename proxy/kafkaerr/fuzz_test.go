package kafkaerr

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// FuzzErrorResponse: for any request that decodes, ErrorResponse never
// panics, answers with the request's key and version, and its answer
// encodes and decodes again.
func FuzzErrorResponse(f *testing.F) {
	f.Add(int16(0), int16(9), []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0x75, 0x30, 0, 0, 0, 1, 0, 1, 't', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(int16(1), int16(12), []byte{})
	f.Add(int16(15), int16(5), []byte{0, 0, 0, 1, 0, 1, 'g', 0})
	f.Fuzz(func(t *testing.T, key, version int16, body []byte) {
		req := kmsg.RequestForKey(key)
		if req == nil || version < 0 || version > req.MaxVersion() {
			return
		}
		req.SetVersion(version)
		if err := req.ReadFrom(body); err != nil {
			return
		}
		resp, err := ErrorResponse(req, 29)
		if err != nil {
			t.Fatalf("no answer for a decoded %s v%d: %v", kmsg.NameForKey(key), version, err)
		}
		if resp.Key() != key || resp.GetVersion() != version {
			t.Fatalf("answer key %d v%d", resp.Key(), resp.GetVersion())
		}
		back := kmsg.ResponseForKey(key)
		back.SetVersion(version)
		if err := back.ReadFrom(resp.AppendTo(nil)); err != nil {
			t.Fatalf("answer does not decode: %v", err)
		}
	})
}
