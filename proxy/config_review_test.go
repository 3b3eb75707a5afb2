package proxy

import (
	"os"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"
)

// An error in the first explicit listener names listeners[1], a key that
// does not exist in the file.
func TestListenerErrorNamesFileIndex(t *testing.T) {
	c := DefaultConfig()
	c.Upstream.Brokers = []string{"k:9092"}
	c.Listeners = []ListenerConfig{{Name: "partners", Listen: "0.0.0.0:9192", SASL: []string{"SCRAM-SHA-999"}}}
	err := c.Validate()
	if err == nil {
		t.Fatal("invalid mechanism accepted")
	}
	if !strings.Contains(err.Error(), "listeners[0]") {
		t.Fatalf("error names the wrong key: %v (the bad entry is listeners[0])", err)
	}
}

// An unnamed listeners entry "refines" the default group, and its listen,
// advertised_host and broker_port_base are dropped without a word: the
// config validates, and no group listens on 0.0.0.0:9300.
func TestUnnamedListenerAddressKeysRefused(t *testing.T) {
	c := DefaultConfig()
	src := "upstream: {brokers: [k:9092]}\nlisteners:\n  - listen: 0.0.0.0:9300\n    advertised_host: gw.example.com\n    broker_port_base: 9400\n    sasl: [PLAIN]\n"
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Logf("rejected (good): %v", err)
		return
	}
	for _, g := range c.listenerGroups() {
		if g.Listen == "0.0.0.0:9300" {
			return
		}
	}
	t.Fatalf("config accepted, but listeners[0].listen 0.0.0.0:9300 is served by no group: %+v", c.listenerGroups())
}

// Both password_env and password_file accepted; password_file silently ignored.
func TestUpstreamPasswordOneSource(t *testing.T) {
	f := t.TempDir() + "/pw"
	os.WriteFile(f, []byte("from-file\n"), 0o600)
	t.Setenv("ZZ_REVIEW_PW", "from-env")
	u := UpstreamConfig{Brokers: []string{"k:9092"}, SASL: SASLConfig{Mechanism: "PLAIN", Username: "u", PasswordEnv: "ZZ_REVIEW_PW", PasswordFile: f}}
	if err := u.Validate(); err == nil {
		pw, _ := u.SASL.password()
		t.Fatalf("both password_env and password_file accepted; password_file ignored (using %q)", pw)
	}
}

// A client CA with client_auth none would never be used: no client is
// asked for a certificate, so an mTLS mapping silently never applies.
func TestClientCAWithoutClientAuthRefused(t *testing.T) {
	c := DefaultConfig()
	c.Upstream.Brokers = []string{"k:9092"}
	c.Listeners = []ListenerConfig{{Name: "partners", Listen: "0.0.0.0:9192",
		TLS: ServerTLSConfig{Enabled: true, CertFile: "c.pem", KeyFile: "k.pem", ClientCAFile: "ca.pem"}}}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "listeners[0].tls.client_auth") {
		t.Fatalf("client_ca_file with client_auth none: %v", err)
	}
}

// Brokers before Kafka 2.8 give topics no id: the gateway still knows
// their names (the policy refuses Metadata v1-3 auto-creation only of
// topics it does not know exist).
func TestClusterKnowsTopicsWithoutIDs(t *testing.T) {
	c := newCluster(zap.NewNop())
	resp := kmsg.NewPtrMetadataResponse()
	for _, n := range []string{"old", "missing"} {
		mt := kmsg.NewMetadataResponseTopic()
		nn := n
		mt.Topic = &nn
		if n == "missing" {
			mt.ErrorCode = kerr.UnknownTopicOrPartition.Code
		}
		resp.Topics = append(resp.Topics, mt)
	}
	c.learnMetadata(resp)
	if !c.TopicKnown("old") || c.TopicKnown("missing") {
		t.Fatalf("known: old %v, missing %v", c.TopicKnown("old"), c.TopicKnown("missing"))
	}
	if _, ok := c.TopicID("old"); ok {
		t.Fatal("a topic without an id has one")
	}
}
