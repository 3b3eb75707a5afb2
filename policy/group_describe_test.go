package policy

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ConsumerGroupDescribe is decided on the group only; its response names
// every member's subscribed and assigned topics. A partner that subscribes
// its own group with a regex (the broker resolves it, as the gateway's
// principal) learns, by describing its group, the names of topics it may
// not describe. Kafka answers such a group with TOPIC_AUTHORIZATION_FAILED.
func TestConsumerGroupDescribeHidesTopics(t *testing.T) {
	f := newExampleFilter(t)
	ctx := context.Background()
	req := kmsg.NewPtrConsumerGroupDescribeRequest()
	req.Version = 0
	req.Groups = []string{"acme.g"}
	x := exchange(acme, req)
	if err := f.OnRequest(ctx, x); err != nil || x.Local != nil {
		t.Fatalf("own group refused: err %v local %v", err, x.Local)
	}
	resp := req.ResponseKind().(*kmsg.ConsumerGroupDescribeResponse)
	g := kmsg.NewConsumerGroupDescribeResponseGroup()
	g.Group = "acme.g"
	m := kmsg.NewConsumerGroupDescribeResponseGroupMember()
	rx := "payments.*"
	m.SubscribedTopicRegex = &rx
	m.Assignment.TopicPartitions = []kmsg.AssignmentTopicPartition{{TopicID: idSecret, Topic: "payments.settled", Partitions: []int32{0}}}
	g.Members = append(g.Members, m)
	resp.Groups = append(resp.Groups, g)
	x.Response = resp
	if err := f.OnResponse(ctx, x); err != nil {
		t.Fatal(err)
	}
	if d := f.query(ctx, x, ActionDescribe, ResourceTopic, "payments.settled"); d.Allow {
		t.Fatal("premise: payments.settled describable")
	}
	for _, g := range resp.Groups {
		for _, m := range g.Members {
			for _, tp := range m.Assignment.TopicPartitions {
				if tp.Topic == "payments.settled" && g.ErrorCode == 0 {
					t.Errorf("group %s describe reveals topic %q (id %x) the principal may not describe", g.Group, tp.Topic, tp.TopicID[:2])
				}
			}
		}
	}
}

// The group's own topics, all describable, pass as they came.
func TestConsumerGroupDescribeKeepsDescribableGroup(t *testing.T) {
	f := newExampleFilter(t)
	ctx := context.Background()
	req := kmsg.NewPtrConsumerGroupDescribeRequest()
	req.Groups = []string{"acme.g"}
	x := exchange(acme, req)
	if err := f.OnRequest(ctx, x); err != nil || x.Local != nil {
		t.Fatalf("own group refused: err %v local %v", err, x.Local)
	}
	resp := req.ResponseKind().(*kmsg.ConsumerGroupDescribeResponse)
	g := kmsg.NewConsumerGroupDescribeResponseGroup()
	g.Group = "acme.g"
	m := kmsg.NewConsumerGroupDescribeResponseGroupMember()
	m.SubscribedTopics = []string{"orders.eu"}
	m.Assignment.TopicPartitions = []kmsg.AssignmentTopicPartition{{Topic: "orders.eu", Partitions: []int32{0}}}
	g.Members = append(g.Members, m)
	resp.Groups = append(resp.Groups, g)
	x.Response = resp
	if err := f.OnResponse(ctx, x); err != nil {
		t.Fatal(err)
	}
	if g := resp.Groups[0]; g.ErrorCode != 0 || len(g.Members) != 1 {
		t.Fatalf("describable group changed: code %d, %d members", g.ErrorCode, len(g.Members))
	}
}

// The same for share groups.
func TestShareGroupDescribeHidesTopics(t *testing.T) {
	f := newExampleFilter(t)
	ctx := context.Background()
	req := kmsg.NewPtrShareGroupDescribeRequest()
	req.GroupIDs = []string{"acme.s"}
	x := exchange(acme, req)
	if err := f.OnRequest(ctx, x); err != nil || x.Local != nil {
		t.Fatalf("own group refused: err %v local %v", err, x.Local)
	}
	resp := req.ResponseKind().(*kmsg.ShareGroupDescribeResponse)
	g := kmsg.NewShareGroupDescribeResponseGroup()
	g.GroupID = "acme.s"
	m := kmsg.NewShareGroupDescribeResponseGroupMember()
	m.SubscribedTopicNames = []string{"orders.eu", "payments.settled"}
	g.Members = append(g.Members, m)
	resp.Groups = append(resp.Groups, g)
	x.Response = resp
	if err := f.OnResponse(ctx, x); err != nil {
		t.Fatal(err)
	}
	if g := resp.Groups[0]; g.ErrorCode != kerr.TopicAuthorizationFailed.Code || len(g.Members) != 0 {
		t.Fatalf("share group naming a hidden topic: code %d, %d members", g.ErrorCode, len(g.Members))
	}
}
