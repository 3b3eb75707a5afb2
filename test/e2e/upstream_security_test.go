package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-gw/sluice/test/harness"
)

// TestUpstreamSecurity puts the gateway in front of clusters that require
// TLS and/or SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512). Clients connect to
// the gateway in plaintext without credentials; the gateway authenticates
// upstream with its own, its password coming from the environment.
func TestUpstreamSecurity(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		tls       bool
		mechanism string
	}{
		{"tls", true, ""},
		{"sasl-plain", false, "PLAIN"},
		{"sasl-scram-sha-256", false, "SCRAM-SHA-256"},
		{"tls+sasl-scram-sha-512", true, "SCRAM-SHA-512"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topic := "e2e-upstream-" + unsafeTopicChars.ReplaceAllString(tc.name, "")
			cc := harness.ClusterConfig{Brokers: 3, Opts: []kfake.Opt{kfake.SeedTopics(3, topic)}}
			extra := map[string]any{}
			var env []string
			if tc.tls {
				ca := harness.NewTestCA(t)
				cc.TLS = ca.ServerConfig(t)
				extra["upstream"] = map[string]any{"tls": map[string]any{"enabled": true, "ca_file": ca.CAFile}}
			}
			if tc.mechanism != "" {
				cc.Opts = append(cc.Opts, kfake.EnableSASL(), kfake.Superuser(tc.mechanism, "sluice-gw", "upstream-secret"))
				up, _ := extra["upstream"].(map[string]any)
				if up == nil {
					up = map[string]any{}
				}
				up["sasl"] = map[string]any{"mechanism": tc.mechanism, "username": "sluice-gw", "password_env": "SLUICE_E2E_UPSTREAM_PASSWORD"}
				extra["upstream"] = up
				env = append(env, "SLUICE_E2E_UPSTREAM_PASSWORD=upstream-secret")
			}
			cluster := harness.StartClusterWith(t, cc)
			gw := harness.StartGateway(t, cluster, extra, env...)

			k := &kgoClient{}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			addrs := k.metadata(ctx, t, gw.Bootstrap)
			gw.AssertGatewayAddrs(t, cluster, addrs)
			k.produce(ctx, t, gw.Bootstrap, topic, 9, "sec")
			cons := k.newClient(t, gw.Bootstrap, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			defer cons.Close()
			assertSameValues(t, recordValues(k.poll(ctx, t, cons, 9)), values("sec", 9))
			gw.AssertGatewayAddrs(t, cluster, dedupe(k.dialedAddrs()))
			cluster.AssertOnlyGateway(t)
			if tc.mechanism != "" {
				var handshakes int
				for _, r := range cluster.Requests() {
					if r.Key == 17 { // SaslHandshake
						handshakes++
					}
				}
				if handshakes == 0 {
					t.Errorf("the gateway never authenticated upstream")
				}
			}
		})
	}
}
