package policy

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/proxy/kafkaerr"
)

func offsetCommitReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.OffsetCommitRequest)
	if err := f.need(ctx, x, ActionRead, ResourceGroup, req.Group, codeGroup); err != nil {
		return err
	}
	return perTopic(ActionRead, "Topics", "Topics")(ctx, f, x)
}

func offsetFetchReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.OffsetFetchRequest)
	if req.Version < 8 {
		return f.need(ctx, x, ActionDescribe, ResourceGroup, req.Group, codeGroup)
	}
	codes := make([]int16, len(req.Groups))
	for i, g := range req.Groups {
		if !f.allowed(ctx, x, ActionDescribe, ResourceGroup, g.Group) {
			codes[i] = codeGroup
		}
	}
	return f.strip(x, "Groups", "Groups", codes)
}

// offsetFetchResp enforces describe on the topics of the response, as
// Kafka does: a topic the request named that the principal may not describe
// is answered with TOPIC_AUTHORIZATION_FAILED on each of its partitions (no
// offset, no metadata), whether it exists or not; one the request did not
// name (an all-topics fetch, or anything else upstream added) is left out.
func offsetFetchResp(ctx context.Context, f *Filter, x *filter.Exchange) error {
	resp := x.Response.(*kmsg.OffsetFetchResponse)
	req := x.Request.(*kmsg.OffsetFetchRequest)
	// keep decides one topic of the response: kept as is, kept with
	// TOPIC_AUTHORIZATION_FAILED (deny), or left out.
	keep := func(name string, id [16]byte, named bool) (keep, deny bool) {
		n, ok := topicName(x, name, id)
		if ok {
			d := f.query(ctx, x, ActionDescribe, ResourceTopic, n)
			if d.Allow {
				return true, false
			}
			if named {
				f.record(x, ActionDescribe, ResourceTopic, n, nil, d)
			}
		}
		return named, named
	}
	kept := resp.Topics[:0]
	for _, t := range resp.Topics {
		k, deny := keep(t.Topic, [16]byte{}, offsetFetchNamed(req.Topics, t.Topic))
		if deny {
			for i := range t.Partitions {
				p := &t.Partitions[i]
				p.Offset, p.LeaderEpoch, p.Metadata, p.ErrorCode = -1, -1, kmsg.StringPtr(""), codeTopic
			}
		}
		if k {
			kept = append(kept, t)
		}
	}
	resp.Topics = kept
	for i := range resp.Groups {
		g := &resp.Groups[i]
		var named []kmsg.OffsetFetchRequestGroupTopic
		for _, rg := range req.Groups {
			if rg.Group == g.Group {
				named = rg.Topics
				break
			}
		}
		gk := g.Topics[:0]
		for _, t := range g.Topics {
			k, deny := keep(t.Topic, t.TopicID, offsetFetchGroupNamed(named, t.Topic, t.TopicID))
			if deny {
				for j := range t.Partitions {
					p := &t.Partitions[j]
					p.Offset, p.LeaderEpoch, p.Metadata, p.ErrorCode = -1, -1, kmsg.StringPtr(""), codeTopic
				}
			}
			if k {
				gk = append(gk, t)
			}
		}
		g.Topics = gk
	}
	return nil
}

func offsetFetchNamed(ts []kmsg.OffsetFetchRequestTopic, name string) bool {
	for _, t := range ts {
		if t.Topic == name {
			return true
		}
	}
	return false
}

func offsetFetchGroupNamed(ts []kmsg.OffsetFetchRequestGroupTopic, name string, id [16]byte) bool {
	for _, t := range ts {
		if (name != "" && t.Topic == name) || (id != [16]byte{} && t.TopicID == id) {
			return true
		}
	}
	return false
}

func findCoordinatorReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.FindCoordinatorRequest)
	var rt ResourceType
	var code int16
	switch req.CoordinatorType {
	case 0:
		rt, code = ResourceGroup, codeGroup
	case 1:
		rt, code = ResourceTransactionalID, codeTxn
	default:
		// Share-state coordinators are for brokers.
		return f.refuse(x, codeCluster, fmt.Sprintf("coordinator type %d is not available through the gateway", req.CoordinatorType))
	}
	if req.Version < 4 {
		return f.need(ctx, x, ActionDescribe, rt, req.CoordinatorKey, code)
	}
	return perName(ActionDescribe, rt, code, "CoordinatorKeys", "Coordinators")(ctx, f, x)
}

func listGroupsResp(ctx context.Context, f *Filter, x *filter.Exchange) error {
	resp := x.Response.(*kmsg.ListGroupsResponse)
	kept := resp.Groups[:0]
	for _, g := range resp.Groups {
		if f.query(ctx, x, ActionDescribe, ResourceGroup, g.Group).Allow {
			kept = append(kept, g)
		}
	}
	resp.Groups = kept
	return nil
}

func listTransactionsResp(ctx context.Context, f *Filter, x *filter.Exchange) error {
	resp := x.Response.(*kmsg.ListTransactionsResponse)
	kept := resp.TransactionStates[:0]
	for _, t := range resp.TransactionStates {
		if f.query(ctx, x, ActionDescribe, ResourceTransactionalID, t.TransactionalID).Allow {
			kept = append(kept, t)
		}
	}
	resp.TransactionStates = kept
	return nil
}

func offsetDeleteReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.OffsetDeleteRequest)
	if err := f.need(ctx, x, ActionDelete, ResourceGroup, req.Group, codeGroup); err != nil {
		return err
	}
	return perTopic(ActionRead, "Topics", "Topics")(ctx, f, x)
}

// subscribed refuses the request if any named subscribed topic may not be
// described. Regex subscriptions are resolved by the broker; the topics
// they assign are enforced on fetch.
func (f *Filter) subscribed(ctx context.Context, x *filter.Exchange, topics []string) error {
	for _, t := range topics {
		if d := f.decide(ctx, x, ActionDescribe, ResourceTopic, t, nil); !d.Allow {
			return f.refuse(x, codeTopic, fmt.Sprintf("describe topic %q: %s", t, d.Reason))
		}
	}
	return nil
}

func consumerGroupHeartbeatReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.ConsumerGroupHeartbeatRequest)
	if err := f.need(ctx, x, ActionRead, ResourceGroup, req.Group, codeGroup); err != nil {
		return err
	}
	return f.subscribed(ctx, x, req.SubscribedTopicNames)
}

func shareGroupHeartbeatReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.ShareGroupHeartbeatRequest)
	if err := f.need(ctx, x, ActionRead, ResourceGroup, req.GroupID, codeGroup); err != nil {
		return err
	}
	return f.subscribed(ctx, x, req.SubscribedTopicNames)
}

// streamsGroupHeartbeatReq checks the group and, when the member sends its
// topology, the topics in it: source topics need describe, the internal
// (changelog and repartition) topics the broker creates for the group need
// create. Source regexes are resolved by the broker; what they assign is
// enforced on fetch.
func streamsGroupHeartbeatReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.StreamsGroupHeartbeatRequest)
	if err := f.need(ctx, x, ActionRead, ResourceGroup, req.Group, codeGroup); err != nil {
		return err
	}
	if req.Topology == nil {
		return nil
	}
	for _, st := range req.Topology.Subtopologies {
		if err := f.subscribed(ctx, x, st.SourceTopics); err != nil {
			return err
		}
		if err := f.subscribed(ctx, x, st.RepartitionSinkTopics); err != nil {
			return err
		}
		internal := make([]string, 0, len(st.StateChangelogTopics)+len(st.RepartitionSourceTopics))
		for _, t := range st.StateChangelogTopics {
			internal = append(internal, t.Topic)
		}
		for _, t := range st.RepartitionSourceTopics {
			internal = append(internal, t.Topic)
		}
		for _, t := range internal {
			if d := f.decide(ctx, x, ActionCreate, ResourceTopic, t, nil); !d.Allow {
				return f.refuse(x, codeTopic, fmt.Sprintf("create topic %q: %s", t, d.Reason))
			}
		}
	}
	return nil
}

func shareFetchReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.ShareFetchRequest)
	if req.GroupID != nil {
		if err := f.need(ctx, x, ActionRead, ResourceGroup, *req.GroupID, codeGroup); err != nil {
			return err
		}
	}
	codes := make([]int16, len(req.Topics))
	for i, t := range req.Topics {
		c, d := f.topicCode(ctx, x, ActionRead, "", t.TopicID, nil)
		if c == 0 && !d.Obligations.Empty() {
			// No filter masks share-fetched records: a read that
			// requires masking or row filtering is refused here.
			c = codeTopic
		}
		codes[i] = c
	}
	return f.strip(x, "Topics", "Topics", codes)
}

// shareFetchResp withholds records of topics that are no longer readable
// (share sessions, like fetch sessions, do not re-list partitions), or
// readable only with obligations, which nothing applies to share fetches.
func shareFetchResp(ctx context.Context, f *Filter, x *filter.Exchange) error {
	resp := x.Response.(*kmsg.ShareFetchResponse)
	for i := range resp.Topics {
		t := &resp.Topics[i]
		name, ok := topicName(x, "", t.TopicID)
		if ok {
			// Decided again: the share session may return unlisted
			// partitions, and the policy may have changed during a
			// long poll.
			d := f.queryAt(ctx, x, ActionRead, ResourceTopic, name, time.Now())
			if prior, seen := requestDecision(x, name); !seen || prior.Allow != d.Allow {
				f.record(x, ActionRead, ResourceTopic, name, nil, d)
			}
			if d.Allow && d.Obligations.Empty() {
				continue
			}
		}
		code := codeTopic
		if !ok {
			code = codeTopicID
		}
		sub := kmsg.NewPtrShareFetchRequest()
		sub.Version = resp.Version
		st := kmsg.NewShareFetchRequestTopic()
		st.TopicID = t.TopicID
		for _, p := range t.Partitions {
			sp := kmsg.NewShareFetchRequestTopicPartition()
			sp.Partition = p.Partition
			st.Partitions = append(st.Partitions, sp)
		}
		sub.Topics = append(sub.Topics, st)
		if err := replaceTopic(sub, code, &resp.Topics[i]); err != nil {
			return err
		}
	}
	return nil
}

func shareAckReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.ShareAcknowledgeRequest)
	if req.GroupID != nil {
		if err := f.need(ctx, x, ActionRead, ResourceGroup, *req.GroupID, codeGroup); err != nil {
			return err
		}
	}
	return perTopic(ActionRead, "Topics", "Topics")(ctx, f, x)
}

func describeShareGroupOffsetsReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.DescribeShareGroupOffsetsRequest)
	for _, g := range req.Groups {
		if err := f.need(ctx, x, ActionDescribe, ResourceGroup, g.GroupID, codeGroup); err != nil {
			return err
		}
		if err := f.allTopics(ctx, x, ActionDescribe, reflect.ValueOf(g.Topics)); err != nil {
			return err
		}
	}
	return nil
}

func alterShareGroupOffsetsReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.AlterShareGroupOffsetsRequest)
	if err := f.need(ctx, x, ActionRead, ResourceGroup, req.GroupID, codeGroup); err != nil {
		return err
	}
	return perTopic(ActionRead, "Topics", "Topics")(ctx, f, x)
}

func deleteShareGroupOffsetsReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.DeleteShareGroupOffsetsRequest)
	if err := f.need(ctx, x, ActionDelete, ResourceGroup, req.GroupID, codeGroup); err != nil {
		return err
	}
	return perTopic(ActionRead, "Topics", "Topics")(ctx, f, x)
}

// --- transactions ----------------------------------------------------------

func initProducerIDReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.InitProducerIDRequest)
	if req.TransactionalID != nil {
		return f.need(ctx, x, ActionWrite, ResourceTransactionalID, *req.TransactionalID, codeTxn)
	}
	return f.need(ctx, x, ActionIdempotentWrite, ResourceCluster, ClusterName, codeCluster)
}

// addPartitionsToTxnReq decides the client versions (v0-3) and refuses
// v4+ outright: batched and verify-only AddPartitionsToTxn is the
// broker-to-broker side of KIP-890, which Kafka allows only with
// CLUSTER_ACTION on the cluster and refuses from clients with
// CLUSTER_AUTHORIZATION_FAILED (clients use v3 and below).
func addPartitionsToTxnReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.AddPartitionsToTxnRequest)
	if req.Version >= 4 {
		return f.refuse(x, codeCluster, "AddPartitionsToTxn v4+ is broker-to-broker (KIP-890): not available through the gateway")
	}
	if err := f.need(ctx, x, ActionWrite, ResourceTransactionalID, req.TransactionalID, codeTxn); err != nil {
		return err
	}
	return f.allOrNothing(x, f.topicCodes(ctx, x, ActionWrite, reflect.ValueOf(req.Topics)))
}

// allOrNothing answers an AddPartitionsToTxn (v0-3) with a denied topic
// locally, as Kafka does: nothing is added, the denied topics' partitions
// carry their code and the others OPERATION_NOT_ATTEMPTED.
func (f *Filter) allOrNothing(x *filter.Exchange, codes []int16) error {
	denied := false
	for _, c := range codes {
		denied = denied || c != 0
	}
	if !denied {
		return nil
	}
	resp, err := kafkaerr.ErrorResponse(x.Request, kerr.OperationNotAttempted.Code)
	if err != nil {
		return err
	}
	topics := resp.(*kmsg.AddPartitionsToTxnResponse).Topics
	if len(topics) != len(codes) {
		return fmt.Errorf("policy: internal: %d topics answered for %d", len(topics), len(codes))
	}
	for i, c := range codes {
		for j := range topics[i].Partitions {
			if c != 0 {
				topics[i].Partitions[j].ErrorCode = c
			}
		}
	}
	f.refused.WithLabelValues(apiName(x.Key)).Inc()
	x.Local = resp
	x.Set(stashKey{}, &stash{local: true})
	return nil
}

func addOffsetsToTxnReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.AddOffsetsToTxnRequest)
	if err := f.need(ctx, x, ActionWrite, ResourceTransactionalID, req.TransactionalID, codeTxn); err != nil {
		return err
	}
	return f.need(ctx, x, ActionRead, ResourceGroup, req.Group, codeGroup)
}

func txnOffsetCommitReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.TxnOffsetCommitRequest)
	if err := f.need(ctx, x, ActionWrite, ResourceTransactionalID, req.TransactionalID, codeTxn); err != nil {
		return err
	}
	if err := f.need(ctx, x, ActionRead, ResourceGroup, req.Group, codeGroup); err != nil {
		return err
	}
	return perTopic(ActionRead, "Topics", "Topics")(ctx, f, x)
}

// Group describes name topics: every member's subscribed topics and its
// current and target assignments. Kafka answers a group whose topics the
// principal may not all describe with TOPIC_AUTHORIZATION_FAILED (KIP-848);
// so does the gateway, with no members, so that describing one's own group
// never names a topic the policy hides (a regex subscription is resolved
// by the broker as the gateway's principal).

func consumerGroupDescribeResp(ctx context.Context, f *Filter, x *filter.Exchange) error {
	resp := x.Response.(*kmsg.ConsumerGroupDescribeResponse)
	for i := range resp.Groups {
		g := &resp.Groups[i]
		if g.ErrorCode != 0 {
			continue
		}
		var names []string
		for _, m := range g.Members {
			names = append(names, m.SubscribedTopics...)
			for _, tp := range m.Assignment.TopicPartitions {
				names = append(names, assignedName(x, tp.Topic, tp.TopicID))
			}
			for _, tp := range m.TargetAssignment.TopicPartitions {
				names = append(names, assignedName(x, tp.Topic, tp.TopicID))
			}
		}
		if !f.describesAll(ctx, x, names) {
			g.ErrorCode, g.ErrorMessage, g.Members = codeTopic, kmsg.StringPtr(groupTopicsHidden), nil
			x.MarkResponseChanged()
		}
	}
	return nil
}

func shareGroupDescribeResp(ctx context.Context, f *Filter, x *filter.Exchange) error {
	resp := x.Response.(*kmsg.ShareGroupDescribeResponse)
	for i := range resp.Groups {
		g := &resp.Groups[i]
		if g.ErrorCode != 0 {
			continue
		}
		var names []string
		for _, m := range g.Members {
			names = append(names, m.SubscribedTopicNames...)
			for _, tp := range m.Assignment.TopicPartitions {
				names = append(names, assignedName(x, tp.Topic, tp.TopicID))
			}
		}
		if !f.describesAll(ctx, x, names) {
			g.ErrorCode, g.ErrorMessage, g.Members = codeTopic, kmsg.StringPtr(groupTopicsHidden), nil
			x.MarkResponseChanged()
		}
	}
	return nil
}

const groupTopicsHidden = "the group's members use topics you may not describe"

// assignedName names an assigned topic, by its name or its id resolved;
// "" (never describable) when neither is known.
func assignedName(x *filter.Exchange, name string, id [16]byte) string {
	n, _ := topicName(x, name, id)
	return n
}

// describesAll reports whether the principal may describe every topic of
// names ("" is a topic that could not be named: hidden), each decided once.
func (f *Filter) describesAll(ctx context.Context, x *filter.Exchange, names []string) bool {
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if n == "" {
			return false
		}
		if seen[n] {
			continue
		}
		if !f.query(ctx, x, ActionDescribe, ResourceTopic, n).Allow {
			return false
		}
		seen[n] = true
	}
	return true
}

// streamsGroupDescribeResp does for streams groups what
// consumerGroupDescribeResp does: the topology (and, v1+, its description)
// names every source, sink, changelog and repartition topic.
func streamsGroupDescribeResp(ctx context.Context, f *Filter, x *filter.Exchange) error {
	resp := x.Response.(*kmsg.StreamsGroupDescribeResponse)
	for i := range resp.Groups {
		g := &resp.Groups[i]
		if g.ErrorCode != 0 {
			continue
		}
		var names []string
		if t := g.Topology; t != nil {
			for _, st := range t.Subtopologies {
				names = append(names, st.SourceTopics...)
				names = append(names, st.RepartitionSinkTopics...)
				for _, ti := range st.StateChangelogTopics {
					names = append(names, ti.Topic)
				}
				for _, ti := range st.RepartitionSourceTopics {
					names = append(names, ti.Topic)
				}
			}
		}
		if d := g.TopologyDescription; d != nil {
			node := func(n *kmsg.TopologyDescriptionNode) {
				names = append(names, n.SourceTopics...)
				if n.SinkTopic != nil {
					names = append(names, *n.SinkTopic)
				}
			}
			for _, st := range d.Subtopologies {
				for j := range st.Nodes {
					node(&st.Nodes[j])
				}
			}
			for j := range d.GlobalStores {
				node(&d.GlobalStores[j].Source)
				node(&d.GlobalStores[j].Processor)
			}
		}
		if !f.describesAll(ctx, x, names) {
			g.ErrorCode, g.ErrorMessage = codeTopic, kmsg.StringPtr(groupTopicsHidden)
			g.Topology, g.TopologyDescription, g.Members = nil, nil, nil
			x.MarkResponseChanged()
		}
	}
	return nil
}

// describeShareGroupOffsetsResp keeps, in each group, the topics the
// principal may describe: a request for all of a group's topics (null)
// names none, so this is where they are decided, as Kafka filters them.
func describeShareGroupOffsetsResp(ctx context.Context, f *Filter, x *filter.Exchange) error {
	resp := x.Response.(*kmsg.DescribeShareGroupOffsetsResponse)
	for i := range resp.Groups {
		g := &resp.Groups[i]
		kept := g.Topics[:0]
		for _, t := range g.Topics {
			if n, ok := topicName(x, t.Topic, t.TopicID); ok && n != "" && f.query(ctx, x, ActionDescribe, ResourceTopic, n).Allow {
				kept = append(kept, t)
			}
		}
		clear(g.Topics[len(kept):])
		g.Topics = kept
	}
	return nil
}

// describeTransactionsResp drops, from each transaction, the topics the
// principal may not describe, as Kafka does.
func describeTransactionsResp(ctx context.Context, f *Filter, x *filter.Exchange) error {
	resp := x.Response.(*kmsg.DescribeTransactionsResponse)
	for i := range resp.TransactionStates {
		s := &resp.TransactionStates[i]
		kept := s.Topics[:0]
		for _, t := range s.Topics {
			if f.query(ctx, x, ActionDescribe, ResourceTopic, t.Topic).Allow {
				kept = append(kept, t)
			}
		}
		clear(s.Topics[len(kept):])
		s.Topics = kept
	}
	return nil
}
