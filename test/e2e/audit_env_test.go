package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluice-gw/sluice/audit"
	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/test/harness"
)

// The audit tests' principals, topics and grant. The policy is the example
// one (configs/policies); the data is the tests' own.
const (
	audTopic   = "_sluice_audit"
	audLedger  = "ledger"              // acme may read it (grant g-acme-ledger, masked); globex may not
	audInbound = "inbound.acme.orders" // acme's own: writable
	audGrant   = "g-acme-ledger"
	audAcme    = "acme-analyst"
	audGlobex  = "globex-analyst"
	audAuditor = "auditor"
)

var audUsers = []authntest.User{
	{Name: audAcme, Password: "acme-pw", Org: "acme", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}},
	{Name: audGlobex, Password: "globex-pw", Org: "globex", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}},
	{Name: audAuditor, Password: "auditor-pw", Org: "sluice", Roles: []string{"auditor"}},
}

func audPassword(user string) string {
	for _, u := range audUsers {
		if u.Name == user {
			return u.Password
		}
	}
	panic("unknown user " + user)
}

// audEnv is a cluster and a gateway with SASL, the example policy, masking
// and audit on; the audit topic's writes can be made to fail.
type audEnv struct {
	cluster *harness.Cluster
	gw      *harness.Gateway
	dir     string
	pubKey  string // the audit signing key's public half (PEM)
	// failing makes every Produce to the audit topic fail with
	// NOT_ENOUGH_REPLICAS while set.
	failing atomic.Bool
	// failedProduces counts the audit-topic Produce requests failed.
	failedProduces atomic.Int64
	// auditBatches counts the record batches of Produce requests to the
	// audit topic; weakBatches those not sent with acks=all by an
	// idempotent producer (producer id, epoch and sequence >= 0), the
	// first of which weakBatch describes.
	auditBatches, weakBatches atomic.Int64
	weakBatch                 atomic.Pointer[string]
	// brokers are the gateway's listeners by node id.
	brokers map[int32]string
}

// startAuditEnv starts the environment. topics are seeded with 3
// partitions (plus ledger and the inbound topic); audit overrides keys of
// the gateway's audit section.
func startAuditEnv(t *testing.T, audit map[string]any, topics ...string) *audEnv {
	t.Helper()
	e := &audEnv{dir: t.TempDir()}
	creds := filepath.Join(e.dir, "users.yaml")
	if err := authntest.WriteCredentials(creds, audUsers...); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(e.dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"partners.json": `{"acme": {"active": true, "purposes": ["analytics"], "max_classification": "internal"},
			"globex": {"active": true, "purposes": ["analytics"], "max_classification": "internal"}}`,
		"topics.json": `{"ledger": {"classification": "internal"}, "inbound.*": {"classification": "internal"},
			"_sluice_audit": {"classification": "restricted"}}`,
		"grants.json": `[{"id": "g-acme-ledger", "org": "acme", "topic": "ledger", "purpose": "analytics",
			"classification": "internal", "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2100-01-01T00:00:00Z",
			"mask": [{"field": "card", "strategy": "redact"}, {"field": "customer.email", "strategy": "null"}]}]`,
	} {
		if err := os.WriteFile(filepath.Join(data, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The signing key, made with the subcommand operators use.
	key := filepath.Join(e.dir, "audit.key")
	if r := audSluice(t, "audit", "keygen", "--out", key); !r.OK() || !strings.Contains(r.Stdout, "key id ") {
		t.Fatalf("sluice audit keygen: %s", r)
	}
	e.pubKey = key + ".pub"

	e.cluster = harness.StartCluster(t, 3,
		kfake.SeedTopics(3, append([]string{audLedger, audInbound}, topics...)...),
		kfake.SeedTopics(1, audTopic))
	e.installFault(t)

	section := map[string]any{
		"enabled":         true,
		"topic":           audTopic,
		"instance_id":     "gw-e2e",
		"produce_timeout": "1s",
		"retry_interval":  "100ms",
		"spool":           map[string]any{"dir": filepath.Join(e.dir, "spool")},
		"signing":         map[string]any{"key_file": key, "interval": "2s"},
	}
	harness.Merge(section, audit)
	e.gw = harness.StartGateway(t, e.cluster, map[string]any{
		"listeners": []any{map[string]any{"sasl": []string{"PLAIN", "SCRAM-SHA-512"}}},
		"authn":     map[string]any{"credentials_file": creds},
		"policy":    map[string]any{"dir": filepath.Join(harness.ModuleRoot(), "configs", "policies"), "data_dir": data},
		"masking":   map[string]any{"topics": map[string]any{audLedger: map[string]any{"format": "json"}}},
		"audit":     section,
	})
	// The gateway's broker listeners, as a logged-in client sees them.
	cl := e.client(t, audAcme)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("metadata through the gateway: %v", err)
	}
	e.brokers = map[int32]string{}
	for _, b := range resp.Brokers {
		e.brokers[b.NodeID] = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
	}
	return e
}

// installFault answers Produce requests for the audit topic with
// NOT_ENOUGH_REPLICAS while e.failing is set: the topic cannot be written,
// everything else can. Produce v13 names topics by id, so the audit
// topic's id is looked up first.
func (e *audEnv) installFault(t *testing.T) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.cluster.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(audTopic)
	req.Topics = append(req.Topics, mt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 {
		t.Fatalf("metadata of the audit topic: %v %+v", err, resp)
	}
	id := resp.Topics[0].TopicID
	c := e.cluster
	c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := r.(*kmsg.ProduceRequest)
		audit := false
		for _, rt := range req.Topics {
			if rt.Topic == audTopic || rt.TopicID == id {
				audit = true
				for _, rp := range rt.Partitions {
					e.checkAuditBatches(req.Acks, rp.Records)
				}
			}
		}
		if !audit || !e.failing.Load() {
			return nil, nil, false
		}
		e.failedProduces.Add(1)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			tr := kmsg.NewProduceResponseTopic()
			tr.Topic, tr.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				p := kmsg.NewProduceResponseTopicPartition()
				p.Partition = rp.Partition
				p.ErrorCode = kerr.NotEnoughReplicas.Code
				tr.Partitions = append(tr.Partitions, p)
			}
			resp.Topics = append(resp.Topics, tr)
		}
		return resp, nil, true
	})
}

// checkAuditBatches counts the batches of one partition of a Produce
// request to the audit topic, and those not written with acks=all by an
// idempotent producer.
func (e *audEnv) checkAuditBatches(acks int16, raw []byte) {
	for len(raw) > 0 {
		var b kmsg.RecordBatch
		if err := b.ReadFrom(raw); err != nil {
			e.weakBatches.Add(1)
			s := fmt.Sprintf("unparsable batch: %v", err)
			e.weakBatch.CompareAndSwap(nil, &s)
			return
		}
		e.auditBatches.Add(1)
		if acks != -1 || b.ProducerID < 0 || b.ProducerEpoch < 0 || b.FirstSequence < 0 {
			e.weakBatches.Add(1)
			s := fmt.Sprintf("acks %d, producer id %d, epoch %d, first sequence %d", acks, b.ProducerID, b.ProducerEpoch, b.FirstSequence)
			e.weakBatch.CompareAndSwap(nil, &s)
		}
		n := int(b.Length) + 12
		if n <= 12 || n > len(raw) {
			return
		}
		raw = raw[n:]
	}
}

// requireIdempotentAcksAll fails the test unless the gateway wrote the
// audit topic, every batch with acks=all from an idempotent producer.
func (e *audEnv) requireIdempotentAcksAll(t *testing.T) {
	t.Helper()
	if e.auditBatches.Load() == 0 {
		t.Error("the cluster saw no batch written to the audit topic")
	}
	if n := e.weakBatches.Load(); n > 0 {
		t.Errorf("%d of %d audit batches not written with acks=all by an idempotent producer; first: %s", n, e.auditBatches.Load(), *e.weakBatch.Load())
	}
}

// upstream is the --upstream flag of the audit subcommands.
func (e *audEnv) upstream() string { return strings.Join(e.cluster.Addrs(), ",") }

// client is a franz-go client logged in to the gateway as user with
// SCRAM-SHA-512.
func (e *audEnv) client(t *testing.T, user string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	k := &kgoClient{}
	return k.newClient(t, e.gw.Bootstrap, append([]kgo.Opt{kgo.SASL(audSCRAM(user))}, opts...)...)
}

func audSCRAM(user string) sasl.Mechanism {
	return scram.Auth{User: user, Pass: audPassword(user)}.AsSha512Mechanism()
}

// kcatAuth are kcat's flags to log in as user with SCRAM-SHA-512.
func audKcatAuth(user string) []string {
	return []string{"-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-512",
		"-X", "sasl.username=" + user, "-X", "sasl.password=" + audPassword(user)}
}

// pythonAuth are the python driver's flags to log in as user.
func audPythonAuth(user string) []string {
	return []string{"--sasl-mechanism", "SCRAM-SHA-512", "--user", user, "--password", audPassword(user)}
}

// seed writes records straight to the cluster (the provider's side).
func (e *audEnv) seed(t *testing.T, topic string, values ...string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.cluster.Addrs()...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recs := make([]*kgo.Record, len(values))
	for i, v := range values {
		recs[i] = &kgo.Record{Value: []byte(v)}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("seed %s: %v", topic, err)
	}
}

// metrics scrapes the gateway's /metrics into name -> summed value
// (every label set of a metric added up) and name{labels} -> value.
func (e *audEnv) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	return audParseMetrics(e.gw.Metrics(t))
}

func audParseMetrics(text string) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			continue
		}
		series := l[:i]
		out[series] = v
		if j := strings.IndexByte(series, '{'); j >= 0 {
			out[series[:j]] += v
		}
	}
	return out
}

// waitMetric polls /metrics until cond holds for the value of name.
func (e *audEnv) waitMetric(t *testing.T, what, name string, timeout time.Duration, cond func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v := e.metrics(t)[name]
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s = %v after %v", what, name, v, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// settle waits until the gateway's decision and authentication counters
// stop moving (every client has gone) and returns the metrics.
func (e *audEnv) settle(t *testing.T) map[string]float64 {
	t.Helper()
	key := func(m map[string]float64) string {
		return fmt.Sprint(m["sluice_audit_decisions_total"], m["sluice_authn_attempts_total"], m["sluice_policy_denied_resources_total"])
	}
	m := e.metrics(t)
	for i := 0; i < 50; i++ {
		time.Sleep(300 * time.Millisecond)
		n := e.metrics(t)
		if key(n) == key(m) {
			return n
		}
		m = n
	}
	t.Fatalf("gateway decisions never settled: %v", key(m))
	return nil
}

// stop stops the gateway (flushing audit, signing a final head) and
// fails the test unless it exits 0.
func (e *audEnv) stop(t *testing.T) {
	t.Helper()
	if err := e.gw.Stop(); err != nil {
		t.Fatalf("gateway shutdown: %v\n%s", err, e.gw.Logs())
	}
}

// audEvent is one record of the audit topic, parsed.
type audEvent struct {
	rec audit.Record
	ev  *audit.Envelope
	seq uint64
}

// events reads the whole audit topic straight from the cluster.
func (e *audEnv) events(t *testing.T) []audEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs, err := audit.ReadTopic(ctx, []kgo.Opt{kgo.SeedBrokers(e.cluster.Addrs()...)}, audTopic)
	if err != nil {
		t.Fatalf("read the audit topic: %v", err)
	}
	out := make([]audEvent, 0, len(recs))
	for _, r := range recs {
		ev, seq, err := audit.ParseEvent(r.Value)
		if err != nil {
			t.Fatalf("audit topic partition %d offset %d: %v: %s", r.Partition, r.Offset, err, r.Value)
		}
		out = append(out, audEvent{rec: r, ev: ev, seq: seq})
	}
	return out
}

// unique drops byte-identical re-deliveries (a write that timed out but
// landed, then replayed from the spool), which verification accepts.
func audUnique(evs []audEvent) []audEvent {
	seen := map[string]bool{}
	var out []audEvent
	for _, e := range evs {
		if seen[string(e.rec.Value)] {
			continue
		}
		seen[string(e.rec.Value)] = true
		out = append(out, e)
	}
	return out
}

// audSluice runs the sluice binary (a subcommand) and returns the result.
func audSluice(t *testing.T, args ...string) harness.Result {
	t.Helper()
	return harness.Run(context.Background(), 90*time.Second, harness.SluiceBin(t), args...)
}

// verifyTopic runs `sluice audit verify` against the cluster.
func (e *audEnv) verifyTopic(t *testing.T) harness.Result {
	t.Helper()
	return audSluice(t, "audit", "verify", "--upstream", e.upstream(), "--topic", audTopic, "--public-key", e.pubKey)
}
