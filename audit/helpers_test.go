package audit

import (
	"context"
	"crypto/ed25519"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap/zaptest"
)

const testTopic = "_sluice_audit"

// cluster is a kfake cluster whose Produce requests to the audit topic can
// be made to fail.
type cluster struct {
	c       *kfake.Cluster
	opts    []kgo.Opt
	failing atomic.Bool
	hung    atomic.Bool // Produce requests get no answer
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl := &cluster{c: c, opts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}}
	c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if cl.hung.Load() {
			return nil, nil, true
		}
		if !cl.failing.Load() {
			return nil, nil, false
		}
		req := r.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			t := kmsg.NewProduceResponseTopic()
			t.Topic, t.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				p := kmsg.NewProduceResponseTopicPartition()
				p.Partition = rp.Partition
				p.ErrorCode = kerr.TopicAuthorizationFailed.Code
				t.Partitions = append(t.Partitions, p)
			}
			resp.Topics = append(resp.Topics, t)
		}
		return resp, nil, true
	})
	return cl
}

type testEnv struct {
	cl  *cluster
	a   *Auditor
	reg *prometheus.Registry
	pub ed25519.PublicKey
	cfg Config
}

func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.InstanceID = "gw-test"
	cfg.Spool.Dir = filepath.Join(t.TempDir(), "spool")
	cfg.FoldWindow = 0
	cfg.RetryInterval = 20 * time.Millisecond
	cfg.ProduceTimeout = 2 * time.Second
	cfg.Signing.Interval = 100 * time.Millisecond
	return cfg
}

func start(t testing.TB, cl *cluster, cfg Config) *testEnv {
	t.Helper()
	env := &testEnv{cl: cl, reg: prometheus.NewRegistry(), cfg: cfg}
	if cfg.Signing.KeyFile == "" {
		cfg.Signing.KeyFile = filepath.Join(t.TempDir(), "audit.key")
		pub, err := GenerateKey(cfg.Signing.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		env.pub = pub
		env.cfg = cfg
	}
	a, err := New(cfg, cl.opts, env.reg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	env.a = a
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Close(ctx)
	})
	return env
}

func (e *testEnv) close(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.a.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
}

func testConn(id uint64, p *filter.Principal) *filter.Conn {
	c := &filter.Conn{ID: id, Listener: "bootstrap", ClientAddr: netip.MustParseAddrPort("192.0.2.7:51000"), NodeID: -1, Opened: time.Now()}
	if p != nil {
		c.SetPrincipal(p)
	}
	return c
}

var (
	alice = &filter.Principal{ID: "alice", Org: "acme", Mechanism: "PLAIN", Roles: []string{"partner"}}
	bob   = &filter.Principal{ID: "bob", Org: "globex", Mechanism: "SCRAM-SHA-256"}
)

// exchange builds a decided exchange as the policy filter would leave it.
func exchange(c *filter.Conn, key int16, ds ...filter.Decision) *filter.Exchange {
	cid := "client-1"
	return &filter.Exchange{Conn: c, Key: key, Version: 9, ClientID: &cid, Received: time.Now(), Decisions: ds}
}

func allowTopic(topic string, parts ...int32) filter.Decision {
	return filter.Decision{Action: "write", ResourceType: "topic", Resource: topic, Partitions: parts, Allow: true,
		Reason: "grant g1", GrantID: "g1", Purpose: "analytics", PolicyRev: "rev1"}
}

func denyTopic(topic string) filter.Decision {
	return filter.Decision{Action: "read", ResourceType: "topic", Resource: topic, Allow: false, Reason: "no grant", PolicyRev: "rev1"}
}

// events reads and parses the whole audit topic.
func events(t testing.TB, cl *cluster) ([]Record, []*Envelope) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := ReadTopic(ctx, cl.opts, testTopic)
	if err != nil {
		t.Fatal(err)
	}
	envs := make([]*Envelope, len(recs))
	for i, r := range recs {
		e, _, err := ParseEvent(r.Value)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		envs[i] = e
	}
	return recs, envs
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
