package masking

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/schema"
)

// Kafka's ReplicaManager reads partitions in order with one byte budget
// (fetch max_bytes), and minOneMessage is true only until the first
// non-empty partition: every later partition is read by LogSegment.read
// with maxSize = the budget left, and log.slice(start, maxSize) returns a
// partial batch alone when its first batch is larger. This happens on any
// Fetch version (also v12, as here) whenever a response fills its budget,
// and a partition's partition_max_bytes smaller than its next batch does the
// same. Consumers ignore the fragment and fetch again. A masked topic's
// partition like that must come out empty, without an error.
func TestPartialBatchAloneGoesOutEmpty(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	f, err := newFilter(testConfig(t), staticSource{9: s}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	whole := makeBatch(t, 0, 0, 0, demoValues(t, s, 5, 0), -1)
	next := makeBatch(t, 0, 100, 0, demoValues(t, s, 5, 0), -1)
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 12
	tp := kmsg.NewFetchResponseTopic()
	tp.Topic = "payments"
	for i, b := range [][]byte{whole, next[:len(next)/2]} { // partition 1: the budget ran out mid-batch
		p := kmsg.NewFetchResponseTopicPartition()
		p.Partition = int32(i)
		p.HighWatermark = 200
		p.RecordBatches = b
		tp.Partitions = append(tp.Partitions, p)
	}
	resp.Topics = append(resp.Topics, tp)
	x := &filter.Exchange{Key: 1, Version: 12, Response: resp,
		Obligations: map[string]*filter.Obligations{"payments": {Mask: demoRules}}}
	if err := f.OnResponse(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	p1 := &resp.Topics[0].Partitions[1]
	if p1.ErrorCode != 0 {
		t.Fatalf("partition 1 (a partial batch alone, as the broker cuts a later partition at the response's byte budget) answered error %d instead of no records", p1.ErrorCode)
	}
}
