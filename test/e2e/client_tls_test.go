package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-gw/sluice/test/harness"
)

// TestClientTLS terminates client TLS on the gateway's listeners (bootstrap
// and per-broker) and runs every client over it with only the test CA
// trusted; the upstream stays plaintext.
func TestClientTLS(t *testing.T) {
	t.Parallel()
	const topic = "e2e-client-tls"
	ca := harness.NewTestCA(t)
	certFile, keyFile := ca.IssueFiles(t, "gateway", "127.0.0.1", "localhost")
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(3, topic))
	gw := harness.StartGateway(t, cluster, map[string]any{
		"listeners": []any{map[string]any{
			"tls": map[string]any{"enabled": true, "cert_file": certFile, "key_file": keyFile},
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("franz-go", func(t *testing.T) {
		k := &kgoClient{tls: ca.ClientConfig()}
		cl := k.newClient(t, gw.Bootstrap, kgo.DefaultProduceTopic(topic))
		defer cl.Close()
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("kgo-tls")}).FirstErr(); err != nil {
			t.Fatalf("produce over TLS: %v", err)
		}
		gw.AssertGatewayAddrs(t, cluster, dedupe(k.dialedAddrs()))
	})
	t.Run("kcat", func(t *testing.T) {
		requireAvailable(t, kcatClient{})
		k := kcatClient{}
		tlsArgs := []string{"-X", "security.protocol=ssl", "-X", "ssl.ca.location=" + ca.CAFile}
		r := k.run(ctx, t, "", append([]string{"-b", gw.Bootstrap, "-L", "-J", "-m", "10"}, tlsArgs...)...)
		if !strings.Contains(r.Stdout, `"brokers"`) {
			t.Errorf("kcat -L over TLS: %s", r)
		}
		k.run(ctx, t, "kcat-tls\n", append([]string{"-b", gw.Bootstrap, "-t", topic, "-P", "-m", "10"}, tlsArgs...)...)
	})
	for _, d := range []harness.Driver{harness.PythonDriver(), harness.KafkaJSDriver()} {
		t.Run(d.Name, func(t *testing.T) {
			c := driverClient{d}
			requireAvailable(t, c)
			r := c.run(ctx, t, "metadata", "--bootstrap", gw.Bootstrap, "--ca-file", ca.CAFile)
			md, err := harness.ParseMetadata(r.Stdout)
			if err != nil {
				t.Fatal(err)
			}
			var addrs []string
			for _, b := range md.Brokers {
				addrs = append(addrs, b.Host+":"+strconv.Itoa(b.Port))
			}
			gw.AssertGatewayAddrs(t, cluster, addrs)
			c.run(ctx, t, "produce", "--bootstrap", gw.Bootstrap, "--topic", topic, "--count", "2", "--prefix", d.Name, "--ca-file", ca.CAFile)
		})
	}
	t.Run("plaintext refused", func(t *testing.T) {
		k := &kgoClient{}
		cl := k.newClient(t, gw.Bootstrap, kgo.RequestRetries(0), kgo.RetryTimeout(2*time.Second))
		defer cl.Close()
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		defer pcancel()
		if err := cl.Ping(pctx); err == nil {
			t.Errorf("a plaintext client was served on a TLS listener")
		}
	})

	// Everything produced over TLS is there.
	k := &kgoClient{tls: ca.ClientConfig()}
	cons := k.newClient(t, gw.Bootstrap, kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cons.Close()
	want := []string{"kgo-tls", "kcat-tls"}
	for _, d := range []harness.Driver{harness.PythonDriver(), harness.KafkaJSDriver()} {
		if d.Available() == nil {
			want = append(want, values(d.Name, 2)...)
		}
	}
	assertSameValues(t, recordValues(k.poll(ctx, t, cons, len(want))), want)
	cluster.AssertOnlyGateway(t)
}
