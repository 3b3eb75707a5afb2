package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-gw/sluice/test/harness"
)

// TestUpstreamSecurity puts the gateway in front of clusters that require
// TLS, mutual TLS and/or SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
// Clients connect to the gateway in plaintext without credentials; the
// gateway authenticates upstream with its own: its password from the
// environment or from a file (password_file, trailing newline trimmed),
// its client certificate from cert_file/key_file.
func TestUpstreamSecurity(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		tls       bool
		mtls      bool // the brokers require a client certificate
		mechanism string
		pwFile    bool // password_file instead of password_env
	}{
		{name: "tls", tls: true},
		{name: "mtls", tls: true, mtls: true},
		{name: "sasl-plain", mechanism: "PLAIN"},
		{name: "sasl-plain-password-file", mechanism: "PLAIN", pwFile: true},
		{name: "sasl-scram-sha-256", mechanism: "SCRAM-SHA-256"},
		{name: "tls+sasl-scram-sha-512", tls: true, mechanism: "SCRAM-SHA-512"},
		{name: "mtls+sasl-scram-sha-256-password-file", tls: true, mtls: true, mechanism: "SCRAM-SHA-256", pwFile: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topic := "e2e-upstream-" + unsafeTopicChars.ReplaceAllString(tc.name, "")
			cc := harness.ClusterConfig{Brokers: 3, Opts: []kfake.Opt{kfake.SeedTopics(3, topic)}}
			up := map[string]any{}
			var env []string
			// With mtls, once the harness has read the brokers' versions
			// (without a certificate), every connection must present one
			// issued by the CA.
			var strict atomic.Bool
			var withCert, withoutCert atomic.Int64
			if tc.tls {
				ca := harness.NewTestCA(t)
				cc.TLS = ca.ServerConfig(t)
				tlsCfg := map[string]any{"enabled": true, "ca_file": ca.CAFile}
				if tc.mtls {
					cc.TLS.ClientCAs, cc.TLS.ClientAuth = ca.Pool, tls.VerifyClientCertIfGiven
					cc.TLS.VerifyConnection = func(cs tls.ConnectionState) error {
						if len(cs.PeerCertificates) > 0 && cs.PeerCertificates[0].Subject.CommonName == "sluice-gw" {
							withCert.Add(1)
							return nil
						}
						if strict.Load() {
							withoutCert.Add(1)
							return errors.New("client certificate required")
						}
						return nil
					}
					tlsCfg["cert_file"], tlsCfg["key_file"] = ca.IssueFiles(t, "sluice-gw")
				}
				up["tls"] = tlsCfg
			}
			if tc.mechanism != "" {
				cc.Opts = append(cc.Opts, kfake.EnableSASL(), kfake.Superuser(tc.mechanism, "sluice-gw", "upstream-secret"))
				sasl := map[string]any{"mechanism": tc.mechanism, "username": "sluice-gw"}
				if tc.pwFile {
					file := filepath.Join(t.TempDir(), "upstream.password")
					if err := os.WriteFile(file, []byte("upstream-secret\n"), 0o600); err != nil {
						t.Fatal(err)
					}
					sasl["password_file"] = file
				} else {
					sasl["password_env"] = "SLUICE_E2E_UPSTREAM_PASSWORD"
					env = append(env, "SLUICE_E2E_UPSTREAM_PASSWORD=upstream-secret")
				}
				up["sasl"] = sasl
			}
			cluster := harness.StartClusterWith(t, cc)
			strict.Store(true)
			gw := harness.StartGateway(t, cluster, map[string]any{"upstream": up}, env...)

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
			if tc.mtls {
				if withCert.Load() == 0 || withoutCert.Load() != 0 {
					t.Errorf("upstream TLS handshakes: %d with the gateway's certificate, %d without one", withCert.Load(), withoutCert.Load())
				}
			}
		})
	}
}

// TestUpstreamSessionLifetime: the cluster gives the gateway's SASL
// sessions a lifetime (connections.max.reauth.ms 1500, KIP-368); a broker
// closes a connection used after its session ends. The gateway closes each
// client connection at a request boundary before its upstream session
// ends, with nothing owed, so a producer (franz-go) and a consumer
// (librdkafka, kcat) working across several lifetimes see every record
// acknowledged and delivered, and the gateway authenticated upstream again.
func TestUpstreamSessionLifetime(t *testing.T) {
	t.Parallel()
	const topic = "e2e-upstream-reauth"
	cluster := harness.StartClusterWith(t, harness.ClusterConfig{Brokers: 3, Opts: []kfake.Opt{
		kfake.SeedTopics(3, topic), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "sluice-gw", "upstream-secret"),
		kfake.BrokerConfigs(map[string]string{"connections.max.reauth.ms": "1500"}),
	}})
	gw := harness.StartGateway(t, cluster, map[string]any{"upstream": map[string]any{
		"sasl": map[string]any{"mechanism": "SCRAM-SHA-256", "username": "sluice-gw", "password_env": "SLUICE_E2E_UPSTREAM_PASSWORD"},
	}}, "SLUICE_E2E_UPSTREAM_PASSWORD=upstream-secret")
	// Connections the brokers accepted from the gateway: its own clients
	// (metadata) re-authenticate in place, as franz-go does, so new ones
	// are the data path reconnecting.
	upstreamConns := func() int {
		n := 0
		for _, c := range cluster.Conns() {
			if c.Owner == "gateway" {
				n++
			}
		}
		return n
	}

	k := &kgoClient{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := k.newClient(t, gw.Bootstrap, kgo.DefaultProduceTopic(topic))
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("reauth-warmup")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	before := upstreamConns()
	var want []string
	for start := time.Now(); time.Since(start) < 5*time.Second; {
		v := fmt.Sprintf("reauth-%d", len(want))
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("produce %s across upstream session lifetimes: %v", v, err)
		}
		want = append(want, v)
		time.Sleep(50 * time.Millisecond)
	}
	// One producer connection, renewed about every 1.35s for 5s.
	if after := upstreamConns(); after < before+2 {
		t.Fatalf("the gateway did not reconnect upstream before its 1.5s sessions ended: %d upstream connections before 5s of producing, %d after", before, after)
	}
	kc := kcatClient{}
	if err := kc.available(); err != nil {
		t.Skipf("kcat: %v", err)
	}
	got := kc.consume(ctx, t, gw.Bootstrap, topic, len(want)+1)
	assertSameValues(t, got, append([]string{"reauth-warmup"}, want...))
}
