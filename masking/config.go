package masking

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Formats of topic values and keys.
const (
	FormatAvro = "avro" // Confluent wire format, schema from the registry
	FormatJSON = "json" // JSON text, no schema
)

// Failure policies: what happens to a record that cannot be masked.
const (
	// OnErrorMarker delivers the record with a null value (and a null key
	// when key rules apply) and a sluice-mask-error header saying why.
	OnErrorMarker = "marker"
	// OnErrorFailPartition fails the whole partition of the fetch with
	// UNKNOWN_SERVER_ERROR and no records; the consumer retries.
	OnErrorFailPartition = "fail_partition"
)

// Config configures masking. Topics not listed use Default.
type Config struct {
	Default TopicConfig            `yaml:"default"`
	Topics  map[string]TopicConfig `yaml:"topics"`
	// Keys are the secret keys of the hash and tokenize strategies by
	// name; rules pick one with the "key" parameter, defaulting to
	// "hash" and "tokenize".
	Keys map[string]KeySource `yaml:"keys"`
}

// TopicConfig is the per-topic setting. Empty strings inherit Default.
type TopicConfig struct {
	// Format of values: avro (default) or json.
	Format string `yaml:"format"`
	// KeyFormat of keys when key rules apply; empty means Format.
	KeyFormat string `yaml:"key_format"`
	// OnError is marker (default) or fail_partition.
	OnError string `yaml:"on_error"`
	// Contract, on produce, requires every record value to carry a schema
	// id registered under "<topic>-value" and to decode under it; a
	// partition with a record that does not is refused with
	// INVALID_RECORD. Avro topics only.
	Contract bool `yaml:"contract"`
}

// KeySource names where a secret key comes from: exactly one of an
// environment variable or a file (surrounding whitespace trimmed).
type KeySource struct {
	Env  string `yaml:"env"`
	File string `yaml:"file"`
}

// DefaultConfig returns avro values, the marker failure policy and no keys.
func DefaultConfig() Config {
	return Config{Default: TopicConfig{Format: FormatAvro, OnError: OnErrorMarker}}
}

// ParseConfig decodes YAML strictly over the defaults and validates it.
func ParseConfig(b []byte) (Config, error) {
	c := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("masking: config: %w", err)
	}
	return c, c.Validate()
}

// Validate checks the configuration without reading key material.
func (c *Config) Validate() error {
	if c.Default.Format == "" || c.Default.OnError == "" {
		return errors.New("masking: default format and on_error are required")
	}
	if err := c.Default.validate("default"); err != nil {
		return err
	}
	for name, t := range c.Topics {
		if name == "" {
			return errors.New("masking: empty topic name")
		}
		if err := t.validate("topic " + name); err != nil {
			return err
		}
	}
	for name, k := range c.Keys {
		if (k.Env == "") == (k.File == "") {
			return fmt.Errorf("masking: key %q needs exactly one of env, file", name)
		}
	}
	return nil
}

func (t TopicConfig) validate(what string) error {
	for _, f := range []string{t.Format, t.KeyFormat} {
		if f != "" && f != FormatAvro && f != FormatJSON {
			return fmt.Errorf("masking: %s: format %q is neither avro nor json", what, f)
		}
	}
	if t.OnError != "" && t.OnError != OnErrorMarker && t.OnError != OnErrorFailPartition {
		return fmt.Errorf("masking: %s: on_error %q is neither marker nor fail_partition", what, t.OnError)
	}
	if t.Contract && t.Format == FormatJSON {
		return fmt.Errorf("masking: %s: a schema contract needs format avro", what)
	}
	return nil
}

// Topic returns the effective settings of a topic.
func (c *Config) Topic(name string) TopicConfig {
	t, ok := c.Topics[name]
	if !ok {
		t = c.Default
	}
	if t.Format == "" {
		t.Format = c.Default.Format
	}
	if t.OnError == "" {
		t.OnError = c.Default.OnError
	}
	if t.KeyFormat == "" {
		t.KeyFormat = t.Format
	}
	return t
}

// LoadKeys reads the configured key material.
func (c *Config) LoadKeys() (*Keys, error) {
	raw := make(map[string][]byte, len(c.Keys))
	for name, k := range c.Keys {
		var v string
		if k.Env != "" {
			v = os.Getenv(k.Env)
		} else {
			b, err := os.ReadFile(k.File)
			if err != nil {
				return nil, fmt.Errorf("masking: key %q: %w", name, err)
			}
			v = strings.TrimSpace(string(b))
		}
		if v == "" {
			return nil, fmt.Errorf("masking: key %q is empty", name)
		}
		raw[name] = []byte(v)
	}
	return NewKeys(raw)
}

// anyContract reports whether some topic (or the default) has a produce
// contract.
func (c *Config) anyContract() bool {
	if c.Default.Contract {
		return true
	}
	for _, t := range c.Topics {
		if t.Contract {
			return true
		}
	}
	return false
}
