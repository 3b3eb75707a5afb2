package e2e

import (
	"context"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluice-gw/sluice/test/harness"
)

var unsafeTopicChars = regexp.MustCompile(`[^a-zA-Z0-9]+`)

// TestClients runs produce, consume from the beginning, a consumer group with
// committed offsets and metadata for every client through the gateway, each
// against its own 3-broker cluster and gateway.
func TestClients(t *testing.T) {
	t.Parallel()
	kgoc := &kgoClient{}
	for _, c := range []client{
		kgoc,
		kcatClient{},
		driverClient{harness.PythonDriver()},
		driverClient{harness.KafkaJSDriver()},
	} {
		t.Run(c.name(), func(t *testing.T) {
			t.Parallel()
			requireAvailable(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()

			topic := "e2e-" + unsafeTopicChars.ReplaceAllString(c.name(), "")
			group := topic + "-group"
			cluster := harness.StartCluster(t, 3, kfake.SeedTopics(3, topic))
			gw := harness.StartGateway(t, cluster, nil)

			t.Run("metadata", func(t *testing.T) {
				addrs := c.metadata(ctx, t, gw.Bootstrap)
				if len(addrs) != 3 {
					t.Errorf("client saw %d brokers %v, want 3", len(addrs), addrs)
				}
				gw.AssertGatewayAddrs(t, cluster, addrs)
				if want := harness.SortedValues(gw.Brokers(t)); !equalSets(addrs, want) {
					t.Errorf("client saw brokers %v, franz-go saw %v", addrs, want)
				}
			})
			if t.Failed() {
				return
			}

			c.produce(ctx, t, gw.Bootstrap, topic, 30, "first")

			t.Run("consume", func(t *testing.T) {
				assertSameValues(t, c.consume(ctx, t, gw.Bootstrap, topic, 30), values("first", 30))
			})

			t.Run("group", func(t *testing.T) {
				assertSameValues(t, c.groupConsume(ctx, t, gw.Bootstrap, topic, group, 30), values("first", 30))
				c.produce(ctx, t, gw.Bootstrap, topic, 7, "second")
				// A second member of the same group resumes after the
				// commit: it gets exactly the new records.
				assertSameValues(t, c.groupConsume(ctx, t, gw.Bootstrap, topic, group, 7), values("second", 7))
			})

			if k, ok := c.(*kgoClient); ok {
				gw.AssertGatewayAddrs(t, cluster, dedupe(k.dialedAddrs()))
			}
			cluster.AssertOnlyGateway(t)
			assertConnectedToEveryBroker(t, cluster)
		})
	}
}

// assertConnectedToEveryBroker checks that the gateway reached each upstream
// broker, which with 3 partitions spread over 3 leaders means the client's
// traffic really went through the per-broker listeners.
func assertConnectedToEveryBroker(t *testing.T, c *harness.Cluster) {
	t.Helper()
	seen := map[string]bool{}
	for _, cn := range c.Conns() {
		seen[cn.Listener] = true
	}
	for _, a := range c.Addrs() {
		if !seen[a] {
			t.Errorf("no upstream connection to broker %s", a)
		}
	}
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func equalSets(a, b []string) bool {
	a, b = dedupe(a), dedupe(b)
	if len(a) != len(b) {
		return false
	}
	sort.Strings(a)
	sort.Strings(b)
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func assertSameValues(t *testing.T, got, want []string) {
	t.Helper()
	g := append([]string(nil), got...)
	w := append([]string(nil), want...)
	sort.Strings(g)
	sort.Strings(w)
	if strings.Join(g, ",") != strings.Join(w, ",") {
		t.Errorf("consumed %d records %v\nwant %d records %v", len(got), got, len(want), want)
	}
}
