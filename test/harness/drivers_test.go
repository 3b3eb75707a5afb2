package harness

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestDriversDirect checks the client drivers themselves against kfake,
// without the gateway, so that an end-to-end failure through the gateway
// points at the gateway and not at a driver.
func TestDriversDirect(t *testing.T) {
	t.Parallel()
	for _, d := range []Driver{PythonDriver(), KafkaJSDriver()} {
		t.Run(d.Name, func(t *testing.T) {
			t.Parallel()
			d.Require(t)
			topic := "direct-" + strings.ReplaceAll(d.Name, "-", "")
			c := StartCluster(t, 3, kfake.SeedTopics(3, topic))
			boot := strings.Join(c.Addrs(), ",")
			ctx := context.Background()

			r := d.Run(ctx, DefaultClientTimeout, "metadata", "--bootstrap", boot)
			if !r.OK() {
				t.Fatalf("metadata: %s", r)
			}
			md, err := ParseMetadata(r.Stdout)
			if err != nil {
				t.Fatal(err)
			}
			if len(md.Brokers) != 3 {
				t.Fatalf("want 3 brokers, got %+v", md.Brokers)
			}
			for _, b := range md.Brokers {
				if !c.IsBrokerAddr(fmt.Sprintf("%s:%d", b.Host, b.Port)) {
					t.Errorf("broker %+v is not a kfake listener %v", b, c.Addrs())
				}
			}

			if r := d.Run(ctx, DefaultClientTimeout, "produce", "--bootstrap", boot, "--topic", topic, "--count", "10", "--prefix", "a"); !r.OK() {
				t.Fatalf("produce: %s", r)
			}
			start := time.Now()
			r = d.Run(ctx, DefaultClientTimeout, "consume", "--bootstrap", boot, "--topic", topic, "--count", "10")
			t.Logf("consume took %v", time.Since(start))
			if !r.OK() {
				t.Fatalf("consume: %s", r)
			}
			recs, err := ParseConsumed(r.Stdout)
			if err != nil {
				t.Fatal(err)
			}
			assertValues(t, recs, "a", 10)

			group := "g-" + topic
			r = d.Run(ctx, DefaultClientTimeout, "consume", "--bootstrap", boot, "--topic", topic, "--count", "10", "--group", group, "--commit")
			if !r.OK() {
				t.Fatalf("group consume: %s", r)
			}
			if r := d.Run(ctx, DefaultClientTimeout, "produce", "--bootstrap", boot, "--topic", topic, "--count", "5", "--prefix", "b"); !r.OK() {
				t.Fatalf("produce: %s", r)
			}
			r = d.Run(ctx, DefaultClientTimeout, "consume", "--bootstrap", boot, "--topic", topic, "--count", "5", "--group", group, "--commit")
			if !r.OK() {
				t.Fatalf("second group consume: %s", r)
			}
			recs, err = ParseConsumed(r.Stdout)
			if err != nil {
				t.Fatal(err)
			}
			assertValues(t, recs, "b", 5)

			// A refused request surfaces the Kafka error name.
			r = d.Run(ctx, DefaultClientTimeout, "consume", "--bootstrap", boot, "--topic", "missing-"+topic, "--count", "1", "--timeout", "5")
			if r.OK() {
				t.Fatalf("consume of a missing topic succeeded: %s", r)
			}
			t.Logf("missing topic: %s", r.Stderr)
			if !strings.Contains(r.Stderr, `"name"`) {
				t.Errorf("error output carries no error name: %s", r)
			}
			for _, cn := range c.Conns() {
				if cn.Owner == "test" {
					t.Errorf("a driver connection was attributed to the test process: %+v", cn)
				}
			}
			c.AssertNoLeaks(t)
		})
	}
}

func assertValues(t *testing.T, recs []ConsumedRecord, prefix string, n int) {
	t.Helper()
	seen := map[string]bool{}
	for _, r := range recs {
		if r.Value == nil {
			t.Errorf("record without value: %+v", r)
			continue
		}
		seen[*r.Value] = true
	}
	for i := 0; i < n; i++ {
		if v := fmt.Sprintf("%s-%d", prefix, i); !seen[v] {
			t.Errorf("value %s not consumed; got %d records", v, len(recs))
		}
	}
	if len(recs) != n {
		t.Errorf("consumed %d records, want %d", len(recs), n)
	}
}

// TestDriversTLS checks the drivers' --ca-file option against a TLS kfake
// cluster, and that they refuse a server their CA did not sign.
func TestDriversTLS(t *testing.T) {
	t.Parallel()
	for _, d := range []Driver{PythonDriver(), KafkaJSDriver()} {
		t.Run(d.Name, func(t *testing.T) {
			t.Parallel()
			d.Require(t)
			topic := "tls-" + strings.ReplaceAll(d.Name, "-", "")
			ca := NewTestCA(t)
			c := StartClusterWith(t, ClusterConfig{Brokers: 3, TLS: ca.ServerConfig(t), Opts: []kfake.Opt{kfake.SeedTopics(3, topic)}})
			boot := c.Addrs()[0]
			ctx := context.Background()
			if r := d.Run(ctx, DefaultClientTimeout, "produce", "--bootstrap", boot, "--topic", topic, "--count", "3", "--ca-file", ca.CAFile); !r.OK() {
				t.Fatalf("produce over TLS: %s", r)
			}
			r := d.Run(ctx, DefaultClientTimeout, "consume", "--bootstrap", boot, "--topic", topic, "--count", "3", "--ca-file", ca.CAFile)
			if !r.OK() {
				t.Fatalf("consume over TLS: %s", r)
			}
			recs, err := ParseConsumed(r.Stdout)
			if err != nil {
				t.Fatal(err)
			}
			assertValues(t, recs, "msg", 3)

			other := NewTestCA(t)
			r = d.Run(ctx, DefaultClientTimeout, "metadata", "--bootstrap", boot, "--ca-file", other.CAFile, "--timeout", "5")
			if r.OK() {
				t.Fatalf("metadata succeeded against a server signed by another CA: %s", r)
			}
			t.Logf("untrusted server: %s", strings.TrimSpace(r.Stderr))
		})
	}
}

// TestDriversReportDenials makes kfake refuse produce (and metadata for one
// topic) with TOPIC_AUTHORIZATION_FAILED and checks each driver exits 1 and
// names the error, which is what policy tests assert on: when producing,
// consuming, and describing the topic (metadata --topic).
func TestDriversReportDenials(t *testing.T) {
	t.Parallel()
	for _, d := range []Driver{PythonDriver(), KafkaJSDriver()} {
		t.Run(d.Name, func(t *testing.T) {
			t.Parallel()
			d.Require(t)
			base := strings.ReplaceAll(d.Name, "-", "")
			writeDenied, readDenied := "wdeny-"+base, "rdeny-"+base
			c := StartCluster(t, 3, kfake.SeedTopics(3, writeDenied, readDenied))
			deny := kerr.TopicAuthorizationFailed.Code
			c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				req := kr.(*kmsg.ProduceRequest)
				resp := req.ResponseKind().(*kmsg.ProduceResponse)
				for _, rt := range req.Topics {
					st := kmsg.NewProduceResponseTopic()
					st.Topic = rt.Topic
					for _, rp := range rt.Partitions {
						sp := kmsg.NewProduceResponseTopicPartition()
						sp.Partition = rp.Partition
						sp.ErrorCode = deny
						st.Partitions = append(st.Partitions, sp)
					}
					resp.Topics = append(resp.Topics, st)
				}
				return resp, nil, true
			})
			addrs := c.Addrs()
			c.ControlKey(int16(kmsg.Metadata), func(kr kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				req := kr.(*kmsg.MetadataRequest)
				if len(req.Topics) == 0 {
					return nil, nil, false
				}
				for _, rt := range req.Topics {
					if rt.Topic == nil || *rt.Topic != readDenied {
						return nil, nil, false
					}
				}
				resp := req.ResponseKind().(*kmsg.MetadataResponse)
				for i, a := range addrs {
					host, port, _ := strings.Cut(a, ":")
					b := kmsg.NewMetadataResponseBroker()
					b.NodeID, b.Host = int32(i), host
					fmt.Sscan(port, &b.Port)
					resp.Brokers = append(resp.Brokers, b)
				}
				resp.ControllerID = 0
				mt := kmsg.NewMetadataResponseTopic()
				mt.Topic = kmsg.StringPtr(readDenied)
				mt.ErrorCode = deny
				resp.Topics = append(resp.Topics, mt)
				return resp, nil, true
			})

			ctx := context.Background()
			for _, tc := range []struct {
				what string
				args []string
			}{
				{"produce", []string{"produce", "--bootstrap", addrs[0], "--topic", writeDenied, "--count", "1", "--timeout", "15"}},
				{"consume", []string{"consume", "--bootstrap", addrs[0], "--topic", readDenied, "--count", "1", "--timeout", "15"}},
				{"metadata", []string{"metadata", "--bootstrap", addrs[0], "--topic", readDenied, "--timeout", "15"}},
			} {
				r := d.Run(ctx, DefaultClientTimeout, tc.args...)
				if r.ExitCode != 1 {
					t.Errorf("%s: exit %d, want 1: %s", tc.what, r.ExitCode, r)
					continue
				}
				if !strings.Contains(r.Stderr, `TOPIC_AUTHORIZATION_FAILED`) {
					t.Errorf("%s: error does not name TOPIC_AUTHORIZATION_FAILED: %s", tc.what, r)
				}
			}
		})
	}
}
