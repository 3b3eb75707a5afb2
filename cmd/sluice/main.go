// Command sluice is the Sluice gateway: a governed Kafka wire-protocol proxy.
//
//	sluice run --config FILE      run the gateway in front of a cluster
//	sluice dev                    embedded demo: kfake cluster + gateway
//	sluice version                print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sluice-gw/sluice/proxy"
)

var version = "dev"

const usage = `sluice — governed stream-sharing gateway for Kafka

Usage:
  sluice run [--config FILE] [flags]   run the gateway in front of a Kafka cluster
  sluice dev [flags]                   embedded demo: 3-broker in-process cluster + gateway
  sluice policy test DIR               run the Rego unit tests in DIR
  sluice policy eval --config FILE --input FILE
                                       print the decision for one input document
  sluice audit verify [--config FILE]  verify the audit topic's hash chains and signatures
  sluice audit tail [--config FILE] [--principal P] [--resource T] [--decision D] [--since 15m]
                                       print audit events readably
  sluice audit export --out FILE       copy the audit topic to a file (verify it with --file)
  sluice audit keygen --out FILE       create the Ed25519 key that signs chain heads
  sluice creds hash|scram              make a credentials-file entry (password on stdin)
  sluice version                       print the version

Run 'sluice run -h' or 'sluice dev -h' for flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = cmdRun(os.Args[2:])
	case "dev":
		err = cmdDev(os.Args[2:])
	case "policy":
		err = cmdPolicy(os.Args[2:])
	case "audit":
		err = cmdAudit(os.Args[2:])
	case "creds":
		err = cmdCreds(os.Args[2:])
	case "version", "--version", "-v":
		fmt.Println("sluice", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "sluice: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		if err != errFailed {
			fmt.Fprintln(os.Stderr, "sluice:", err)
		}
		os.Exit(1)
	}
}

// commonFlags are the everyday settings that override the file.
type commonFlags struct {
	config, upstream, listen, advertisedHost, adminListen, logLevel, logFormat string
}

func (f *commonFlags) register(fs *flag.FlagSet, withConfig bool) {
	if withConfig {
		fs.StringVar(&f.config, "config", "", "configuration file (YAML)")
		fs.StringVar(&f.upstream, "upstream", "", "upstream brokers, host:port,... (overrides upstream.brokers)")
	}
	fs.StringVar(&f.listen, "listen", "", "bootstrap listen address host:port (overrides listen)")
	fs.StringVar(&f.advertisedHost, "advertised-host", "", "host advertised to clients (overrides advertised_host)")
	fs.StringVar(&f.adminListen, "admin-listen", "", "admin HTTP address for /metrics /healthz /readyz (overrides admin_listen)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (overrides log.level)")
	fs.StringVar(&f.logFormat, "log-format", "", "console or json (overrides log.format)")
}

func (f *commonFlags) apply(cfg *Config) {
	if f.upstream != "" {
		cfg.Upstream.Brokers = nil
		for _, b := range strings.Split(f.upstream, ",") {
			if b = strings.TrimSpace(b); b != "" {
				cfg.Upstream.Brokers = append(cfg.Upstream.Brokers, b)
			}
		}
	}
	if f.listen != "" {
		cfg.Listen = f.listen
	}
	if f.advertisedHost != "" {
		cfg.AdvertisedHost = f.advertisedHost
	}
	if f.adminListen != "" {
		cfg.AdminListen = f.adminListen
	}
	if f.logLevel != "" {
		cfg.Log.Level = f.logLevel
	}
	if f.logFormat != "" {
		cfg.Log.Format = f.logFormat
	}
}

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var f commonFlags
	f.register(fs, true)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(f.config)
	if err != nil {
		return err
	}
	f.apply(&cfg)
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	log, err := newLogger(cfg.Log)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runGateway(ctx, cfg, log, nil)
}

// runGateway builds, starts and runs the gateway until ctx is done. ready,
// if set, is called once it is listening.
func runGateway(ctx context.Context, cfg Config, log *zap.Logger, ready func(*proxy.Server)) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	featCtx, stopFeatures := context.WithCancel(context.Background())
	defer stopFeatures()
	feats, err := buildFeatures(featCtx, cfg, log, reg)
	if err != nil {
		return err
	}
	defer func() {
		// After the proxy has drained: flush what the audit still holds.
		fctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		feats.close(fctx, log)
	}()
	srv, err := proxy.New(proxy.Options{
		Config:        cfg.Config,
		Logger:        log,
		Registerer:    reg,
		Filters:       feats.filters,
		Authenticator: feats.authenticator,
		OnAuth:        feats.onAuth,
		OnRefused:     feats.onRefused,
		Refuses:       feats.refuses,
	})
	if err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	var admin *http.Server
	if cfg.AdminListen != "" {
		admin, err = startAdmin(cfg.AdminListen, reg, srv, log)
		if err != nil {
			_ = srv.Shutdown(context.Background())
			return err
		}
	}
	log.Info("sluice started", zap.String("version", version), zap.Any("listeners", srv.Addrs()),
		zap.Strings("upstream", cfg.Upstream.Brokers), zap.String("admin", cfg.AdminListen))
	if ready != nil {
		ready(srv)
	}
	<-ctx.Done()
	log.Info("shutting down: draining in-flight requests", zap.Duration("timeout", cfg.ShutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	serr := srv.Shutdown(sctx)
	if admin != nil {
		_ = admin.Shutdown(sctx)
	}
	if serr != nil && !errors.Is(serr, context.DeadlineExceeded) {
		return serr
	}
	log.Info("sluice stopped")
	return nil
}

func startAdmin(addr string, reg *prometheus.Registry, srv *proxy.Server, log *zap.Logger) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if os.Getenv("SLUICE_PPROF") == "1" {
		// Profiling for benchmarks; off unless asked for.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !srv.Ready() {
			http.Error(w, "upstream metadata not loaded", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin_listen: %w", err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server failed", zap.Error(err))
		}
	}()
	log.Info("admin listening", zap.String("addr", ln.Addr().String()))
	return hs, nil
}

func newLogger(c LogConfig) (*zap.Logger, error) {
	var zc zap.Config
	if c.Format == "json" {
		zc = zap.NewProductionConfig()
		zc.EncoderConfig.TimeKey = "ts"
		zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	} else {
		zc = zap.NewDevelopmentConfig()
		zc.DisableStacktrace = true
		zc.Development = false
	}
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Sampling = nil
	return zc.Build()
}
