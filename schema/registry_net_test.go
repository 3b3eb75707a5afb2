package schema

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/sluice-gw/sluice/proxy/authn/authntest"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type testPKI struct {
	dir                           string
	caFile                        string
	pool                          *x509.CertPool
	server                        tls.Certificate
	clientCertFile, clientKeyFile string
	// otherCAFile is a CA that signed neither certificate.
	otherCAFile string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	pki, err := authntest.NewPKI(filepath.Join(dir, "pki"), nil, authntest.CertSubject{Name: "sluice", CommonName: "sluice"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := authntest.NewPKI(filepath.Join(dir, "other"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := tls.LoadX509KeyPair(pki.Server.CertFile, pki.Server.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	cli := pki.Clients["sluice"]
	return &testPKI{dir: dir, caFile: pki.CAFile, pool: pki.CertPool(), server: srv,
		clientCertFile: cli.CertFile, clientKeyFile: cli.KeyFile, otherCAFile: other.CAFile}
}

// netRegistry is srfake's handler behind a real HTTP(S) server, optionally
// under a path prefix (Apicurio serves the Confluent API under
// /apis/ccompat/v7), with the TLS the test asks for.
type netRegistry struct {
	fake *srfake.Registry
	srv  *httptest.Server
	// paths are the request paths the server received (before the prefix
	// is stripped).
	paths chan string
	url   string
	id    int
}

func startNetRegistry(t *testing.T, prefix string, tc *tls.Config, opts ...srfake.Option) *netRegistry {
	t.Helper()
	fake := srfake.NewRegistry(opts...)
	id, _, err := fake.RegisterSchema("pay-value", sr.Schema{Schema: `{"type":"record","name":"Pay","fields":[{"name":"amount","type":"long"}]}`})
	if err != nil {
		t.Fatal(err)
	}
	nr := &netRegistry{fake: fake, paths: make(chan string, 64), id: id}
	var h http.Handler = fake.Handler()
	if prefix != "" {
		h = http.StripPrefix(prefix, h)
	}
	record := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case nr.paths <- r.URL.Path:
		default:
		}
		h.ServeHTTP(w, r)
	})
	if tc != nil {
		nr.srv = httptest.NewUnstartedServer(record)
		nr.srv.TLS = tc
		nr.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
		nr.srv.StartTLS()
	} else {
		nr.srv = httptest.NewServer(record)
	}
	t.Cleanup(nr.srv.Close)
	nr.url = nr.srv.URL + prefix
	return nr
}

func netConfig(url string) Config {
	cfg := DefaultConfig()
	cfg.URL = url
	cfg.Retries = 1
	cfg.RetryBackoff = time.Millisecond
	cfg.Timeout = 5 * time.Second
	return cfg
}

// lookup builds a client from cfg and fetches nr's schema by id and the
// latest version of its subject.
func lookup(t *testing.T, nr *netRegistry, cfg Config) error {
	t.Helper()
	reg, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := reg.SchemaByID(ctx, nr.id)
	if err != nil {
		return err
	}
	if s.Avro == nil || s.Avro.(*avro.RecordSchema).Fields()[0].Name() != "amount" {
		t.Fatalf("SchemaByID(%d) = %v", nr.id, s.Avro)
	}
	ss, err := reg.Latest(ctx, "pay-value")
	if err != nil {
		return err
	}
	if ss.ID != nr.id || ss.Version != 1 {
		t.Fatalf("Latest = id %d v%d, want id %d v1", ss.ID, ss.Version, nr.id)
	}
	return nil
}

// TestRegistryTLS runs the client against an HTTPS registry whose
// certificate is signed by a test CA: it must trust exactly the configured
// ca_file, and present its client certificate where the registry requires
// one (mTLS).
func TestRegistryTLS(t *testing.T) {
	pki := newTestPKI(t)
	t.Run("ca_file", func(t *testing.T) {
		nr := startNetRegistry(t, "", &tls.Config{Certificates: []tls.Certificate{pki.server}})
		cfg := netConfig(nr.url)
		cfg.TLS.CAFile = pki.caFile
		if err := lookup(t, nr, cfg); err != nil {
			t.Fatalf("with the CA: %v", err)
		}
		for _, tc := range []struct {
			name string
			ca   string
		}{{"system roots", ""}, {"another CA", pki.otherCAFile}} {
			// Without a ca_file the system roots are used: the test
			// CA is not among them.
			cfg := netConfig(nr.url)
			cfg.TLS.CAFile = tc.ca
			err := lookup(t, nr, cfg)
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("%s: err = %v, want an unavailable registry naming the certificate", tc.name, err)
			}
		}
	})
	t.Run("mTLS", func(t *testing.T) {
		nr := startNetRegistry(t, "", &tls.Config{
			Certificates: []tls.Certificate{pki.server},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pki.pool,
		})
		cfg := netConfig(nr.url)
		cfg.TLS = TLSConfig{CAFile: pki.caFile, CertFile: pki.clientCertFile, KeyFile: pki.clientKeyFile}
		if err := lookup(t, nr, cfg); err != nil {
			t.Fatalf("with a client certificate: %v", err)
		}
		cfg.TLS = TLSConfig{CAFile: pki.caFile}
		err := lookup(t, nr, cfg)
		t.Logf("without a client certificate: %v", err)
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("without a client certificate: err = %v, want an unavailable registry naming the certificate", err)
		}
	})
	t.Run("bad files", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			tls  TLSConfig
			want string
		}{
			{"missing ca", TLSConfig{CAFile: filepath.Join(pki.dir, "nope.pem")}, "tls ca"},
			{"ca without certificate", TLSConfig{CAFile: pki.clientKeyFile}, "holds no certificate"},
			{"key does not match", TLSConfig{CertFile: pki.clientCertFile, KeyFile: pki.caFile}, "client certificate"},
		} {
			cfg := netConfig("https://127.0.0.1:1")
			cfg.TLS = tc.tls
			if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: New err = %v, want %q", tc.name, err, tc.want)
			}
		}
	})
}

// TestRegistryAuth runs basic and bearer authentication against a registry
// that expects exactly one Authorization header: the right secret (from an
// environment variable or a file) works, a wrong or missing one fails at
// once (401 and 403 are not retried) with an error that names the
// credentials and wraps ErrUnavailable.
func TestRegistryAuth(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("sluice:s3cret-pw"))
	const token = "eyJhbGciOiJub25lIn0.e30.sig"
	t.Setenv("SLUICE_TEST_SR_PASSWORD", "s3cret-pw")
	t.Setenv("SLUICE_TEST_SR_WRONG", "not-the-password")
	t.Setenv("SLUICE_TEST_SR_TOKEN", token)
	for _, tc := range []struct {
		name   string
		expect string // the Authorization header the registry wants
		basic  *BasicAuth
		bearer *BearerAuth
		ok     bool
	}{
		{"basic password_env", basic, &BasicAuth{User: "sluice", PasswordEnv: "SLUICE_TEST_SR_PASSWORD"}, nil, true},
		{"basic password_file", basic, &BasicAuth{User: "sluice", PasswordFile: file("pw", "s3cret-pw\n")}, nil, true},
		{"basic wrong password", basic, &BasicAuth{User: "sluice", PasswordEnv: "SLUICE_TEST_SR_WRONG"}, nil, false},
		{"basic wrong user", basic, &BasicAuth{User: "other", PasswordEnv: "SLUICE_TEST_SR_PASSWORD"}, nil, false},
		{"bearer token_file", "Bearer " + token, nil, &BearerAuth{TokenFile: file("tok", token+"\n")}, true},
		{"bearer token_env", "Bearer " + token, nil, &BearerAuth{TokenEnv: "SLUICE_TEST_SR_TOKEN"}, true},
		{"bearer wrong token", "Bearer " + token, nil, &BearerAuth{TokenFile: file("bad", "expired-token")}, false},
		{"basic where bearer is wanted", "Bearer " + token, &BasicAuth{User: "sluice", PasswordEnv: "SLUICE_TEST_SR_PASSWORD"}, nil, false},
		{"no credentials", basic, nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nr := startNetRegistry(t, "", nil, srfake.WithAuth(tc.expect))
			cfg := netConfig(nr.url)
			cfg.Retries = 3
			cfg.Basic, cfg.Bearer = tc.basic, tc.bearer
			err := lookup(t, nr, cfg)
			if tc.ok {
				if err != nil {
					t.Fatalf("lookup: %v", err)
				}
				return
			}
			t.Logf("refused: %v", err)
			if !errors.Is(err, ErrUnauthorized) || !errors.Is(err, ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnauthorized wrapped with ErrUnavailable", err)
			}
			code := "403"
			if tc.basic == nil && tc.bearer == nil {
				code = "401"
			}
			if msg := err.Error(); !strings.Contains(msg, "refused the credentials") || !strings.Contains(msg, "HTTP "+code) {
				t.Fatalf("err = %q, want it to name the refused credentials and HTTP %s", msg, code)
			}
			if n := len(nr.paths); n != 1 {
				t.Fatalf("registry got %d requests, want 1 (401/403 are not retried)", n)
			}
		})
	}
	t.Run("missing secret", func(t *testing.T) {
		cfg := netConfig("http://127.0.0.1:1")
		cfg.Basic = &BasicAuth{User: "sluice", PasswordEnv: "SLUICE_TEST_SR_UNSET"}
		if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "SLUICE_TEST_SR_UNSET") {
			t.Fatalf("unset env: %v", err)
		}
		cfg.Basic = nil
		cfg.Bearer = &BearerAuth{TokenFile: file("empty", "\n")}
		if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "empty") {
			t.Fatalf("empty token file: %v", err)
		}
	})
}

// TestRegistryPathPrefix: a registry serving the Confluent API under a path
// (Apicurio's /apis/ccompat/v7), reached over TLS with basic auth, gets
// every request under that path.
func TestRegistryPathPrefix(t *testing.T) {
	pki := newTestPKI(t)
	const prefix = "/apis/ccompat/v7"
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("sluice:pw"))
	t.Setenv("SLUICE_TEST_SR_PASSWORD", "pw")
	for _, url := range []string{"", "/"} {
		nr := startNetRegistry(t, prefix, &tls.Config{Certificates: []tls.Certificate{pki.server}}, srfake.WithAuth(basic))
		cfg := netConfig(nr.url + url)
		cfg.TLS.CAFile = pki.caFile
		cfg.Basic = &BasicAuth{User: "sluice", PasswordEnv: "SLUICE_TEST_SR_PASSWORD"}
		if err := lookup(t, nr, cfg); err != nil {
			t.Fatalf("url %s: %v", cfg.URL, err)
		}
		close(nr.paths)
		var n int
		for p := range nr.paths {
			n++
			if !strings.HasPrefix(p, prefix+"/") || strings.Contains(p, "//") {
				t.Errorf("url %s: request path %q is not under %s/", cfg.URL, p, prefix)
			}
		}
		if n != 2 {
			t.Errorf("url %s: %d requests, want 2 (schema by id, latest)", cfg.URL, n)
		}
	}
	// Without the prefix the same server has nothing at /schemas/ids/N:
	// not found, not a success by accident.
	nr := startNetRegistry(t, prefix, &tls.Config{Certificates: []tls.Certificate{pki.server}}, srfake.WithAuth(basic))
	cfg := netConfig(nr.srv.URL)
	cfg.TLS.CAFile = pki.caFile
	cfg.Basic = &BasicAuth{User: "sluice", PasswordEnv: "SLUICE_TEST_SR_PASSWORD"}
	if err := lookup(t, nr, cfg); !errors.Is(err, ErrNotFound) {
		t.Fatalf("without the prefix: err = %v, want not found", err)
	}
}
