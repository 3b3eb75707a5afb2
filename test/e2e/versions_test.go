package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/sluice-gw/sluice/test/harness"
)

// TestApiVersionsIntersection checks the gateway's ApiVersions against an
// upstream that speaks only Kafka 2.8: every key the gateway offers is one the
// upstream offers and kmsg can decode, within both ranges. Then kcat and
// franz-go, which would use newer versions, still produce and consume.
func TestApiVersionsIntersection(t *testing.T) {
	t.Parallel()
	const topic = "e2e-old-upstream"
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(3, topic), kfake.MaxVersions(kversion.V2_8_0()))
	gw := harness.StartGateway(t, cluster, nil)
	up := cluster.MaxVersions()
	got := gatewayVersions(t, gw.Bootstrap)
	if len(got) == 0 {
		t.Fatal("gateway advertises no API keys")
	}
	for key, r := range got {
		req := kmsg.RequestForKey(key)
		switch max, ok := up[key]; {
		case req == nil:
			t.Errorf("gateway advertises key %d, which it cannot decode", key)
		case !ok:
			t.Errorf("gateway advertises %s, which the upstream does not", kmsg.NameForKey(key))
		case r[1] > max && key != int16(kmsg.ApiVersions): // the gateway answers ApiVersions itself
			t.Errorf("gateway advertises %s up to v%d, upstream only v%d", kmsg.NameForKey(key), r[1], max)
		case r[1] > req.MaxVersion():
			t.Errorf("gateway advertises %s up to v%d, kmsg decodes v%d", kmsg.NameForKey(key), r[1], req.MaxVersion())
		case r[0] > r[1]:
			t.Errorf("gateway advertises %s with min v%d > max v%d", kmsg.NameForKey(key), r[0], r[1])
		}
	}
	for _, key := range []kmsg.Key{kmsg.Produce, kmsg.Fetch, kmsg.Metadata, kmsg.FindCoordinator, kmsg.ApiVersions, kmsg.JoinGroup, kmsg.OffsetCommit} {
		if _, ok := got[int16(key)]; !ok {
			t.Errorf("gateway does not advertise %s", key.Name())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	total := 0
	for _, c := range []client{&kgoClient{}, kcatClient{}} {
		t.Run(c.name(), func(t *testing.T) {
			requireAvailable(t, c)
			prefix := unsafeTopicChars.ReplaceAllString(c.name(), "")
			c.produce(ctx, t, gw.Bootstrap, topic, 5, prefix)
			total += 5
			vals := c.consume(ctx, t, gw.Bootstrap, topic, total)
			n := 0
			for _, v := range vals {
				if len(v) > len(prefix) && v[:len(prefix)] == prefix {
					n++
				}
			}
			if len(vals) < 5 || n != 5 {
				t.Errorf("consumed %v, want the 5 %s records among them", vals, prefix)
			}
		})
	}
	cluster.AssertOnlyGateway(t)
}

// TestLargeRecords moves records close to kfake's 1 MiB message limit in
// both directions, so produce requests and fetch responses span many reads.
func TestLargeRecords(t *testing.T) {
	t.Parallel()
	const topic = "e2e-large"
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(3, topic))
	gw := harness.StartGateway(t, cluster, nil)
	k := &kgoClient{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const n, size = 24, 900 << 10
	want := map[[32]byte]bool{}
	cl := k.newClient(t, gw.Bootstrap, kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()))
	defer cl.Close()
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		v := bytes.Repeat([]byte(fmt.Sprintf("%07d|", i)), size/8)
		want[sha256.Sum256(v)] = true
		recs = append(recs, &kgo.Record{Value: v})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	cons := k.newClient(t, gw.Bootstrap, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(50<<20), kgo.FetchMaxPartitionBytes(20<<20))
	defer cons.Close()
	for _, r := range k.poll(ctx, t, cons, n) {
		h := sha256.Sum256(r.Value)
		if !want[h] {
			t.Errorf("record at %s[%d]@%d (%d bytes) is not one that was produced", r.Topic, r.Partition, r.Offset, len(r.Value))
		}
		delete(want, h)
	}
	if len(want) != 0 {
		t.Errorf("%d records never came back", len(want))
	}
	cluster.AssertOnlyGateway(t)
}
