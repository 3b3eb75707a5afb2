package policy

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/filter"
)

// gatewayPolicy lets the anonymous principal consume "open" (and, while
// the file says so, "revocable") with group "g", and nothing else.
const gatewayPolicy = `package sluice.authz
default decision := {"allow": false, "reason": "closed"}
decision := {"allow": true, "reason": "open topic"} if {
	input.resource.type == "topic"
	input.resource.name in {%s}
	input.action in {"read", "describe"}
}
decision := {"allow": true, "reason": "group g"} if {
	input.resource.type == "group"
	input.resource.name == "g"
}
`

// TestThroughGateway runs franz-go through the real proxy in front of
// kfake with the policy filter installed: allowed topics are consumed,
// denied ones answer TOPIC_AUTHORIZATION_FAILED and are hidden from
// metadata, and a policy change on disk stops an already connected
// consumer's fetches without a reconnect.
func TestThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster and a gateway")
	}
	kf, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "open", "revocable", "secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	up, err := kgo.NewClient(kgo.SeedBrokers(kf.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	produce := func(topic, v string) {
		t.Helper()
		if err := up.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for _, topic := range []string{"open", "revocable", "secret"} {
		produce(topic, topic+"-1")
	}

	eng, dir, err := tempEngine(t, fmt.Sprintf(gatewayPolicy, `"open", "revocable"`), func(c *Config) { c.ReloadInterval = 50 * time.Millisecond }, Options{})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = eng.Watch(ctx) }()

	cfg := proxy.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	zero := 0
	cfg.BrokerPortBase = &zero
	cfg.Upstream.Brokers = kf.ListenAddrs()
	cfg.ShutdownTimeout = 5 * time.Second
	srv, err := proxy.New(proxy.Options{Config: cfg, Logger: zap.NewNop(), Registerer: prometheus.NewRegistry(),
		Filters: []filter.Filter{NewFilter(eng, zap.NewNop(), prometheus.NewRegistry())}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = srv.Shutdown(sctx)
	}()
	boot := srv.Addrs()["default"]

	// Metadata: the listing hides "secret"; naming it is denied.
	adm, err := kgo.NewClient(kgo.SeedBrokers(boot))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	mreq := kmsg.NewPtrMetadataRequest()
	mresp, err := mreq.RequestWith(ctx, adm)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, tp := range mresp.Topics {
		listed[*tp.Topic] = true
	}
	if !listed["open"] || !listed["revocable"] || listed["secret"] {
		t.Fatalf("metadata listing %v", listed)
	}
	mreq = kmsg.NewPtrMetadataRequest()
	for _, n := range []string{"secret", "no-such-topic"} {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(n)
		mreq.Topics = append(mreq.Topics, rt)
	}
	if mresp, err = mreq.RequestWith(ctx, adm); err != nil {
		t.Fatal(err)
	}
	for _, tp := range mresp.Topics {
		if tp.ErrorCode != kerr.TopicAuthorizationFailed.Code {
			t.Errorf("named %s: error %d", *tp.Topic, tp.ErrorCode)
		}
	}

	// Consuming a denied topic fails with TOPIC_AUTHORIZATION_FAILED.
	denied, err := kgo.NewClient(kgo.SeedBrokers(boot), kgo.ConsumeTopics("secret"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer denied.Close()
	sawDenied := false
	for !sawDenied && ctx.Err() == nil {
		fs := denied.PollFetches(ctx)
		fs.EachError(func(_ string, _ int32, err error) {
			if errors.Is(err, kerr.TopicAuthorizationFailed) {
				sawDenied = true
			}
		})
		if fs.NumRecords() > 0 {
			t.Fatal("records of a denied topic delivered")
		}
	}
	if !sawDenied {
		t.Fatal("no TOPIC_AUTHORIZATION_FAILED for the denied topic")
	}

	// A group the principal may not use: GROUP_AUTHORIZATION_FAILED,
	// answered by the proxy from the filter's denial through kafkaerr.
	jg := kmsg.NewPtrJoinGroupRequest()
	jg.Group, jg.ProtocolType, jg.SessionTimeoutMillis, jg.RebalanceTimeoutMillis = "h", "consumer", 30000, 30000
	jgp := kmsg.NewJoinGroupRequestProtocol()
	jgp.Name = "range"
	jg.Protocols = append(jg.Protocols, jgp)
	// Straight to the broker: kgo would look the coordinator up first.
	raw, err := adm.Broker(int(mresp.Brokers[0].NodeID)).Request(ctx, jg)
	if err != nil {
		t.Fatal(err)
	}
	if jresp := raw.(*kmsg.JoinGroupResponse); jresp.ErrorCode != kerr.GroupAuthorizationFailed.Code {
		t.Fatalf("join group h: error %d", raw.(*kmsg.JoinGroupResponse).ErrorCode)
	}
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.CoordinatorKey = "h"
	fresp, err := fc.RequestWith(ctx, adm)
	if err != nil {
		t.Fatal(err)
	}
	code := fresp.ErrorCode
	for _, c := range fresp.Coordinators {
		code = c.ErrorCode
	}
	if code != kerr.GroupAuthorizationFailed.Code {
		t.Fatalf("find coordinator h: %+v", fresp)
	}

	// An allowed consumer gets its records; after the policy revokes
	// "revocable", its next fetch (same connection, same fetch session)
	// is denied and records produced afterwards never arrive.
	cons, err := kgo.NewClient(kgo.SeedBrokers(boot), kgo.ConsumeTopics("open", "revocable"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	got := map[string]int{}
	for (got["open"] < 1 || got["revocable"] < 1) && ctx.Err() == nil {
		cons.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got[r.Topic]++ })
	}
	if got["open"] != 1 || got["revocable"] != 1 {
		t.Fatalf("before revocation got %v", got)
	}
	rev := eng.Revision()
	writePolicy(t, dir, "p.rego", fmt.Sprintf(gatewayPolicy, `"open"`))
	for eng.Revision() == rev && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	produce("revocable", "revocable-2")
	produce("open", "open-2")
	revoked := false
	for (got["open"] < 2 || !revoked) && ctx.Err() == nil {
		fs := cons.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) { got[r.Topic]++ })
		fs.EachError(func(topic string, _ int32, err error) {
			if topic == "revocable" && errors.Is(err, kerr.TopicAuthorizationFailed) {
				revoked = true
			}
		})
	}
	if got["revocable"] != 1 || got["open"] != 2 || !revoked {
		t.Fatalf("after revocation got %v, revoked error seen %v", got, revoked)
	}
}
