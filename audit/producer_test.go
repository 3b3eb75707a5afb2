package audit

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// produceSeen is what the cluster saw of one batch written to the audit
// topic.
type produceSeen struct {
	acks          int16
	producerID    int64
	producerEpoch int16
	firstSeq      int32
	records       int32
	partition     int32
}

// observeProduces records every batch of every Produce request to the
// audit topic that the cluster handles normally (not those the test
// cluster fails), and counts InitProducerID requests. It never answers
// a request itself.
func observeProduces(t *testing.T, cl *cluster) (seen func() []produceSeen, inits func() int) {
	t.Helper()
	var mu sync.Mutex
	var out []produceSeen
	var nInit int
	cl.c.ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		nInit++
		mu.Unlock()
		return nil, nil, false
	})
	cl.c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		req := r.(*kmsg.ProduceRequest)
		mu.Lock()
		defer mu.Unlock()
		for _, rt := range req.Topics {
			if rt.Topic != testTopic && rt.Topic != "" {
				continue
			}
			for _, rp := range rt.Partitions {
				raw := rp.Records
				for len(raw) > 0 {
					var b kmsg.RecordBatch
					if err := b.ReadFrom(raw); err != nil {
						t.Errorf("produce to the audit topic carries an unparsable batch: %v", err)
						break
					}
					out = append(out, produceSeen{acks: req.Acks, producerID: b.ProducerID, producerEpoch: b.ProducerEpoch,
						firstSeq: b.FirstSequence, records: b.NumRecords, partition: rp.Partition})
					n := int(b.Length) + 12
					if n <= 12 || n > len(raw) {
						break
					}
					raw = raw[n:]
				}
			}
		}
		return nil, nil, false
	})
	return func() []produceSeen {
			mu.Lock()
			defer mu.Unlock()
			return append([]produceSeen(nil), out...)
		}, func() int {
			mu.Lock()
			defer mu.Unlock()
			return nInit
		}
}

// TestProducerIdempotentAcksAll: every batch the auditor writes to the
// audit topic, directly or replayed from the spool after the topic could
// not be written, is sent with acks=all (-1) by an idempotent producer (a
// producer id from InitProducerID, an epoch and per-partition sequence
// numbers that run on without gaps or repeats within one producer id and
// epoch).
func TestProducerIdempotentAcksAll(t *testing.T) {
	cl := newCluster(t)
	seen, inits := observeProduces(t, cl)
	env := start(t, cl, testConfig(t))
	f := NewFilter(env.a)
	ctx := context.Background()
	c := testConn(1, alice)
	n := 0
	send := func(k int) {
		for range k {
			f.OnResponse(ctx, exchange(c, 0, denyTopic(fmt.Sprintf("t%d", n))))
			n++
		}
	}
	send(30)
	waitFor(t, "written", func() bool { return metricValue(env.a.m.written) >= 30 })
	cl.failing.Store(true)
	send(30)
	waitFor(t, "spooled", func() bool { return metricValue(env.a.m.spooled) >= 30 })
	cl.failing.Store(false)
	waitFor(t, "replayed", func() bool { return env.a.spoolBytes.Load() == 0 })
	send(10)
	env.close(t)
	checkAll(t, env, n)
	if metricValue(env.a.m.replayed) == 0 {
		t.Fatal("nothing replayed: the replay path was not exercised")
	}

	batches := seen()
	if len(batches) == 0 {
		t.Fatal("the cluster saw no batch written to the audit topic")
	}
	if inits() == 0 {
		t.Error("the audit producer never sent InitProducerID: not idempotent")
	}
	type stream struct {
		pid   int64
		epoch int16
		part  int32
	}
	next := map[stream]int32{}
	var recs int32
	for i, b := range batches {
		if b.acks != -1 {
			t.Errorf("batch %d sent with acks=%d, want -1 (all)", i, b.acks)
		}
		if b.producerID < 0 || b.producerEpoch < 0 || b.firstSeq < 0 {
			t.Errorf("batch %d: producer id %d epoch %d first sequence %d: not idempotent", i, b.producerID, b.producerEpoch, b.firstSeq)
			continue
		}
		k := stream{b.producerID, b.producerEpoch, b.partition}
		if want, ok := next[k]; ok && b.firstSeq != want {
			t.Errorf("batch %d: first sequence %d, want %d (producer %d epoch %d)", i, b.firstSeq, want, b.producerID, b.producerEpoch)
		}
		next[k] = b.firstSeq + b.records
		recs += b.records
	}
	t.Logf("%d batches, %d records, %d producer streams, %d InitProducerID", len(batches), recs, len(next), inits())
}
