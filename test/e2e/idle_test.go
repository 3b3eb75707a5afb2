package e2e

import (
	"context"
	"io"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-gw/sluice/test/harness"
)

// TestIdleCloseAndReconnect runs the gateway with connections_max_idle 1s:
// a kcat producer (librdkafka) writes one record, sits idle while the
// gateway closes its connections, then writes another on the same run;
// both arrive, because a Kafka client reconnects after an idle close as it
// does after a broker's. A connection that sends nothing is gone within the
// bound, and the gateway counts no connection open afterwards.
func TestIdleCloseAndReconnect(t *testing.T) {
	t.Parallel()
	kc := kcatClient{}
	if err := kc.available(); err != nil {
		t.Skipf("kcat: %v", err)
	}
	const topic = "e2e-idle"
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(1, topic))
	gw := harness.StartGateway(t, cluster, map[string]any{"connections_max_idle": "1s"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cmd := exec.CommandContext(ctx, "kcat", "-b", gw.Bootstrap, "-t", topic, "-P", "-X", "acks=all", "-X", "linger.ms=0", "-m", "10")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr harness.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdin, "before-idle\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // sent at once (linger 0), then past connections_max_idle
	// The gateway has closed the idle producer's connections (librdkafka
	// reconnects to the leader it produces to at once, so one may be open).
	if n := parseMetrics(t, gw.Metrics(t))[`sluice_proxy_connections_idle_closed_total{listener="default"}`]; n < 1 {
		t.Fatalf("no connection closed as idle after 3s of idleness with connections_max_idle 1s")
	}
	if _, err := io.WriteString(stdin, "after-idle\n"); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("kcat across an idle close: %v\n%s", err, stderr.String())
	}
	k := &kgoClient{}
	cl := k.newClient(t, gw.Bootstrap, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	assertSameValues(t, recordValues(k.poll(ctx, t, cl, 2)), []string{"before-idle", "after-idle"})
	cl.Close()

	// A connection that sends nothing is closed within the bound.
	c, err := net.DialTimeout("tcp", gw.Bootstrap, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("an idle connection was not closed within connections_max_idle: %v after %v", err, time.Since(start))
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		m := parseMetrics(t, gw.Metrics(t))
		if m[`sluice_proxy_connections_open{listener="default"}`] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway counts %v connections open after every idle one was closed", m[`sluice_proxy_connections_open{listener="default"}`])
		}
		time.Sleep(200 * time.Millisecond)
	}
}
