package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/test/harness"
)

// client is one Kafka client under test, reduced to the four things every
// test does with it.
type client interface {
	name() string
	// available returns why the client cannot run here, or nil.
	available() error
	// metadata returns every broker address the client was given.
	metadata(ctx context.Context, t *testing.T, bootstrap string) []string
	produce(ctx context.Context, t *testing.T, bootstrap, topic string, n int, prefix string)
	// consume reads n records from the beginning of every partition.
	consume(ctx context.Context, t *testing.T, bootstrap, topic string, n int) []string
	// groupConsume reads n records as a member of group, commits exactly
	// those, and leaves the group.
	groupConsume(ctx context.Context, t *testing.T, bootstrap, topic, group string, n int) []string
}

func requireAvailable(t *testing.T, c client) {
	t.Helper()
	if err := c.available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed: %v (test/install-deps.sh should have installed it)", c.name(), err)
		}
		t.Skipf("%s is not installed: %v (run test/install-deps.sh)", c.name(), err)
	}
}

func values(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// ---- franz-go ----

// kgoClient runs franz-go in the test process. Its dialer records every
// address it connects to, which must all be gateway addresses.
type kgoClient struct {
	// tls, if set, makes the client dial with TLS.
	tls *tls.Config

	mu     sync.Mutex
	dialed []string
}

func (*kgoClient) name() string     { return "franz-go" }
func (*kgoClient) available() error { return nil }

func (k *kgoClient) dialedAddrs() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.dialed...)
}

func (k *kgoClient) newClient(t *testing.T, bootstrap string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	opts = append([]kgo.Opt{
		kgo.SeedBrokers(bootstrap),
		kgo.ClientID("sluice-e2e-kgo"),
		kgo.Dialer(func(ctx context.Context, network, host string) (net.Conn, error) {
			k.mu.Lock()
			k.dialed = append(k.dialed, host)
			k.mu.Unlock()
			if k.tls == nil {
				return d.DialContext(ctx, network, host)
			}
			td := &tls.Dialer{NetDialer: d, Config: k.tls}
			return td.DialContext(ctx, network, host)
		}),
		kgo.FetchMaxWait(250 * time.Millisecond),
	}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func (k *kgoClient) metadata(ctx context.Context, t *testing.T, bootstrap string) []string {
	cl := k.newClient(t, bootstrap)
	defer cl.Close()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("franz-go metadata: %v", err)
	}
	var out []string
	for _, b := range resp.Brokers {
		out = append(out, net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))))
	}
	return out
}

func (k *kgoClient) produce(ctx context.Context, t *testing.T, bootstrap, topic string, n int, prefix string) {
	cl := k.newClient(t, bootstrap, kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()))
	defer cl.Close()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Key: []byte("k" + strconv.Itoa(i)), Value: []byte(fmt.Sprintf("%s-%d", prefix, i))}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("franz-go produce: %v", err)
	}
}

func (k *kgoClient) poll(ctx context.Context, t *testing.T, cl *kgo.Client, n int) []*kgo.Record {
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollRecords(ctx, n-len(recs))
		if err := ctx.Err(); err != nil {
			t.Fatalf("franz-go consume: got %d of %d records: %v", len(recs), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("franz-go consume %s[%d]: %v", topic, p, err)
		})
		recs = append(recs, fs.Records()...)
	}
	return recs
}

func recordValues(recs []*kgo.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Value)
	}
	return out
}

func (k *kgoClient) consume(ctx context.Context, t *testing.T, bootstrap, topic string, n int) []string {
	cl := k.newClient(t, bootstrap, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	return recordValues(k.poll(ctx, t, cl, n))
}

func (k *kgoClient) groupConsume(ctx context.Context, t *testing.T, bootstrap, topic, group string, n int) []string {
	cl := k.newClient(t, bootstrap,
		kgo.ConsumeTopics(topic),
		kgo.ConsumerGroup(group),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	defer cl.Close()
	recs := k.poll(ctx, t, cl, n)
	if err := cl.CommitRecords(ctx, recs...); err != nil {
		t.Fatalf("franz-go commit: %v", err)
	}
	cl.LeaveGroup()
	return recordValues(recs)
}

// ---- kcat ----

type kcatClient struct{}

func (kcatClient) name() string { return "kcat" }
func (kcatClient) available() error {
	_, err := exec.LookPath("kcat")
	return err
}

func (kcatClient) run(ctx context.Context, t *testing.T, stdin string, args ...string) harness.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, harness.DefaultClientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kcat", args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := harness.Result{Args: append([]string{"kcat"}, args...), Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.ExitCode, r.Err = ee.ExitCode(), nil
	}
	if !r.OK() {
		t.Fatalf("kcat failed: %s", r)
	}
	return r
}

func (k kcatClient) metadata(ctx context.Context, t *testing.T, bootstrap string) []string {
	r := k.run(ctx, t, "", "-b", bootstrap, "-L", "-J", "-m", "10")
	var md struct {
		Brokers []struct {
			ID   int32  `json:"id"`
			Name string `json:"name"`
		} `json:"brokers"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &md); err != nil {
		t.Fatalf("kcat -L -J output: %v\n%s", err, r.Stdout)
	}
	var out []string
	for _, b := range md.Brokers {
		out = append(out, b.Name)
	}
	return out
}

func (k kcatClient) produce(ctx context.Context, t *testing.T, bootstrap, topic string, n int, prefix string) {
	var in strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&in, "k%d:%s-%d\n", i, prefix, i)
	}
	k.run(ctx, t, in.String(), "-b", bootstrap, "-t", topic, "-P", "-K", ":", "-X", "acks=all", "-m", "10")
}

func kcatValues(t *testing.T, stdout string) []string {
	var out []string
	for _, l := range strings.Split(stdout, "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var m struct {
			Payload *string `json:"payload"`
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("kcat -J line %q: %v", l, err)
		}
		if m.Payload == nil {
			t.Fatalf("kcat record without payload: %s", l)
		}
		out = append(out, *m.Payload)
	}
	return out
}

func (k kcatClient) consume(ctx context.Context, t *testing.T, bootstrap, topic string, n int) []string {
	r := k.run(ctx, t, "", "-b", bootstrap, "-t", topic, "-C", "-o", "beginning", "-e", "-c", strconv.Itoa(n), "-J", "-m", "10")
	return kcatValues(t, r.Stdout)
}

func (k kcatClient) groupConsume(ctx context.Context, t *testing.T, bootstrap, topic, group string, n int) []string {
	// Balanced consumer: kcat stores the offset of every record it prints
	// and commits them when it closes after -c records.
	r := k.run(ctx, t, "", "-b", bootstrap, "-G", group, "-c", strconv.Itoa(n), "-J",
		"-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=10000", "-m", "10", topic)
	return kcatValues(t, r.Stdout)
}

// ---- confluent-kafka-python and kafkajs ----

type driverClient struct{ d harness.Driver }

func (c driverClient) name() string     { return c.d.Name }
func (c driverClient) available() error { return c.d.Available() }

func (c driverClient) run(ctx context.Context, t *testing.T, args ...string) harness.Result {
	t.Helper()
	r := c.d.Run(ctx, harness.DefaultClientTimeout, args...)
	if !r.OK() {
		t.Fatalf("%s failed: %s", c.d.Name, r)
	}
	return r
}

func (c driverClient) metadata(ctx context.Context, t *testing.T, bootstrap string) []string {
	r := c.run(ctx, t, "metadata", "--bootstrap", bootstrap)
	md, err := harness.ParseMetadata(r.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range md.Brokers {
		out = append(out, net.JoinHostPort(b.Host, strconv.Itoa(b.Port)))
	}
	return out
}

func (c driverClient) produce(ctx context.Context, t *testing.T, bootstrap, topic string, n int, prefix string) {
	c.run(ctx, t, "produce", "--bootstrap", bootstrap, "--topic", topic, "--count", strconv.Itoa(n), "--prefix", prefix)
}

func driverValues(t *testing.T, stdout string) []string {
	recs, err := harness.ParseConsumed(stdout)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		if r.Value == nil {
			t.Fatalf("record without value: %+v", r)
		}
		out = append(out, *r.Value)
	}
	return out
}

func (c driverClient) consume(ctx context.Context, t *testing.T, bootstrap, topic string, n int) []string {
	r := c.run(ctx, t, "consume", "--bootstrap", bootstrap, "--topic", topic, "--count", strconv.Itoa(n))
	return driverValues(t, r.Stdout)
}

func (c driverClient) groupConsume(ctx context.Context, t *testing.T, bootstrap, topic, group string, n int) []string {
	r := c.run(ctx, t, "consume", "--bootstrap", bootstrap, "--topic", topic, "--count", strconv.Itoa(n), "--group", group, "--commit")
	return driverValues(t, r.Stdout)
}
