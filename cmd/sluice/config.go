package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-gw/sluice/proxy"
)

// Config is the whole gateway configuration file. Each package owns its
// section; this file only composes them.
type Config struct {
	proxy.Config `yaml:",inline"`

	// AdminListen serves /metrics, /healthz and /readyz. Default
	// "127.0.0.1:9644"; empty string disables it.
	AdminListen string `yaml:"admin_listen"`

	Log LogConfig `yaml:"log"`
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
	return cfg, nil
}

// validate checks every section, naming the key at fault.
func (c *Config) validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
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
