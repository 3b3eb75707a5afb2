package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/test/harness"
)

// TestPolicyDenialsWithRealClients runs the example ABAC policy
// (configs/policies) over test data through the full chain: a partner
// authenticated with SASL PLAIN may produce only to its inbound topics and
// consume only granted topics with its own groups. Every client must see
// the refusals as Kafka's own errors (TOPIC_AUTHORIZATION_FAILED,
// GROUP_AUTHORIZATION_FAILED), and nothing denied reaches the data.
func TestPolicyDenialsWithRealClients(t *testing.T) {
	t.Parallel()
	harness.SkipIfSectionsBroken(t)
	const (
		inbound = "inbound.e2e.orders" // the partner's own: writable
		granted = "granted.reports"    // readable with grant g-e2e-reports
		secret  = "secret.ledger"      // restricted: never readable
		group   = "e2e.readers"        // the partner's own group prefix
	)
	dir := t.TempDir()
	creds := filepath.Join(dir, "users.yaml")
	if err := authntest.WriteCredentials(creds,
		authntest.User{Name: "e2e-partner", Password: "partner-pw", Org: "e2e", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}},
		authntest.User{Name: "e2e-admin", Password: "admin-pw", Org: "sluice", Roles: []string{"admin"}},
	); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"partners.json": `{"e2e": {"name": "E2E Partner", "active": true, "purposes": ["analytics"], "max_classification": "internal"}}`,
		"topics.json": `{"granted.reports": {"classification": "internal"}, "secret.ledger": {"classification": "restricted"},
			"inbound.*": {"classification": "internal"}}`,
		"grants.json": `[{"id": "g-e2e-reports", "org": "e2e", "topic": "granted.reports", "purpose": "analytics",
			"classification": "internal", "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2100-01-01T00:00:00Z"}]`,
	} {
		if err := os.WriteFile(filepath.Join(data, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(3, inbound, granted, secret))
	gw := harness.StartGateway(t, cluster, map[string]any{
		"listeners": []any{map[string]any{"sasl": []string{"PLAIN"}}},
		"authn":     map[string]any{"credentials_file": creds},
		"policy":    map[string]any{"dir": filepath.Join(harness.ModuleRoot(), "configs", "policies"), "data_dir": data},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The admin fills the granted and secret topics.
	k := &kgoClient{}
	admin := k.newClient(t, gw.Bootstrap, kgo.SASL(plain.Auth{User: "e2e-admin", Pass: "admin-pw"}.AsMechanism()))
	defer admin.Close()
	for _, topic := range []string{granted, secret} {
		for _, v := range values(topic, 3) {
			if err := admin.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatalf("admin produce to %s: %v", topic, err)
			}
		}
	}

	partner := []string{"--sasl-mechanism", "PLAIN", "--user", "e2e-partner", "--password", "partner-pw"}
	t.Run("franz-go", func(t *testing.T) {
		cl := k.newClient(t, gw.Bootstrap, kgo.SASL(plain.Auth{User: "e2e-partner", Pass: "partner-pw"}.AsMechanism()),
			kgo.RequestRetries(2), kgo.RecordDeliveryTimeout(10*time.Second))
		defer cl.Close()
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: inbound, Value: []byte("kgo-in")}).FirstErr(); err != nil {
			t.Errorf("produce to own inbound topic: %v", err)
		}
		err := cl.ProduceSync(ctx, &kgo.Record{Topic: granted, Value: []byte("kgo-out")}).FirstErr()
		if !errors.Is(err, kerr.TopicAuthorizationFailed) {
			t.Errorf("produce to %s: %v, want TOPIC_AUTHORIZATION_FAILED", granted, err)
		}
	})
	t.Run("kcat", func(t *testing.T) {
		requireAvailable(t, kcatClient{})
		auth := []string{"-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN",
			"-X", "sasl.username=e2e-partner", "-X", "sasl.password=partner-pw", "-m", "10"}
		kcatClient{}.run(ctx, t, "kcat-in\n", append([]string{"-b", gw.Bootstrap, "-t", inbound, "-P"}, auth...)...)
		r := runStdin(ctx, "kcat-out\n", "kcat", append([]string{"-b", gw.Bootstrap, "-t", granted, "-P",
			"-X", "message.timeout.ms=10000"}, auth...)...)
		t.Logf("kcat produce to %s: exit %d: %s", granted, r.ExitCode, strings.TrimSpace(r.Stderr))
		if !strings.Contains(strings.ToLower(r.Stderr), "topic authorization failed") {
			t.Errorf("kcat produce to %s was not refused with TOPIC_AUTHORIZATION_FAILED: %s", granted, r)
		}
	})
	for _, d := range []harness.Driver{harness.PythonDriver(), harness.KafkaJSDriver()} {
		t.Run(d.Name, func(t *testing.T) {
			c := driverClient{d}
			requireAvailable(t, c)
			run := func(args ...string) harness.Result {
				return d.Run(ctx, harness.DefaultClientTimeout, append(append(args, "--bootstrap", gw.Bootstrap, "--timeout", "20"), partner...)...)
			}
			if r := run("produce", "--topic", inbound, "--count", "2", "--prefix", d.Name); !r.OK() {
				t.Errorf("produce to own inbound topic: %s", r)
			}
			for _, tc := range []struct {
				what, want string
				args       []string
			}{
				{"produce to a granted (read-only) topic", "TOPIC_AUTHORIZATION_FAILED", []string{"produce", "--topic", granted, "--count", "1"}},
				{"consume a restricted topic", "TOPIC_AUTHORIZATION_FAILED", []string{"consume", "--topic", secret, "--count", "1"}},
				{"consume in a foreign group", "GROUP_AUTHORIZATION_FAILED", []string{"consume", "--topic", granted, "--count", "1", "--group", "other.readers"}},
			} {
				r := run(tc.args...)
				if r.ExitCode != 1 || !strings.Contains(r.Stderr, `"`+tc.want+`"`) {
					t.Errorf("%s: want exit 1 naming %s, got: %s", tc.what, tc.want, r)
				}
			}
			r := run("consume", "--topic", granted, "--count", "3", "--group", group+"."+strings.ReplaceAll(d.Name, "-", ""), "--commit")
			if !r.OK() {
				t.Fatalf("consume of the granted topic in an own group: %s", r)
			}
			assertSameValues(t, driverValues(t, r.Stdout), values(granted, 3))
		})
	}

	// Only what was allowed reached the data: the inbound topic holds the
	// partners' records, the granted topic only the admin's.
	cons := k.newClient(t, gw.Bootstrap, kgo.SASL(plain.Auth{User: "e2e-admin", Pass: "admin-pw"}.AsMechanism()),
		kgo.ConsumeTopics(granted), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cons.Close()
	assertSameValues(t, recordValues(k.poll(ctx, t, cons, 3)), values(granted, 3))
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	defer pcancel()
	if extra := cons.PollFetches(pctx).Records(); len(extra) > 0 {
		t.Errorf("a denied produce reached %s: %q", granted, extra[0].Value)
	}
	cluster.AssertOnlyGateway(t)
}

// runStdin runs a command with stdin and a timeout, without failing the
// test on a non-zero exit.
func runStdin(ctx context.Context, stdin, name string, args ...string) harness.Result {
	ctx, cancel := context.WithTimeout(ctx, harness.DefaultClientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := harness.Result{Args: append([]string{name}, args...), Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.ExitCode, r.Err = ee.ExitCode(), nil
	}
	return r
}
