package audit

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Spool-full policies.
const (
	// FailClosed denies new requests while events cannot be recorded.
	FailClosed = "fail_closed"
	// FailOpen keeps serving and drops the events that cannot be
	// recorded (counted in sluice_audit_events_dropped_total); the chain
	// then shows a gap.
	FailOpen = "fail_open"
)

// Config configures the auditor.
type Config struct {
	// Enabled turns auditing on. Default true.
	Enabled bool `yaml:"enabled"`
	// Topic is the audit topic on the provider cluster. Default
	// "_sluice_audit".
	Topic string `yaml:"topic"`
	// InstanceID names this gateway instance in events and is the record
	// key. Default: hostname plus a random suffix, chosen at start.
	InstanceID string `yaml:"instance_id"`
	// FoldWindow is how long identical allow decisions on one connection
	// are folded into one event. Zero disables folding. Default 1s.
	FoldWindow time.Duration `yaml:"fold_window"`
	// QueueSize bounds the events waiting to be sequenced and, again, the
	// encoded records waiting to be written. Default 65536.
	QueueSize int `yaml:"queue_size"`
	// ProduceTimeout bounds one write of a batch to the audit topic; a
	// batch not acknowledged in time goes to the spool. Default 10s.
	ProduceTimeout time.Duration `yaml:"produce_timeout"`
	// RetryInterval is how often a replay of the spool is attempted while
	// the topic cannot be written. Default 1s.
	RetryInterval time.Duration `yaml:"retry_interval"`
	// Spool is the local fallback when the topic cannot be written.
	Spool SpoolConfig `yaml:"spool"`
	// OnSpoolFull is fail_closed (default) or fail_open.
	OnSpoolFull string `yaml:"on_spool_full"`
	// Signing signs the chain head periodically.
	Signing SigningConfig `yaml:"signing"`
}

// SpoolConfig configures the local spool.
type SpoolConfig struct {
	// Dir holds the spool segments. Default "/var/lib/sluice/audit-spool".
	Dir string `yaml:"dir"`
	// MaxBytes bounds the spool on disk. Default 1 GiB.
	MaxBytes int64 `yaml:"max_bytes"`
}

// SigningConfig configures chain-head signatures.
type SigningConfig struct {
	// KeyFile is a PEM PKCS#8 Ed25519 private key (see GenerateKey).
	// Empty disables signatures: events are still hash-chained.
	KeyFile string `yaml:"key_file"`
	// Interval between signed chain heads. Default 1m. A final head is
	// signed on shutdown.
	Interval time.Duration `yaml:"interval"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Enabled:        true,
		Topic:          "_sluice_audit",
		FoldWindow:     time.Second,
		QueueSize:      65536,
		ProduceTimeout: 10 * time.Second,
		RetryInterval:  time.Second,
		Spool:          SpoolConfig{Dir: "/var/lib/sluice/audit-spool", MaxBytes: 1 << 30},
		OnSpoolFull:    FailClosed,
		Signing:        SigningConfig{Interval: time.Minute},
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("audit: "+format, args...)) }
	if !c.Enabled {
		return nil
	}
	if c.Topic == "" || len(c.Topic) > 249 || strings.ContainsAny(c.Topic, " /\\") {
		bad("invalid topic %q", c.Topic)
	}
	if c.InstanceID != "" && !validInstance(c.InstanceID) {
		bad("invalid instance_id %q: use 1-200 of A-Z a-z 0-9 . _ : -", c.InstanceID)
	}
	if c.FoldWindow < 0 || c.FoldWindow > time.Minute {
		bad("fold_window %s out of range [0, 1m]", c.FoldWindow)
	}
	if c.QueueSize < 1 || c.QueueSize > 1<<24 {
		bad("queue_size %d out of range [1, 16777216]", c.QueueSize)
	}
	if c.ProduceTimeout < time.Second {
		bad("produce_timeout %s below 1s", c.ProduceTimeout)
	}
	if c.RetryInterval < time.Millisecond {
		bad("retry_interval %s too short", c.RetryInterval)
	}
	if c.Spool.Dir == "" {
		bad("spool.dir is required")
	}
	if c.Spool.MaxBytes < 1<<20 {
		bad("spool.max_bytes %d below 1 MiB", c.Spool.MaxBytes)
	}
	if c.OnSpoolFull != FailClosed && c.OnSpoolFull != FailOpen {
		bad("on_spool_full %q is not %s or %s", c.OnSpoolFull, FailClosed, FailOpen)
	}
	if c.Signing.KeyFile != "" && c.Signing.Interval < 10*time.Millisecond {
		bad("signing.interval %s too short", c.Signing.Interval)
	}
	return errors.Join(errs...)
}

// DecodeConfig decodes YAML over DefaultConfig strictly (unknown keys are
// errors) and validates the result.
func DecodeConfig(r io.Reader) (Config, error) {
	c := DefaultConfig()
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("audit: decode config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func instanceChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == ':' || r == '-'
}

// validInstance keeps instance ids plain ASCII, so that events encode the
// same way every time (chain heads are verified by re-encoding).
func validInstance(s string) bool {
	if len(s) == 0 || len(s) > 200 {
		return false
	}
	for _, r := range s {
		if !instanceChar(r) {
			return false
		}
	}
	return true
}

// defaultInstanceID is the hostname plus a random suffix.
func defaultInstanceID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "sluice"
	}
	h = strings.Map(func(r rune) rune {
		if instanceChar(r) {
			return r
		}
		return '-'
	}, h)
	if len(h) > 180 {
		h = h[:180]
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return h + "-" + hex.EncodeToString(b[:])
}
