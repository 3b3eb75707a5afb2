package audit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type resolver map[[16]byte]string

func (r resolver) TopicName(id [16]byte) (string, bool) { n, ok := r[id]; return n, ok }
func (r resolver) TopicKnown(name string) bool          { _, ok := r.TopicID(name); return ok }
func (r resolver) TopicID(name string) ([16]byte, bool) {
	for id, n := range r {
		if n == name {
			return id, true
		}
	}
	return [16]byte{}, false
}

func TestFilterCountsPerTopic(t *testing.T) {
	cl := newCluster(t)
	env := start(t, cl, testConfig(t))
	f := NewFilter(env.a)
	ctx := context.Background()
	c := testConn(1, alice)

	// Produce: 2 partitions of orders (3+2 records), 1 of payments (denied).
	req := kmsg.NewPtrProduceRequest()
	for _, tp := range []struct {
		topic string
		n     []int
	}{{"orders", []int{3, 2}}, {"payments", []int{4}}} {
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = tp.topic
		for p, n := range tp.n {
			rp := kmsg.NewProduceRequestTopicPartition()
			rp.Partition = int32(p)
			rp.Records = batchBytes(t, n, false)
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	x := exchange(c, 0, allowTopic("orders", 0, 1), denyTopic("payments"))
	x.Request = req
	f.OnResponse(ctx, x)
	ordersBytes := int64(len(req.Topics[0].Partitions[0].Records) + len(req.Topics[0].Partitions[1].Records))

	// Produce v13+: topics by id, resolved through the exchange.
	sid := [16]byte{4, 5, 6}
	req13 := kmsg.NewPtrProduceRequest()
	req13.Version = 13
	rt := kmsg.NewProduceRequestTopic()
	rt.TopicID = sid
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batchBytes(t, 7, false)
	rt.Partitions = append(rt.Partitions, rp)
	req13.Topics = append(req13.Topics, rt)
	x = exchange(c, 0, allowTopic("shipments", 0))
	x.Version = 13
	x.Request = req13
	x.Topics = resolver{sid: "shipments"}
	f.OnResponse(ctx, x)

	// Fetch v13+: topics by id, resolved through the exchange.
	id := [16]byte{1, 2, 3}
	resp := kmsg.NewPtrFetchResponse()
	ft := kmsg.NewFetchResponseTopic()
	ft.TopicID = id
	fp := kmsg.NewFetchResponseTopicPartition()
	fp.RecordBatches = append(batchBytes(t, 6, false), batchBytes(t, 1, true)...)
	ft.Partitions = append(ft.Partitions, fp)
	resp.Topics = append(resp.Topics, ft)
	d := allowTopic("orders", 0)
	d.Action = "read"
	x = exchange(c, 1, d)
	x.Version = 13
	x.Response = resp
	x.Topics = resolver{id: "orders"}
	f.OnResponse(ctx, x)

	// No decisions, no events.
	f.OnResponse(ctx, exchange(c, 3))
	env.close(t)

	_, evs := events(t, cl)
	var got []string
	for _, e := range evs {
		if e.Data.Kind == KindDecision {
			got = append(got, fmt.Sprintf("%s %s %s %d/%d", e.Data.API.Name, e.Data.Decision, e.Data.Resource, e.Data.Records, e.Data.Bytes))
		}
	}
	want := []string{
		fmt.Sprintf("Produce allow orders 5/%d", ordersBytes),
		"Produce deny payments 0/0",
		fmt.Sprintf("Produce allow shipments 7/%d", len(rp.Records)),
		fmt.Sprintf("Fetch allow orders 6/%d", len(fp.RecordBatches)),
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestFailOpenServesAndCountsDrops(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.Spool.MaxBytes = 1 << 20
	cfg.OnSpoolFull = FailOpen
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	ctx := context.Background()
	c := testConn(1, alice)
	cl.failing.Store(true)
	for i := 0; metricValue(env.a.m.dropped) == 0; i++ {
		if i > 20000 {
			t.Fatal("nothing dropped")
		}
		if err := f.OnRequest(ctx, exchange(c, 0)); err != nil {
			t.Fatalf("fail_open denied: %v", err)
		}
		f.OnResponse(ctx, exchange(c, 0, denyTopic(fmt.Sprintf("t%d", i))))
		if i%100 == 99 {
			waitFor(t, "queue empty", func() bool { return env.a.QueueDepth() == 0 || env.a.Healthy() != nil })
		}
	}
	if env.a.Healthy() != nil || metricValue(env.a.m.failingClose) != 0 {
		t.Fatal("fail_open reported failing closed")
	}
	cl.failing.Store(false)
	// Once the spool has drained, later events reach the topic; the
	// chain shows the loss before them.
	waitFor(t, "spool drained", func() bool { return env.a.spoolBytes.Load() == 0 })
	f.OnResponse(ctx, exchange(c, 0, denyTopic("after")))
	env.close(t)
	recs, _ := events(t, cl)
	rep := VerifyRecords(recs, env.pub)
	if rep.OK() || (rep.Problems[0].Kind != ProblemGap && rep.Problems[0].Kind != ProblemTruncatedStart) {
		t.Fatalf("dropped events not visible as a gap: %+v", rep.Problems)
	}
}

func TestAuditorEdges(t *testing.T) {
	cl := newCluster(t)
	env := start(t, cl, testConfig(t))
	f := NewFilter(env.a)
	// An exchange without a connection or client id must not panic.
	x := &filter.Exchange{Key: 3, Decisions: []filter.Decision{{Action: "describe", ResourceType: "cluster", Resource: "kafka-cluster", Allow: true}}}
	if err := f.OnResponse(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	env.a.MaskFailure(nil, "orders", 0, strings.Repeat("é", 5000))
	parts := make([]int32, 3000)
	big := filter.Decision{Action: "read", ResourceType: "topic", Resource: "wide", Partitions: parts, Allow: false, Reason: strings.Repeat("r", 9000)}
	f.OnResponse(context.Background(), exchange(testConn(3, alice), 1, big))
	env.a.PolicyReload("", fmt.Errorf("rego: parse error"))
	env.close(t)
	// Events after Close are dropped and counted, not blocking.
	env.a.Auth(testConn(9, nil), "PLAIN", nil, nil)
	if metricValue(env.a.m.dropped) != 1 {
		t.Fatal("event after close not counted as dropped")
	}
	if err := env.a.Close(context.Background()); err != nil {
		t.Fatalf("second close: %v", err)
	}
	recs, evs := events(t, cl)
	if len(evs) != 5 || evs[3].Data.Decision != Failure || evs[3].Data.Error != "rego: parse error" {
		t.Fatalf("events %+v", evs)
	}
	if e := evs[1].Data.Error; len(e) > maxText+20 || !strings.HasSuffix(e, "...(truncated)") || !utf8.ValidString(e) {
		t.Errorf("long error not clipped: %d bytes", len(e))
	}
	if d := evs[2].Data; len(d.Partitions) != maxFoldPartitions || d.PartitionCount != 3000 || len(d.Reason) > maxText+20 {
		t.Errorf("wide decision: %d partitions, count %d, reason %d bytes", len(d.Partitions), d.PartitionCount, len(d.Reason))
	}
	for _, r := range recs {
		if len(r.Value) > 32<<10 {
			t.Errorf("event of %d bytes", len(r.Value))
		}
	}
}

func TestCloseWithoutDeadlineIsBounded(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.ProduceTimeout = time.Second
	env := start(t, cl, cfg)
	cl.failing.Store(true)
	env.a.PolicyReload("rev1", nil)
	start := time.Now()
	err := env.a.Close(context.Background())
	if err == nil || !strings.Contains(err.Error(), "left in spool") {
		t.Fatalf("close with the topic down: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("close took %s", d)
	}
}

// TestFetchDoneRecordsDelivered: a streamed Fetch's decisions are recorded
// with the records and bytes the stream delivered per topic.
func TestFetchDoneRecordsDelivered(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.FoldWindow = 0
	env := start(t, cl, cfg)
	fs := NewFilter(env.a).(filter.FetchStreamer)
	x := exchange(testConn(1, alice), 1, allowTopic("orders", 0), allowTopic("other", 1))
	if !fs.StreamFetch(x) || fs.FetchTopic(context.Background(), x, "orders", [16]byte{}) != 0 {
		t.Fatal("the audit filter refuses or withholds a stream")
	}
	if fc, ok := fs.(filter.FetchCounter); !ok || !fc.CountsFetch() {
		t.Fatal("the audit filter does not ask for a streamed response's counts")
	}
	fs.FetchDone(context.Background(), x, map[string]filter.Stats{"orders": {Records: 7, Bytes: 700}})
	env.close(t)
	_, evs := events(t, cl)
	got := map[string][2]int64{}
	for _, e := range evs {
		if e.Data.Kind == KindDecision {
			got[e.Data.Resource] = [2]int64{e.Data.Records, e.Data.Bytes}
		}
	}
	if got["orders"] != [2]int64{7, 700} || got["other"] != [2]int64{0, 0} || len(got) != 2 {
		t.Fatalf("decisions recorded with %v", got)
	}
}

// TestStreamedProduceRecordsRelayed: a Produce request the proxy relayed
// without decoding its records is recorded with the records and bytes the
// proxy counted (x.Relayed), not with the empty partitions of the request
// it kept; while auditing fails closed, the filter declines the stream so
// that OnRequest refuses the request.
func TestStreamedProduceRecordsRelayed(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.FoldWindow = 0
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	ps := f.(filter.ProduceStreamer)
	x := exchange(testConn(1, alice), 0, allowTopic("orders", 0, 1))
	req := kmsg.NewPtrProduceRequest()
	req.Topics = []kmsg.ProduceRequestTopic{{Topic: "orders", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0}, {Partition: 1}}}}
	x.Request = req
	if !ps.StreamProduce(context.Background(), x) {
		t.Fatal("a healthy audit filter declines a stream")
	}
	x.Relayed = map[string]filter.Stats{"orders": {Records: 9, Bytes: 900}}
	ps.ProduceRelayed(context.Background(), x)
	if err := f.OnResponse(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	why := "spool full"
	env.a.health.Store(&why)
	if ps.StreamProduce(context.Background(), x) {
		t.Fatal("a failing-closed audit filter takes a stream it would refuse")
	}
	env.a.health.Store(nil)
	env.close(t)
	_, evs := events(t, cl)
	var got [][2]int64
	for _, e := range evs {
		if e.Data.Kind == KindDecision && e.Data.Resource == "orders" {
			got = append(got, [2]int64{e.Data.Records, e.Data.Bytes})
		}
	}
	if len(got) != 1 || got[0] != [2]int64{9, 900} {
		t.Fatalf("decisions recorded with %v", got)
	}
}
