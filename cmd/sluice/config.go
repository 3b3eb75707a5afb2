package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-gw/sluice/audit"
	"github.com/sluice-gw/sluice/masking"
	"github.com/sluice-gw/sluice/policy"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/authn"
	"github.com/sluice-gw/sluice/schema"
)

// Config is the whole gateway configuration file. Each package owns its
// section; this file only composes them.
type Config struct {
	proxy.Config `yaml:",inline"`

	// AdminListen serves /metrics, /healthz and /readyz. Default
	// "127.0.0.1:9644"; empty string disables it.
	AdminListen string `yaml:"admin_listen"`

	Log LogConfig `yaml:"log"`

	// Feature sections, kept as raw nodes (yaml.v3 copies a node verbatim
	// only into a yaml.Node value, not a pointer). An absent section turns
	// the feature off; a present one is decoded strictly over the package's
	// defaults.
	AuthnSection          yaml.Node `yaml:"authn"`
	PolicySection         yaml.Node `yaml:"policy"`
	AuditSection          yaml.Node `yaml:"audit"`
	MaskingSection        yaml.Node `yaml:"masking"`
	SchemaRegistrySection yaml.Node `yaml:"schema_registry"`

	// Decoded sections, nil when absent.
	Authn          *authn.Config   `yaml:"-"`
	Policy         *policy.Config  `yaml:"-"`
	Audit          *audit.Config   `yaml:"-"`
	Masking        *masking.Config `yaml:"-"`
	SchemaRegistry *schema.Config  `yaml:"-"`
}

// LogConfig selects zap's output.
type LogConfig struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Format is console (default) or json.
	Format string `yaml:"format"`
}

func defaultConfig() Config {
	return Config{
		Config:      proxy.DefaultConfig(),
		AdminListen: "127.0.0.1:9644",
		Log:         LogConfig{Level: "info", Format: "console"},
	}
}

// loadConfig reads path (if non-empty) over the defaults. Unknown keys are
// errors, so a typo is never silently ignored.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	if path == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config %s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if err := cfg.decodeSections(); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// decodeSections decodes each present feature section strictly over its
// package's defaults.
func (c *Config) decodeSections() error {
	if c.AuthnSection.Kind != 0 {
		v := authn.DefaultConfig()
		if err := decodeSection("authn", &c.AuthnSection, &v); err != nil {
			return err
		}
		c.Authn = &v
	}
	if c.PolicySection.Kind != 0 {
		v := policy.DefaultConfig()
		if err := decodeSection("policy", &c.PolicySection, &v); err != nil {
			return err
		}
		c.Policy = &v
	}
	if c.AuditSection.Kind != 0 {
		v := audit.DefaultConfig()
		if err := decodeSection("audit", &c.AuditSection, &v); err != nil {
			return err
		}
		c.Audit = &v
	}
	if c.MaskingSection.Kind != 0 {
		v := masking.DefaultConfig()
		if err := decodeSection("masking", &c.MaskingSection, &v); err != nil {
			return err
		}
		c.Masking = &v
	}
	if c.SchemaRegistrySection.Kind != 0 {
		v := schema.DefaultConfig()
		if err := decodeSection("schema_registry", &c.SchemaRegistrySection, &v); err != nil {
			return err
		}
		c.SchemaRegistry = &v
	}
	return nil
}

// decodeSection decodes one section strictly into dst, which holds the
// defaults. yaml.Node.Decode is not strict, so the node is re-encoded and
// decoded with KnownFields.
func decodeSection(name string, n *yaml.Node, dst any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return nil
}

// validate checks every section, naming the key at fault.
func (c *Config) validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if c.Authn != nil {
		if err := c.Authn.Validate(); err != nil {
			return err
		}
	}
	if c.Policy != nil {
		if err := c.Policy.Validate(); err != nil {
			return err
		}
	}
	if c.Audit != nil {
		if err := c.Audit.Validate(); err != nil {
			return err
		}
	}
	if c.Masking != nil {
		if err := c.Masking.Validate(); err != nil {
			return err
		}
	}
	if c.SchemaRegistry != nil {
		if err := c.SchemaRegistry.Validate(); err != nil {
			return fmt.Errorf("schema_registry: %w", err)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		return fmt.Errorf("log.format: %q is not one of console, json", c.Log.Format)
	}
	return nil
}
