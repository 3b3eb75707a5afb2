package e2e

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/audit"
)

// TestAuditDecisionOfAbandonedRequest: a partner's allowed Produce is
// forwarded, the cluster holds its answer, and the partner disconnects;
// the cluster then writes the records. The decision that let them through
// must be in the audit topic, although no answer was ever written.
func TestAuditDecisionOfAbandonedRequest(t *testing.T) {
	t.Parallel()
	e := startAuditEnv(t, map[string]any{"fold_window": "0s"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := e.topicID(ctx, t, audInbound)
	var held atomic.Int64
	release := make(chan struct{})
	c := e.cluster
	c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		for _, rt := range r.(*kmsg.ProduceRequest).Topics {
			if rt.Topic == audInbound || rt.TopicID == id {
				held.Add(1)
				c.SleepControl(func() { <-release })
			}
		}
		return nil, nil, false
	})
	cl := e.client(t, audAcme, kgo.DefaultProduceTopic(audInbound))
	cl.Produce(ctx, &kgo.Record{Value: []byte("abandoned")}, nil)
	for held.Load() == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	cl.Close() // the partner goes away before the answer
	time.Sleep(500 * time.Millisecond)
	close(release)
	// The records are written.
	rd, err := kgo.NewClient(kgo.SeedBrokers(e.cluster.Addrs()...), kgo.ConsumeTopics(audInbound), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	fs := rd.PollFetches(ctx)
	if fs.NumRecords() == 0 || string(fs.Records()[0].Value) != "abandoned" {
		t.Fatalf("records not written: %v", fs.Errors())
	}
	e.settle(t)
	e.stop(t)
	n := 0
	for _, x := range e.events(t) {
		if d := x.ev.Data; d.Kind == audit.KindDecision && d.API != nil && d.API.Name == "Produce" && d.Resource == audInbound {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the cluster wrote the partner's records to %s, and the audit topic holds %d Produce decisions on it, want 1", audInbound, n)
	}
}
