package proxy

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

type fakeAdv struct{}

func (fakeAdv) advertise(id int32) (string, int32) { return "gateway.test", 19000 + id }

// roundTrip encodes resp at its version and decodes it into a fresh value,
// so the test sees exactly what survives the wire at that version.
func roundTrip(t *testing.T, resp kmsg.Response) kmsg.Response {
	t.Helper()
	b := resp.AppendTo(nil)
	out := kmsg.ResponseForKey(resp.Key())
	out.SetVersion(resp.GetVersion())
	if err := out.ReadFrom(b); err != nil {
		t.Fatalf("%T v%d: decode: %v", resp, resp.GetVersion(), err)
	}
	return out
}

type endpoint struct {
	id   int32
	host string
	port int32
}

// endpoints extracts every (node, host, port) a response carries.
func endpoints(resp kmsg.Response) []endpoint {
	var out []endpoint
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		for _, b := range r.Brokers {
			out = append(out, endpoint{b.NodeID, b.Host, b.Port})
		}
	case *kmsg.FindCoordinatorResponse:
		if r.Version < 4 {
			out = append(out, endpoint{r.NodeID, r.Host, r.Port})
		}
		for _, c := range r.Coordinators {
			out = append(out, endpoint{c.NodeID, c.Host, c.Port})
		}
	case *kmsg.DescribeClusterResponse:
		for _, b := range r.Brokers {
			out = append(out, endpoint{b.NodeID, b.Host, b.Port})
		}
	case *kmsg.ProduceResponse:
		for _, b := range r.Brokers {
			out = append(out, endpoint{b.NodeID, b.Host, b.Port})
		}
	case *kmsg.FetchResponse:
		for _, b := range r.Brokers {
			out = append(out, endpoint{b.NodeID, b.Host, b.Port})
		}
	case *kmsg.ShareFetchResponse:
		for _, b := range r.NodeEndpoints {
			out = append(out, endpoint{b.NodeID, b.Host, b.Port})
		}
	case *kmsg.ShareAcknowledgeResponse:
		for _, b := range r.NodeEndpoints {
			out = append(out, endpoint{b.NodeID, b.Host, b.Port})
		}
	}
	return out
}

// upstreamResponse builds a response of key at version v naming brokers
// 1 and 7 at upstream addresses, in every place the version can hold one.
func upstreamResponse(key, v int16) kmsg.Response {
	rack := "r1"
	switch key {
	case 3:
		r := kmsg.NewPtrMetadataResponse()
		r.SetVersion(v)
		for _, id := range []int32{1, 7} {
			b := kmsg.NewMetadataResponseBroker()
			b.NodeID, b.Host, b.Port, b.Rack = id, fmt.Sprintf("kafka-%d.internal", id), 9092, &rack
			r.Brokers = append(r.Brokers, b)
		}
		topic := "orders"
		t := kmsg.NewMetadataResponseTopic()
		t.Topic = &topic
		if v >= 10 {
			t.TopicID = [16]byte{1, 2, 3}
		}
		p := kmsg.NewMetadataResponseTopicPartition()
		p.Leader, p.Replicas, p.ISR = 7, []int32{7, 1}, []int32{7, 1}
		t.Partitions = append(t.Partitions, p)
		r.Topics = append(r.Topics, t)
		r.ControllerID = 1
		return r
	case 10:
		r := kmsg.NewPtrFindCoordinatorResponse()
		r.SetVersion(v)
		if v < 4 {
			r.NodeID, r.Host, r.Port = 7, "kafka-7.internal", 9092
		} else {
			for _, id := range []int32{1, 7} {
				c := kmsg.NewFindCoordinatorResponseCoordinator()
				c.Key, c.NodeID, c.Host, c.Port = fmt.Sprintf("g%d", id), id, fmt.Sprintf("kafka-%d.internal", id), 9092
				r.Coordinators = append(r.Coordinators, c)
			}
			// A coordinator lookup that failed names no broker and
			// must stay as it is.
			c := kmsg.NewFindCoordinatorResponseCoordinator()
			c.Key, c.NodeID, c.ErrorCode = "missing", -1, 15
			r.Coordinators = append(r.Coordinators, c)
		}
		return r
	case 60:
		r := kmsg.NewPtrDescribeClusterResponse()
		r.SetVersion(v)
		for _, id := range []int32{1, 7} {
			b := kmsg.NewDescribeClusterResponseBroker()
			b.NodeID, b.Host, b.Port = id, fmt.Sprintf("kafka-%d.internal", id), 9092
			r.Brokers = append(r.Brokers, b)
		}
		return r
	case 0:
		r := kmsg.NewPtrProduceResponse()
		r.SetVersion(v)
		for _, id := range []int32{1, 7} {
			b := kmsg.NewProduceResponseBroker()
			b.NodeID, b.Host, b.Port = id, fmt.Sprintf("kafka-%d.internal", id), 9092
			r.Brokers = append(r.Brokers, b)
		}
		return r
	case 1:
		r := kmsg.NewPtrFetchResponse()
		r.SetVersion(v)
		for _, id := range []int32{1, 7} {
			b := kmsg.NewFetchResponseBroker()
			b.NodeID, b.Host, b.Port = id, fmt.Sprintf("kafka-%d.internal", id), 9092
			r.Brokers = append(r.Brokers, b)
		}
		return r
	case 78:
		r := kmsg.NewPtrShareFetchResponse()
		r.SetVersion(v)
		for _, id := range []int32{1, 7} {
			b := kmsg.NewShareFetchResponseNodeEndpoint()
			b.NodeID, b.Host, b.Port = id, fmt.Sprintf("kafka-%d.internal", id), 9092
			r.NodeEndpoints = append(r.NodeEndpoints, b)
		}
		return r
	case 79:
		r := kmsg.NewPtrShareAcknowledgeResponse()
		r.SetVersion(v)
		for _, id := range []int32{1, 7} {
			b := kmsg.NewShareAcknowledgeResponseNodeEndpoint()
			b.NodeID, b.Host, b.Port = id, fmt.Sprintf("kafka-%d.internal", id), 9092
			r.NodeEndpoints = append(r.NodeEndpoints, b)
		}
		return r
	}
	return nil
}

// TestRewriteEveryVersion walks every version kmsg knows of every API that
// carries broker addresses: after the rewrite and a round trip through the
// wire format, every endpoint is the gateway's, with the node id intact, and
// versions that cannot carry endpoints are not decoded at all.
func TestRewriteEveryVersion(t *testing.T) {
	for _, key := range []int16{0, 1, 3, 10, 60, 78, 79} {
		maxV := kmsg.ResponseForKey(key).MaxVersion()
		for v := int16(0); v <= maxV; v++ {
			t.Run(fmt.Sprintf("%s/v%d", kmsg.NameForKey(key), v), func(t *testing.T) {
				in := roundTrip(t, upstreamResponse(key, v))
				before := endpoints(in)
				if len(before) > 0 && !rewriteNeeded(key, v) {
					t.Fatalf("v%d carries %d endpoints but is not marked for rewriting", v, len(before))
				}
				if !rewriteNeeded(key, v) {
					return
				}
				cl := newCluster(zap.NewNop())
				changed := rewriteAddresses(in, fakeAdv{}, cl)
				if changed != (len(before) > 0) {
					t.Fatalf("changed = %v with %d endpoints", changed, len(before))
				}
				out := endpoints(roundTrip(t, in))
				if len(out) != len(before) {
					t.Fatalf("endpoints %d after rewrite, %d before", len(out), len(before))
				}
				for i, e := range out {
					if before[i].id < 0 {
						if e != before[i] {
							t.Errorf("endpoint of a failed lookup changed: %+v -> %+v", before[i], e)
						}
						continue
					}
					want := endpoint{before[i].id, "gateway.test", 19000 + before[i].id}
					if e != want {
						t.Errorf("endpoint %d = %+v, want %+v", i, e, want)
					}
				}
				if key == 3 {
					if _, ok := cl.brokerAddr(7); !ok {
						t.Error("metadata rewrite did not learn broker 7's upstream address")
					}
					if addr, _ := cl.brokerAddr(7); addr != "kafka-7.internal:9092" {
						t.Errorf("learned broker 7 at %q", addr)
					}
					if v >= 10 {
						if name, ok := cl.TopicName([16]byte{1, 2, 3}); !ok || name != "orders" {
							t.Errorf("topic id not learned: %q %v", name, ok)
						}
					}
				}
			})
		}
	}
}

func TestDescribeQuorumHidesControllers(t *testing.T) {
	for v := int16(0); v <= kmsg.NewPtrDescribeQuorumResponse().MaxVersion(); v++ {
		r := kmsg.NewPtrDescribeQuorumResponse()
		r.SetVersion(v)
		n := kmsg.NewDescribeQuorumResponseNode()
		n.NodeID = 3
		l := kmsg.NewDescribeQuorumResponseNodeListener()
		l.Name, l.Host, l.Port = "CONTROLLER", "ctrl-3.internal", 9093
		n.Listeners = append(n.Listeners, l)
		r.Nodes = append(r.Nodes, n)
		in := roundTrip(t, r).(*kmsg.DescribeQuorumResponse)
		rewriteAddresses(in, fakeAdv{}, nil)
		out := roundTrip(t, in).(*kmsg.DescribeQuorumResponse)
		for _, n := range out.Nodes {
			if len(n.Listeners) != 0 {
				t.Fatalf("v%d: controller listeners leaked: %+v", v, n.Listeners)
			}
		}
	}
}
