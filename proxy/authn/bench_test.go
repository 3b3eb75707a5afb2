package authn_test

import (
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy/authn"
	"github.com/sluice-gw/sluice/proxy/authn/authntest"
)

// BenchmarkPLAIN is one PLAIN login against a bcrypt hash of minimum cost
// (cost 4; production hashes from HashPassword use cost 12, ~256x slower).
func BenchmarkPLAIN(b *testing.B) {
	f := newFixture(b, nil, alice)
	a := f.auth(b, "PLAIN")
	msg := []byte("\x00alice\x00alice-secret")
	b.ReportAllocs()
	for b.Loop() {
		s, _ := a.Start(authn.MechPlain, nil)
		if _, done, _, _, err := s.Step(msg); !done || err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSCRAMServer is the server's share of a SCRAM-SHA-256 login: both
// steps, the second with a wrong proof (the server does the same work for a
// right one; the client's PBKDF2 is not the server's cost).
func BenchmarkSCRAMServer(b *testing.B) {
	f := newFixture(b, nil, alice)
	a := f.auth(b, "SCRAM-SHA-256")
	b.ReportAllocs()
	for b.Loop() {
		s, _ := a.Start(authn.MechScramSHA256, nil)
		reply, _, _, _, err := s.Step([]byte("n,,n=alice,r=clientnonce0123456789"))
		if err != nil || len(reply) == 0 {
			b.Fatal(err)
		}
		// A wrong proof exercises the full verification path.
		nonce := string(reply[2:bytesIndex(reply, ',')])
		if _, _, _, _, err := s.Step([]byte("c=biws,r=" + nonce + ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")); err == nil {
			b.Fatal("zero proof accepted")
		}
	}
}

func bytesIndex(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return len(b)
}

func BenchmarkOAuthBearer(b *testing.B) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		b.Run(alg, func(b *testing.B) {
			iss, err := authntest.NewIssuer(testIssuer, alg, "k")
			if err != nil {
				b.Fatal(err)
			}
			f, _ := oauthFixture(b, nil, iss)
			a := f.auth(b, "OAUTHBEARER")
			msg := authntest.OAuthMessage(token(b, iss, "u", time.Hour, map[string]any{"org": "acme", "purpose": "x"}))
			b.ReportAllocs()
			for b.Loop() {
				s, _ := a.Start(authn.MechOAuthBearer, nil)
				if _, done, _, _, err := s.Step(msg); !done || err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkTLSPrincipal(b *testing.B) {
	pki, err := authntest.NewPKI(b.TempDir(), nil, authntest.CertSubject{Name: "c", URIs: []string{"spiffe://p/org/acme/user/u1"}})
	if err != nil {
		b.Fatal(err)
	}
	state, err := pki.VerifiedState("c")
	if err != nil {
		b.Fatal(err)
	}
	f := newFixture(b, func(c *authn.Config) {
		c.TLS = &authn.TLSMapping{From: "san_uri", Pattern: `^spiffe://p/org/(?P<org>[^/]+)/user/(?P<id>[^/]+)$`, OrgFrom: "pattern"}
	}, alice)
	a := f.auth(b, "mtls")
	b.ReportAllocs()
	for b.Loop() {
		if p, err := a.TLSPrincipal(state); err != nil || p.ID != "u1" {
			b.Fatal(err)
		}
	}
}
