package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/test/harness"
)

// rawConn speaks the Kafka protocol over one connection with kmsg, at
// exactly the version set on each request.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	corr int32
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, conn: c}
}

func (rc *rawConn) roundTrip(req kmsg.Request) (kmsg.Response, error) {
	rc.corr++
	b := make([]byte, 4, 256)
	b = binary.BigEndian.AppendUint16(b, uint16(req.Key()))
	b = binary.BigEndian.AppendUint16(b, uint16(req.GetVersion()))
	b = binary.BigEndian.AppendUint32(b, uint32(rc.corr))
	b = binary.BigEndian.AppendUint16(b, 3)
	b = append(b, "raw"...)
	if req.IsFlexible() {
		b = append(b, 0)
	}
	b = req.AppendTo(b)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	if _, err := rc.conn.Write(b); err != nil {
		return nil, err
	}
	frame, err := readFrame(rc.conn)
	if err != nil {
		return nil, err
	}
	if len(frame) < 4 || int32(binary.BigEndian.Uint32(frame)) != rc.corr {
		return nil, fmt.Errorf("response correlation id mismatch: %x", frame[:min(len(frame), 8)])
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	r := kbin.Reader{Src: frame[4:]}
	if resp.IsFlexible() && req.Key() != int16(kmsg.ApiVersions) {
		kmsg.SkipTags(&r)
	}
	if err := resp.ReadFrom(r.Src); err != nil {
		return nil, fmt.Errorf("decode %s v%d response: %v", kmsg.NameForKey(req.Key()), req.GetVersion(), err)
	}
	return resp, nil
}

// saslLogin runs SaslHandshake v1 for mech and one SaslAuthenticate at
// version carrying auth, and returns the authenticate answer; a transport
// error or a refused handshake fails the test.
func (rc *rawConn) saslLogin(t *testing.T, mech string, version int16, auth []byte) *kmsg.SASLAuthenticateResponse {
	t.Helper()
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.SetVersion(1)
	hs.Mechanism = mech
	resp, err := rc.roundTrip(hs)
	if err != nil || resp.(*kmsg.SASLHandshakeResponse).ErrorCode != 0 {
		t.Fatalf("SaslHandshake %s: %v %+v", mech, err, resp)
	}
	au := kmsg.NewPtrSASLAuthenticateRequest()
	au.SetVersion(version)
	au.SASLAuthBytes = auth
	resp, err = rc.roundTrip(au)
	if err != nil {
		t.Fatalf("SaslAuthenticate %s: %v", mech, err)
	}
	return resp.(*kmsg.SASLAuthenticateResponse)
}

func joinHP(host string, port int32) string { return net.JoinHostPort(host, strconv.Itoa(int(port))) }

// gatewayVersions returns the gateway's advertised [min, max] per key.
func gatewayVersions(t *testing.T, addr string) map[int16][2]int16 {
	t.Helper()
	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(3)
	req.ClientSoftwareName, req.ClientSoftwareVersion = "raw", "1"
	resp, err := dialRaw(t, addr).roundTrip(req)
	if err != nil {
		t.Fatalf("ApiVersions through the gateway: %v", err)
	}
	av := resp.(*kmsg.ApiVersionsResponse)
	if av.ErrorCode != 0 {
		t.Fatalf("ApiVersions error %v", kerr.ErrorForCode(av.ErrorCode))
	}
	out := map[int16][2]int16{}
	for _, k := range av.ApiKeys {
		out[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
	}
	return out
}

// TestAddressRewriteEveryVersion asks the gateway, at every version it
// advertises, for each response that carries broker addresses (Metadata,
// FindCoordinator v0-3 and v4+, DescribeCluster, and the KIP-951 endpoints of
// Produce and Fetch answering NOT_LEADER), and checks every address and node
// id against the gateway's own listeners.
func TestAddressRewriteEveryVersion(t *testing.T) {
	t.Parallel()
	const topic = "e2e-sweep"
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(3, topic))
	gw := harness.StartGateway(t, cluster, nil)
	nodes := gw.Brokers(t) // node id -> gateway address
	versions := gatewayVersions(t, gw.Bootstrap)

	check := func(t *testing.T, what string, got map[int32]string) {
		t.Helper()
		if len(got) == 0 {
			t.Errorf("%s: no broker address in the response", what)
		}
		for id, a := range got {
			if cluster.IsBrokerAddr(a) {
				t.Errorf("%s: node %d is the upstream address %s", what, id, a)
			} else if nodes[id] != a {
				t.Errorf("%s: node %d is %s, but the gateway serves it at %s", what, id, a, nodes[id])
			}
		}
	}
	sweep := func(key kmsg.Key, fn func(t *testing.T, rc *rawConn, v int16)) {
		vr, ok := versions[int16(key)]
		if !ok {
			t.Errorf("gateway does not advertise %s", key.Name())
			return
		}
		for v := vr[0]; v <= vr[1]; v++ {
			t.Run(fmt.Sprintf("%s/v%d", key.Name(), v), func(t *testing.T) {
				fn(t, dialRaw(t, gw.Bootstrap), v)
			})
		}
	}

	var topicID [16]byte
	leaders := map[int32]int32{} // partition -> leader
	sweep(kmsg.Metadata, func(t *testing.T, rc *rawConn, v int16) {
		req := kmsg.NewPtrMetadataRequest()
		req.SetVersion(v)
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
		resp, err := rc.roundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		m := resp.(*kmsg.MetadataResponse)
		got := map[int32]string{}
		for _, b := range m.Brokers {
			got[b.NodeID] = joinHP(b.Host, b.Port)
		}
		check(t, "metadata brokers", got)
		for _, mt := range m.Topics {
			if mt.TopicID != [16]byte{} {
				topicID = mt.TopicID
			}
			for _, p := range mt.Partitions {
				leaders[p.Partition] = p.Leader
				if _, ok := nodes[p.Leader]; !ok {
					t.Errorf("partition %d leader %d is not a broker the gateway serves", p.Partition, p.Leader)
				}
			}
		}
	})
	sweep(kmsg.FindCoordinator, func(t *testing.T, rc *rawConn, v int16) {
		req := kmsg.NewPtrFindCoordinatorRequest()
		req.SetVersion(v)
		req.CoordinatorKey = "e2e-sweep-group"
		req.CoordinatorKeys = []string{"e2e-sweep-group", "e2e-sweep-group-2"}
		var resp kmsg.Response
		var err error
		for i := 0; i < 20; i++ { // the coordinator may still be loading
			if resp, err = rc.roundTrip(req); err != nil {
				t.Fatal(err)
			}
			fc := resp.(*kmsg.FindCoordinatorResponse)
			if fc.ErrorCode != kerr.CoordinatorNotAvailable.Code && (len(fc.Coordinators) == 0 || fc.Coordinators[0].ErrorCode != kerr.CoordinatorNotAvailable.Code) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		fc := resp.(*kmsg.FindCoordinatorResponse)
		got := map[int32]string{}
		if v < 4 {
			if fc.ErrorCode != 0 {
				t.Fatalf("FindCoordinator: %v", kerr.ErrorForCode(fc.ErrorCode))
			}
			got[fc.NodeID] = joinHP(fc.Host, fc.Port)
		} else {
			if len(fc.Coordinators) != 2 {
				t.Fatalf("want 2 coordinators, got %+v", fc.Coordinators)
			}
			for _, c := range fc.Coordinators {
				if c.ErrorCode != 0 {
					t.Fatalf("FindCoordinator %s: %v", c.Key, kerr.ErrorForCode(c.ErrorCode))
				}
				got[c.NodeID] = joinHP(c.Host, c.Port)
			}
		}
		check(t, "coordinator", got)
	})
	sweep(kmsg.DescribeCluster, func(t *testing.T, rc *rawConn, v int16) {
		req := kmsg.NewPtrDescribeClusterRequest()
		req.SetVersion(v)
		resp, err := rc.roundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		dc := resp.(*kmsg.DescribeClusterResponse)
		if dc.ErrorCode != 0 {
			t.Fatalf("DescribeCluster: %v", kerr.ErrorForCode(dc.ErrorCode))
		}
		got := map[int32]string{}
		for _, b := range dc.Brokers {
			got[b.NodeID] = joinHP(b.Host, b.Port)
		}
		check(t, "describe cluster", got)
	})
	if t.Failed() || len(leaders) == 0 {
		return
	}

	// KIP-951: a broker that is not the leader answers Produce (v10+) and
	// Fetch (v16+) with the leader's endpoint. Ask a gateway listener whose
	// node does not lead partition 0, so kfake answers NOT_LEADER. Followers
	// may serve fetches, so partition 0 gets none.
	cluster.SetFollowers(topic, 0, nil)
	leader := leaders[0]
	var other int32 = -1
	for id := range nodes {
		if id != leader {
			other = id
		}
	}
	if vr := versions[int16(kmsg.Produce)]; vr[1] >= 10 {
		t.Run(fmt.Sprintf("Produce/v%d NOT_LEADER endpoints", vr[1]), func(t *testing.T) {
			req := kmsg.NewPtrProduceRequest()
			req.SetVersion(vr[1])
			req.Acks = -1
			req.TimeoutMillis = 5000
			pt := kmsg.NewProduceRequestTopic()
			pt.Topic, pt.TopicID = topic, topicID
			pp := kmsg.NewProduceRequestTopicPartition()
			pp.Partition = 0
			pp.Records = oneRecordBatch()
			pt.Partitions = append(pt.Partitions, pp)
			req.Topics = append(req.Topics, pt)
			resp, err := dialRaw(t, nodes[other]).roundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			pr := resp.(*kmsg.ProduceResponse)
			if len(pr.Topics) != 1 || len(pr.Topics[0].Partitions) != 1 {
				t.Fatalf("unexpected produce response %+v", pr)
			}
			if ec := pr.Topics[0].Partitions[0].ErrorCode; ec != kerr.NotLeaderForPartition.Code {
				t.Fatalf("produce to node %d: error %v, want NOT_LEADER_OR_FOLLOWER", other, kerr.ErrorForCode(ec))
			}
			got := map[int32]string{}
			for _, b := range pr.Brokers {
				got[b.NodeID] = joinHP(b.Host, b.Port)
			}
			check(t, "produce NodeEndpoints", got)
		})
	} else {
		t.Logf("gateway advertises Produce up to v%d: no KIP-951 endpoints to check", vr[1])
	}
	if vr := versions[int16(kmsg.Fetch)]; vr[1] >= 16 {
		t.Run(fmt.Sprintf("Fetch/v%d NOT_LEADER endpoints", vr[1]), func(t *testing.T) {
			req := kmsg.NewPtrFetchRequest()
			req.SetVersion(vr[1])
			req.MaxWaitMillis = 100
			req.MaxBytes = 1 << 20
			req.SessionEpoch = -1
			ft := kmsg.NewFetchRequestTopic()
			ft.Topic, ft.TopicID = topic, topicID
			fp := kmsg.NewFetchRequestTopicPartition()
			fp.Partition = 0
			fp.PartitionMaxBytes = 1 << 20
			fp.CurrentLeaderEpoch = -1
			fp.LastFetchedEpoch = -1
			ft.Partitions = append(ft.Partitions, fp)
			req.Topics = append(req.Topics, ft)
			resp, err := dialRaw(t, nodes[other]).roundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			fr := resp.(*kmsg.FetchResponse)
			if len(fr.Topics) != 1 || len(fr.Topics[0].Partitions) != 1 {
				t.Fatalf("unexpected fetch response %+v", fr)
			}
			if ec := fr.Topics[0].Partitions[0].ErrorCode; ec != kerr.NotLeaderForPartition.Code {
				t.Fatalf("fetch from node %d: error %v, want NOT_LEADER_OR_FOLLOWER", other, kerr.ErrorForCode(ec))
			}
			got := map[int32]string{}
			for _, b := range fr.Brokers {
				got[b.NodeID] = joinHP(b.Host, b.Port)
			}
			check(t, "fetch NodeEndpoints", got)
		})
	} else {
		t.Logf("gateway advertises Fetch up to v%d: no KIP-951 endpoints to check", vr[1])
	}
	cluster.AssertOnlyGateway(t)
}

// oneRecordBatch encodes a valid uncompressed one-record v2 batch with kmsg,
// filling in the batch length and CRC.
func oneRecordBatch() []byte {
	rec := kmsg.Record{Value: []byte("v")}
	// Length is the size of the record after the length varint; with a
	// zero Length the varint takes one byte.
	rec.Length = int32(len(rec.AppendTo(nil)) - 1)
	recs := rec.AppendTo(nil)
	b := kmsg.RecordBatch{
		FirstOffset:          0,
		PartitionLeaderEpoch: -1,
		Magic:                2,
		LastOffsetDelta:      0,
		FirstTimestamp:       time.Now().UnixMilli(),
		MaxTimestamp:         time.Now().UnixMilli(),
		ProducerID:           -1,
		ProducerEpoch:        -1,
		FirstSequence:        -1,
		NumRecords:           1,
		Records:              recs,
	}
	raw := b.AppendTo(nil)
	// Length and CRC: Length covers everything after the length field;
	// the CRC (Castagnoli) covers everything after the CRC field.
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32c(raw[21:]))
	return raw
}

// TestLeaderMoveAndNewBroker moves partition leadership and then adds a
// broker to the cluster while a franz-go client keeps producing and
// consuming through the gateway: the client follows the moves (KIP-951
// endpoints, metadata refreshes) to the new broker's gateway listener, which
// the gateway opens without a restart, and never dials anything but the
// gateway.
func TestLeaderMoveAndNewBroker(t *testing.T) {
	t.Parallel()
	const topic = "e2e-move"
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(3, topic))
	gw := harness.StartGateway(t, cluster, map[string]any{"metadata_refresh": "300ms"})
	k := &kgoClient{}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	cl := k.newClient(t, gw.Bootstrap, kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.MetadataMinAge(100*time.Millisecond))
	defer cl.Close()
	produce := func(prefix string, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			r := &kgo.Record{Partition: int32(i % 3), Value: []byte(fmt.Sprintf("%s-%d", prefix, i))}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatalf("produce %s-%d: %v", prefix, i, err)
			}
		}
	}
	produce("before", 6)

	// Move every partition to another existing broker.
	for p := int32(0); p < 3; p++ {
		to := (cluster.LeaderFor(topic, p) + 1) % 3
		if err := cluster.MoveTopicPartition(topic, p, to); err != nil {
			t.Fatal(err)
		}
	}
	produce("moved", 6)

	// A broker joins; move partition 0 onto it.
	id, _, err := cluster.AddNode(-1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.MoveTopicPartition(topic, 0, id); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, ok := gw.Brokers(t)[id]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never served new broker %d", id)
		}
		time.Sleep(200 * time.Millisecond)
	}
	produce("joined", 6)

	cons := k.newClient(t, gw.Bootstrap, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cons.Close()
	got := recordValues(k.poll(ctx, t, cons, 18))
	assertSameValues(t, got, append(append(values("before", 6), values("moved", 6)...), values("joined", 6)...))

	gw.AssertGatewayAddrs(t, cluster, dedupe(k.dialedAddrs()))
	if nodes := gw.Brokers(t); len(nodes) != 4 {
		t.Errorf("gateway lists %d brokers after the join, want 4: %v", len(nodes), nodes)
	}
	cluster.AssertOnlyGateway(t)
}
