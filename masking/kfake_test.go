package masking

import (
	"context"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/schema"
)

// TestBrokerBatches masks Fetch responses that a real (fake) broker built
// from batches a real producer wrote, per codec, with committed and aborted
// transactions, and consumes the result with kgo's fetch processing at
// read_committed.
func TestBrokerBatches(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "payments"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	f, err := newFilter(testConfig(t), staticSource{9: s}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	codecs := []kgo.CompressionCodec{kgo.NoCompression(), kgo.GzipCompression(), kgo.SnappyCompression(), kgo.Lz4Compression(), kgo.ZstdCompression()}
	offset := int64(0)
	for ci, codec := range codecs {
		p, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerBatchCompression(codec),
			kgo.TransactionalID("tx-"+codecNames[ci]), kgo.DefaultProduceTopic("payments"))
		if err != nil {
			t.Fatal(err)
		}
		produce := func(from, n int, commit bool) {
			if err := p.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			var recs []*kgo.Record
			for _, r := range demoValues(t, s, n, from) {
				recs = append(recs, &kgo.Record{Key: r.key, Value: r.value})
			}
			if err := p.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			if err := p.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
				t.Fatal(err)
			}
		}
		produce(0, 10, true)
		produce(100, 5, false)
		produce(10, 10, true)
		p.Close()

		cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
		if err != nil {
			t.Fatal(err)
		}
		meta := kmsg.NewPtrMetadataRequest()
		mt := kmsg.NewMetadataRequestTopic()
		topic := "payments"
		mt.Topic = &topic
		meta.Topics = append(meta.Topics, mt)
		mresp, err := meta.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		topicID := mresp.Topics[0].TopicID

		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis = 100
		req.MaxBytes = 10 << 20
		req.IsolationLevel = 1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, topicID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.FetchOffset = offset
		rp.PartitionMaxBytes = 10 << 20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		x := &filter.Exchange{Key: 1, Version: resp.Version, Response: resp, Topics: resolver{topicID: topic},
			Obligations: map[string]*filter.Obligations{topic: {Mask: demoRules}}}
		if err := f.OnResponse(ctx, x); err != nil {
			t.Fatal(err)
		}
		part := &resp.Topics[0].Partitions[0]
		if part.ErrorCode != 0 {
			t.Fatalf("%s: partition error %d", codecNames[ci], part.ErrorCode)
		}
		fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: offset, Topic: topic, IsolationLevel: kgo.ReadCommitted()},
			part, kgo.DefaultDecompressor(), nil)
		if fp.Err != nil {
			t.Fatalf("%s: %v", codecNames[ci], fp.Err)
		}
		if len(fp.Records) != 20 {
			t.Fatalf("%s: %d committed records, want 20", codecNames[ci], len(fp.Records))
		}
		for i, r := range fp.Records {
			_, body, err := schema.ParseWire(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			var d schema.DemoPayment
			if err := avro.Unmarshal(s.Avro, body, &d); err != nil {
				t.Fatal(err)
			}
			if d.Customer.SSN != refHash(schema.DemoRecord(i).Customer.SSN) {
				t.Fatalf("%s: record %d not masked", codecNames[ci], i)
			}
		}
		// 25 data records and 3 commit/abort markers.
		if next != offset+28 {
			t.Fatalf("%s: next offset %d, want %d", codecNames[ci], next, offset+28)
		}
		offset = next
		t.Logf("%s: %d records masked, %d bytes", codecNames[ci], x.Stats.Records, x.Stats.Bytes)
	}
}
