package schema

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config configures the registry client.
type Config struct {
	// URL of a Confluent-compatible schema registry (Confluent, Apicurio
	// ccompat, Karapace, Redpanda). Required.
	URL string `yaml:"url"`
	// TLS for https URLs. Empty files mean the system roots and no client
	// certificate.
	TLS TLSConfig `yaml:"tls"`
	// Basic authentication; mutually exclusive with Bearer.
	Basic *BasicAuth `yaml:"basic"`
	// Bearer token authentication; mutually exclusive with Basic.
	Bearer *BearerAuth `yaml:"bearer"`
	// CacheSize bounds the number of schemas cached by id, default 1024.
	CacheSize int `yaml:"cache_size"`
	// Timeout bounds one HTTP request to the registry, default 5s.
	Timeout time.Duration `yaml:"timeout"`
	// Retries is how many times a failed lookup (network error or 5xx) is
	// retried, default 3. Not-found answers are not retried.
	Retries int `yaml:"retries"`
	// RetryBackoff is the first backoff between retries, doubled each
	// time, default 100ms.
	RetryBackoff time.Duration `yaml:"retry_backoff"`
	// MaxInflight bounds concurrent registry requests, default 8.
	MaxInflight int `yaml:"max_inflight"`
	// LatestTTL is how long the latest version of a subject is cached,
	// default 30s.
	LatestTTL time.Duration `yaml:"latest_ttl"`
	// MaxResponseBytes bounds one registry response body, default 8 MiB:
	// a larger one fails the lookup (closed) instead of being read whole.
	MaxResponseBytes int64 `yaml:"max_response_bytes"`
}

// TLSConfig holds PEM file paths.
type TLSConfig struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// BasicAuth is HTTP basic authentication; the password comes from an
// environment variable or a file, never from the config itself.
type BasicAuth struct {
	User         string `yaml:"user"`
	PasswordEnv  string `yaml:"password_env"`
	PasswordFile string `yaml:"password_file"`
}

// BearerAuth is a bearer token from an environment variable or a file.
type BearerAuth struct {
	TokenEnv  string `yaml:"token_env"`
	TokenFile string `yaml:"token_file"`
}

// DefaultConfig returns the defaults; URL is still required.
func DefaultConfig() Config {
	return Config{
		CacheSize:    1024,
		Timeout:      5 * time.Second,
		Retries:      3,
		RetryBackoff: 100 * time.Millisecond,
		MaxInflight:  8,
		LatestTTL:    30 * time.Second,

		MaxResponseBytes: 8 << 20,
	}
}

// ParseConfig decodes YAML strictly (unknown keys are errors) over the
// defaults and validates the result.
func ParseConfig(b []byte) (Config, error) {
	c := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("schema: config: %w", err)
	}
	return c, c.Validate()
}

// Validate checks the configuration without reading secrets.
func (c *Config) Validate() error {
	if c.URL == "" {
		return errors.New("schema: url is required")
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("schema: url %q must be http(s)://host[:port]", c.URL)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("schema: tls cert_file and key_file go together")
	}
	if c.Basic != nil && c.Bearer != nil {
		return errors.New("schema: basic and bearer auth are mutually exclusive")
	}
	if b := c.Basic; b != nil {
		if b.User == "" {
			return errors.New("schema: basic auth needs a user")
		}
		if (b.PasswordEnv == "") == (b.PasswordFile == "") {
			return errors.New("schema: basic auth needs exactly one of password_env, password_file")
		}
	}
	if b := c.Bearer; b != nil && (b.TokenEnv == "") == (b.TokenFile == "") {
		return errors.New("schema: bearer auth needs exactly one of token_env, token_file")
	}
	switch {
	case c.CacheSize <= 0:
		return errors.New("schema: cache_size must be positive")
	case c.Timeout <= 0:
		return errors.New("schema: timeout must be positive")
	case c.Retries < 0 || c.Retries > 10:
		return errors.New("schema: retries must be in [0, 10]")
	case c.RetryBackoff < 0:
		return errors.New("schema: retry_backoff must not be negative")
	case c.MaxInflight <= 0:
		return errors.New("schema: max_inflight must be positive")
	case c.LatestTTL < 0:
		return errors.New("schema: latest_ttl must not be negative")
	case c.MaxResponseBytes <= 0:
		return errors.New("schema: max_response_bytes must be positive")
	}
	return nil
}

// secret reads a secret from an environment variable or a file.
func secret(env, file string) (string, error) {
	if env != "" {
		v, ok := os.LookupEnv(env)
		if !ok || v == "" {
			return "", fmt.Errorf("schema: environment variable %s is empty", env)
		}
		return v, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("schema: read secret: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("schema: secret file %s is empty", file)
	}
	return v, nil
}

func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.TLS == (TLSConfig{}) {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.TLS.CAFile != "" {
		pem, err := os.ReadFile(c.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("schema: tls ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("schema: tls ca %s holds no certificate", c.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("schema: tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
