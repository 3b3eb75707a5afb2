package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-gw/sluice/audit"
	"github.com/sluice-gw/sluice/policy"
	"github.com/sluice-gw/sluice/proxy/authn"
)

// errFailed makes main exit 1 without printing anything more: the command
// already reported why.
var errFailed = errors.New("")

// cmdPolicy: sluice policy test DIR | sluice policy eval --input FILE
func cmdPolicy(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: sluice policy test DIR | sluice policy eval [--config FILE | --policy-dir DIR --data-dir DIR] --input FILE")
	}
	ctx := context.Background()
	switch args[0] {
	case "test":
		if len(args) != 2 {
			return errors.New("usage: sluice policy test DIR")
		}
		ok, err := policy.RunTests(ctx, args[1], os.Stdout)
		if err != nil {
			return err
		}
		if !ok {
			return errFailed
		}
		return nil
	case "eval":
		fs := flag.NewFlagSet("policy eval", flag.ContinueOnError)
		cfgFile := fs.String("config", "", "gateway configuration whose policy section to use")
		dir := fs.String("policy-dir", "", "directory of Rego modules (instead of --config)")
		dataDir := fs.String("data-dir", "", "directory of data documents (with --policy-dir)")
		input := fs.String("input", "", "input document (JSON or YAML, see docs/policy.md)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *input == "" {
			return errors.New("policy eval: --input is required")
		}
		pc := policy.DefaultConfig()
		switch {
		case *cfgFile != "":
			cfg, err := loadConfig(*cfgFile)
			if err != nil {
				return err
			}
			if cfg.Policy == nil {
				return fmt.Errorf("policy eval: %s has no policy section", *cfgFile)
			}
			pc = *cfg.Policy
		case *dir != "":
			pc.Dir, pc.DataDir = *dir, *dataDir
		default:
			return errors.New("policy eval: --config or --policy-dir is required")
		}
		d, err := policy.EvalFile(ctx, pc, *input)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(d); err != nil {
			return err
		}
		return nil
	}
	return fmt.Errorf("policy: unknown subcommand %q (test, eval)", args[0])
}

// cmdAudit: sluice audit verify|tail|keygen
func cmdAudit(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: sluice audit verify|tail [--config FILE] ... | sluice audit keygen --out FILE")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("audit "+sub, flag.ContinueOnError)
	cfgFile := fs.String("config", "", "gateway configuration (upstream and audit sections)")
	upstream := fs.String("upstream", "", "upstream brokers host:port,... (overrides the config)")
	topic := fs.String("topic", "", "audit topic (default: the config's, or _sluice_audit)")
	switch sub {
	case "keygen":
		out := fs.String("out", "", "where to write the Ed25519 private key (PEM); the public key goes to FILE.pub")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *out == "" {
			return errors.New("audit keygen: --out is required")
		}
		pub, err := audit.GenerateKey(*out)
		if err != nil {
			return err
		}
		fmt.Printf("private key %s\nkey id %s\n", *out, audit.KeyID(pub))
		return nil
	case "verify":
		pubFile := fs.String("public-key", "", "Ed25519 public key (PEM) to check chain-head signatures; default: derived from audit.signing.key_file")
		file := fs.String("file", "", "verify a copy of the topic written by 'sluice audit export' instead of the live topic")
		final := fs.String("require-final", "none", "which chains must end in the final head signed at clean shutdown: none, ended (every run an instance followed with another) or all (stopped instances, archives)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		finality, err := audit.ParseFinality(*final)
		if err != nil {
			return err
		}
		// A copy on disk needs no cluster: the upstream is only
		// required (and checked) for the live topic.
		cfg, err := toolConfig(*cfgFile, *upstream, *file == "")
		if err != nil {
			return err
		}
		t := auditTopic(cfg, *topic)
		pub, err := verifyKey(cfg, *pubFile)
		if err != nil {
			return err
		}
		var rep audit.Report
		if *file != "" {
			f, err := os.Open(*file)
			if err != nil {
				return err
			}
			defer f.Close()
			rep, err = audit.VerifyReader(bufio.NewReader(f), pub, nil)
			if err != nil {
				return err
			}
		} else {
			opts, err := cfg.Upstream.KgoOpts()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			rep, err = audit.Verify(ctx, opts, t, pub, nil)
			if err != nil {
				return err
			}
		}
		rep.RequireFinal(finality)
		if err := rep.WriteText(os.Stdout); err != nil {
			return err
		}
		if !rep.OK() {
			return errFailed
		}
		return nil
	case "export":
		out := fs.String("out", "", "file to write a copy of the topic to (for offline 'verify --file')")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *out == "" {
			return errors.New("audit export: --out is required")
		}
		cfg, err := toolConfig(*cfgFile, *upstream, true)
		if err != nil {
			return err
		}
		opts, err := cfg.Upstream.KgoOpts()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		recs, err := audit.ReadTopic(ctx, opts, auditTopic(cfg, *topic))
		if err != nil {
			return err
		}
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		w := bufio.NewWriter(f)
		if err := audit.WriteRecords(w, recs); err != nil {
			f.Close()
			return err
		}
		if err := w.Flush(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "exported %d records to %s\n", len(recs), *out)
		return nil
	case "tail":
		var f audit.Filter
		fs.StringVar(&f.Principal, "principal", "", "only events of this principal (id or id@org)")
		fs.StringVar(&f.Topic, "resource", "", "only events on this topic (resource name)")
		fs.StringVar(&f.Decision, "decision", "", "allow, deny, success or failure")
		since := fs.String("since", "", "RFC3339 time or a duration ago (e.g. 15m)")
		until := fs.String("until", "", "RFC3339 time or a duration ago")
		fs.BoolVar(&f.Follow, "follow", false, "keep printing new events")
		if err := fs.Parse(args); err != nil {
			return err
		}
		var err error
		if f.Since, err = parseWhen(*since); err != nil {
			return fmt.Errorf("audit tail --since: %w", err)
		}
		if f.Until, err = parseWhen(*until); err != nil {
			return fmt.Errorf("audit tail --until: %w", err)
		}
		cfg, err := toolConfig(*cfgFile, *upstream, true)
		if err != nil {
			return err
		}
		opts, err := cfg.Upstream.KgoOpts()
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return audit.Tail(ctx, opts, auditTopic(cfg, *topic), f, os.Stdout)
	}
	return fmt.Errorf("audit: unknown subcommand %q (verify, tail, export, keygen)", sub)
}

// toolConfig loads the configuration of a tool subcommand (defaults when
// file is empty) with --upstream applied; the upstream is validated only
// when the subcommand talks to the cluster (needUpstream).
func toolConfig(file, upstream string, needUpstream bool) (Config, error) {
	cfg, err := loadConfig(file)
	if err != nil {
		return cfg, err
	}
	f := commonFlags{upstream: upstream}
	f.apply(&cfg)
	if !needUpstream {
		return cfg, nil
	}
	if err := cfg.Upstream.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func auditTopic(cfg Config, flagTopic string) string {
	if flagTopic != "" {
		return flagTopic
	}
	if cfg.Audit != nil && cfg.Audit.Topic != "" {
		return cfg.Audit.Topic
	}
	return audit.DefaultConfig().Topic
}

func verifyKey(cfg Config, pubFile string) (ed25519.PublicKey, error) {
	if pubFile != "" {
		return audit.LoadPublicKey(pubFile)
	}
	if cfg.Audit != nil && cfg.Audit.Signing.KeyFile != "" {
		priv, err := audit.LoadPrivateKey(cfg.Audit.Signing.KeyFile)
		if err != nil {
			return nil, err
		}
		return priv.Public().(ed25519.PublicKey), nil
	}
	fmt.Fprintln(os.Stderr, "audit verify: no public key given; chain-head signatures are not checked")
	return nil, nil
}

func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Parse(time.RFC3339, s)
}

// cmdCreds: sluice creds hash|scram — make credentials-file entries without
// ever writing a clear password to disk.
func cmdCreds(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: sluice creds hash [--kind bcrypt|argon2id] | sluice creds scram [--mechanism SCRAM-SHA-256|SCRAM-SHA-512] [--iterations N]  (password on stdin)")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("creds "+sub, flag.ContinueOnError)
	kind := fs.String("kind", "bcrypt", "bcrypt or argon2id")
	mech := fs.String("mechanism", "SCRAM-SHA-512", "SCRAM-SHA-256 or SCRAM-SHA-512")
	iters := fs.Int("iterations", 0, "PBKDF2 iterations (default 8192)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return errors.New("creds: reading the password from stdin: " + err.Error())
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return errors.New("creds: empty password")
	}
	switch sub {
	case "hash":
		h, err := authn.HashPassword(pw, *kind)
		if err != nil {
			return err
		}
		fmt.Println(h)
		return nil
	case "scram":
		c, err := authn.NewSCRAMCredential(*mech, pw, *iters)
		if err != nil {
			return err
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			return err
		}
		fmt.Print(string(out))
		return nil
	}
	return fmt.Errorf("creds: unknown subcommand %q (hash, scram)", sub)
}
