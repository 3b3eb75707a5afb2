package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/test/harness"
)

// obsPolicy lets anyone use the topic e2e-obs and produce idempotently,
// and nothing else (DescribeCluster is denied).
const obsPolicy = `package sluice.authz
default decision := {"allow": false, "reason": "closed"}
decision := {"allow": true, "reason": "observability topic"} if {
	input.resource.type == "topic"
	input.resource.name == "e2e-obs"
}
decision := {"allow": true, "reason": "idempotent producers"} if {
	input.resource.type == "cluster"
	input.action == "idempotent_write"
}
`

// obsPolicyTest runs on load (run_tests_on_load is on by default).
const obsPolicyTest = `package sluice.authz_test
import data.sluice.authz
test_cluster_describe_denied if {
	not authz.decision.allow with input as {"action": "describe", "resource": {"type": "cluster", "name": "kafka-cluster"}}
}
`

// TestObservability checks issue 2's observability through the binary under
// a policy: requests are counted by outcome (forwarded, local for
// ApiVersions, denied for a refused DescribeCluster and for a Produce whose
// only topic is denied, which the policy answers locally), the gateway and
// upstream latency histograms are filled and kept apart (a denied request
// spends time in the gateway, none upstream), bytes are counted both ways,
// and with log.format json every log line is a JSON object.
func TestObservability(t *testing.T) {
	t.Parallel()
	const topic = "e2e-obs"
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(3, topic))
	dir := t.TempDir()
	for name, text := range map[string]string{"obs.rego": obsPolicy, "obs_test.rego": obsPolicyTest} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gw := harness.StartGateway(t, cluster, map[string]any{"policy": map[string]any{"dir": dir}})

	k := &kgoClient{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	k.produce(ctx, t, gw.Bootstrap, topic, 5, "obs")
	cons := k.newClient(t, gw.Bootstrap, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cons.Close()
	assertSameValues(t, recordValues(k.poll(ctx, t, cons, 5)), values("obs", 5))
	dc, err := kmsg.NewPtrDescribeClusterRequest().RequestWith(ctx, cons)
	if err != nil {
		t.Fatal(err)
	}
	if dc.ErrorCode != kerr.ClusterAuthorizationFailed.Code {
		t.Fatalf("DescribeCluster: %v, want CLUSTER_AUTHORIZATION_FAILED", kerr.ErrorForCode(dc.ErrorCode))
	}

	// A produce whose every topic is denied: the policy answers it
	// itself (no Denial, a local answer carrying the topic's error), and
	// it still counts as denied, not local.
	pr := kmsg.NewPtrProduceRequest()
	pr.Acks, pr.TimeoutMillis = -1, 5000
	pt := kmsg.NewProduceRequestTopic()
	pt.Topic = "e2e-obs-denied"
	pt.Partitions = append(pt.Partitions, kmsg.NewProduceRequestTopicPartition())
	pr.Topics = append(pr.Topics, pt)
	raw, err := cons.SeedBrokers()[0].Request(ctx, pr)
	if err != nil {
		t.Fatal(err)
	}
	if rt := raw.(*kmsg.ProduceResponse).Topics; len(rt) != 1 || len(rt[0].Partitions) != 1 ||
		rt[0].Partitions[0].ErrorCode != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("Produce to a denied topic: %+v, want TOPIC_AUTHORIZATION_FAILED", rt)
	}

	// The gateway counts an answer after writing it: wait for the last
	// one.
	var m map[string]float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		m = parseMetrics(t, gw.Metrics(t))
		if m[`sluice_proxy_requests_total{api="Produce",outcome="denied"}`] >= 1 || time.Now().After(deadline) {
			break
		}
	}
	assertMetrics(t, m, []metricMin{
		{`sluice_proxy_requests_total{api="Produce",outcome="forwarded"}`, 1},
		{`sluice_proxy_requests_total{api="Fetch",outcome="forwarded"}`, 1},
		{`sluice_proxy_requests_total{api="ApiVersions",outcome="local"}`, 1},
		{`sluice_proxy_requests_total{api="DescribeCluster",outcome="denied"}`, 1},
		{`sluice_proxy_requests_total{api="Produce",outcome="denied"}`, 1},
		{`sluice_policy_denied_resources_total{resource_type="topic"}`, 1},
		{`sluice_policy_refused_requests_total{api="DescribeCluster"}`, 1},
		{`sluice_policy_reloads_total{result="ok"}`, 1},
		{`sluice_proxy_gateway_duration_seconds_count{api="Produce"}`, 1},
		{`sluice_proxy_upstream_duration_seconds_count{api="Produce"}`, 1},
		{`sluice_proxy_gateway_duration_seconds_count{api="Fetch"}`, 1},
		{`sluice_proxy_upstream_duration_seconds_count{api="Fetch"}`, 1},
		{`sluice_proxy_gateway_duration_seconds_count{api="DescribeCluster"}`, 1},
		{`sluice_proxy_gateway_duration_seconds_count{api="ApiVersions"}`, 1},
		{`sluice_proxy_client_sent_bytes_total`, 1},
		{`sluice_proxy_client_received_bytes_total`, 1},
	})
	if v := m[`sluice_proxy_requests_total{api="Produce",outcome="local"}`]; v != 0 {
		t.Errorf("%v produce requests counted local; a produce to denied topics is denied", v)
	}
	// Answered by the gateway: no time upstream.
	for _, api := range []string{"DescribeCluster", "ApiVersions"} {
		if v := m[`sluice_proxy_upstream_duration_seconds_count{api="`+api+`"}`]; v != 0 {
			t.Errorf("%s answered by the gateway has %v upstream latency observations", api, v)
		}
	}
	// Every forwarded produce was timed upstream, once.
	if up, fw := m[`sluice_proxy_upstream_duration_seconds_count{api="Produce"}`], m[`sluice_proxy_requests_total{api="Produce",outcome="forwarded"}`]; up != fw {
		t.Errorf("%v upstream produce latencies for %v forwarded produce requests", up, fw)
	}
	if m[`sluice_proxy_upstream_duration_seconds_sum{api="Fetch"}`] <= 0 || m[`sluice_proxy_gateway_duration_seconds_sum{api="Fetch"}`] <= 0 {
		t.Errorf("fetch latency sums are not positive")
	}
	assertJSONLogs(t, gw.Logs())
	cluster.AssertOnlyGateway(t)
}

type metricMin struct {
	series string
	min    float64
}

// assertMetrics checks that every series is present with at least min.
func assertMetrics(t *testing.T, m map[string]float64, want []metricMin) {
	t.Helper()
	for _, w := range want {
		if v, ok := m[w.series]; !ok {
			t.Errorf("metric %s missing", w.series)
		} else if v < w.min {
			t.Errorf("metric %s = %v, want >= %v", w.series, v, w.min)
		}
	}
}

// sumMetric adds up every series of the metric name.
func sumMetric(m map[string]float64, name string) float64 {
	var sum float64
	for series, v := range m {
		if series == name || strings.HasPrefix(series, name+"{") {
			sum += v
		}
	}
	return sum
}

// assertJSONLogs checks that every line the gateway logged (log.format
// json) is a JSON object with a level, a timestamp and a message.
func assertJSONLogs(t *testing.T, logs string) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		n++
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Errorf("log line is not JSON (%v): %s", err, line)
			continue
		}
		for _, key := range []string{"level", "ts", "msg"} {
			if _, ok := entry[key].(string); !ok {
				t.Errorf("log line has no %s: %s", key, line)
			}
		}
	}
	if n == 0 {
		t.Errorf("the gateway logged nothing")
	}
}
