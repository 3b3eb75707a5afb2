package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/audit"
	"github.com/sluice-gw/sluice/configs"
	"github.com/sluice-gw/sluice/masking"
	"github.com/sluice-gw/sluice/policy"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/authn"
	"github.com/sluice-gw/sluice/schema"
)

// Demo topics: "demo" holds plain strings, "payments" Avro records in the
// Confluent wire format that each partner sees masked per its grant.
const (
	devPlainTopic  = "demo"
	devAvroTopic   = "payments"
	devSASLMechs   = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
	devAuditTopic  = "_sluice_audit"
	devDemoRecords = 200
)

// cmdDev runs the embedded demo: an in-process 3-broker kfake cluster, an
// in-process Confluent-compatible schema registry seeded with an Avro topic,
// and the gateway in front of them with the example policy, demo principals,
// masking and audit on. A new user needs no Docker.
func cmdDev(args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	var f commonFlags
	f.register(fs, false)
	brokers := fs.Int("brokers", 3, "number of in-process brokers")
	registryListen := fs.String("registry-listen", "127.0.0.1:8081", "address of the embedded schema registry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := defaultConfig()
	cfg.Listen = "127.0.0.1:9092"
	cfg.AdvertisedHost = "localhost"
	f.apply(&cfg)
	log, err := newLogger(cfg.Log)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck

	kf, err := kfake.NewCluster(kfake.NumBrokers(*brokers), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3),
		kfake.SeedTopics(3, devPlainTopic, devAvroTopic))
	if err != nil {
		return fmt.Errorf("dev: starting embedded cluster: %w", err)
	}
	defer kf.Close()
	reg, err := schema.StartEmbedded(*registryListen)
	if err != nil {
		return fmt.Errorf("dev: starting embedded schema registry on %s: %w (use --registry-listen)", *registryListen, err)
	}
	defer reg.Close()
	dir, err := os.MkdirTemp("", "sluice-dev-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := devFiles(dir); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	if err := devConfig(&cfg, dir, kf.ListenAddrs(), reg.URL()); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	log.Info("embedded cluster and schema registry started", zap.Strings("brokers", kf.ListenAddrs()), zap.String("registry", reg.URL()))
	if err := devSeed(cfg, kf.ListenAddrs(), log); err != nil {
		return fmt.Errorf("dev: seeding demo data: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runGateway(ctx, cfg, log, func(srv *proxy.Server) {
		printDevBanner(cfg, srv, reg.URL(), kf.ListenAddrs(), filepath.Join(dir, "audit.key.pub"))
	})
}

// devFiles writes the embedded policies, data and demo credentials, and
// fresh secret keys, into dir.
func devFiles(dir string) error {
	err := fs.WalkDir(configs.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, path)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, err := configs.FS.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o600)
	})
	if err != nil {
		return err
	}
	for _, name := range []string{"hash.key", "tokenize.key"} {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(hex.EncodeToString(k)), 0o600); err != nil {
			return err
		}
	}
	_, err = audit.GenerateKey(filepath.Join(dir, "audit.key"))
	return err
}

// devConfig turns on every feature with the files devFiles wrote.
func devConfig(cfg *Config, dir string, upstream []string, registryURL string) error {
	cfg.Upstream.Brokers = upstream
	cfg.Listeners = []proxy.ListenerConfig{{SASL: strings.Split(devSASLMechs, ",")}}

	a := authn.DefaultConfig()
	a.CredentialsFile = filepath.Join(dir, "credentials", "users.yaml")
	cfg.Authn = &a

	p := policy.DefaultConfig()
	p.Dir = filepath.Join(dir, "policies")
	p.DataDir = filepath.Join(dir, "data")
	cfg.Policy = &p

	au := audit.DefaultConfig()
	au.Enabled = true
	au.Topic = devAuditTopic
	au.InstanceID = "dev"
	au.Spool.Dir = filepath.Join(dir, "audit-spool")
	au.Signing.KeyFile = filepath.Join(dir, "audit.key")
	au.Signing.Interval = 10 * time.Second
	cfg.Audit = &au

	sr := schema.DefaultConfig()
	sr.URL = registryURL
	cfg.SchemaRegistry = &sr

	m := masking.DefaultConfig()
	m.Keys = map[string]masking.KeySource{
		"hash":     {File: filepath.Join(dir, "hash.key")},
		"tokenize": {File: filepath.Join(dir, "tokenize.key")},
	}
	m.Topics = map[string]masking.TopicConfig{devPlainTopic: {Format: "json"}}
	cfg.Masking = &m
	return nil
}

// devSeed registers the demo schema and produces demo records, straight to
// the cluster (the provider's side, not through the gateway).
func devSeed(cfg Config, upstream []string, log *zap.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(upstream...), kgo.AllowAutoTopicCreation())
	if err != nil {
		return err
	}
	defer cl.Close()
	reg, err := schema.New(*cfg.SchemaRegistry, log.Named("schema"))
	if err != nil {
		return err
	}
	if err := schema.SeedDemo(ctx, reg, cl, devAvroTopic, devDemoRecords); err != nil {
		return err
	}
	for i := 0; i < 5; i++ {
		v := fmt.Sprintf(`{"greeting":"hello %d","from":"the provider"}`, i)
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: devPlainTopic, Value: []byte(v)}).FirstErr(); err != nil {
			return err
		}
	}
	return nil
}

func printDevBanner(cfg Config, srv *proxy.Server, registryURL string, upstream []string, pubKey string) {
	boot := srv.Addrs()["default"]
	_, port, _ := net.SplitHostPort(boot)
	addr := net.JoinHostPort(cfg.AdvertisedHost, port)
	bl := srv.BrokerAddrs("default")
	ids := make([]int, 0, len(bl))
	for id := range bl {
		ids = append(ids, int(id))
	}
	sort.Ints(ids)
	fmt.Printf(`
  Sluice dev gateway is up: an in-process 3-broker Kafka cluster and schema
  registry behind it, with the example policy, masking and audit on.

    bootstrap        %s   (SASL_PLAINTEXT: %s)
`, addr, devSASLMechs)
	for _, id := range ids {
		fmt.Printf("    broker %d         %s\n", id, bl[int32(id)])
	}
	fmt.Printf("    schema registry  %s\n", registryURL)
	if cfg.AdminListen != "" {
		fmt.Printf("    metrics          http://%s/metrics\n", cfg.AdminListen)
	}
	sasl := func(user string) string {
		return fmt.Sprintf("kcat -b %s -X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=SCRAM-SHA-512 -X sasl.username=%s -X sasl.password=%s-demo", addr, user, user)
	}
	fmt.Printf(`
  Demo principals (passwords are demo-only, see docs/authn.md):
    acme-analyst    / acme-analyst-demo     partner acme: reads "demo"; reads "payments" masked
    globex-analyst  / globex-analyst-demo   partner globex: denied "demo"; "payments" EU rows, more masked
    auditor         / auditor-demo          reads the audit topic %[4]s

  Try it:
    %[1]s -L
    %[1]s -C -t demo -o beginning -e                       # allowed
    %[2]s -C -t demo -o beginning -e                     # TOPIC_AUTHORIZATION_FAILED
    %[1]s -C -t payments -o beginning -e -c 2   # SSN hashed, ****1234
    %[2]s -C -t payments -o beginning -e -c 2   # EU rows, REDACTED
  (payments values are Avro in the Confluent wire format: any consumer with
   the registry at %[3]s decodes them; the masked output is valid Avro)

  Every decision above is in the audit topic:
    sluice audit tail --upstream %[5]s --topic %[4]s
    sluice audit verify --upstream %[5]s --topic %[4]s --public-key %[6]s

  Ctrl-C stops the gateway, the cluster and the registry.

`, sasl("acme-analyst"), sasl("globex-analyst"), registryURL, devAuditTopic, upstream[0], pubKey)
}
