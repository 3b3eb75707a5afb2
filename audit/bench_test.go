package audit

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// BenchmarkOnResponse measures the audit filter's cost per decision on the
// request path: building the item and handing it to the queue. The sink
// runs concurrently against kfake; if it could not keep up, the queue
// would fill and the cost would show it.
func BenchmarkOnResponse(b *testing.B) {
	for _, bc := range []struct {
		name string
		d    filter.Decision
	}{
		{"allow_folded", allowTopic("orders", 0)},
		{"deny_each_an_event", denyTopic("orders")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cl := newCluster(b)
			cfg := testConfig(b)
			cfg.FoldWindow = time.Second
			env := start(b, cl, cfg)
			f := NewFilter(env.a)
			c := testConn(1, alice)
			x := exchange(c, 0, bc.d)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := f.OnResponse(ctx, x); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			env.close(b)
		})
	}
}

// BenchmarkOnResponseProduce includes counting records in a Produce
// request with 4 partitions.
func BenchmarkOnResponseProduce(b *testing.B) {
	cl := newCluster(b)
	env := start(b, cl, testConfig(b))
	f := NewFilter(env.a)
	req := kmsg.NewPtrProduceRequest()
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = "orders"
	for p := range int32(4) {
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = p
		rp.Records = batchBytes(b, 10, false)
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	x := exchange(testConn(1, alice), 0, allowTopic("orders", 0, 1, 2, 3))
	x.Request = req
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		f.OnResponse(ctx, x)
	}
	b.StopTimer()
	env.close(b)
}

// BenchmarkEncodeEvent is the sequencer's cost per event: encoding a
// typical decision and hashing it (off the request path).
func BenchmarkEncodeEvent(b *testing.B) {
	a := &Auditor{instance: "gw-1", source: "sluice/gw-1", chainID: "0123456789abcdef", prev: zeroHash}
	d := allowTopic("orders", 0, 1)
	d.Obligations = &filter.Obligations{Mask: []filter.MaskRule{{Field: "customer.ssn", Strategy: "redact"}}}
	it := item{kind: KindDecision, t: time.Now(), conn: testConn(1, alice), principal: alice, clientID: "client-1", apiKey: 1, apiVer: 16, d: d, records: 10, bytes: 1000}
	b.ReportAllocs()
	for b.Loop() {
		data := a.data(it, nil)
		e := Envelope{SpecVersion: SpecVersion, ID: "x-1", Source: a.source, Type: EventType(data.Kind), Time: fmtTime(it.t),
			DataContentType: "application/json", DataSchema: DataSchema, Sequence: "1", PrevHash: a.prev, ChainID: a.chainID, Data: data}
		v, err := json.Marshal(&e)
		if err != nil {
			b.Fatal(err)
		}
		a.prev = HashRecord(v)
	}
}

// BenchmarkVerify measures verification per event (10k-event chain with
// a signed head every 1000 events).
func BenchmarkVerify(b *testing.B) {
	const n = 10000
	keyFile := b.TempDir() + "/k"
	pub, err := GenerateKey(keyFile)
	if err != nil {
		b.Fatal(err)
	}
	priv, err := LoadPrivateKey(keyFile)
	if err != nil {
		b.Fatal(err)
	}
	a := &Auditor{instance: "gw-1", source: "sluice/gw-1", chainID: "0123456789abcdef", prev: zeroHash, priv: priv,
		out: make(chan []byte, n+n/1000+1), shipDone: make(chan struct{})}
	if a.m, err = newMetrics(nil, a); err != nil {
		b.Fatal(err)
	}
	it := item{kind: KindDecision, t: time.Now(), conn: testConn(1, alice), principal: alice, apiKey: 1, apiVer: 16, d: allowTopic("orders", 0, 1)}
	for i := range n {
		a.emit(a.data(it, nil), it.t)
		if i%1000 == 999 {
			a.emitHead(false)
		}
	}
	close(a.out)
	var recs []Record
	for v := range a.out {
		recs = append(recs, Record{Offset: int64(len(recs)), Value: v})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if rep := VerifyRecords(recs, pub); !rep.OK() || rep.Chains[0].SignedHeads != n/1000 {
			b.Fatalf("%+v", rep.Problems)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(recs)), "ns/event")
}
