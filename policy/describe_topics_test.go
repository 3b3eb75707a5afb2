package policy

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// StreamsGroupDescribe is decided on the group only; its response names the
// topology's source, repartition and changelog topics (and, v1, the topology
// description's). A topic the principal may not describe passes unfiltered,
// unlike ConsumerGroupDescribe / ShareGroupDescribe.
func TestStreamsGroupDescribeHidesTopics(t *testing.T) {
	f := newExampleFilter(t)
	ctx := context.Background()
	req := kmsg.NewPtrStreamsGroupDescribeRequest()
	req.Version = 0
	req.Groups = []string{"acme.app"}
	x := exchange(acme, req)
	if err := f.OnRequest(ctx, x); err != nil || x.Local != nil {
		t.Fatalf("own group refused: err %v local %v", err, x.Local)
	}
	if f.query(ctx, x, ActionDescribe, ResourceTopic, "payments.settled").Allow {
		t.Fatal("premise: payments.settled describable")
	}
	resp := req.ResponseKind().(*kmsg.StreamsGroupDescribeResponse)
	g := kmsg.NewStreamsGroupDescribeResponseGroup()
	g.Group = "acme.app"
	topo := kmsg.NewStreamsGroupDescribeResponseGroupTopology()
	st := kmsg.NewStreamsGroupDescribeResponseGroupTopologySubtopology()
	st.SourceTopics = []string{"orders.eu", "payments.settled"}
	topo.Subtopologies = append(topo.Subtopologies, st)
	g.Topology = &topo
	resp.Groups = append(resp.Groups, g)
	x.Response = resp
	if err := f.OnResponse(ctx, x); err != nil {
		t.Fatal(err)
	}
	for _, g := range resp.Groups {
		if g.ErrorCode != 0 || g.Topology == nil {
			continue
		}
		for _, st := range g.Topology.Subtopologies {
			for _, tp := range st.SourceTopics {
				if tp == "payments.settled" {
					t.Errorf("streams group %s describe reveals topic %q the principal may not describe", g.Group, tp)
				}
			}
		}
	}
}

// StreamsGroupHeartbeat: Kafka requires DESCRIBE on every topic of the
// topology, repartition sink topics included. The gateway never decides
// RepartitionSinkTopics.
func TestStreamsHeartbeatRepartitionSinkDecided(t *testing.T) {
	f := newExampleFilter(t)
	ctx := context.Background()
	req := kmsg.NewPtrStreamsGroupHeartbeatRequest()
	req.Group = "acme.app"
	topo := kmsg.NewStreamsGroupHeartbeatRequestTopology()
	st := kmsg.NewStreamsGroupHeartbeatRequestTopologySubtopology()
	st.SourceTopics = []string{"orders.eu"}
	st.RepartitionSinkTopics = []string{"payments.settled"}
	topo.Subtopologies = append(topo.Subtopologies, st)
	req.Topology = &topo
	x := exchange(acme, req)
	err := f.OnRequest(ctx, x)
	decided := false
	for _, d := range x.Decisions {
		if d.Resource == "payments.settled" {
			decided = true
		}
	}
	if err == nil && x.Local == nil {
		t.Errorf("heartbeat naming repartition sink topic payments.settled (not describable) forwarded; decided=%v", decided)
	}
}

// DescribeShareGroupOffsets: a group's Topics null means all topics of the
// share group. No response rule: every topic comes back, named, with its
// offsets, whether the principal may describe it or not.
func TestDescribeShareGroupOffsetsAllTopicsFiltered(t *testing.T) {
	f := newExampleFilter(t)
	ctx := context.Background()
	req := kmsg.NewPtrDescribeShareGroupOffsetsRequest()
	req.Version = 1
	g := kmsg.NewDescribeShareGroupOffsetsRequestGroup()
	g.GroupID = "acme.share"
	g.Topics = nil // all topics
	req.Groups = append(req.Groups, g)
	x := exchange(acme, req)
	if err := f.OnRequest(ctx, x); err != nil || x.Local != nil {
		t.Fatalf("own group refused: err %v local %v", err, x.Local)
	}
	resp := req.ResponseKind().(*kmsg.DescribeShareGroupOffsetsResponse)
	rg := kmsg.NewDescribeShareGroupOffsetsResponseGroup()
	rg.GroupID = "acme.share"
	for _, n := range []string{"orders.eu", "payments.settled"} {
		rt := kmsg.NewDescribeShareGroupOffsetsResponseGroupTopic()
		rt.Topic = n
		rp := kmsg.NewDescribeShareGroupOffsetsResponseGroupTopicPartition()
		rp.StartOffset = 42
		rt.Partitions = append(rt.Partitions, rp)
		rg.Topics = append(rg.Topics, rt)
	}
	resp.Groups = append(resp.Groups, rg)
	x.Response = resp
	if err := f.OnResponse(ctx, x); err != nil {
		t.Fatal(err)
	}
	for _, g := range resp.Groups {
		for _, tp := range g.Topics {
			if tp.Topic == "payments.settled" {
				t.Errorf("DescribeShareGroupOffsets (all topics) returns topic %q with offsets %+v", tp.Topic, tp.Partitions)
			}
		}
	}
}

// DescribeTransactions: Kafka removes from each transaction the topics the
// principal may not describe. No response rule here.
func TestDescribeTransactionsTopicsFiltered(t *testing.T) {
	f := newExampleFilter(t)
	ctx := context.Background()
	req := kmsg.NewPtrDescribeTransactionsRequest()
	req.TransactionalIDs = []string{"acme.tx"}
	x := exchange(acme, req)
	if err := f.OnRequest(ctx, x); err != nil || x.Local != nil {
		t.Fatalf("own txn refused: err %v local %v", err, x.Local)
	}
	resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
	ts := kmsg.NewDescribeTransactionsResponseTransactionState()
	ts.TransactionalID = "acme.tx"
	for _, n := range []string{"inbound.acme.x", "payments.settled"} {
		tt := kmsg.NewDescribeTransactionsResponseTransactionStateTopic()
		tt.Topic, tt.Partitions = n, []int32{0}
		ts.Topics = append(ts.Topics, tt)
	}
	resp.TransactionStates = append(resp.TransactionStates, ts)
	x.Response = resp
	if err := f.OnResponse(ctx, x); err != nil {
		t.Fatal(err)
	}
	for _, s := range resp.TransactionStates {
		for _, tp := range s.Topics {
			if tp.Topic == "payments.settled" {
				t.Errorf("DescribeTransactions reveals topic %q in transaction %s", tp.Topic, s.TransactionalID)
			}
		}
	}
}

// StreamsGroupDescribe v1: the topology description (stored by
// StreamsGroupTopologyDescriptionUpdate, whose topics are not decided
// either) names source and sink topics; it passes unfiltered too.
func TestStreamsGroupDescribeV1TopologyDescription(t *testing.T) {
	f := newExampleFilter(t)
	ctx := context.Background()
	req := kmsg.NewPtrStreamsGroupDescribeRequest()
	req.Version = 1
	req.Groups = []string{"acme.app"}
	x := exchange(acme, req)
	if err := f.OnRequest(ctx, x); err != nil || x.Local != nil {
		t.Fatalf("own group refused: err %v local %v", err, x.Local)
	}
	resp := req.ResponseKind().(*kmsg.StreamsGroupDescribeResponse)
	g := kmsg.NewStreamsGroupDescribeResponseGroup()
	g.Group = "acme.app"
	td := kmsg.NewStreamsGroupDescribeResponseGroupTopologyDescription()
	sub := kmsg.NewTopologyDescriptionSubtopology()
	node := kmsg.NewTopologyDescriptionNode()
	sink := "payments.settled"
	node.Name, node.SinkTopic = "sink", &sink
	sub.Nodes = append(sub.Nodes, node)
	td.Subtopologies = append(td.Subtopologies, sub)
	g.TopologyDescription, g.TopologyDescriptionStatus = &td, 3
	resp.Groups = append(resp.Groups, g)
	x.Response = resp
	if err := f.OnResponse(ctx, x); err != nil {
		t.Fatal(err)
	}
	for _, g := range resp.Groups {
		if g.ErrorCode == 0 && g.TopologyDescription != nil {
			for _, s := range g.TopologyDescription.Subtopologies {
				for _, n := range s.Nodes {
					if n.SinkTopic != nil && *n.SinkTopic == "payments.settled" {
						t.Errorf("streams group %s topology description reveals sink topic %q", g.Group, *n.SinkTopic)
					}
				}
			}
		}
	}
}
