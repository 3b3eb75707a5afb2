package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/test/harness"
)

// TestClientSASL authenticates every client to the gateway with PLAIN,
// SCRAM-SHA-256 and SCRAM-SHA-512 (the gateway terminates SASL; the
// upstream has none), checks a wrong password is refused, and that none of
// the clients' SASL reaches the brokers.
func TestClientSASL(t *testing.T) {
	t.Parallel()
	const topic = "e2e-client-sasl"
	const user, pass = "e2e-partner", "e2e-partner-secret"
	creds := filepath.Join(t.TempDir(), "users.yaml")
	if err := authntest.WriteCredentials(creds, authntest.User{Name: user, Password: pass, Org: "e2e", Roles: []string{"partner"}}); err != nil {
		t.Fatal(err)
	}
	mechanisms := []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(3, topic))
	gw := harness.StartGateway(t, cluster, map[string]any{
		"listeners": []any{map[string]any{"sasl": mechanisms}},
		"authn":     map[string]any{"credentials_file": creds},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	kgoMech := func(m, u, p string) sasl.Mechanism {
		switch m {
		case "PLAIN":
			return plain.Auth{User: u, Pass: p}.AsMechanism()
		case "SCRAM-SHA-256":
			return scram.Auth{User: u, Pass: p}.AsSha256Mechanism()
		default:
			return scram.Auth{User: u, Pass: p}.AsSha512Mechanism()
		}
	}

	var want []string
	for _, m := range mechanisms {
		prefix := strings.ToLower(strings.ReplaceAll(m, "-", ""))
		t.Run("franz-go/"+m, func(t *testing.T) {
			k := &kgoClient{}
			cl := k.newClient(t, gw.Bootstrap, kgo.SASL(kgoMech(m, user, pass)), kgo.DefaultProduceTopic(topic))
			defer cl.Close()
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("kgo-" + prefix)}).FirstErr(); err != nil {
				t.Fatalf("produce: %v", err)
			}
			want = append(want, "kgo-"+prefix)

			bad := k.newClient(t, gw.Bootstrap, kgo.SASL(kgoMech(m, user, "wrong")), kgo.RequestRetries(0), kgo.RetryTimeout(3*time.Second))
			defer bad.Close()
			pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
			defer pcancel()
			if _, err := kmsg.NewPtrMetadataRequest().RequestWith(pctx, bad); err == nil {
				t.Errorf("a wrong password was accepted")
			} else {
				t.Logf("wrong password: %v", err)
			}
		})
		t.Run("kcat/"+m, func(t *testing.T) {
			requireAvailable(t, kcatClient{})
			k := kcatClient{}
			k.run(ctx, t, "kcat-"+prefix+"\n", append([]string{"-b", gw.Bootstrap, "-t", topic, "-P", "-m", "10"}, saslLogin{m, user, pass}.kcatArgs()...)...)
			want = append(want, "kcat-"+prefix)
			r := harness.Run(ctx, 30*time.Second, "kcat", append([]string{"-b", gw.Bootstrap, "-L", "-m", "2"}, saslLogin{m, user, "wrong"}.kcatArgs()...)...)
			if r.OK() {
				t.Errorf("kcat with a wrong password listed metadata: %s", r)
			}
		})
		for _, d := range []harness.Driver{harness.PythonDriver(), harness.KafkaJSDriver()} {
			t.Run(d.Name+"/"+m, func(t *testing.T) {
				c := driverClient{d}
				requireAvailable(t, c)
				auth := saslLogin{m, user, pass}.driverArgs()
				r := c.run(ctx, t, append([]string{"metadata", "--bootstrap", gw.Bootstrap}, auth...)...)
				md, err := harness.ParseMetadata(r.Stdout)
				if err != nil {
					t.Fatal(err)
				}
				var addrs []string
				for _, b := range md.Brokers {
					addrs = append(addrs, fmt.Sprintf("%s:%d", b.Host, b.Port))
				}
				gw.AssertGatewayAddrs(t, cluster, addrs)
				p := d.Name + "-" + prefix
				c.run(ctx, t, append([]string{"produce", "--bootstrap", gw.Bootstrap, "--topic", topic, "--count", "1", "--prefix", p}, auth...)...)
				want = append(want, p+"-0")

				bad := d.Run(ctx, 60*time.Second, "metadata", "--bootstrap", gw.Bootstrap, "--timeout", "10",
					"--sasl-mechanism", m, "--user", user, "--password", "wrong")
				if bad.OK() {
					t.Errorf("a wrong password was accepted: %s", bad)
				} else if !strings.Contains(bad.Stderr, `"SASL_AUTHENTICATION_FAILED"`) {
					t.Errorf("a wrong password was not reported as SASL_AUTHENTICATION_FAILED: %s", bad)
				}
			})
		}
	}

	// Everything that was produced arrived.
	k := &kgoClient{}
	cons := k.newClient(t, gw.Bootstrap, kgo.SASL(kgoMech("SCRAM-SHA-512", user, pass)), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cons.Close()
	assertSameValues(t, recordValues(k.poll(ctx, t, cons, len(want))), want)

	for _, r := range cluster.Requests() {
		if r.Key == int16(kmsg.SASLHandshake) || r.Key == int16(kmsg.SASLAuthenticate) {
			t.Errorf("client SASL reached upstream broker %s: %s v%d", r.Listener, kmsg.NameForKey(r.Key), r.Version)
		}
	}
	cluster.AssertOnlyGateway(t)
}
