package policy

import (
	"context"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/proxy/kafkaerr"
)

// named returns one list element of type T per name, the name in its first
// name field (Topic, Group, GroupID, TransactionalID) and, if it has
// partitions, one partition.
func named[T any](names ...string) []T {
	out := make([]T, len(names))
	for i, n := range names {
		p := &out[i]
		if d, ok := any(p).(interface{ Default() }); ok {
			d.Default()
		}
		v := reflect.ValueOf(p).Elem()
		for _, field := range []string{"Topic", "Group", "GroupID", "TransactionalID"} {
			if f := v.FieldByName(field); f.IsValid() {
				if f.Kind() == reflect.Ptr {
					f.Set(reflect.ValueOf(&n))
				} else {
					f.SetString(n)
				}
				break
			}
		}
		if ps := v.FieldByName("Partitions"); ps.IsValid() {
			one := reflect.MakeSlice(ps.Type(), 1, 1)
			if d, ok := one.Index(0).Addr().Interface().(interface{ Default() }); ok {
				d.Default()
			}
			ps.Set(one)
		}
	}
	return out
}

// byName allows what is named "ok...", denies everything else.
func byName(q *Query) bool { return strings.HasPrefix(q.Name, "ok") }

var (
	errTopic = kerr.TopicAuthorizationFailed.Code
	errGroup = kerr.GroupAuthorizationFailed.Code
	errTxn   = kerr.TransactionalIDAuthorizationFailed.Code
	errClu   = kerr.ClusterAuthorizationFailed.Code
	notTried = kerr.OperationNotAttempted.Code
	absent   = int16(-1) // want: the resource is not in the answer at all
)

// TestMixedAllowDeny sends requests naming allowed ("ok...") and denied
// ("no...") resources of the APIs whose enforcement is per resource, with
// Kafka's semantics: the allowed part is forwarded, the denied resources
// are answered with TOPIC_/GROUP_/TRANSACTIONAL_ID_AUTHORIZATION_FAILED
// merged into the upstream's answer (or, where Kafka refuses the whole
// request, the whole request is answered so), and every denial is recorded
// for audit.
func TestMixedAllowDeny(t *testing.T) {
	tests := []struct {
		name string
		req  func() kmsg.Request
		// allow decides; nil is byName.
		allow func(*Query) bool
		// upstream adds to the upstream's answer (by default every
		// forwarded resource echoed with no error).
		upstream func(kmsg.Response)
		// fwd are the resources left in the forwarded request; nil: not
		// forwarded (answered by the gateway).
		fwd []string
		// want are the codes of resources in the client's answer (absent:
		// must not be there); any other resource must carry no error.
		want map[string]int16
		// refusedWith are resources that carry the code of their kind
		// though allowed, because another one refused the whole request.
		refusedWith []string
	}{
		{name: "ListOffsets", req: func() kmsg.Request {
			r := kmsg.NewPtrListOffsetsRequest()
			r.Version, r.Topics = 8, named[kmsg.ListOffsetsRequestTopic]("ok.t", "no.t")
			return r
		}, fwd: []string{"topic:ok.t"}, want: map[string]int16{"topic:ok.t": 0, "topic:no.t": errTopic}},
		{name: "ListOffsets all denied", req: func() kmsg.Request {
			r := kmsg.NewPtrListOffsetsRequest()
			r.Version, r.Topics = 1, named[kmsg.ListOffsetsRequestTopic]("no.t", "no.u")
			return r
		}, want: map[string]int16{"topic:no.u": errTopic, "topic:no.t": errTopic}},
		{name: "OffsetForLeaderEpoch", req: func() kmsg.Request {
			r := kmsg.NewPtrOffsetForLeaderEpochRequest()
			r.Version, r.Topics = 4, named[kmsg.OffsetForLeaderEpochRequestTopic]("no.t", "ok.t", "no.u")
			return r
		}, fwd: []string{"topic:ok.t"}, want: map[string]int16{"topic:ok.t": 0, "topic:no.t": errTopic, "topic:no.u": errTopic}},
		{name: "DescribeProducers", req: func() kmsg.Request {
			r := kmsg.NewPtrDescribeProducersRequest()
			r.Topics = named[kmsg.DescribeProducersRequestTopic]("ok.t", "no.t")
			return r
		}, fwd: []string{"topic:ok.t"}, want: map[string]int16{"topic:ok.t": 0, "topic:no.t": errTopic}},
		{name: "OffsetFetch v7 named topics", req: func() kmsg.Request {
			r := kmsg.NewPtrOffsetFetchRequest()
			r.Version, r.Group, r.Topics = 7, "ok.g", named[kmsg.OffsetFetchRequestTopic]("ok.t", "no.t")
			return r
		}, upstream: func(r kmsg.Response) {
			// Upstream answers with a committed offset for both.
			for i := range r.(*kmsg.OffsetFetchResponse).Topics {
				r.(*kmsg.OffsetFetchResponse).Topics[i].Partitions[0].Offset = 42
			}
		}, fwd: []string{"group:ok.g", "topic:ok.t", "topic:no.t"}, want: map[string]int16{"topic:ok.t": 0, "topic:no.t": errTopic}},
		{name: "OffsetFetch v7 denied group", req: func() kmsg.Request {
			r := kmsg.NewPtrOffsetFetchRequest()
			r.Version, r.Group = 7, "no.g"
			return r
		}, want: map[string]int16{"": errGroup}},
		{name: "OffsetFetch v8 batched", req: func() kmsg.Request {
			r := kmsg.NewPtrOffsetFetchRequest()
			r.Version = 8
			r.Groups = named[kmsg.OffsetFetchRequestGroup]("ok.g1", "no.g", "ok.g2", "no.h")
			r.Groups[0].Topics = named[kmsg.OffsetFetchRequestGroupTopic]("ok.t", "no.t")
			r.Groups[1].Topics = named[kmsg.OffsetFetchRequestGroupTopic]("ok.t")
			return r // ok.g2: all topics
		}, upstream: func(r kmsg.Response) {
			resp := r.(*kmsg.OffsetFetchResponse)
			for i := range resp.Groups {
				if g := &resp.Groups[i]; g.Group == "ok.g2" {
					g.Topics = append(g.Topics, named[kmsg.OffsetFetchResponseGroupTopic]("ok.t", "no.t", "no.u")...)
				}
			}
		}, fwd: []string{"group:ok.g1", "group:ok.g1/topic:ok.t", "group:ok.g1/topic:no.t", "group:ok.g2"}, want: map[string]int16{
			"group:ok.g1": 0, "group:ok.g1/topic:ok.t": 0, "group:ok.g1/topic:no.t": errTopic,
			"group:ok.g2": 0, "group:ok.g2/topic:ok.t": 0, "group:ok.g2/topic:no.t": absent, "group:ok.g2/topic:no.u": absent,
			// A refused group lists no topics, as Kafka answers it.
			"group:no.g": errGroup, "group:no.g/topic:ok.t": absent, "group:no.h": errGroup,
		}},
		{name: "DescribeGroups", req: func() kmsg.Request {
			r := kmsg.NewPtrDescribeGroupsRequest()
			r.Version, r.Groups = 5, []string{"no.g", "ok.g", "no.h"}
			return r
		}, fwd: []string{"group:ok.g"}, want: map[string]int16{"group:ok.g": 0, "group:no.g": errGroup, "group:no.h": errGroup}},
		{name: "DeleteGroups", req: func() kmsg.Request {
			r := kmsg.NewPtrDeleteGroupsRequest()
			r.Version, r.Groups = 2, []string{"ok.g", "no.g"}
			return r
		}, fwd: []string{"group:ok.g"}, want: map[string]int16{"group:ok.g": 0, "group:no.g": errGroup}},
		{name: "ConsumerGroupDescribe", req: func() kmsg.Request {
			r := kmsg.NewPtrConsumerGroupDescribeRequest()
			r.Groups = []string{"ok.g", "no.g"}
			return r
		}, fwd: []string{"group:ok.g"}, want: map[string]int16{"group:ok.g": 0, "group:no.g": errGroup}},
		{name: "ConsumerGroupHeartbeat allowed", req: func() kmsg.Request {
			r := kmsg.NewPtrConsumerGroupHeartbeatRequest()
			r.Group, r.SubscribedTopicNames = "ok.g", []string{"ok.t", "ok.u"}
			return r
		}, fwd: []string{"group:ok.g", "topic:ok.t", "topic:ok.u"}, want: map[string]int16{"": 0}},
		{name: "ConsumerGroupHeartbeat denied topic", req: func() kmsg.Request {
			r := kmsg.NewPtrConsumerGroupHeartbeatRequest()
			r.Group, r.SubscribedTopicNames = "ok.g", []string{"ok.t", "no.t"}
			return r
		}, want: map[string]int16{"": errTopic}},
		{name: "ConsumerGroupHeartbeat denied group", req: func() kmsg.Request {
			r := kmsg.NewPtrConsumerGroupHeartbeatRequest()
			r.Group, r.SubscribedTopicNames = "no.g", []string{"ok.t"}
			return r
		}, want: map[string]int16{"": errGroup}},
		{name: "AddPartitionsToTxn allowed", req: func() kmsg.Request {
			r := kmsg.NewPtrAddPartitionsToTxnRequest()
			r.Version, r.TransactionalID, r.Topics = 3, "ok.tx", named[kmsg.AddPartitionsToTxnRequestTopic]("ok.t", "ok.u")
			return r
		}, fwd: []string{"txn:ok.tx", "topic:ok.t", "topic:ok.u"}, want: map[string]int16{"topic:ok.t": 0, "topic:ok.u": 0}},
		{name: "AddPartitionsToTxn denied topic", req: func() kmsg.Request {
			r := kmsg.NewPtrAddPartitionsToTxnRequest()
			r.Version, r.TransactionalID, r.Topics = 3, "ok.tx", named[kmsg.AddPartitionsToTxnRequestTopic]("ok.t", "no.t", "ok.u")
			return r
		}, want: map[string]int16{"topic:ok.t": notTried, "topic:no.t": errTopic, "topic:ok.u": notTried}},
		{name: "AddPartitionsToTxn denied transactional id", req: func() kmsg.Request {
			r := kmsg.NewPtrAddPartitionsToTxnRequest()
			r.Version, r.TransactionalID, r.Topics = 1, "no.tx", named[kmsg.AddPartitionsToTxnRequestTopic]("ok.t")
			return r
		}, want: map[string]int16{"topic:ok.t": errTxn}},
		// v4+ is broker-to-broker (KIP-890): refused whatever it names,
		// with Kafka's answer (the top-level code, no results).
		{name: "AddPartitionsToTxn v4 batched", req: func() kmsg.Request {
			r := kmsg.NewPtrAddPartitionsToTxnRequest()
			r.Version, r.Transactions = 4, named[kmsg.AddPartitionsToTxnRequestTransaction]("ok.tx", "no.tx")
			for i := range r.Transactions {
				r.Transactions[i].Topics = named[kmsg.AddPartitionsToTxnRequestTransactionTopic]("ok.t")
			}
			return r
		}, want: map[string]int16{"": errClu, "txn:ok.tx": absent, "txn:no.tx": absent, "txn:ok.tx/topic:ok.t": absent}},
		{name: "TxnOffsetCommit", req: func() kmsg.Request {
			r := kmsg.NewPtrTxnOffsetCommitRequest()
			r.Version, r.TransactionalID, r.Group = 3, "ok.tx", "ok.g"
			r.Topics = named[kmsg.TxnOffsetCommitRequestTopic]("no.t", "ok.t")
			return r
		}, fwd: []string{"txn:ok.tx", "group:ok.g", "topic:ok.t"}, want: map[string]int16{"topic:ok.t": 0, "topic:no.t": errTopic}},
		{name: "TxnOffsetCommit denied transactional id", req: func() kmsg.Request {
			r := kmsg.NewPtrTxnOffsetCommitRequest()
			r.Version, r.TransactionalID, r.Group = 3, "no.tx", "ok.g"
			r.Topics = named[kmsg.TxnOffsetCommitRequestTopic]("ok.t")
			return r
		}, want: map[string]int16{"topic:ok.t": errTxn}},
		{name: "TxnOffsetCommit denied group", req: func() kmsg.Request {
			r := kmsg.NewPtrTxnOffsetCommitRequest()
			r.Version, r.TransactionalID, r.Group = 0, "ok.tx", "no.g"
			r.Topics = named[kmsg.TxnOffsetCommitRequestTopic]("ok.t")
			return r
		}, want: map[string]int16{"topic:ok.t": errGroup}},
		{name: "EndTxn allowed", req: func() kmsg.Request {
			r := kmsg.NewPtrEndTxnRequest()
			r.Version, r.TransactionalID = 3, "ok.tx"
			return r
		}, fwd: []string{"txn:ok.tx"}, want: map[string]int16{"": 0}},
		{name: "EndTxn denied", req: func() kmsg.Request {
			r := kmsg.NewPtrEndTxnRequest()
			r.TransactionalID = "no.tx"
			return r
		}, want: map[string]int16{"": errTxn}},
		{name: "InitProducerID transactional", req: func() kmsg.Request {
			r := kmsg.NewPtrInitProducerIDRequest()
			r.Version, r.TransactionalID = 4, kmsg.StringPtr("ok.tx")
			return r
		}, fwd: []string{"txn:ok.tx"}, want: map[string]int16{"": 0}},
		{name: "InitProducerID transactional denied", req: func() kmsg.Request {
			r := kmsg.NewPtrInitProducerIDRequest()
			r.Version, r.TransactionalID = 4, kmsg.StringPtr("no.tx")
			return r
		}, want: map[string]int16{"": errTxn}},
		{name: "InitProducerID idempotent", req: func() kmsg.Request {
			return kmsg.NewPtrInitProducerIDRequest()
		}, allow: func(q *Query) bool { return q.Resource == ResourceCluster && q.Action == ActionIdempotentWrite },
			fwd: []string{}, want: map[string]int16{"": 0}},
		{name: "InitProducerID idempotent denied", req: func() kmsg.Request {
			return kmsg.NewPtrInitProducerIDRequest()
		}, want: map[string]int16{"": errClu}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			allow := tt.allow
			if allow == nil {
				allow = byName
			}
			f := newFilter(&fakeDecider{allow: allow}, nil, nil)
			req := tt.req()
			x := exchange(acme, req)
			err := f.OnRequest(context.Background(), x)
			var answer kmsg.Response
			d, denied := filter.AsDenial(err)
			switch {
			case denied:
				// What the proxy answers for a denial.
				if answer, err = kafkaerr.ErrorResponse(x.Request, d.Code); err != nil {
					t.Fatal(err)
				}
			case err != nil:
				t.Fatal(err)
			case x.Local != nil:
				x.Response = x.Local
				if err := f.OnResponse(context.Background(), x); err != nil {
					t.Fatal(err)
				}
				answer = x.Local
			default:
				if tt.fwd == nil {
					t.Fatalf("forwarded %v, want an answer from the gateway", keys(resources(x.Request)))
				}
				if got := keys(resources(x.Request)); !reflect.DeepEqual(got, sorted(tt.fwd)) {
					t.Fatalf("forwarded %v, want %v", got, sorted(tt.fwd))
				}
				up, err := upstreamEcho(x.Request)
				if err != nil {
					t.Fatal(err)
				}
				if tt.upstream != nil {
					tt.upstream(up)
				}
				x.Response = up
				if err := f.OnResponse(context.Background(), x); err != nil {
					t.Fatal(err)
				}
				answer = x.Response
			}
			if (denied || x.Local != nil) && tt.fwd != nil {
				t.Fatalf("answered by the gateway (denial %v), want %v forwarded", err, tt.fwd)
			}
			if answer.GetVersion() != req.GetVersion() || answer.Key() != req.Key() {
				t.Fatalf("answer is %s v%d", kmsg.NameForKey(answer.Key()), answer.GetVersion())
			}
			got := resources(answer)
			for k, want := range tt.want {
				c, ok := got[k]
				switch {
				case want == absent && ok:
					t.Errorf("%s is in the answer (code %d)", k, c)
				case want != absent && !ok:
					t.Errorf("%s is not in the answer %v", k, got)
				case want != absent && c != want:
					t.Errorf("%s: code %d (%v), want %d (%v)", k, c, kerr.ErrorForCode(c), want, kerr.ErrorForCode(want))
				}
			}
			for k, c := range got {
				if _, ok := tt.want[k]; !ok && c != 0 {
					t.Errorf("%s: unexpected code %d (%v)", k, c, kerr.ErrorForCode(c))
				}
			}
			if p, ok := answer.(*kmsg.OffsetFetchResponse); ok {
				assertNoOffsetLeaks(t, p)
			}
			// Every denied resource named in the answer with its own
			// kind's code was decided, and recorded as a denial.
			for k, c := range tt.want {
				last := k[strings.LastIndexByte(k, '/')+1:]
				kind, name, _ := strings.Cut(last, ":")
				if c == 0 || authCodes[c] != kind || slices.Contains(tt.refusedWith, k) {
					continue
				}
				if !hasDenial(x.Decisions, kind, name) {
					t.Errorf("no denial recorded for %s in %+v", k, x.Decisions)
				}
			}
		})
	}
}

// assertNoOffsetLeaks checks that every partition answered with an error
// carries what Kafka answers for a refused one: no committed offset (-1),
// no leader epoch (-1), empty metadata.
func assertNoOffsetLeaks(t *testing.T, resp *kmsg.OffsetFetchResponse) {
	t.Helper()
	for _, tp := range resp.Topics {
		for _, p := range tp.Partitions {
			if p.ErrorCode != 0 && (p.Offset != -1 || p.LeaderEpoch != -1 || p.Metadata == nil || *p.Metadata != "") {
				t.Errorf("topic %s: offset %d, leader epoch %d, metadata %v with error %d (want -1, -1, empty)", tp.Topic, p.Offset, p.LeaderEpoch, p.Metadata, p.ErrorCode)
			}
		}
	}
	for _, g := range resp.Groups {
		for _, tp := range g.Topics {
			for _, p := range tp.Partitions {
				if p.ErrorCode != 0 && (p.Offset != -1 || p.LeaderEpoch != -1 || p.Metadata == nil || *p.Metadata != "") {
					t.Errorf("group %s topic %s: offset %d, leader epoch %d, metadata %v with error %d (want -1, -1, empty)", g.Group, tp.Topic, p.Offset, p.LeaderEpoch, p.Metadata, p.ErrorCode)
				}
			}
		}
	}
}

var decisionKinds = map[string]string{"topic": "topic", "group": "group", "txn": "transactional_id", "cluster": "cluster"}

func hasDenial(ds []filter.Decision, kind, name string) bool {
	for _, d := range ds {
		if !d.Allow && d.ResourceType == decisionKinds[kind] && d.Resource == name {
			return true
		}
	}
	return false
}

// keys returns the resource keys of m, without the top level.
func keys(m map[string]int16) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		if k != "" {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func sorted(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

// upstreamEcho is what the broker answers a request it serves in full, with
// no errors: every resource the request named. kafkaerr's refusal echoes
// them too, except OffsetFetch v2+, whose refusal (as Kafka's) lists none;
// for it the answer is built from the request here.
func upstreamEcho(req kmsg.Request) (kmsg.Response, error) {
	of, ok := req.(*kmsg.OffsetFetchRequest)
	if !ok || of.Version < 2 {
		return kafkaerr.ErrorResponse(req, 0)
	}
	resp := kmsg.NewPtrOffsetFetchResponse()
	resp.SetVersion(of.Version)
	for _, rt := range of.Topics {
		t := kmsg.NewOffsetFetchResponseTopic()
		t.Topic = rt.Topic
		for _, p := range rt.Partitions {
			tp := kmsg.NewOffsetFetchResponseTopicPartition()
			tp.Partition, tp.Offset, tp.LeaderEpoch = p, -1, -1
			t.Partitions = append(t.Partitions, tp)
		}
		resp.Topics = append(resp.Topics, t)
	}
	for _, rg := range of.Groups {
		g := kmsg.NewOffsetFetchResponseGroup()
		g.Group = rg.Group
		for _, rt := range rg.Topics {
			t := kmsg.NewOffsetFetchResponseGroupTopic()
			t.Topic, t.TopicID = rt.Topic, rt.TopicID
			for _, p := range rt.Partitions {
				tp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
				tp.Partition, tp.Offset, tp.LeaderEpoch = p, -1, -1
				t.Partitions = append(t.Partitions, tp)
			}
			g.Topics = append(g.Topics, t)
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp, nil
}
