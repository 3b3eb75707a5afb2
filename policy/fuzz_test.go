package policy

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/proxy/kafkaerr"
)

// FuzzFilter: any request that decodes goes through the filter under a
// policy that allows only some names without a panic; a denial can be
// answered, and a local answer has the request's key and version.
func FuzzFilter(f *testing.F) {
	f.Add(int16(0), int16(9), []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0x75, 0x30, 0, 0, 0, 2, 0, 1, 'a', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'b', 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Add(int16(3), int16(4), []byte{0, 0, 0, 1, 0, 1, 'a', 1})
	f.Add(int16(10), int16(3), []byte{0, 1, 'g', 1})
	f.Fuzz(func(t *testing.T, key, version int16, body []byte) {
		req := kmsg.RequestForKey(key)
		if req == nil || version < 0 || version > req.MaxVersion() {
			return
		}
		req.SetVersion(version)
		if err := req.ReadFrom(body); err != nil {
			return
		}
		flt := newFilter(&fakeDecider{allow: func(q *Query) bool { return len(q.Name)%2 == 0 }}, nil, nil)
		x := exchange(acme, req)
		err := flt.OnRequest(context.Background(), x)
		if d, ok := filter.AsDenial(err); ok {
			if _, err := kafkaerr.ErrorResponse(x.Request, d.Code); err != nil {
				t.Fatalf("denial cannot be answered: %v", err)
			}
			return
		}
		if err != nil {
			return // connection closed: acceptable for input the filter refuses to forward
		}
		if x.Local != nil {
			if x.Local.Key() != key || x.Local.GetVersion() != version {
				t.Fatalf("local answer key %d v%d", x.Local.Key(), x.Local.GetVersion())
			}
			x.Response = x.Local
		} else {
			resp := req.ResponseKind()
			resp.SetVersion(version)
			x.Response = resp
		}
		if err := flt.OnResponse(context.Background(), x); err != nil {
			t.Fatalf("response: %v", err)
		}
	})
}

// FuzzParseResult: whatever value a policy yields, reading it as a
// decision does not panic, and an allow it accepts carries only
// obligations that passed their checks.
func FuzzParseResult(f *testing.F) {
	f.Add(`{"allow": true, "reason": "grant g", "obligations": {"grant_id": "g", "mask": [{"field": "a.b", "strategy": "hash"}], "row_filter": {"field": "r", "op": "in", "values": ["x"]}}, "expires_at": "2027-01-01T00:00:00Z"}`)
	f.Add(`{"allow": false, "reason": 1}`)
	f.Add(`{"allow": true, "obligations": {"mask": [{"strategy": "rot13"}]}}`)
	f.Add(`{"allow": true, "expires_at": 1798761600000000000, "cache": false}`)
	f.Add(`[1, {"allow": true}]`)
	memo := newObligationsMemo()
	f.Fuzz(func(t *testing.T, src string) {
		term, err := ast.ParseTerm(src)
		if err != nil {
			return
		}
		for _, m := range []*obligationsMemo{nil, memo} {
			d, err := parseResult(term, m)
			if err != nil {
				continue
			}
			if o := d.Obligations; o != nil {
				if !d.Allow {
					t.Fatal("obligations on a deny")
				}
				if err := checkObligations(o); err != nil {
					t.Fatalf("unchecked obligations accepted: %v", err)
				}
			}
		}
	})
}
