package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/test/harness"
)

// encode appends one request frame for req at its set version.
func encode(b []byte, req kmsg.Request, corr int32) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(req.Key()))
	b = binary.BigEndian.AppendUint16(b, uint16(req.GetVersion()))
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	b = binary.BigEndian.AppendUint16(b, 3)
	b = append(b, "raw"...)
	if req.IsFlexible() {
		b = append(b, 0)
	}
	b = req.AppendTo(b)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// TestPipeliningAndAcksZero writes many requests in one go, including
// acks=0 produce requests (which get no response), and checks the answers
// come back in request order with nothing for the acks=0 ones; then checks
// the acks=0 records were written and the metrics counted the traffic.
func TestPipeliningAndAcksZero(t *testing.T) {
	t.Parallel()
	const topic = "e2e-pipeline"
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(1, topic))
	gw := harness.StartGateway(t, cluster, nil)
	nodes := gw.Brokers(t)
	leader := cluster.LeaderFor(topic, 0)

	var buf []byte
	var want []int32
	const rounds = 20
	for i := int32(0); i < rounds; i++ {
		md := kmsg.NewPtrMetadataRequest()
		md.SetVersion(9)
		buf = encode(buf, md, 2*i+1)
		want = append(want, 2*i+1)

		pr := kmsg.NewPtrProduceRequest()
		pr.SetVersion(9)
		pr.Acks = 0
		pr.TimeoutMillis = 5000
		pt := kmsg.NewProduceRequestTopic()
		pt.Topic = topic
		pp := kmsg.NewProduceRequestTopicPartition()
		pp.Partition = 0
		pp.Records = oneRecordBatch()
		pt.Partitions = append(pt.Partitions, pp)
		pr.Topics = append(pr.Topics, pt)
		buf = encode(buf, pr, 2*i+2) // acks=0: no answer
	}
	ping := kmsg.NewPtrApiVersionsRequest()
	ping.SetVersion(0)
	buf = encode(buf, ping, 1000)
	want = append(want, 1000)

	rc := dialRaw(t, nodes[leader])
	if _, err := rc.conn.Write(buf); err != nil {
		t.Fatal(err)
	}
	received := 0
	for _, corr := range want {
		frame, err := readFrame(rc.conn)
		if err != nil {
			t.Fatalf("waiting for correlation id %d: %v", corr, err)
		}
		received += 4 + len(frame)
		if got := int32(binary.BigEndian.Uint32(frame)); got != corr {
			t.Fatalf("got correlation id %d, want %d (answers out of order, or an acks=0 produce was answered)", got, corr)
		}
	}

	// The acks=0 records arrived.
	k := &kgoClient{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons := k.newClient(t, gw.Bootstrap, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cons.Close()
	if got := k.poll(ctx, t, cons, rounds); len(got) != rounds {
		t.Errorf("consumed %d acks=0 records, want %d", len(got), rounds)
	}

	m := parseMetrics(t, gw.Metrics(t))
	assertMetrics(t, m, []metricMin{
		{`sluice_proxy_requests_total{api="Metadata",outcome="forwarded"}`, rounds},
		{`sluice_proxy_requests_total{api="Produce",outcome="forwarded"}`, rounds},
		// The ping: answered by the gateway itself.
		{`sluice_proxy_requests_total{api="ApiVersions",outcome="local"}`, 1},
		{`sluice_proxy_gateway_duration_seconds_count{api="Metadata"}`, rounds},
		{`sluice_proxy_upstream_duration_seconds_count{api="Metadata"}`, rounds},
		{`sluice_proxy_gateway_duration_seconds_count{api="ApiVersions"}`, 1},
		{`sluice_proxy_upstream_brokers`, 3},
		{`sluice_proxy_ready`, 1},
		{`sluice_proxy_connections_total{listener="default"}`, 2},
		{`sluice_proxy_client_received_bytes_total`, float64(len(buf))},
		{`sluice_proxy_client_sent_bytes_total`, float64(received)},
	})
	assertJSONLogs(t, gw.Logs())
	cluster.AssertOnlyGateway(t)
}

// parseMetrics reads the Prometheus text format into series -> value.
func parseMetrics(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Errorf("metrics line %q: %v", l, err)
			continue
		}
		out[l[:i]] = v
	}
	return out
}

// TestGracefulShutdown sends SIGTERM while a long-polling Fetch is in flight
// and checks the client still gets its answer before the gateway exits 0.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	const topic = "e2e-shutdown"
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(1, topic))
	gw := harness.StartGateway(t, cluster, map[string]any{"shutdown_timeout": "10s"})
	nodes := gw.Brokers(t)
	rc := dialRaw(t, nodes[cluster.LeaderFor(topic, 0)])

	req := kmsg.NewPtrFetchRequest()
	req.SetVersion(11)
	req.MaxWaitMillis = 2000 // nothing to fetch: kfake holds it for 2s
	req.MinBytes = 1
	req.MaxBytes = 1 << 20
	req.SessionEpoch = -1
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = topic
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.PartitionMaxBytes = 1 << 20
	fp.CurrentLeaderEpoch = -1
	ft.Partitions = append(ft.Partitions, fp)
	req.Topics = append(req.Topics, ft)

	type result struct {
		resp kmsg.Response
		err  error
		at   time.Time
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		resp, err := rc.roundTrip(req)
		done <- result{resp, err, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond)
	stopped := make(chan error, 1)
	go func() {
		err := gw.Stop()
		t.Logf("gateway exited %v after SIGTERM", time.Since(start)-300*time.Millisecond)
		stopped <- err
	}()

	// New connections are refused once shutdown begins.
	time.Sleep(200 * time.Millisecond)
	if c, err := dialRawErr(gw.Bootstrap); err == nil {
		c.Close()
		t.Errorf("gateway still accepts connections during shutdown")
	}

	r := <-done
	if r.err != nil {
		t.Fatalf("in-flight fetch failed during graceful shutdown: %v", r.err)
	}
	if fr := r.resp.(*kmsg.FetchResponse); len(fr.Topics) != 1 {
		t.Errorf("unexpected fetch answer %+v", fr)
	}
	if d := r.at.Sub(start); d < 1500*time.Millisecond {
		t.Errorf("fetch answered after %v, before kfake's 2s wait: the test did not exercise an in-flight request", d)
	}
	if err := <-stopped; err != nil {
		t.Errorf("gateway exit: %v", err)
	}
}

// TestShutdownDeadline holds a Produce in the broker (a kfake control
// function sleeps on it) longer than shutdown_timeout and sends SIGTERM:
// the gateway waits for it until the deadline, then closes the connection
// and exits 0 within the bound, logging that it cut requests short.
func TestShutdownDeadline(t *testing.T) {
	t.Parallel()
	const topic = "e2e-shutdown-deadline"
	const timeout = time.Second
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(1, topic))
	entered, release := make(chan struct{}), make(chan struct{})
	var held atomic.Bool
	cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		pr := req.(*kmsg.ProduceRequest)
		if len(pr.Topics) == 1 && pr.Topics[0].Topic == topic && held.CompareAndSwap(false, true) {
			close(entered)
			cluster.SleepControl(func() { <-release })
		}
		return nil, nil, false // then kfake handles it as usual
	})
	t.Cleanup(func() { close(release) }) // before the cluster closes
	gw := harness.StartGateway(t, cluster, map[string]any{"shutdown_timeout": timeout.String()})
	rc := dialRaw(t, gw.Brokers(t)[cluster.LeaderFor(topic, 0)])

	pr := kmsg.NewPtrProduceRequest()
	pr.SetVersion(9)
	pr.Acks, pr.TimeoutMillis = -1, 60000
	pt := kmsg.NewProduceRequestTopic()
	pt.Topic = topic
	pp := kmsg.NewProduceRequestTopicPartition()
	pp.Records = oneRecordBatch()
	pt.Partitions = append(pt.Partitions, pp)
	pr.Topics = append(pr.Topics, pt)
	answered := make(chan error, 1)
	go func() {
		_, err := rc.roundTrip(pr)
		answered <- err
	}()
	select {
	case <-entered:
	case <-time.After(15 * time.Second):
		t.Fatal("the produce never reached the broker")
	}

	start := time.Now()
	err := gw.Stop()
	took := time.Since(start)
	t.Logf("gateway exited %v after SIGTERM (shutdown_timeout %v)", took.Round(time.Millisecond), timeout)
	if err != nil {
		t.Errorf("gateway exit: %v", err)
	}
	if took < timeout-100*time.Millisecond {
		t.Errorf("gateway exited after %v, before the %v deadline, with a request in flight", took, timeout)
	}
	if took > timeout+4*time.Second {
		t.Errorf("gateway took %v to exit, the deadline was %v", took, timeout)
	}
	select {
	case err := <-answered:
		if err == nil || !closed(err) {
			t.Errorf("the held produce got %v, want its connection closed", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the held produce's connection is still open after the gateway exited")
	}
	if !strings.Contains(gw.Logs(), "shutdown deadline passed") {
		t.Errorf("the gateway did not log that it cut requests short")
	}
}
