package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/audit"
)

// TestAuditSpoolsAndReplaysInOrder makes the audit topic unwritable (every
// Produce to it answered NOT_ENOUGH_REPLICAS by the cluster) while a
// partner keeps producing through the gateway: requests are still served,
// events go to the spool; when the topic is writable again every event
// arrives, in order, and `sluice audit verify` passes.
func TestAuditSpoolsAndReplaysInOrder(t *testing.T) {
	t.Parallel()
	const before, during, after = 8, 20, 8
	n := before + during + after
	var topics []string
	for i := 0; i < n; i++ {
		topics = append(topics, fmt.Sprintf("inbound.acme.f%03d", i))
	}
	// No folding: one event per decision, so order is checked event by
	// event.
	e := startAuditEnv(t, map[string]any{"fold_window": "0s"}, topics...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := e.client(t, audAcme, kgo.RecordDeliveryTimeout(20*time.Second))
	defer cl.Close()
	produce := func(from, to int) {
		for i := from; i < to; i++ {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topics[i], Value: []byte("v")}).FirstErr(); err != nil {
				t.Fatalf("produce %d to %s while audit is %v: %v", i, topics[i], map[bool]string{true: "failing", false: "writable"}[e.failing.Load()], err)
			}
		}
	}
	produce(0, before)
	e.waitMetric(t, "events written before the fault", "sluice_audit_events_written_total", 20*time.Second, func(v float64) bool { return v > 0 })

	e.failing.Store(true)
	produce(before, before+during) // served: the spool has room
	e.waitMetric(t, "events spooled", "sluice_audit_events_spooled_total", 20*time.Second, func(v float64) bool { return v > 0 })
	m := e.metrics(t)
	if m["sluice_audit_spool_bytes"] == 0 || m["sluice_audit_produce_errors_total"] == 0 || m["sluice_audit_failing_closed"] != 0 {
		t.Errorf("while the topic is unwritable: spool_bytes %v, produce_errors %v, failing_closed %v",
			m["sluice_audit_spool_bytes"], m["sluice_audit_produce_errors_total"], m["sluice_audit_failing_closed"])
	}
	if e.failedProduces.Load() == 0 {
		t.Fatal("the cluster failed no Produce to the audit topic")
	}

	e.failing.Store(false)
	produce(before+during, n)
	e.waitMetric(t, "spool drained", "sluice_audit_spool_bytes", 30*time.Second, func(v float64) bool { return v == 0 })
	m = e.settle(t)
	t.Logf("gateway: decisions %v written %v spooled %v replayed %v produce errors %v (cluster failed %d audit produces)",
		m["sluice_audit_decisions_total"], m["sluice_audit_events_written_total"], m["sluice_audit_events_spooled_total"],
		m["sluice_audit_events_replayed_total"], m["sluice_audit_produce_errors_total"], e.failedProduces.Load())
	if m["sluice_audit_events_replayed_total"] < m["sluice_audit_events_spooled_total"] {
		t.Errorf("replayed %v < spooled %v", m["sluice_audit_events_replayed_total"], m["sluice_audit_events_spooled_total"])
	}
	if m["sluice_audit_events_dropped_total"] != 0 {
		t.Errorf("%v events dropped", m["sluice_audit_events_dropped_total"])
	}
	cl.Close()
	m = e.settle(t)
	e.stop(t)

	evs := e.events(t)
	uniq := audUnique(evs)
	t.Logf("topic: %d records, %d unique", len(evs), len(uniq))
	var produced []string
	var sum int64
	for i, x := range uniq {
		if x.seq != uint64(i) {
			t.Fatalf("unique event %d (offset %d) has sequence %d: an event is missing or out of order", i, x.rec.Offset, x.seq)
		}
		d := x.ev.Data
		if d.Kind != audit.KindDecision {
			continue
		}
		sum += d.Count
		if d.API.Name == "Produce" {
			if d.Decision != audit.Allow || d.Records != 1 {
				t.Errorf("produce event: %s", x.rec.Value)
			}
			produced = append(produced, d.Resource)
		}
	}
	if !slices.Equal(produced, topics) {
		t.Errorf("produce decisions in the topic, in order:\n%q\nwant\n%q", produced, topics)
	}
	if float64(sum) != m["sluice_audit_decisions_total"] {
		t.Errorf("decision events sum to %d, the gateway made %v decisions", sum, m["sluice_audit_decisions_total"])
	}
	e.requireIdempotentAcksAll(t)
	v := e.verifyTopic(t)
	if !v.OK() || !strings.Contains(v.Stdout, "verify: OK") {
		t.Errorf("sluice audit verify after replay: %s", v)
	}
	t.Logf("verify:\n%s", v.Stdout)
}

// TestAuditSpoolFullFailsClosed fills the smallest spool (1 MiB) while the
// audit topic is unwritable: the gateway then denies new requests with
// KAFKA_STORAGE_ERROR (what franz-go and kcat see is checked), reports
// failing_closed, and serves again once the topic is writable and the spool
// drains; nothing recorded is lost and the chain verifies.
func TestAuditSpoolFullFailsClosed(t *testing.T) {
	t.Parallel()
	requireAvailable(t, kcatClient{})
	e := startAuditEnv(t, map[string]any{"fold_window": "0s", "spool": map[string]any{"max_bytes": 1 << 20}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := e.client(t, audAcme, kgo.RequestRetries(0))
	defer cl.Close()

	// Fill the spool: Metadata requests for 100 own topics make 100
	// decisions (events of ~800 bytes) each.
	meta := func(round int) int16 {
		req := kmsg.NewPtrMetadataRequest()
		for i := 0; i < 100; i++ {
			mt := kmsg.NewMetadataRequestTopic()
			mt.Topic = kmsg.StringPtr(fmt.Sprintf("inbound.acme.fill-%03d-%03d", round, i))
			req.Topics = append(req.Topics, mt)
		}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatalf("metadata: %v", err)
		}
		return resp.Topics[0].ErrorCode
	}
	// The client learns the brokers (and the audit topic gets its first
	// events) while audit is healthy.
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: audInbound, Value: []byte("before")}).FirstErr(); err != nil {
		t.Fatalf("produce before the fault: %v", err)
	}
	e.failing.Store(true)
	// 20 rounds make about 1.6 MB of events, more than the spool holds.
	// They may all be served before the first write to the topic fails
	// (after produce_timeout): the gateway then fails closed without
	// further traffic, so wait for it rather than counting rounds.
	rounds := 0
	for ; rounds < 20; rounds++ {
		if code := meta(rounds); code == audit.DenyCode {
			break
		}
	}
	e.waitMetric(t, "failing closed", "sluice_audit_failing_closed", 30*time.Second, func(v float64) bool { return v == 1 })
	m0 := e.metrics(t)
	t.Logf("failing closed after %d metadata rounds; spool %v bytes, %v events in memory", rounds,
		m0["sluice_audit_spool_bytes"], m0["sluice_audit_queue_depth_events"])
	// What did not fit in the spool is held in memory, and counted.
	if m0["sluice_audit_queue_depth_events"] == 0 {
		t.Errorf("sluice_audit_queue_depth_events is 0 while failing closed with a full spool: the held events are not counted")
	}

	// What clients see: every request but ApiVersions/SASL is refused with
	// KAFKA_STORAGE_ERROR (56), which they treat as retriable.
	if code := e.rawProduce(ctx, t, audAcme, audInbound, "while-failing"); code != kerr.KafkaStorageError.Code {
		t.Errorf("produce while failing closed: error %d, want KAFKA_STORAGE_ERROR (56)", code)
	}
	if code := meta(999); code != kerr.KafkaStorageError.Code {
		t.Errorf("metadata while failing closed: error %d, want KAFKA_STORAGE_ERROR (56)", code)
	}
	fresh := e.client(t, audAcme, kgo.RecordDeliveryTimeout(3*time.Second), kgo.DefaultProduceTopic(audInbound))
	err := fresh.ProduceSync(ctx, &kgo.Record{Value: []byte("franz-go-while-failing")}).FirstErr()
	fresh.Close()
	t.Logf("franz-go produce while failing closed: %v", err)
	if !errors.Is(err, kerr.KafkaStorageError) {
		t.Errorf("franz-go produce while audit is failing closed: %v, want KAFKA_STORAGE_ERROR", err)
	}
	kr := runStdin(ctx, "kcat-while-failing\n", "kcat", append([]string{"-b", e.gw.Bootstrap, "-t", audInbound, "-P",
		"-X", "message.timeout.ms=3000", "-m", "10"}, audKcatAuth(audAcme)...)...)
	t.Logf("kcat produce while failing closed: exit %d: %s", kr.ExitCode, strings.TrimSpace(kr.Stderr))
	// librdkafka's text for KAFKA_STORAGE_ERROR (56).
	if kr.ExitCode == 0 || !strings.Contains(kr.Stderr, "Broker: Disk error") {
		t.Errorf("kcat produce while audit is failing closed: want a delivery failure with KAFKA_STORAGE_ERROR: %s", kr)
	}
	if d := e.metrics(t)["sluice_audit_requests_denied_total"]; d < 3 {
		t.Errorf("requests_denied_total %v, want at least 3", d)
	}

	// Restore: the spool drains, requests are served again.
	e.failing.Store(false)
	e.waitMetric(t, "serving again", "sluice_audit_failing_closed", 60*time.Second, func(v float64) bool { return v == 0 })
	deadline := time.Now().Add(30 * time.Second)
	for code := e.rawProduce(ctx, t, audAcme, audInbound, "after"); code != 0; code = e.rawProduce(ctx, t, audAcme, audInbound, "after") {
		if time.Now().After(deadline) {
			t.Fatalf("produce after recovery: error %d", code)
		}
		time.Sleep(200 * time.Millisecond)
	}
	kcatClient{}.run(ctx, t, "kcat-after\n", append([]string{"-b", e.gw.Bootstrap, "-t", audInbound, "-P", "-m", "10"}, audKcatAuth(audAcme)...)...)
	e.waitMetric(t, "spool drained", "sluice_audit_spool_bytes", 60*time.Second, func(v float64) bool { return v == 0 })
	cl.Close()
	m := e.settle(t)
	e.stop(t)

	evs := audUnique(e.events(t))
	var sum int64
	for i, x := range evs {
		if x.seq != uint64(i) {
			t.Fatalf("unique event %d (offset %d) has sequence %d", i, x.rec.Offset, x.seq)
		}
		if d := x.ev.Data; d.Kind == audit.KindDecision {
			sum += d.Count
		}
	}
	t.Logf("topic: %d unique events, decisions %d; gateway: decisions %v denied %v dropped %v", len(evs), sum,
		m["sluice_audit_decisions_total"], m["sluice_audit_requests_denied_total"], m["sluice_audit_events_dropped_total"])
	if float64(sum) != m["sluice_audit_decisions_total"] || m["sluice_audit_events_dropped_total"] != 0 {
		t.Errorf("decision events sum to %d, the gateway made %v decisions (%v dropped)", sum, m["sluice_audit_decisions_total"], m["sluice_audit_events_dropped_total"])
	}
	if v := e.verifyTopic(t); !v.OK() {
		t.Errorf("sluice audit verify after recovery: %s", v)
	}
}

// TestAuditSpoolUnwritableFailsClosed: the spool cannot be written (its
// segment is /dev/full, so every write fails with ENOSPC; file modes would
// not stop root) while the audit topic is unwritable. The gateway fails
// closed, denying requests with KAFKA_STORAGE_ERROR and logging why (the
// spool's write error, not "spool full"); when the topic is writable
// again, it serves again, and every decision is in the topic, in order.
func TestAuditSpoolUnwritableFailsClosed(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	spool := t.TempDir()
	if err := os.Symlink("/dev/full", filepath.Join(spool, fmt.Sprintf("%016d.seg", 0))); err != nil {
		t.Fatal(err)
	}
	e := startAuditEnv(t, map[string]any{"fold_window": "0s", "spool": map[string]any{"dir": spool}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if code := e.rawProduce(ctx, t, audAcme, audInbound, "before"); code != 0 {
		t.Fatalf("produce before the fault: error %d", code)
	}
	e.waitMetric(t, "events written before the fault", "sluice_audit_events_written_total", 20*time.Second, func(v float64) bool { return v > 0 })

	e.failing.Store(true)
	// Served (audit is healthy when it arrives); its events then find
	// neither topic nor spool.
	if code := e.rawProduce(ctx, t, audAcme, audInbound, "while-failing"); code != 0 {
		t.Fatalf("first produce after the fault: error %d", code)
	}
	e.waitMetric(t, "failing closed", "sluice_audit_failing_closed", 30*time.Second, func(v float64) bool { return v == 1 })
	if code := e.rawProduce(ctx, t, audAcme, audInbound, "denied"); code != kerr.KafkaStorageError.Code {
		t.Errorf("produce while the spool cannot be written: error %d, want KAFKA_STORAGE_ERROR (56)", code)
	}
	m := e.metrics(t)
	if m["sluice_audit_events_spooled_total"] != 0 || m["sluice_audit_spool_bytes"] != 0 || m["sluice_audit_requests_denied_total"] < 1 {
		t.Errorf("spooled %v, spool bytes %v, requests denied %v", m["sluice_audit_events_spooled_total"],
			m["sluice_audit_spool_bytes"], m["sluice_audit_requests_denied_total"])
	}
	logs := e.gw.Logs()
	for _, w := range []string{"audit failing closed", "spool not writable", "no space left on device", "topic write failed"} {
		if !strings.Contains(logs, w) {
			t.Errorf("the gateway's log does not say %q", w)
		}
	}

	e.failing.Store(false)
	e.waitMetric(t, "serving again", "sluice_audit_failing_closed", 60*time.Second, func(v float64) bool { return v == 0 })
	if code := e.rawProduce(ctx, t, audAcme, audInbound, "after"); code != 0 {
		t.Errorf("produce after recovery: error %d", code)
	}
	m = e.settle(t)
	e.stop(t)

	evs := audUnique(e.events(t))
	var sum int64
	for i, x := range evs {
		if x.seq != uint64(i) {
			t.Fatalf("unique event %d (offset %d) has sequence %d", i, x.rec.Offset, x.seq)
		}
		if d := x.ev.Data; d.Kind == audit.KindDecision {
			sum += d.Count
		}
	}
	if float64(sum) != m["sluice_audit_decisions_total"] || m["sluice_audit_events_dropped_total"] != 0 {
		t.Errorf("decision events sum to %d, the gateway made %v decisions (%v dropped)", sum, m["sluice_audit_decisions_total"], m["sluice_audit_events_dropped_total"])
	}
	if v := e.verifyTopic(t); !v.OK() {
		t.Errorf("sluice audit verify after recovery: %s", v)
	}
}

// TestAuditHungTopicDoesNotSlowRequests holds the audit topic's Produce
// requests unanswered at the cluster (for less than produce_timeout, so
// the gateway keeps waiting instead of spooling) while a partner produces
// through the gateway: its requests are served as fast as ever, because
// the audit sink is off the request path; the events wait in memory
// (sluice_audit_queue_depth_events), and when the cluster answers they
// are all written, in order.
func TestAuditHungTopicDoesNotSlowRequests(t *testing.T) {
	t.Parallel()
	const hang = 6 * time.Second
	e := startAuditEnv(t, map[string]any{"fold_window": "0s", "produce_timeout": "30s"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := e.topicID(ctx, t, audTopic)
	var hold atomic.Bool
	var held atomic.Int64
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	c := e.cluster
	c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !hold.Load() {
			return nil, nil, false
		}
		for _, rt := range r.(*kmsg.ProduceRequest).Topics {
			if rt.Topic == audTopic || rt.TopicID == id {
				held.Add(1)
				c.SleepControl(func() { <-release })
				break
			}
		}
		return nil, nil, false // then answered normally
	})

	cl := e.client(t, audAcme, kgo.DefaultProduceTopic(audInbound))
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("before")}).FirstErr(); err != nil {
		t.Fatalf("produce before the hang: %v", err)
	}
	e.waitMetric(t, "events written before the hang", "sluice_audit_events_written_total", 20*time.Second, func(v float64) bool { return v > 0 })

	hold.Store(true)
	hangStart := time.Now()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("trigger")}).FirstErr(); err != nil {
		t.Fatalf("produce as the hang starts: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for held.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the gateway sent no Produce to the audit topic after the hang started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The sink writes one batch at a time: with this one held, nothing
	// more is written until the cluster answers.
	written := e.metrics(t)["sluice_audit_events_written_total"]

	const n = 30
	done := make(chan error, 1)
	var took time.Duration
	go func() {
		begin := time.Now()
		var err error
		for i := 0; i < n && err == nil; i++ {
			err = cl.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("during-%d", i))}).FirstErr()
		}
		took = time.Since(begin)
		done <- err
	}()
	// Generous: a request path waiting on audit would take the whole hang.
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("produce while the audit topic hangs: %v", err)
		}
	case <-time.After(hang / 2):
		releaseAll()
		t.Fatalf("%d produces through the gateway did not finish within %v while the audit topic hung: requests wait on audit", n, hang/2)
	}
	t.Logf("%d produces through the gateway in %v while the audit topic's writes hang", n, took)
	m := e.metrics(t)
	if m["sluice_audit_events_written_total"] != written || m["sluice_audit_events_spooled_total"] != 0 {
		t.Fatalf("during the hang: written %v (was %v), spooled %v: the hang is not in effect",
			m["sluice_audit_events_written_total"], written, m["sluice_audit_events_spooled_total"])
	}
	if q := m["sluice_audit_queue_depth_events"]; q < n {
		t.Errorf("sluice_audit_queue_depth_events = %v while at least %d decisions wait behind the hung write", q, n)
	}
	if m["sluice_audit_failing_closed"] != 0 {
		t.Error("failing closed while the queue has room")
	}

	time.Sleep(time.Until(hangStart.Add(hang)))
	if w := e.metrics(t)["sluice_audit_events_written_total"]; w != written {
		t.Fatalf("written %v during the hang (was %v)", w, written)
	}
	releaseAll()
	hold.Store(false)
	e.waitMetric(t, "queue drained", "sluice_audit_queue_depth_events", 30*time.Second, func(v float64) bool { return v == 0 })
	cl.Close()
	m = e.settle(t)
	e.stop(t)

	evs := e.events(t)
	var sum int64
	var produced int
	for i, x := range audUnique(evs) {
		if x.seq != uint64(i) {
			t.Fatalf("unique event %d (offset %d) has sequence %d", i, x.rec.Offset, x.seq)
		}
		if d := x.ev.Data; d.Kind == audit.KindDecision {
			sum += d.Count
			if d.API.Name == "Produce" && d.Resource == audInbound && d.Decision == audit.Allow {
				produced++
			}
		}
	}
	if float64(sum) != m["sluice_audit_decisions_total"] || produced != n+2 {
		t.Errorf("decision events sum to %d (gateway: %v); %d produce decisions on %s, want %d", sum, m["sluice_audit_decisions_total"], produced, audInbound, n+2)
	}
	if m["sluice_audit_events_spooled_total"] != 0 {
		t.Errorf("%v events spooled: the hang was shorter than produce_timeout", m["sluice_audit_events_spooled_total"])
	}
	if v := e.verifyTopic(t); !v.OK() {
		t.Errorf("sluice audit verify after the hang: %s", v)
	}
}
