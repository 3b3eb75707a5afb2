package policy

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/proxy/kafkaerr"
)

func produceReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.ProduceRequest)
	if req.TransactionID != nil {
		if err := f.need(ctx, x, ActionWrite, ResourceTransactionalID, *req.TransactionID, codeTxn); err != nil {
			return err
		}
	}
	codes := make([]int16, len(req.Topics))
	for i, t := range req.Topics {
		c, d := f.topicCode(ctx, x, ActionWrite, t.Topic, t.TopicID, produceParts(t.Partitions))
		codes[i] = c
		if c == 0 {
			// A write's obligations (masking a partner's inbound data)
			// are for the mask filter, which runs next.
			name, _ := topicName(x, t.Topic, t.TopicID)
			attach(x, name, d)
		}
	}
	return f.strip(x, "Topics", "Topics", codes)
}

// StreamProduce implements filter.ProduceStreamer: a one-topic Produce
// request is streamed when its transactional id, if any, and its topic are
// allowed, with the decisions produceReq would record. A denial is left to
// produceReq on the whole request, which answers every partition.
func (f *Filter) StreamProduce(ctx context.Context, x *filter.Exchange) bool {
	req, ok := x.Request.(*kmsg.ProduceRequest)
	if !ok || len(req.Topics) != 1 {
		return false
	}
	t := &req.Topics[0]
	name, ok := topicName(x, t.Topic, t.TopicID)
	if !ok {
		return false
	}
	var txn Decision
	if req.TransactionID != nil {
		if txn = f.query(ctx, x, ActionWrite, ResourceTransactionalID, *req.TransactionID); !txn.Allow {
			return false
		}
	}
	d := f.query(ctx, x, ActionWrite, ResourceTopic, name)
	if !d.Allow {
		return false
	}
	if req.TransactionID != nil {
		f.record(x, ActionWrite, ResourceTransactionalID, *req.TransactionID, nil, txn)
	}
	f.record(x, ActionWrite, ResourceTopic, name, nil, d)
	// Obligations go on the exchange for the mask filter, whose
	// StreamProduce then declines: its records must be masked.
	attach(x, name, d)
	return true
}

// ProduceRelayed implements filter.ProduceStreamer: the topic's decision
// gets the partitions the request carried, as produceReq records them.
func (f *Filter) ProduceRelayed(_ context.Context, x *filter.Exchange) {
	req := x.Request.(*kmsg.ProduceRequest)
	for i := range x.Decisions {
		if d := &x.Decisions[i]; d.ResourceType == ResourceTopic.String() && d.Action == ActionWrite.String() {
			d.Partitions = produceParts(req.Topics[0].Partitions)
		}
	}
}

func produceParts(ps []kmsg.ProduceRequestTopicPartition) []int32 {
	out := make([]int32, len(ps))
	for i, p := range ps {
		out[i] = p.Partition
	}
	return out
}

func fetchParts(ps []kmsg.FetchRequestTopicPartition) []int32 {
	out := make([]int32, len(ps))
	for i, p := range ps {
		out[i] = p.Partition
	}
	return out
}

func fetchReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.FetchRequest)
	if req.ReplicaID >= 0 || req.ReplicaState.ID >= 0 {
		return f.refuse(x, codeCluster, "replica fetches are not available through the gateway")
	}
	codes := make([]int16, len(req.Topics))
	for i, t := range req.Topics {
		c, d := f.topicCode(ctx, x, ActionRead, t.Topic, t.TopicID, fetchParts(t.Partitions))
		codes[i] = c
		if c == 0 {
			name, _ := topicName(x, t.Topic, t.TopicID)
			attach(x, name, d)
		}
	}
	if err := f.strip(x, "Topics", "Topics", codes); err != nil {
		return err
	}
	if x.Local == nil {
		f.track(ctx, x, req)
	}
	if x.Local != nil {
		// Nothing left to fetch: the local answer must not pretend a
		// fetch session exists, so the client starts a new one. The
		// session's topics are not forgotten: the broker never saw this
		// request, its session is as it was, and a client may go on
		// using it.
		x.Local.(*kmsg.FetchResponse).SessionID = 0
	}
	return nil
}

// fetchResp checks every topic in the response again: incremental fetch
// sessions (KIP-227) return partitions the request did not list, so a
// revocation mid-session shows up only here. Denied topics lose their
// records and carry TOPIC_AUTHORIZATION_FAILED. A topic allowed now with
// obligations other than those the request side attached (a policy change
// during a long poll, a session topic the filter did not know of) loses
// its records too, with UNKNOWN_SERVER_ERROR, as on the streamed path: the
// mask filter's response step ran before this one, with the obligations
// attached then.
func fetchResp(ctx context.Context, f *Filter, x *filter.Exchange) error {
	resp := x.Response.(*kmsg.FetchResponse)
	seen := maps.Clone(x.Obligations)
	for i := range resp.Topics {
		t := &resp.Topics[i]
		name, code := f.recheckFetchTopic(ctx, x, t.Topic, t.TopicID)
		if code == 0 && !x.Obligations[name].Empty() && !sameMasking(seen[name], x.Obligations[name]) {
			code = kerr.UnknownServerError.Code
		}
		if code == 0 {
			continue
		}
		sub := kmsg.NewPtrFetchRequest()
		sub.Version = resp.Version
		st := kmsg.NewFetchRequestTopic()
		st.Topic, st.TopicID = t.Topic, t.TopicID
		for _, p := range t.Partitions {
			sp := kmsg.NewFetchRequestTopicPartition()
			sp.Partition = p.Partition
			st.Partitions = append(st.Partitions, sp)
		}
		sub.Topics = append(sub.Topics, st)
		er, err := kafkaerr.ErrorResponse(sub, code)
		if err != nil {
			return err
		}
		resp.Topics[i] = er.(*kmsg.FetchResponse).Topics[0]
		x.MarkResponseChanged()
		if x.Obligations != nil {
			delete(x.Obligations, name)
		}
	}
	return nil
}

// StreamFetch implements filter.FetchStreamer: a Fetch response may be
// streamed when nothing was taken out of the request (no topic denied on
// the request side) and no topic that can come back carries obligations
// (OnRequest attached those of every session topic; the mask filter must
// see such responses decoded).
func (f *Filter) StreamFetch(x *filter.Exchange) bool {
	if x.Key != 1 || x.Local != nil {
		return false
	}
	st, _ := x.Get(stashKey{}).(*stash)
	return st == nil && !x.HasObligations()
}

// FetchTopic implements filter.FetchStreamer with fetchResp's decision for
// one topic of a streamed response: withheld with TOPIC_AUTHORIZATION_FAILED
// (UNKNOWN_TOPIC_ID when its id cannot be resolved) when denied now, and
// with UNKNOWN_SERVER_ERROR when it is allowed with obligations the request
// side did not see (a policy change during a long poll): a streamed
// response cannot be masked, and the next fetch is decoded.
func (f *Filter) FetchTopic(ctx context.Context, x *filter.Exchange, topic string, id [16]byte) int16 {
	name, code := f.recheckFetchTopic(ctx, x, topic, id)
	if code == 0 && !x.Obligations[name].Empty() {
		return kerr.UnknownServerError.Code
	}
	return code
}

// recheckFetchTopic decides read on a topic of a Fetch response again, even
// if the request side allowed it: a long poll can return records produced
// after a revocation that happened while the fetch was waiting, and an
// incremental session returns topics the request did not list. Cached, this
// costs a lookup. A decision that differs from the request side's is
// recorded for audit, and an allowed topic's obligations are attached. It
// returns the topic's name and 0 when it may be delivered, else the code
// it carries instead (UNKNOWN_TOPIC_ID when its id cannot be resolved).
func (f *Filter) recheckFetchTopic(ctx context.Context, x *filter.Exchange, topic string, id [16]byte) (string, int16) {
	name, ok := topicName(x, topic, id)
	if !ok {
		return name, codeTopicID
	}
	d := f.queryAt(ctx, x, ActionRead, ResourceTopic, name, time.Now())
	if prior, seen := requestDecision(x, name); !seen || prior.Allow != d.Allow {
		f.record(x, ActionRead, ResourceTopic, name, nil, d)
	}
	if !d.Allow {
		return name, codeTopic
	}
	attach(x, name, d)
	return name, 0
}

// sameMasking reports whether obligations a and b ask the same of the mask
// filter (the grant and purpose they name aside).
func sameMasking(a, b *filter.Obligations) bool {
	if a == b || a.Empty() && b.Empty() {
		return true
	}
	return a != nil && b != nil && reflect.DeepEqual(a.Mask, b.Mask) && reflect.DeepEqual(a.RowFilter, b.RowFilter)
}

// FetchDone implements filter.FetchStreamer; FetchTopic did the work.
func (f *Filter) FetchDone(context.Context, *filter.Exchange, map[string]filter.Stats) {}

// requestDecision finds the read decision the request side made for topic.
func requestDecision(x *filter.Exchange, topic string) (filter.Decision, bool) {
	for _, d := range x.Decisions {
		if d.ResourceType == "topic" && d.Resource == topic && d.Action == "read" {
			return d, true
		}
	}
	return filter.Decision{}, false
}

type metadataState struct {
	all bool
}

type metadataKey struct{}

func metadataReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.MetadataRequest)
	if req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0) {
		x.Set(metadataKey{}, &metadataState{all: true})
		return nil
	}
	codes := make([]int16, len(req.Topics))
	allowCreate := true
	for i, t := range req.Topics {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		c, _ := f.topicCode(ctx, x, ActionDescribe, name, t.TopicID, nil)
		codes[i] = c
		if c == 0 && req.Version < 4 && name != "" && !topicKnown(x, name) &&
			!f.query(ctx, x, ActionCreate, ResourceTopic, name).Allow {
			// Before v4 a broker with auto.create.topics.enable (the
			// default) creates every topic a Metadata request names;
			// nothing in the request can say no. A topic the gateway
			// does not know exists, named by a principal that may not
			// create it, is refused as Kafka refuses it.
			codes[i] = codeTopic
			continue
		}
		if c == 0 && req.AllowAutoTopicCreation && allowCreate {
			n, _ := topicName(x, name, t.TopicID)
			if !f.query(ctx, x, ActionCreate, ResourceTopic, n).Allow {
				allowCreate = false
			}
		}
	}
	if !allowCreate {
		req.AllowAutoTopicCreation = false // v4+; older versions always auto-create
	}
	kept := 0
	for _, c := range codes {
		if c == 0 {
			kept++
		}
	}
	if kept == 0 && req.Version >= 1 {
		// Keep asking upstream (for brokers and the cluster id) with an
		// empty, not null, topic list: null would mean all topics.
		if err := f.strip(x, "Topics", "Topics", codes); err != nil {
			return err
		}
		if st, _ := x.Get(stashKey{}).(*stash); st != nil && st.local {
			x.Local, st.local = nil, false
			req.Topics = []kmsg.MetadataRequestTopic{}
		}
		return nil
	}
	return f.strip(x, "Topics", "Topics", codes)
}

// topicKnown reports whether the gateway's metadata has the topic name.
func topicKnown(x *filter.Exchange, name string) bool {
	return x.Topics != nil && x.Topics.TopicKnown(name)
}

// metadataResp drops every topic the principal may not describe: the
// listing of an all-topics request, and anything else upstream added.
func metadataResp(ctx context.Context, f *Filter, x *filter.Exchange) error {
	resp := x.Response.(*kmsg.MetadataResponse)
	kept := resp.Topics[:0]
	for _, t := range resp.Topics {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		n, ok := topicName(x, name, t.TopicID)
		if ok && n != "" && f.query(ctx, x, ActionDescribe, ResourceTopic, n).Allow {
			kept = append(kept, t)
		}
	}
	clear(resp.Topics[len(kept):])
	resp.Topics = kept
	return nil
}

func describeTopicPartitionsReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.DescribeTopicPartitionsRequest)
	if len(req.Topics) == 0 {
		return nil // a listing: filtered on the response
	}
	return perTopic(ActionDescribe, "Topics", "Topics")(ctx, f, x)
}

func describeTopicPartitionsResp(ctx context.Context, f *Filter, x *filter.Exchange) error {
	resp := x.Response.(*kmsg.DescribeTopicPartitionsResponse)
	kept := resp.Topics[:0]
	for _, t := range resp.Topics {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		n, ok := topicName(x, name, t.TopicID)
		if ok && n != "" && f.query(ctx, x, ActionDescribe, ResourceTopic, n).Allow {
			kept = append(kept, t)
		}
	}
	clear(resp.Topics[len(kept):])
	resp.Topics = kept
	if c := resp.NextCursor; c != nil && !f.query(ctx, x, ActionDescribe, ResourceTopic, c.Topic).Allow {
		// The cursor names the next topic; do not leak it.
		resp.NextCursor = nil
	}
	return nil
}

func deleteTopicsReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.DeleteTopicsRequest)
	if req.Version < 6 {
		codes := make([]int16, len(req.TopicNames))
		for i, n := range req.TopicNames {
			codes[i], _ = f.topicCode(ctx, x, ActionDelete, n, [16]byte{}, nil)
		}
		return f.strip(x, "TopicNames", "Topics", codes)
	}
	codes := make([]int16, len(req.Topics))
	for i, t := range req.Topics {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		codes[i], _ = f.topicCode(ctx, x, ActionDelete, name, t.TopicID, nil)
	}
	return f.strip(x, "Topics", "Topics", codes)
}

// configRes is one resource of a configs request.
type configRes struct {
	typ  kmsg.ConfigResourceType
	name string
}

func describeConfigsRes(r kmsg.Request) []configRes {
	req := r.(*kmsg.DescribeConfigsRequest)
	out := make([]configRes, len(req.Resources))
	for i, rr := range req.Resources {
		out[i] = configRes{rr.ResourceType, rr.ResourceName}
	}
	return out
}

func alterConfigsRes(r kmsg.Request) []configRes {
	req := r.(*kmsg.AlterConfigsRequest)
	out := make([]configRes, len(req.Resources))
	for i, rr := range req.Resources {
		out[i] = configRes{rr.ResourceType, rr.ResourceName}
	}
	return out
}

func incrementalAlterConfigsRes(r kmsg.Request) []configRes {
	req := r.(*kmsg.IncrementalAlterConfigsRequest)
	out := make([]configRes, len(req.Resources))
	for i, rr := range req.Resources {
		out[i] = configRes{rr.ResourceType, rr.ResourceName}
	}
	return out
}

// configs decides a per config resource: topics on the topic, groups on
// the group, brokers, broker loggers and client metrics on the cluster.
func configs(a Action, list func(kmsg.Request) []configRes) func(context.Context, *Filter, *filter.Exchange) error {
	return func(ctx context.Context, f *Filter, x *filter.Exchange) error {
		res := list(x.Request)
		codes := make([]int16, len(res))
		for i, r := range res {
			switch r.typ {
			case kmsg.ConfigResourceTypeTopic:
				if !f.allowed(ctx, x, a, ResourceTopic, r.name) {
					codes[i] = codeTopic
				}
			case kmsg.ConfigResourceTypeGroupConfig:
				if !f.allowed(ctx, x, a, ResourceGroup, r.name) {
					codes[i] = codeGroup
				}
			default:
				if !f.allowed(ctx, x, a, ResourceCluster, ClusterName) {
					codes[i] = codeCluster
				}
			}
		}
		return f.strip(x, "Resources", "Resources", codes)
	}
}

func createTokenReq(ctx context.Context, f *Filter, x *filter.Exchange) error {
	req := x.Request.(*kmsg.CreateDelegationTokenRequest)
	owner := x.Conn.Principal().ID
	if req.OwnerPrincipalName != nil && *req.OwnerPrincipalName != "" {
		owner = *req.OwnerPrincipalName
	}
	if d := f.decide(ctx, x, ActionCreateTokens, ResourceUser, owner, nil); !d.Allow {
		return f.refuse(x, codeToken, fmt.Sprintf("create_tokens user %q: %s", owner, d.Reason))
	}
	return nil
}

// replaceTopic answers the single topic of sub with code, in place of dst.
func replaceTopic(sub *kmsg.ShareFetchRequest, code int16, dst *kmsg.ShareFetchResponseTopic) error {
	er, err := kafkaerr.ErrorResponse(sub, code)
	if err != nil {
		return err
	}
	*dst = er.(*kmsg.ShareFetchResponse).Topics[0]
	return nil
}
