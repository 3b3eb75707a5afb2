package authn_test

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy/authn"
	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/proxy/filter"
)

// FuzzSession feeds two arbitrary client messages to a session of each
// mechanism. Invariants: no panic; a failure is a *filter.AuthError with a
// reason from authn.Reasons and a message; SCRAM and OAUTHBEARER never
// succeed (the fuzzer cannot know the server nonce or forge a signature);
// PLAIN succeeds only with alice's password in the message.
func FuzzSession(f *testing.F) {
	rs, err := authntest.NewIssuer(testIssuer, "RS256", "k1")
	if err != nil {
		f.Fatal(err)
	}
	fx, _ := oauthFixture(f, nil, rs)
	// oauthFixture leaves no credentials file; add one for PLAIN/SCRAM.
	fx2 := newFixture(f, func(c *authn.Config) { c.OAuthBearer = nil }, alice)
	oa := fx.auth(f, "OAUTHBEARER")
	sa := fx2.auth(f, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
	tok := token(f, rs, "u", time.Hour, map[string]any{"org": "acme"})

	f.Add(byte(0), []byte("\x00alice\x00alice-secret"), []byte{})
	f.Add(byte(1), []byte("n,,n=alice,r=abc"), []byte("c=biws,r=abc,p=AAAA"))
	f.Add(byte(2), []byte("n,a=alice,n=alice,r=abc,ext=1"), []byte("c=biws,r=abcdef,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="))
	f.Add(byte(3), authntest.OAuthMessage(tok[:len(tok)-4]+"AAAA"), []byte("\x01"))
	f.Add(byte(3), []byte("n,,\x01auth=Bearer a.b.c\x01\x01"), []byte{})

	mechs := []string{authn.MechPlain, authn.MechScramSHA256, authn.MechScramSHA512, authn.MechOAuthBearer}
	f.Fuzz(func(t *testing.T, which byte, m1, m2 []byte) {
		mech := mechs[int(which)%len(mechs)]
		a := sa
		if mech == authn.MechOAuthBearer {
			a = oa
		}
		s, err := a.Start(mech, &filter.Conn{})
		if err != nil {
			t.Fatal(err)
		}
		for i, msg := range [][]byte{m1, m2} {
			_, done, p, lifetime, err := s.Step(msg)
			if err != nil {
				ae, ok := err.(*filter.AuthError)
				if !ok || !slices.Contains(authn.Reasons, ae.Reason) || ae.Message == "" {
					t.Fatalf("step %d: error %T %v is not a bounded AuthError", i, err, err)
				}
				if done || p != nil {
					t.Fatalf("step %d: error with done=%v p=%v", i, done, p)
				}
				return
			}
			if !done {
				if p != nil || lifetime != 0 {
					t.Fatalf("step %d: principal before done", i)
				}
				continue
			}
			if p == nil || p.ID == "" {
				t.Fatalf("step %d: done without principal", i)
			}
			if mech != authn.MechPlain || !bytes.Contains(msg, []byte("\x00alice-secret")) {
				t.Fatalf("%s authenticated %q with %q", mech, p.ID, msg)
			}
			// A finished session refuses further steps.
			if _, done, _, _, err := s.Step(msg); done || err == nil {
				t.Fatal("finished session stepped again")
			}
			return
		}
	})
}
