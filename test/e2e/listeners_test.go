package e2e

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/test/harness"
)

// TestListenerGroups runs two listener groups, each with its own bootstrap
// and per-broker ports and advertised host: a client of one group must only
// ever be given (and dial) that group's addresses.
func TestListenerGroups(t *testing.T) {
	t.Parallel()
	const topic = "e2e-groups"
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(3, topic))
	second := harness.FreeAddr(t)
	gw := harness.StartGateway(t, cluster, map[string]any{
		"listeners": []any{map[string]any{
			"name":             "second",
			"listen":           second,
			"advertised_host":  "localhost",
			"broker_port_base": 0,
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	brokersVia := func(t *testing.T, boot string) map[int32]string {
		t.Helper()
		rc := dialRaw(t, boot)
		req := kmsg.NewPtrMetadataRequest()
		req.SetVersion(12)
		resp, err := rc.roundTrip(req)
		if err != nil {
			t.Fatalf("metadata via %s: %v", boot, err)
		}
		out := map[int32]string{}
		for _, b := range resp.(*kmsg.MetadataResponse).Brokers {
			out[b.NodeID] = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		}
		return out
	}
	first := brokersVia(t, gw.Bootstrap)
	other := brokersVia(t, second)
	if len(first) != 3 || len(other) != 3 {
		t.Fatalf("brokers: default %v, second %v", first, other)
	}
	for id, a := range other {
		h, p, _ := net.SplitHostPort(a)
		if h != "localhost" {
			t.Errorf("second group advertises node %d as %s, want host localhost", id, a)
		}
		if a == first[id] || "127.0.0.1:"+p == first[id] {
			t.Errorf("node %d has the same address %s in both groups", id, a)
		}
		if ok, err := harness.ListeningPID(gw.PID(), "127.0.0.1:"+p); err != nil || !ok {
			t.Errorf("second group's node %d port %s is not a gateway listener (%v)", id, p, err)
		}
	}
	// Find coordinator through the second group names a second-group port.
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.SetVersion(4)
	fc.CoordinatorKeys = []string{"e2e-groups-g"}
	resp, err := dialRaw(t, second).roundTrip(fc)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.(*kmsg.FindCoordinatorResponse).Coordinators {
		if got := net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port))); c.ErrorCode == 0 && got != other[c.NodeID] {
			t.Errorf("coordinator via the second group is %s, want %s", got, other[c.NodeID])
		}
	}

	// A franz-go client of the second group works end to end and dials only
	// second-group addresses.
	k := &kgoClient{}
	cl := k.newClient(t, second, kgo.DefaultProduceTopic(topic), kgo.ConsumeTopics(topic),
		kgo.ConsumerGroup("e2e-groups-g"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	for _, v := range values("second", 6) {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	assertSameValues(t, recordValues(k.poll(ctx, t, cl, 6)), values("second", 6))
	allowed := map[string]bool{second: true}
	for _, a := range other {
		allowed[a] = true
	}
	for _, a := range dedupe(k.dialedAddrs()) {
		if !allowed[a] {
			t.Errorf("second-group client dialed %s, not a second-group address", a)
		}
	}
	cluster.AssertOnlyGateway(t)
}
