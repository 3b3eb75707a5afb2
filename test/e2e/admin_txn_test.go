package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/test/harness"
)

// TestAdminAndTransactions creates a topic through the gateway (the request
// goes to the controller's gateway listener), then runs a franz-go
// transactional producer (transaction coordinator lookup, InitProducerID,
// AddPartitionsToTxn, EndTxn) and a read_committed consumer that sees only
// the committed transaction.
func TestAdminAndTransactions(t *testing.T) {
	t.Parallel()
	const topic = "e2e-created"
	cluster := harness.StartCluster(t, 3)
	gw := harness.StartGateway(t, cluster, nil)
	nodes := gw.Brokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	k := &kgoClient{}

	admin := k.newClient(t, gw.Bootstrap)
	defer admin.Close()
	md, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := nodes[md.ControllerID]; !ok {
		t.Errorf("controller %d is not a broker the gateway serves (%v)", md.ControllerID, nodes)
	}
	ct := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, 3, 1
	ct.Topics = append(ct.Topics, rt)
	ct.TimeoutMillis = 5000
	cresp, err := ct.RequestWith(ctx, admin)
	if err != nil {
		t.Fatalf("CreateTopics through the gateway: %v", err)
	}
	if err := kerr.ErrorForCode(cresp.Topics[0].ErrorCode); err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}

	txn := k.newClient(t, gw.Bootstrap, kgo.DefaultProduceTopic(topic), kgo.TransactionalID("e2e-txn"),
		kgo.TransactionTimeout(10*time.Second))
	defer txn.Close()
	for _, commit := range []bool{false, true} {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		prefix := "aborted"
		if commit {
			prefix = "committed"
		}
		for i, v := range values(prefix, 4) {
			if err := txn.ProduceSync(ctx, &kgo.Record{Partition: int32(i % 3), Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatalf("transactional produce: %v", err)
			}
		}
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatalf("end transaction (commit=%v): %v", commit, err)
		}
	}

	cons := k.newClient(t, gw.Bootstrap, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	defer cons.Close()
	assertSameValues(t, recordValues(k.poll(ctx, t, cons, 4)), values("committed", 4))
	// Nothing else arrives: the aborted records stay hidden.
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	defer pcancel()
	if extra := cons.PollFetches(pctx).Records(); len(extra) > 0 {
		t.Errorf("read_committed consumer got %d more records, first %q", len(extra), extra[0].Value)
	}

	gw.AssertGatewayAddrs(t, cluster, dedupe(k.dialedAddrs()))
	cluster.AssertOnlyGateway(t)
}
