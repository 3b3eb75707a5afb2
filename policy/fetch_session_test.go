package policy

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// ForgottenTopics (KIP-227) name partitions, not topics: a consumer whose
// assignment loses partition 0 of orders.eu forgets that partition and
// keeps partition 1 in its session. track deletes the whole topic from the
// session, so the next incremental fetch, which lists nothing, attaches no
// obligations for orders.eu; the broker returns partition 1 from the
// session, the mask filter (response step first) sees no obligations, and
// fetchResp then withholds the partition with UNKNOWN_SERVER_ERROR. The
// consumer is stuck on a partition it may read (masked), on every fetch of
// the session.
func TestFetchForgetOnePartitionKeepsTopic(t *testing.T) {
	f := newExampleFilter(t)
	ctx := context.Background()
	c := &filter.Conn{ID: 78}
	c.SetPrincipal(acme)
	do := func(req *kmsg.FetchRequest) *filter.Exchange {
		x := exchange(acme, req)
		x.Conn = c
		if err := f.OnRequest(ctx, x); err != nil || x.Local != nil {
			t.Fatalf("err %v local %v", err, x.Local)
		}
		return x
	}
	// Full fetch: session 9 with orders.eu partitions 0 and 1.
	full := fetchReqFor(11, false, "orders.eu")
	p1 := kmsg.NewFetchRequestTopicPartition()
	p1.Partition = 1
	full.Topics[0].Partitions = append(full.Topics[0].Partitions, p1)
	full.SessionID, full.SessionEpoch = 0, 0
	if x := do(full); x.Obligations["orders.eu"] == nil {
		t.Fatalf("full fetch obligations %v", x.Obligations)
	}
	// Incremental fetch: forget partition 0 only.
	inc := fetchReqFor(11, false)
	inc.SessionID, inc.SessionEpoch = 9, 1
	ft := kmsg.NewFetchRequestForgottenTopic()
	ft.Topic, ft.Partitions = "orders.eu", []int32{0}
	inc.ForgottenTopics = append(inc.ForgottenTopics, ft)
	do(inc)
	// Next incremental fetch lists nothing; partition 1 is still in the
	// broker's session and comes back with records.
	inc2 := fetchReqFor(11, false)
	inc2.SessionID, inc2.SessionEpoch = 9, 2
	x := do(inc2)
	maskSees := x.Obligations["orders.eu"]
	resp := kmsg.NewPtrFetchResponse()
	resp.Version, resp.SessionID = 11, 9
	rt := fetchRespTopic("orders.eu", [16]byte{})
	rt.Partitions[0].Partition = 1
	resp.Topics = append(resp.Topics, rt)
	x.Response = resp
	if err := f.OnResponse(ctx, x); err != nil {
		t.Fatal(err)
	}
	p := resp.Topics[0].Partitions[0]
	if maskSees == nil {
		t.Errorf("orders.eu partition 1 is still in the fetch session, but no obligations were attached on the request side "+
			"(the mask filter cannot mask it); the response carries code %d and %d record bytes", p.ErrorCode, len(p.RecordBatches))
	}
}
