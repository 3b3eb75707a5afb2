package e2e

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/sluice-gw/sluice/test/harness"
)

// TestClientSASLNeverForwarded has clients try SASL on a gateway listener
// that has none. Whatever the gateway answers, none of the client's SASL
// may reach the upstream, which here has no SASL at all, so any
// SaslHandshake or SaslAuthenticate the brokers see came from a client.
func TestClientSASLNeverForwarded(t *testing.T) {
	t.Parallel()
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(3, "e2e-nosasl"))
	gw := harness.StartGateway(t, cluster, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	k := &kgoClient{}
	cl := k.newClient(t, gw.Bootstrap, kgo.SASL(plain.Auth{User: "mallory", Pass: "guess"}.AsMechanism()),
		kgo.RequestRetries(1), kgo.RetryTimeout(3*time.Second))
	_, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	cl.Close()
	t.Logf("franz-go with SASL PLAIN against a listener without SASL: %v", err)

	// A raw SaslAuthenticate without a handshake, and a handshake.
	for _, req := range []kmsg.Request{
		func() kmsg.Request {
			r := kmsg.NewPtrSASLHandshakeRequest()
			r.SetVersion(1)
			r.Mechanism = "PLAIN"
			return r
		}(),
		func() kmsg.Request {
			r := kmsg.NewPtrSASLAuthenticateRequest()
			r.SetVersion(2)
			r.SASLAuthBytes = []byte("\x00mallory\x00guess")
			return r
		}(),
	} {
		if _, err := dialRaw(t, gw.Bootstrap).roundTrip(req); err != nil {
			t.Logf("%s: %v", kmsg.NameForKey(req.Key()), err)
		}
	}

	for _, r := range cluster.Requests() {
		if r.Key == int16(kmsg.SASLHandshake) || r.Key == int16(kmsg.SASLAuthenticate) {
			t.Errorf("client SASL reached upstream broker %s: %s v%d", r.Listener, kmsg.NameForKey(r.Key), r.Version)
		}
	}
	// The gateway still serves clients without SASL.
	if got := len(gw.Brokers(t)); got != 3 {
		t.Errorf("gateway lists %d brokers", got)
	}
	cluster.AssertOnlyGateway(t)
}

// TestAbruptDisconnects opens connections that vanish mid-frame, right after
// a request, and in the middle of a long-polling fetch, and checks the
// gateway forgets them all (connections_open back to 0) and keeps serving.
func TestAbruptDisconnects(t *testing.T) {
	t.Parallel()
	const topic = "e2e-abrupt"
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(1, topic))
	gw := harness.StartGateway(t, cluster, nil)
	nodes := gw.Brokers(t)
	leader := nodes[cluster.LeaderFor(topic, 0)]

	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(12)
	full := encode(nil, md, 1)

	fetch := kmsg.NewPtrFetchRequest()
	fetch.SetVersion(11)
	fetch.MaxWaitMillis = 5000
	fetch.MinBytes = 1
	fetch.MaxBytes = 1 << 20
	fetch.SessionEpoch = -1
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = topic
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.PartitionMaxBytes = 1 << 20
	fp.CurrentLeaderEpoch = -1
	ft.Partitions = append(ft.Partitions, fp)
	fetch.Topics = append(fetch.Topics, ft)
	longPoll := encode(nil, fetch, 1)

	var sizeOnly [4]byte
	binary.BigEndian.PutUint32(sizeOnly[:], 1000)

	for i, payload := range [][]byte{
		nil,                   // connect and leave
		sizeOnly[:],           // a length, then nothing
		full[:len(full)/2],    // half a frame
		full,                  // a whole request, answer never read
		append(full, full...), // pipelined, never read
		longPoll,              // leave during a long poll
		append(longPoll, full...),
	} {
		for _, addr := range []string{gw.Bootstrap, leader} {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatalf("case %d: %v", i, err)
			}
			if len(payload) > 0 {
				if _, err := c.Write(payload); err != nil {
					t.Fatalf("case %d: %v", i, err)
				}
			}
			time.Sleep(20 * time.Millisecond)
			if tc, ok := c.(*net.TCPConn); ok && i%2 == 0 {
				_ = tc.SetLinger(0) // reset instead of FIN
			}
			c.Close()
		}
	}

	deadline := time.Now().Add(15 * time.Second)
	for {
		open := -1.0
		m := parseMetrics(t, gw.Metrics(t))
		if v, ok := m[`sluice_proxy_connections_open{listener="default"}`]; ok {
			open = v
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway still counts %v open client connections after every client left", open)
		}
		time.Sleep(200 * time.Millisecond)
	}

	k := &kgoClient{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k.produce(ctx, t, gw.Bootstrap, topic, 3, "after")
	cl := k.newClient(t, gw.Bootstrap, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	assertSameValues(t, recordValues(k.poll(ctx, t, cl, 3)), values("after", 3))
	if gw.Exited() {
		t.Fatal("gateway exited")
	}
	cluster.AssertOnlyGateway(t)
}
