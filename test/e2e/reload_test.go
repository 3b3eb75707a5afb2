package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/test/harness"
)

// TestPolicyReloadStopsConnectedConsumer proves issue 3's "a policy change
// on disk takes effect for an already connected consumer without a
// reconnect" through the binary: partner consumers (franz-go, one reading
// partitions directly over PLAIN, one in its own group over SCRAM;
// confluent-kafka-python in its own group over SCRAM-SHA-256; a raw
// incremental fetch session) are consuming the granted topic; the grant is then changed on disk (revoked,
// or its window closed). Within the reload interval their next fetch is
// answered TOPIC_AUTHORIZATION_FAILED on the connections they already had,
// and no record produced after the change reaches them.
func TestPolicyReloadStopsConnectedConsumer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, grant string
	}{
		{"revoked", grantJSON(`, "revoked": true`)},
		{"expired", strings.Replace(grantJSON(""), "2100-01-01T00:00:00Z", time.Now().Add(-time.Minute).UTC().Format(time.RFC3339), 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testReload(t, tc.grant)
		})
	}
}

func testReload(t *testing.T, newGrant string) {
	// confluent-kafka-python is one of the connected consumers: missing, it
	// skips the test (fails it under CI=true).
	harness.PythonDriver().Require(t)
	env := startIdentityEnv(t, false, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var adminConns atomic.Int64
	admin := env.admin(t, kgo.WithHooks(connectHook{n: &adminConns, t: t}), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic(idGranted))
	defer admin.Close()
	produce := func(prefix string) {
		t.Helper()
		for p := range int32(3) {
			if err := admin.ProduceSync(ctx, &kgo.Record{Partition: p, Value: []byte(fmt.Sprintf("%s-%d", prefix, p))}).FirstErr(); err != nil {
				t.Fatalf("admin produce: %v", err)
			}
		}
	}
	produce("before")

	type consumer struct {
		name                  string
		cl                    *kgo.Client
		connects, disconnects atomic.Int64
	}
	consumers := []*consumer{{name: "direct/PLAIN"}, {name: "group/SCRAM-SHA-512"}}
	for i, c := range consumers {
		opts := []kgo.Opt{
			kgo.WithHooks(connectHook{n: &c.connects, closed: &c.disconnects, t: t}),
			kgo.ConsumeTopics(idGranted), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		}
		if i == 0 {
			opts = append(opts, kgo.SASL(plain.Auth{User: idPartner, Pass: idPartPw}.AsMechanism()))
		} else {
			opts = append(opts, kgo.SASL(scram.Auth{User: idPartner, Pass: idPartPw}.AsSha512Mechanism()),
				kgo.ConsumerGroup("e2e.reload"), kgo.DisableAutoCommit())
		}
		c.cl = env.k.newClient(t, env.gw.Bootstrap, opts...)
		defer c.cl.Close()
		assertSameValues(t, recordValues(env.k.poll(ctx, t, c.cl, 3)), values("before", 3))
	}

	// confluent-kafka-python (librdkafka) in a consumer group of its own.
	py := startPythonConsumer(ctx, t, env, "e2e.reload-py")
	py.await(t, values("before", 3))

	// A raw connection with an incremental fetch session on one partition
	// (the case where a client does not re-list partitions).
	rf := newRawFetcher(ctx, t, env, admin)
	if got := rf.fetch(t, true); got.records != 1 || got.denied {
		t.Fatalf("raw full fetch before the change: %+v, want the one record", got)
	}
	if got := rf.fetch(t, true); got.records != 0 || got.denied {
		t.Fatalf("raw incremental fetch before the change: %+v, want nothing new", got)
	}

	// Everyone is connected. From here on no client may open a connection
	// to the gateway until the consumers have seen the denial.
	connsBefore := gatewayConnections(t, env)
	reloadsBefore := metricValue(t, env, `sluice_policy_reloads_total{result="ok"}`)
	adminBefore := adminConns.Load()
	var before [2][2]int64
	for i, c := range consumers {
		before[i] = [2]int64{c.connects.Load(), c.disconnects.Load()}
	}

	if err := authntest.WriteFileAtomic(filepath.Join(env.dataDir, "grants.json"), []byte("["+newGrant+"]")); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	for metricValue(t, env, `sluice_policy_reloads_total{result="ok"}`) <= reloadsBefore {
		if time.Since(changed) > 5*time.Second {
			t.Fatalf("the gateway did not load the changed grant within 5s (reload interval 200ms)")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("new policy revision loaded %v after the change", time.Since(changed).Round(time.Millisecond))
	produce("after")

	var opened int64
	// The gateway counts a connection when it accepts it, franz-go's hook
	// when its dial returns: read the gateway first, then (once any dial in
	// progress has returned) the clients.
	connsAfter := gatewayConnections(t, env)
	time.Sleep(100 * time.Millisecond)
	for i, c := range consumers {
		recs, errs := pollFor(ctx, c.cl, 3*time.Second, 1)
		if !hasErr(errs, kerr.TopicAuthorizationFailed) {
			t.Errorf("%s: no TOPIC_AUTHORIZATION_FAILED within 3s of the reload (errors %v)", c.name, errs)
		}
		if len(recs) > 0 {
			t.Errorf("%s: %d records reached the consumer after the grant changed, first %q", c.name, len(recs), recs[0].Value)
		}
		// franz-go answers a TOPIC_AUTHORIZATION_FAILED fetch with a
		// metadata refresh, which may open a connection to another broker;
		// that is an additional connection, not a re-established one. No
		// connection of the consumer was closed, so the denial came on the
		// connections it had.
		if d := c.disconnects.Load() - before[i][1]; d != 0 {
			t.Errorf("%s: franz-go lost %d connection(s) between the change and the denial", c.name, d)
		}
		opened += c.connects.Load() - before[i][0]
	}
	py.assertDenied(t)
	// Nobody else reconnected either: every connection the gateway accepted
	// since the change is one the clients reported opening.
	opened += adminConns.Load() - adminBefore
	if connsAfter-connsBefore > float64(opened) {
		t.Errorf("sluice_proxy_connections_total rose by %v, the clients opened %d: a client reconnected", connsAfter-connsBefore, opened)
	}

	// The raw connection: its incremental fetch session, opened before the
	// change, now answers the partition with TOPIC_AUTHORIZATION_FAILED and
	// without the record produced after the change; the connection stays
	// open and serves the next request.
	got := rf.fetch(t, false)
	if got.records != 0 || !got.denied {
		t.Errorf("raw fetch session after the change: %+v, want TOPIC_AUTHORIZATION_FAILED and no record", got)
	}
	if got.null != 0 {
		t.Errorf("raw fetch v11 after the change: %d denied partition(s) carry null records (length -1); Kafka sends empty records, "+
			"and librdkafka fails to parse null ones (proxy/kafkaerr's Fetch echo leaves RecordBatches nil)", got.null)
	}
	if got := rf.fetch(t, false); got.records != 0 {
		t.Errorf("raw fetch session, second fetch after the change: %d records", got.records)
	}
	// And it stays that way: more polling brings no record.
	recs, _ := pollFor(ctx, consumers[0].cl, time.Second, 0)
	if len(recs) > 0 {
		t.Errorf("records reached the direct consumer after the denial: %q", recs[0].Value)
	}
}

// gatewayConnections is the gateway's count of accepted client connections.
func gatewayConnections(t *testing.T, env *identityEnv) float64 {
	return metricValue(t, env, `sluice_proxy_connections_total{listener="default"}`)
}

// metricValue reads one series from the gateway's /metrics (0 if absent).
func metricValue(t *testing.T, env *identityEnv, series string) float64 {
	t.Helper()
	return parseMetrics(t, env.gw.Metrics(t))[series]
}

// pyConsumer is the python driver consuming idGranted in a group, its
// records read as they arrive.
type pyConsumer struct {
	lines  chan string
	stderr harness.SyncBuffer
	done   chan error
}

func startPythonConsumer(ctx context.Context, t *testing.T, env *identityEnv, group string) *pyConsumer {
	t.Helper()
	cmd := exec.CommandContext(ctx, harness.Python, filepath.Join(harness.ClientsDir(), "confluent_driver.py"),
		"consume", "--topic", idGranted, "--count", "1000", "--group", group, "--timeout", "30",
		"--bootstrap", env.gw.Bootstrap, "--sasl-mechanism", "SCRAM-SHA-256", "--user", idPartner, "--password", idPartPw)
	p := &pyConsumer{lines: make(chan string, 100), done: make(chan error, 1)}
	cmd.Stderr = &p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return p
}

// await reads records until it has want (in any order).
func (p *pyConsumer) await(t *testing.T, want []string) {
	t.Helper()
	var got []string
	timeout := time.After(30 * time.Second)
	for len(got) < len(want) {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("python consumer exited after %q: %s", got, p.stderr.String())
			}
			got = append(got, driverValues(t, l)...)
		case <-timeout:
			t.Fatalf("python consumer: %q after 30s", got)
		}
	}
	assertSameValues(t, got, want)
}

// assertDenied waits for the python consumer to fail with
// TOPIC_AUTHORIZATION_FAILED, having read no further record.
func (p *pyConsumer) assertDenied(t *testing.T) {
	t.Helper()
	var late []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if ok {
				late = append(late, driverValues(t, l)...)
				continue
			}
			err := <-p.done
			if len(late) > 0 {
				t.Errorf("python consumer read %q after the grant changed", late)
			}
			if err == nil || !strings.Contains(p.stderr.String(), `"TOPIC_AUTHORIZATION_FAILED"`) {
				t.Errorf("python consumer ended with %v, want TOPIC_AUTHORIZATION_FAILED: %s", err, p.stderr.String())
			}
			return
		case <-timeout:
			// librdkafka has two ways to take a revocation: the fetch
			// error reaches the application (above), or the metadata
			// refresh the same fetch error triggers lands first, drops the
			// topic's partitions ("partition count changed from N to 0")
			// and discards the error queued on them. Either way nothing
			// more is read; the second shows only as the partitions gone.
			if len(late) == 0 && regexp.MustCompile(`Topic `+regexp.QuoteMeta(idGranted)+` partition count changed from \d+ to 0`).MatchString(p.stderr.String()) {
				t.Logf("python consumer: librdkafka dropped the topic's partitions on the denial instead of reporting it: %s", p.stderr.String())
				return
			}
			t.Errorf("python consumer still running 10s after the change (read %q since): %s", late, p.stderr.String())
			return
		}
	}
}

// rawFetcher is one authenticated connection to a partition leader with an
// incremental fetch session (KIP-227) on idGranted partition 0.
type rawFetcher struct {
	rc      *rawConn
	session int32
	epoch   int32
	offset  int64
}

type fetchResult struct {
	records int
	denied  bool
	codes   []int16
	// null counts partitions answered with null records (length -1),
	// which Kafka never sends and librdkafka (2.0.2, Debian's kcat and
	// confluent-kafka-python) rejects as "Protocol parse failure for Fetch".
	null int
}

func newRawFetcher(ctx context.Context, t *testing.T, env *identityEnv, admin *kgo.Client) *rawFetcher {
	t.Helper()
	md := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(idGranted)
	md.Topics = append(md.Topics, rt)
	mresp, err := md.RequestWith(ctx, admin)
	if err != nil || len(mresp.Topics) != 1 {
		t.Fatalf("metadata for %s: %v", idGranted, err)
	}
	leader := int32(-1)
	for _, p := range mresp.Topics[0].Partitions {
		if p.Partition == 0 {
			leader = p.Leader
		}
	}
	var addr string
	for _, b := range mresp.Brokers {
		if b.NodeID == leader {
			addr = joinHP(b.Host, b.Port)
		}
	}
	if addr == "" {
		t.Fatalf("no gateway address for leader %d of %s[0]", leader, idGranted)
	}
	rc := dialRaw(t, addr)
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.SetVersion(1)
	hs.Mechanism = "PLAIN"
	if resp, err := rc.roundTrip(hs); err != nil || resp.(*kmsg.SASLHandshakeResponse).ErrorCode != 0 {
		t.Fatalf("raw SaslHandshake: %v %+v", err, resp)
	}
	au := kmsg.NewPtrSASLAuthenticateRequest()
	au.SetVersion(2)
	au.SASLAuthBytes = []byte("\x00" + idPartner + "\x00" + idPartPw)
	if resp, err := rc.roundTrip(au); err != nil || resp.(*kmsg.SASLAuthenticateResponse).ErrorCode != 0 {
		t.Fatalf("raw SaslAuthenticate: %v %+v", err, resp)
	}
	return &rawFetcher{rc: rc}
}

// fetch sends the next fetch of the session (v11, as librdkafka 2.0.2:
// topic names, sessions, preferred read replica):
// the first is full and creates the session, later ones are incremental
// and name the partition only if list is set.
func (f *rawFetcher) fetch(t *testing.T, list bool) fetchResult {
	t.Helper()
	req := kmsg.NewPtrFetchRequest()
	req.SetVersion(11)
	req.ReplicaID = -1
	req.MaxWaitMillis = 200
	req.MinBytes = 1
	req.MaxBytes = 1 << 20
	req.SessionID = f.session
	req.SessionEpoch = f.epoch
	if list || f.epoch == 0 {
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = idGranted
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.Partition = 0
		fp.FetchOffset = f.offset
		fp.PartitionMaxBytes = 1 << 20
		fp.CurrentLeaderEpoch = -1
		fp.LastFetchedEpoch = -1
		fp.LogStartOffset = -1
		ft.Partitions = append(ft.Partitions, fp)
		req.Topics = append(req.Topics, ft)
	}
	resp, err := f.rc.roundTrip(req)
	if err != nil {
		t.Fatalf("raw fetch (session %d epoch %d): %v (the gateway closed the connection?)", f.session, f.epoch, err)
	}
	fr := resp.(*kmsg.FetchResponse)
	var out fetchResult
	if fr.ErrorCode != 0 {
		out.codes = append(out.codes, fr.ErrorCode)
	}
	if f.epoch == 0 {
		f.session = fr.SessionID
	}
	f.epoch++
	for _, tp := range fr.Topics {
		for _, p := range tp.Partitions {
			if p.ErrorCode != 0 {
				out.codes = append(out.codes, p.ErrorCode)
			}
			if p.RecordBatches == nil {
				out.null++
			}
			n, next := countRecords(t, p.RecordBatches)
			out.records += n
			if next > f.offset {
				f.offset = next
			}
		}
	}
	for _, c := range out.codes {
		if c == kerr.TopicAuthorizationFailed.Code {
			out.denied = true
		}
	}
	return out
}

// countRecords counts the records of the batches in b and returns the
// offset after the last one.
func countRecords(t *testing.T, b []byte) (int, int64) {
	t.Helper()
	var n int
	var next int64
	for len(b) >= 12 {
		size := 12 + int(int32(binary.BigEndian.Uint32(b[8:12])))
		if size > len(b) {
			break // a partial batch at the end of a fetch
		}
		var rb kmsg.RecordBatch
		if err := rb.ReadFrom(b[:size]); err != nil {
			t.Fatalf("record batch: %v", err)
		}
		n += int(rb.NumRecords)
		next = rb.FirstOffset + int64(rb.LastOffsetDelta) + 1
		b = b[size:]
	}
	return n, next
}
