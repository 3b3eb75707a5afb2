package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-gw/sluice/test/harness"
)

func httpStatus(url string) int {
	resp, err := (&http.Client{Timeout: time.Second}).Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestUpstreamOutage starts the gateway before its upstream exists (live
// but not ready), brings the cluster up (ready, serving), takes it down while
// a client is connected, and brings a new cluster up on the same ports: the
// gateway must stay up throughout and serve again without a restart.
func TestUpstreamOutage(t *testing.T) {
	t.Parallel()
	const topic = "e2e-outage"
	ports := make([]int, 3)
	var seeds []string
	for i := range ports {
		_, p, _ := net.SplitHostPort(harness.FreeAddr(t))
		ports[i], _ = strconv.Atoi(p)
		seeds = append(seeds, "127.0.0.1:"+p)
	}
	boot, admin := harness.FreeAddr(t), harness.FreeAddr(t)
	cfg := fmt.Sprintf("listen: %s\nadvertised_host: 127.0.0.1\nbroker_port_base: 0\nadmin_listen: %s\nmetadata_refresh: 300ms\n"+
		"upstream:\n  brokers: [%s]\n  dial_timeout: 1s\nlog: {level: debug, format: json}\n", boot, admin, strings.Join(seeds, ", "))
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(harness.SluiceBin(t), "run", "--config", file)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("gateway exit: %v", err)
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("gateway did not stop within 15s")
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
		assertJSONLogs(t, logs.String())
	}()
	alive := func() {
		t.Helper()
		select {
		case err := <-exited:
			t.Fatalf("gateway exited: %v", err)
		default:
		}
	}

	// No upstream yet: live, not ready. (The gateway first tries to load
	// metadata synchronously for up to 15s before serving /healthz.)
	deadline := time.Now().Add(30 * time.Second)
	for httpStatus("http://"+admin+"/healthz") != http.StatusOK {
		alive()
		if time.Now().After(deadline) {
			t.Fatal("/healthz never answered 200")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if s := httpStatus("http://" + admin + "/readyz"); s == http.StatusOK {
		t.Fatalf("/readyz is 200 with no upstream cluster")
	}

	waitReady := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for httpStatus("http://"+admin+"/readyz") != http.StatusOK {
			alive()
			if time.Now().After(deadline) {
				t.Fatalf("%s: /readyz never became 200", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	roundTrip := func(what, prefix string) {
		t.Helper()
		k := &kgoClient{}
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		k.produce(ctx, t, boot, topic, 3, prefix)
		cl := k.newClient(t, boot, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		defer cl.Close()
		assertSameValues(t, recordValues(k.poll(ctx, t, cl, 3)), values(prefix, 3))
		if t.Failed() {
			t.Fatalf("%s failed", what)
		}
	}

	first := harness.StartCluster(t, 3, kfake.Ports(ports...), kfake.SeedTopics(3, topic))
	first.RegisterOwner(cmd.Process.Pid, "gateway")
	waitReady("first cluster")
	roundTrip("first cluster", "one")

	upErrors := func() float64 {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatalf("/metrics: %v", err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		if _, err := io.Copy(&b, resp.Body); err != nil {
			t.Fatal(err)
		}
		return sumMetric(parseMetrics(t, b.String()), "sluice_proxy_upstream_errors_total")
	}
	errorsBefore := upErrors()

	// A connected client while the cluster goes away.
	k := &kgoClient{}
	held := k.newClient(t, boot, kgo.DefaultProduceTopic(topic), kgo.RecordDeliveryTimeout(2*time.Second))
	defer held.Close()
	first.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := held.ProduceSync(ctx, &kgo.Record{Value: []byte("lost")}).FirstErr()
	cancel()
	t.Logf("produce during the outage: %v", err)
	if err == nil {
		t.Errorf("produce succeeded with no upstream cluster")
	}
	time.Sleep(time.Second)
	alive()
	// The outage is counted: the held connection's upstream failed, and
	// the metadata refresh (every 300ms) cannot reach a broker.
	if after := upErrors(); after <= errorsBefore {
		t.Errorf("sluice_proxy_upstream_errors_total stayed at %v during the outage", after)
	} else {
		t.Logf("upstream errors during the outage: %v -> %v", errorsBefore, after)
	}

	second := harness.StartCluster(t, 3, kfake.Ports(ports...), kfake.SeedTopics(3, topic))
	second.RegisterOwner(cmd.Process.Pid, "gateway")
	waitReady("second cluster")
	roundTrip("second cluster", "two")
	first.AssertOnlyGateway(t)
	second.AssertOnlyGateway(t)
}
