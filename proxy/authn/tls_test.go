package authn_test

import (
	"crypto/tls"
	"slices"
	"testing"

	"github.com/sluice-gw/sluice/proxy/authn"
	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/proxy/filter"
)

func TestTLSPrincipalMapping(t *testing.T) {
	pki, err := authntest.NewPKI(t.TempDir(), nil,
		authntest.CertSubject{Name: "acme", CommonName: "acme-analyst", Organization: []string{"acme"}, OrganizationalUnit: []string{"partners"}},
		authntest.CertSubject{Name: "spiffe", CommonName: "ignored", URIs: []string{"spiffe://partners.example/org/globex/user/globex-analyst"}},
		authntest.CertSubject{Name: "dns", DNSNames: []string{"other.example", "svc1.acme.partners.example"}},
		authntest.CertSubject{Name: "mail", Emails: []string{"auditor@sluice.example"}, Organization: []string{"sluice"}},
		authntest.CertSubject{Name: "noorg", CommonName: "lonely"},
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		mapping authn.TLSMapping
		cert    string
		wantID  string
		wantOrg string
		reason  string
	}{
		{"cn and O", authn.TLSMapping{From: "subject_cn", OrgFrom: "subject_o"}, "acme", "acme-analyst", "acme", ""},
		{"cn and OU", authn.TLSMapping{From: "subject_cn", OrgFrom: "subject_ou"}, "acme", "acme-analyst", "partners", ""},
		{"subject DN", authn.TLSMapping{From: "subject"}, "acme", "CN=acme-analyst,OU=partners,O=acme", "", ""},
		{"san uri named groups", authn.TLSMapping{From: "san_uri", Pattern: `^spiffe://partners\.example/org/(?P<org>[^/]+)/user/(?P<id>[^/]+)$`, OrgFrom: "pattern"}, "spiffe", "globex-analyst", "globex", ""},
		{"san dns first match wins", authn.TLSMapping{From: "san_dns", Pattern: `^([^.]+)\.acme\.partners\.example$`, OrgFrom: "pattern", OrgPattern: `\.([^.]+)\.partners\.`}, "dns", "svc1", "acme", ""},
		{"san email", authn.TLSMapping{From: "san_email", Pattern: `^([^@]+)@`, OrgFrom: "subject_o", Roles: []string{"auditor"}}, "mail", "auditor", "sluice", ""},
		{"pattern does not match", authn.TLSMapping{From: "subject_cn", Pattern: `^svc-(.+)$`}, "acme", "", "", authn.ReasonBadCertificate},
		{"no such SAN", authn.TLSMapping{From: "san_uri"}, "acme", "", "", authn.ReasonBadCertificate},
		{"org required but absent", authn.TLSMapping{From: "subject_cn", OrgFrom: "subject_o"}, "noorg", "", "", authn.ReasonBadCertificate},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := c.mapping
			f := newFixture(t, func(cfg *authn.Config) { cfg.TLS = &m; cfg.CredentialsFile = "" })
			a := f.auth(t, "mtls")
			if len(a.Mechanisms()) != 0 {
				t.Fatalf("mtls listed as a SASL mechanism: %v", a.Mechanisms())
			}
			state, err := pki.VerifiedState(c.cert)
			if err != nil {
				t.Fatal(err)
			}
			p, err := a.TLSPrincipal(state)
			if c.reason != "" {
				if p != nil || reasonOf(err) != c.reason {
					t.Fatalf("p %+v err %v, want %q", p, err, c.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.ID != c.wantID || p.Org != c.wantOrg || p.Mechanism != "mtls" || p.Attributes["tls_fingerprint_sha256"] == "" || p.Expires.IsZero() {
				t.Fatalf("principal %+v", p)
			}
			if !slices.Equal(p.Roles, m.Roles) {
				t.Fatalf("roles %v, want %v", p.Roles, m.Roles)
			}
		})
	}
}

func TestTLSPrincipalUnverifiedAndOff(t *testing.T) {
	pki, err := authntest.NewPKI(t.TempDir(), nil, authntest.CertSubject{Name: "c", CommonName: "c"})
	if err != nil {
		t.Fatal(err)
	}
	state, err := pki.VerifiedState("c")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(cfg *authn.Config) { cfg.TLS = &authn.TLSMapping{From: "subject_cn"} }, alice)
	if !f.p.HasTLSMapping() {
		t.Fatal("HasTLSMapping false with a tls section")
	}
	a := f.auth(t, "mtls", "PLAIN")
	unverified := state
	unverified.VerifiedChains = nil
	if p, err := a.TLSPrincipal(unverified); p != nil || reasonOf(err) != authn.ReasonBadCertificate {
		t.Fatalf("unverified certificate: %v %v", p, err)
	}
	if p, err := a.TLSPrincipal(tls.ConnectionState{}); p != nil || err != nil {
		t.Fatalf("no certificate: %v %v", p, err)
	}
	// A listener without mtls ignores certificates.
	if p, err := f.auth(t, "PLAIN").TLSPrincipal(state); p != nil || err != nil {
		t.Fatalf("listener without mtls: %v %v", p, err)
	}
	if got := f.counter(t, "sluice_authn_failures_total", map[string]string{"mechanism": "mtls", "reason": "bad_certificate"}); got != 1 {
		t.Fatalf("bad_certificate failures %v", got)
	}
}

// TestTLSHandshake maps a principal from a real mTLS handshake with the
// authntest configs.
func TestTLSHandshake(t *testing.T) {
	pki, err := authntest.NewPKI(t.TempDir(), nil, authntest.CertSubject{Name: "acme", CommonName: "acme-analyst", Organization: []string{"acme"}})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(cfg *authn.Config) {
		cfg.TLS = &authn.TLSMapping{From: "subject_cn", OrgFrom: "subject_o"}
		cfg.CredentialsFile = ""
	})
	a := f.auth(t, "mtls")
	srvCfg, err := pki.ServerTLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	cliCfg, err := pki.ClientTLSConfig("acme")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		p   *filter.Principal
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			res <- result{err: err}
			return
		}
		p, err := a.TLSPrincipal(tc.ConnectionState())
		res <- result{p, err}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.p == nil || r.p.ID != "acme-analyst" || r.p.Org != "acme" {
		t.Fatalf("principal %+v", r.p)
	}
}
