package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/proxy"
)

// cmdDev runs the embedded demo: an in-process 3-broker kfake cluster with
// the gateway in front of it, so a new user needs no Docker.
func cmdDev(args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	var f commonFlags
	f.register(fs, false)
	brokers := fs.Int("brokers", 3, "number of in-process brokers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := defaultConfig()
	cfg.Listen = "127.0.0.1:9092"
	cfg.AdvertisedHost = "localhost"
	f.apply(&cfg)

	kf, err := kfake.NewCluster(kfake.NumBrokers(*brokers), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3),
		kfake.SeedTopics(3, "demo"))
	if err != nil {
		return fmt.Errorf("dev: starting embedded cluster: %w", err)
	}
	defer kf.Close()
	cfg.Upstream.Brokers = kf.ListenAddrs()
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	log, err := newLogger(cfg.Log)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck
	log.Info("embedded kfake cluster started", zap.Strings("brokers", kf.ListenAddrs()))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runGateway(ctx, cfg, log, func(srv *proxy.Server) { printDevBanner(cfg, srv) })
}

func printDevBanner(cfg Config, srv *proxy.Server) {
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
  Sluice dev gateway is up — an in-process 3-broker Kafka cluster behind it.

    bootstrap   %s
`, addr)
	for _, id := range ids {
		fmt.Printf("    broker %d    %s\n", id, bl[int32(id)])
	}
	if cfg.AdminListen != "" {
		fmt.Printf("    metrics     http://%s/metrics\n", cfg.AdminListen)
	}
	fmt.Printf(`
  Try it:
    kcat -b %[1]s -L                          # brokers are the gateway's addresses
    echo hello | kcat -b %[1]s -P -t demo     # produce
    kcat -b %[1]s -C -t demo -o beginning -e  # consume

  Ctrl-C stops the gateway and the cluster.

`, addr)
}
