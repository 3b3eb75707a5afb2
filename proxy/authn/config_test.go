package authn_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-gw/sluice/proxy/authn"
	"github.com/sluice-gw/sluice/proxy/authn/authntest"
)

func TestDecodeConfig(t *testing.T) {
	cfg, err := authn.DecodeConfig([]byte(`
credentials_file: /etc/sluice/users.yaml
session_lifetime: 1h
oauthbearer:
  jwks_url: https://idp.example/jwks
  issuer: https://idp.example
  audience: sluice
  org_claim: org
  attribute_claims: {purpose: purpose}
tls:
  from: san_uri
  pattern: '^spiffe://x/(?P<org>[^/]+)/(?P<id>[^/]+)$'
  org_from: pattern
`))
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.OAuthBearer
	if cfg.ReloadInterval != 2*time.Second || cfg.SessionLifetime != time.Hour || o.PrincipalClaim != "sub" ||
		o.ClockSkew != 30*time.Second || len(o.Algorithms) != 3 || o.JWKSRefresh != 5*time.Minute {
		t.Fatalf("defaults not applied: %+v %+v", cfg, o)
	}
	if _, err := authn.DecodeConfig(nil); err != nil {
		t.Fatalf("empty config: %v", err)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	oauth := "oauthbearer: {jwks_file: j.json, issuer: i, audience: a, "
	for _, c := range []struct{ yaml, want string }{
		{"credentials_fil: x", "credentials_fil"},
		{"oauthbearer: {jwks_file: x, issuer: i, audience: a, extra: 1}", "extra"},
		{"session_lifetime: -1s", "session_lifetime"},
		{"session_lifetime: 10ms", "session_lifetime"},
		{"oauthbearer: {issuer: i, audience: a}", "oauthbearer.jwks_file"},
		{"oauthbearer: {jwks_file: x, jwks_url: https://a/b, issuer: i, audience: a}", "oauthbearer.jwks_url"},
		{"oauthbearer: {jwks_url: 'ftp://a/b', issuer: i, audience: a}", "oauthbearer.jwks_url"},
		{"oauthbearer: {jwks_file: x, audience: a}", "oauthbearer.issuer"},
		{"oauthbearer: {jwks_file: x, issuer: i}", "oauthbearer.audience"},
		{oauth + "algorithms: [none]}", "oauthbearer.algorithms"},
		{oauth + "algorithms: [HS256]}", "oauthbearer.algorithms"},
		{oauth + "clock_skew: 1h}", "oauthbearer.clock_skew"},
		{oauth + "org_claim: 'a..b'}", "oauthbearer.org_claim"},
		{oauth + "attribute_claims: {p: ''}}", "oauthbearer.attribute_claims.p"},
		{"tls: {}", "tls.from"},
		{"tls: {from: subject_sn}", "tls.from"},
		{"tls: {from: subject_cn, pattern: '('}", "tls.pattern"},
		{"tls: {from: subject_cn, org_from: email}", "tls.org_from"},
		{"tls: {from: subject_cn, org_from: pattern}", "tls.org_pattern"},
		{"tls: {from: subject_cn, org_from: pattern, org_pattern: 'abc'}", "tls.org_pattern"},
		{"tls: {from: subject_cn, org_pattern: '(a)'}", "tls.org_pattern"},
		{"max_concurrent_verifications: -1", "max_concurrent_verifications"},
	} {
		_, err := authn.DecodeConfig([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "authn: ") {
			t.Errorf("%s: err %v, want it to name %q", c.yaml, err, c.want)
		}
	}
}

func TestCredentialsFileErrors(t *testing.T) {
	good, err := authntest.Entry(alice)
	if err != nil {
		t.Fatal(err)
	}
	goodYAML, err := authn.MarshalCredentials(authn.CredentialsFile{Users: []authn.UserEntry{good}})
	if err != nil {
		t.Fatal(err)
	}
	g := strings.TrimPrefix(string(goodYAML), "users:\n")
	for _, c := range []struct{ name, body, want string }{
		{"empty", "", "empty file"},
		{"unknown key", "users:\n  - name: a\n    password: hunter2\n", "password"},
		{"clear password", "users:\n  - name: a\n    plain: hunter2\n", "kind prefix"},
		{"plain prefix", "users:\n  - name: a\n    plain: 'plain:hunter2'\n", "clear-text passwords are not accepted"},
		{"bad bcrypt", "users:\n  - name: a\n    plain: 'bcrypt:$2a$10$short'\n", "bcrypt"},
		{"argon too much memory", "users:\n  - name: a\n    plain: 'argon2id:$argon2id$v=19$m=9999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'\n", "m=9999999"},
		{"argon bad version", "users:\n  - name: a\n    plain: 'argon2id:$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'\n", "version"},
		{"argon short salt", "users:\n  - name: a\n    plain: 'argon2id:$argon2id$v=19$m=64,t=1,p=1$c2E$aGFzaGhhc2hoYXNoaGFzaA'\n", "salt"},
		{"no name", "users:\n  - plain: 'bcrypt:x'\n", "name: required"},
		{"no credential", "users:\n  - name: a\n", "no credential"},
		{"duplicate", "users:\n" + g + g, "duplicate"},
		{"scram few iterations", "users:\n  - name: a\n    scram_sha_256: {salt: c2FsdHNhbHQ=, iterations: 100, stored_key: x, server_key: y}\n", "scram_sha_256.iterations"},
		{"scram key size", "users:\n  - name: a\n    scram_sha_512: {salt: c2FsdHNhbHQ=, iterations: 4096, stored_key: " + good.ScramSHA256.StoredKey + ", server_key: " + good.ScramSHA256.ServerKey + "}\n", "scram_sha_512.stored_key"},
		{"control char in name", "users:\n  - name: \"a\\tb\"\n    plain: 'bcrypt:x'\n", "control"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users.yaml")
			if err := os.WriteFile(path, []byte(c.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := authn.New(authn.Config{CredentialsFile: path}, nil, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want it to mention %q", err, c.want)
			}
		})
	}
	if _, err := authn.New(authn.Config{CredentialsFile: "/nonexistent/users.yaml"}, nil, nil); err == nil {
		t.Fatal("missing credentials file accepted")
	}
}

func TestForListener(t *testing.T) {
	f := newFixture(t, nil, alice)
	for _, c := range []struct {
		mechs []string
		ok    bool
	}{
		{[]string{"PLAIN", "SCRAM-SHA-512"}, true},
		{[]string{"scram-sha-256"}, true},
		{nil, true},
		{[]string{"OAUTHBEARER"}, false}, // no oauthbearer section
		{[]string{"mtls"}, false},        // no tls section
		{[]string{"GSSAPI"}, false},
		{[]string{"PLAIN", "plain"}, false},
	} {
		_, err := f.p.ForListener(c.mechs)
		if (err == nil) != c.ok {
			t.Errorf("ForListener(%v) err %v", c.mechs, err)
		}
	}
	empty, err := authn.New(authn.DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	if empty.HasTLSMapping() {
		t.Error("HasTLSMapping true without a tls section")
	}
	if _, err := empty.ForListener([]string{"PLAIN"}); err == nil {
		t.Error("PLAIN without credentials_file accepted")
	}
}

// TestMetricsSharedAcrossProviders: a Provider rebuilt on config reload
// registers on the same registry without error and shares the counters.
func TestMetricsSharedAcrossProviders(t *testing.T) {
	reg := prometheus.NewRegistry()
	p1, err := authn.New(authn.DefaultConfig(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Close()
	p2, err := authn.New(authn.DefaultConfig(), nil, reg)
	if err != nil {
		t.Fatalf("second provider: %v", err)
	}
	p2.Close()
	p2.Close() // idempotent
}

func TestCredentialsReload(t *testing.T) {
	f := newFixture(t, nil, alice)
	a := f.auth(t, "PLAIN", "SCRAM-SHA-256")
	if _, _, err := drive(a, plainMech("", "alice", "alice-secret")); err != nil {
		t.Fatal(err)
	}
	// Change alice's password and add erin.
	alice2 := alice
	alice2.Password = "rotated"
	erin := authntest.User{Name: "erin", Password: "erin-pw", Org: "globex"}
	if err := authntest.WriteCredentials(f.credPath, alice2, erin); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "credentials reload", func() bool {
		_, _, err := drive(a, scramMech(authn.MechScramSHA256, "", "erin", "erin-pw"))
		return err == nil
	})
	if _, _, err := drive(a, plainMech("", "alice", "alice-secret")); reasonOf(err) != authn.ReasonBadPassword {
		t.Fatalf("old password after reload: %v", err)
	}
	if _, _, err := drive(a, plainMech("", "alice", "rotated")); err != nil {
		t.Fatalf("new password after reload: %v", err)
	}
	// A broken file is refused; the previous credentials keep serving.
	writeFile(t, f.credPath, []byte("users:\n  - name: mallory\n    plain: letmein\n"))
	waitFor(t, "failed reload counted", func() bool {
		return f.counter(t, "sluice_authn_reloads_total", map[string]string{"source": "credentials", "result": "failure"}) == 1
	})
	if _, _, err := drive(a, plainMech("", "erin", "erin-pw")); err != nil {
		t.Fatalf("after broken file: %v", err)
	}
	if err := f.p.ReloadCredentials(); err != nil {
		t.Fatalf("unchanged broken file reported again: %v", err)
	}
	// A deleted file also keeps the previous credentials.
	if err := os.Remove(f.credPath); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "missing file counted", func() bool {
		return f.counter(t, "sluice_authn_reloads_total", map[string]string{"source": "credentials", "result": "failure"}) == 2
	})
	if _, _, err := drive(a, plainMech("", "erin", "erin-pw")); err != nil {
		t.Fatalf("after deleted file: %v", err)
	}
	if got := f.counter(t, "sluice_authn_reloads_total", map[string]string{"source": "credentials", "result": "success"}); got != 1 {
		t.Fatalf("successful reloads %v, want 1", got)
	}
}

// TestSessionStartedBeforeReload: a SCRAM exchange keeps the credential it
// started with even if the file changes between its two steps.
func TestSessionStartedBeforeReload(t *testing.T) {
	f := newFixture(t, func(c *authn.Config) { c.ReloadInterval = time.Hour }, alice)
	a := f.auth(t, "SCRAM-SHA-256")
	cs, first, err := scramMech(authn.MechScramSHA256, "", "alice", "alice-secret").Authenticate(t.Context(), "h")
	if err != nil {
		t.Fatal(err)
	}
	ss, err := a.Start(authn.MechScramSHA256, nil)
	if err != nil {
		t.Fatal(err)
	}
	serverFirst, _, _, _, err := ss.Step(first)
	if err != nil {
		t.Fatal(err)
	}
	if err := authntest.WriteCredentials(f.credPath, bob); err != nil {
		t.Fatal(err)
	}
	if err := f.p.ReloadCredentials(); err != nil {
		t.Fatal(err)
	}
	_, final, err := cs.Challenge(serverFirst)
	if err != nil {
		t.Fatal(err)
	}
	if _, done, p, _, err := ss.Step(final); err != nil || !done || p.ID != "alice" {
		t.Fatalf("done %v p %v err %v", done, p, err)
	}
	if _, _, err := drive(a, scramMech(authn.MechScramSHA256, "", "alice", "alice-secret")); reasonOf(err) != authn.ReasonUnknownUser {
		t.Fatalf("alice after removal: %v", err)
	}
}
