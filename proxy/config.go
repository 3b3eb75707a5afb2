package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is the proxy core's configuration. Field comments state defaults.
type Config struct {
	// Listen is the bootstrap listener address. Default "127.0.0.1:9092".
	Listen string `yaml:"listen"`
	// AdvertisedHost is the host given to clients for every broker.
	// Default: the host of Listen, or "localhost" when Listen binds all
	// interfaces.
	AdvertisedHost string `yaml:"advertised_host"`
	// BrokerPortBase: upstream node N is served on BrokerPortBase+N.
	// 0 gives every broker an ephemeral port. Default: Listen's port + 1.
	BrokerPortBase *int `yaml:"broker_port_base"`
	// BrokerListenHost is the interface per-broker listeners bind to.
	// Default: the host of Listen.
	BrokerListenHost string `yaml:"broker_listen_host"`
	// Listeners adds more listener groups, each with its own ports, TLS
	// and client authentication. The top-level Listen/AdvertisedHost/
	// BrokerPortBase describe the first group, named "default".
	Listeners []ListenerConfig `yaml:"listeners"`

	// MaxFrameBytes bounds one request frame. Default 100 MiB.
	MaxFrameBytes int32 `yaml:"max_frame_bytes"`
	// MaxSASLFrameBytes bounds every frame a connection that must
	// authenticate sends before it has, and every ApiVersions, SASL
	// handshake and SASL token frame at any time (re-authentication), as
	// Kafka's sasl.server.max.receive.size does: a stranger cannot make
	// the gateway allocate max_frame_bytes per connection. Default 512 KiB
	// (max_frame_bytes, if that is lower).
	MaxSASLFrameBytes int32 `yaml:"max_sasl_frame_bytes"`
	// MaxInFlight bounds pipelined requests per connection. Default 256.
	MaxInFlight int `yaml:"max_in_flight"`
	// ShutdownTimeout is how long in-flight requests may take to finish
	// at shutdown. Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MaxConnections bounds the client connections open at once, over
	// every listener; MaxConnectionsPerIP those from one client address.
	// A connection over either is closed as it is accepted. 0 (default):
	// no bound, as in Kafka (max.connections, max.connections.per.ip).
	MaxConnections      int `yaml:"max_connections"`
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// ConnectionsMaxIdle closes a client connection that has sent no
	// request and is owed no answer for this long, and one that has not
	// taken an answer for this long (as Kafka's connections.max.idle.ms;
	// clients reconnect). It also bounds how long one request frame may
	// take to arrive. Default 10m; 0 disables.
	ConnectionsMaxIdle time.Duration `yaml:"connections_max_idle"`
	// AuthenticationTimeout closes a connection on a SASL listener that
	// has not authenticated this long after it was accepted. Default 30s;
	// 0 disables.
	AuthenticationTimeout time.Duration `yaml:"authentication_timeout"`
	// MetadataRefresh is how often the gateway reloads upstream metadata
	// to discover brokers and topic ids. Default 30s.
	MetadataRefresh time.Duration `yaml:"metadata_refresh"`

	Upstream UpstreamConfig `yaml:"upstream"`
}

// ListenerConfig is one listener group: a bootstrap port plus one port per
// upstream broker.
type ListenerConfig struct {
	Name             string `yaml:"name"`
	Listen           string `yaml:"listen"`
	AdvertisedHost   string `yaml:"advertised_host"`
	BrokerPortBase   *int   `yaml:"broker_port_base"`
	BrokerListenHost string `yaml:"broker_listen_host"`
	// TLS terminates client TLS on this listener.
	TLS ServerTLSConfig `yaml:"tls"`
	// SASL lists the SASL mechanisms clients must authenticate with on
	// this listener (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER).
	// Empty means no SASL.
	SASL []string `yaml:"sasl"`
}

// ServerTLSConfig is client-facing TLS.
type ServerTLSConfig struct {
	Enabled  bool   `yaml:"enabled"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile enables client certificates verified against this CA;
	// it needs ClientAuth request or require.
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientAuth is "none" (default), "request" or "require".
	ClientAuth string `yaml:"client_auth"`
}

// UpstreamConfig is how the gateway reaches the provider's cluster.
type UpstreamConfig struct {
	// Brokers are seed addresses, host:port. Required.
	Brokers []string `yaml:"brokers"`
	// DialTimeout default 10s.
	DialTimeout time.Duration   `yaml:"dial_timeout"`
	TLS         ClientTLSConfig `yaml:"tls"`
	SASL        SASLConfig      `yaml:"sasl"`
}

// ClientTLSConfig is gateway-to-upstream TLS.
type ClientTLSConfig struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// SASLConfig is the gateway's own credentials for the upstream cluster.
// The password never appears in the file: it comes from PasswordEnv or
// PasswordFile.
type SASLConfig struct {
	// Mechanism is "", "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512".
	Mechanism    string `yaml:"mechanism"`
	Username     string `yaml:"username"`
	PasswordEnv  string `yaml:"password_env"`
	PasswordFile string `yaml:"password_file"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Listen:                "127.0.0.1:9092",
		MaxFrameBytes:         100 << 20,
		MaxSASLFrameBytes:     512 << 10,
		MaxInFlight:           256,
		ShutdownTimeout:       10 * time.Second,
		MetadataRefresh:       30 * time.Second,
		ConnectionsMaxIdle:    10 * time.Minute,
		AuthenticationTimeout: 30 * time.Second,
		Upstream:              UpstreamConfig{DialTimeout: 10 * time.Second},
	}
}

// listenerGroups returns every listener group with defaults applied. The
// top-level fields form the first group when Listen is set.
func (c *Config) listenerGroups() []ListenerConfig {
	var out []ListenerConfig
	if c.Listen != "" {
		out = append(out, ListenerConfig{
			Name:             "default",
			Listen:           c.Listen,
			AdvertisedHost:   c.AdvertisedHost,
			BrokerPortBase:   c.BrokerPortBase,
			BrokerListenHost: c.BrokerListenHost,
		})
		if len(c.Listeners) > 0 && c.Listeners[0].Name == "" {
			// The first explicit listener may refine the default
			// group's TLS and SASL.
			out[0].TLS = c.Listeners[0].TLS
			out[0].SASL = c.Listeners[0].SASL
		}
	}
	for i, l := range c.Listeners {
		if i == 0 && l.Name == "" && c.Listen != "" {
			continue
		}
		out = append(out, l)
	}
	for i := range out {
		l := &out[i]
		if l.BrokerPortBase != nil {
			b := *l.BrokerPortBase
			l.BrokerPortBase = &b // never alias the caller's config
		}
		host, port, _ := net.SplitHostPort(l.Listen)
		if l.AdvertisedHost == "" {
			l.AdvertisedHost = host
			if host == "" || host == "0.0.0.0" || host == "::" {
				l.AdvertisedHost = "localhost"
			}
		}
		if l.BrokerListenHost == "" {
			l.BrokerListenHost = host
		}
		if l.BrokerPortBase == nil {
			base := 0 // ephemeral when the bootstrap port is
			if p, err := strconv.Atoi(port); err == nil && p != 0 {
				base = p + 1
			}
			l.BrokerPortBase = &base
		}
	}
	return out
}

// Validate reports the first invalid setting, naming its key.
func (c *Config) Validate() error {
	groups := c.listenerGroups()
	if len(groups) == 0 {
		return errors.New("listen: a bootstrap listen address is required")
	}
	if len(c.Listeners) > 0 && c.Listeners[0].Name == "" && c.Listen != "" {
		// An unnamed first entry only refines the default group's tls and
		// sasl: say so rather than drop its other keys without a word.
		l := c.Listeners[0]
		for k, set := range map[string]bool{"listen": l.Listen != "", "advertised_host": l.AdvertisedHost != "",
			"broker_port_base": l.BrokerPortBase != nil, "broker_listen_host": l.BrokerListenHost != ""} {
			if set {
				return fmt.Errorf("listeners[0].%s: an unnamed first entry only refines the default group's tls and sasl; set %s at the top level, or give the entry a name", k, k)
			}
		}
	}
	// The file's index of each group that came from c.Listeners (the
	// default group, from the top-level keys, comes first when set).
	offset := 0
	if c.Listen != "" {
		offset = 1
		if len(c.Listeners) > 0 && c.Listeners[0].Name == "" {
			offset = 0 // listeners[0] refined the default group
		}
	}
	names := map[string]bool{}
	for i, l := range groups {
		key := "listen"
		if l.Name != "default" {
			key = fmt.Sprintf("listeners[%d]", i-offset)
		}
		if l.Name == "" {
			return fmt.Errorf("%s.name: required", key)
		}
		if names[l.Name] {
			return fmt.Errorf("%s.name: duplicate listener name %q", key, l.Name)
		}
		names[l.Name] = true
		if _, _, err := splitHostPort(l.Listen); err != nil {
			return fmt.Errorf("%s: %v", key, err)
		}
		if b := *l.BrokerPortBase; b < 0 || b > 65535 {
			return fmt.Errorf("%s broker_port_base: %d is not a port", key, b)
		}
		if l.TLS.Enabled {
			if l.TLS.CertFile == "" || l.TLS.KeyFile == "" {
				return fmt.Errorf("%s.tls: cert_file and key_file are required when tls is enabled", key)
			}
			switch l.TLS.ClientAuth {
			case "", "none", "request", "require":
			default:
				return fmt.Errorf("%s.tls.client_auth: %q is not one of none, request, require", key, l.TLS.ClientAuth)
			}
			if (l.TLS.ClientAuth == "request" || l.TLS.ClientAuth == "require") && l.TLS.ClientCAFile == "" {
				return fmt.Errorf("%s.tls.client_ca_file: required when client_auth is %s", key, l.TLS.ClientAuth)
			}
			if (l.TLS.ClientAuth == "" || l.TLS.ClientAuth == "none") && l.TLS.ClientCAFile != "" {
				// The CA would never be used: no client is asked for a
				// certificate, and an mTLS mapping would never apply.
				return fmt.Errorf("%s.tls.client_auth: none never asks for a client certificate; set request or require to use client_ca_file", key)
			}
		}
		for _, m := range l.SASL {
			switch m {
			case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER":
			default:
				return fmt.Errorf("%s.sasl: unknown mechanism %q", key, m)
			}
		}
	}
	if c.MaxFrameBytes <= 0 {
		return fmt.Errorf("max_frame_bytes: must be positive, got %d", c.MaxFrameBytes)
	}
	if c.MaxSASLFrameBytes <= 0 {
		return fmt.Errorf("max_sasl_frame_bytes: must be positive, got %d", c.MaxSASLFrameBytes)
	}
	if c.MaxInFlight <= 0 {
		return fmt.Errorf("max_in_flight: must be positive, got %d", c.MaxInFlight)
	}
	if c.ShutdownTimeout < 0 {
		return fmt.Errorf("shutdown_timeout: must not be negative")
	}
	if c.MaxConnections < 0 {
		return fmt.Errorf("max_connections: must not be negative (0: no bound), got %d", c.MaxConnections)
	}
	if c.MaxConnectionsPerIP < 0 {
		return fmt.Errorf("max_connections_per_ip: must not be negative (0: no bound), got %d", c.MaxConnectionsPerIP)
	}
	if c.ConnectionsMaxIdle < 0 {
		return fmt.Errorf("connections_max_idle: must not be negative (0 disables), got %s", c.ConnectionsMaxIdle)
	}
	if c.AuthenticationTimeout < 0 {
		return fmt.Errorf("authentication_timeout: must not be negative (0 disables), got %s", c.AuthenticationTimeout)
	}
	if c.MetadataRefresh <= 0 {
		return fmt.Errorf("metadata_refresh: must be positive")
	}
	return c.Upstream.Validate()
}

// Validate checks the upstream settings.
func (u *UpstreamConfig) Validate() error {
	if len(u.Brokers) == 0 {
		return errors.New("upstream.brokers: at least one upstream broker (host:port) is required")
	}
	for i, b := range u.Brokers {
		if _, _, err := splitHostPort(b); err != nil {
			return fmt.Errorf("upstream.brokers[%d]: %v", i, err)
		}
	}
	switch u.SASL.Mechanism {
	case "":
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if u.SASL.Username == "" {
			return errors.New("upstream.sasl.username: required with a sasl mechanism")
		}
		if (u.SASL.PasswordEnv == "") == (u.SASL.PasswordFile == "") {
			return errors.New("upstream.sasl: exactly one of password_env and password_file is required (passwords are never inline)")
		}
		if _, err := u.SASL.password(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("upstream.sasl.mechanism: %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", u.SASL.Mechanism)
	}
	if u.TLS.Enabled {
		if _, err := u.TLS.build(); err != nil {
			return err
		}
	}
	return nil
}

func (s *SASLConfig) password() (string, error) {
	if s.PasswordEnv != "" {
		v, ok := os.LookupEnv(s.PasswordEnv)
		if !ok {
			return "", fmt.Errorf("upstream.sasl.password_env: environment variable %s is not set", s.PasswordEnv)
		}
		return v, nil
	}
	b, err := os.ReadFile(s.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("upstream.sasl.password_file: %v", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func (t *ClientTLSConfig) build() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // operator's explicit choice
	}
	if t.CAFile != "" {
		pool, err := loadPool(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.tls.ca_file: %v", err)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.tls.cert_file/key_file: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func (t *ServerTLSConfig) build() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file/key_file: %v", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if t.ClientCAFile != "" {
		pool, err := loadPool(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca_file: %v", err)
		}
		cfg.ClientCAs = pool
	}
	switch t.ClientAuth {
	case "request":
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	case "require":
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates found", path)
	}
	return pool, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port: %v", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("%q: port %q is not a number in 0-65535", addr, port)
	}
	return host, p, nil
}
