package authn_test

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluice-gw/sluice/proxy/authn"
	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/proxy/filter"
)

func plainMech(zid, user, pass string) sasl.Mechanism {
	return plain.Auth{Zid: zid, User: user, Pass: pass}.AsMechanism()
}

func scramMech(mech, zid, user, pass string) sasl.Mechanism {
	a := scram.Auth{Zid: zid, User: user, Pass: pass}
	if mech == authn.MechScramSHA512 {
		return a.AsSha512Mechanism()
	}
	return a.AsSha256Mechanism()
}

// TestSASLWithFranzGoClients drives the server sessions with franz-go's
// client-side PLAIN and SCRAM mechanisms.
func TestSASLWithFranzGoClients(t *testing.T) {
	f := newFixture(t, nil, alice, bob, carol, dave)
	a := f.auth(t, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
	if got := a.Mechanisms(); !slices.Equal(got, []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}) {
		t.Fatalf("Mechanisms() = %v", got)
	}
	mechs := func(zid, user, pass string) map[string]sasl.Mechanism {
		return map[string]sasl.Mechanism{
			authn.MechPlain:       plainMech(zid, user, pass),
			authn.MechScramSHA256: scramMech(authn.MechScramSHA256, zid, user, pass),
			authn.MechScramSHA512: scramMech(authn.MechScramSHA512, zid, user, pass),
		}
	}
	type tc struct {
		name       string
		zid, user  string
		pass       string
		wantReason map[string]string // by mechanism; "" = success
	}
	all := func(r string) map[string]string {
		return map[string]string{authn.MechPlain: r, authn.MechScramSHA256: r, authn.MechScramSHA512: r}
	}
	cases := []tc{
		{"good", "", alice.Name, alice.Password, all("")},
		{"authzid equal to user", alice.Name, alice.Name, alice.Password, all("")},
		{"escaped name and non-ascii password", "", bob.Name, bob.Password, all("")},
		{"wrong password", "", alice.Name, "alice-secreT", map[string]string{
			authn.MechPlain: authn.ReasonBadPassword, authn.MechScramSHA256: authn.ReasonBadProof, authn.MechScramSHA512: authn.ReasonBadProof}},
		{"unknown user", "", "mallory", "whatever", all(authn.ReasonUnknownUser)},
		{"authzid other user", "bob", alice.Name, alice.Password, all(authn.ReasonBadAuthzid)},
		{"user without scram", "", carol.Name, carol.Password, map[string]string{
			authn.MechPlain: "", authn.MechScramSHA256: authn.ReasonUnknownUser, authn.MechScramSHA512: authn.ReasonUnknownUser}},
		{"user without plain", "", dave.Name, dave.Password, map[string]string{
			authn.MechPlain: authn.ReasonUnknownUser, authn.MechScramSHA256: "", authn.MechScramSHA512: ""}},
	}
	for _, c := range cases {
		for mechName, m := range mechs(c.zid, c.user, c.pass) {
			t.Run(c.name+"/"+mechName, func(t *testing.T) {
				p, lifetime, err := drive(a, m)
				want := c.wantReason[mechName]
				if want == "" {
					if err != nil {
						t.Fatalf("want success, got %v", err)
					}
					if p.ID != c.user || p.Mechanism != mechName || lifetime != 0 {
						t.Fatalf("principal %+v lifetime %v", p, lifetime)
					}
					return
				}
				if got := reasonOf(err); got != want {
					t.Fatalf("reason %q (err %v), want %q", got, err, want)
				}
			})
		}
	}
	if got := f.counter(t, "sluice_authn_failures_total", map[string]string{"mechanism": "SCRAM-SHA-256", "reason": "bad_proof"}); got != 1 {
		t.Errorf("bad_proof failures = %v, want 1", got)
	}
	if got := f.counter(t, "sluice_authn_attempts_total", map[string]string{"mechanism": "PLAIN", "result": "success"}); got != 4 {
		t.Errorf("PLAIN successes = %v, want 4", got)
	}
}

func TestPrincipalFromCredentials(t *testing.T) {
	f := newFixture(t, nil, alice)
	a := f.auth(t, "SCRAM-SHA-512")
	p, _, err := drive(a, scramMech(authn.MechScramSHA512, "", alice.Name, alice.Password))
	if err != nil {
		t.Fatal(err)
	}
	if p.Org != "acme" || !slices.Equal(p.Roles, []string{"partner"}) || p.Attributes["purpose"] != "analytics" {
		t.Fatalf("principal %+v", p)
	}
	// The principal is a copy: changing it does not change the next one.
	p.Roles[0] = "admin"
	p.Attributes["purpose"] = "x"
	p2, _, err := drive(a, scramMech(authn.MechScramSHA512, "", alice.Name, alice.Password))
	if err != nil {
		t.Fatal(err)
	}
	if p2.Roles[0] != "partner" || p2.Attributes["purpose"] != "analytics" {
		t.Fatalf("credentials store was modified through a principal: %+v", p2)
	}
}

func TestSessionLifetimeBound(t *testing.T) {
	f := newFixture(t, func(c *authn.Config) { c.SessionLifetime = time.Hour }, alice)
	_, lifetime, err := drive(f.auth(t, "PLAIN"), plainMech("", alice.Name, alice.Password))
	if err != nil {
		t.Fatal(err)
	}
	if lifetime != time.Hour {
		t.Fatalf("lifetime %v, want 1h", lifetime)
	}
}

func TestPasswordKinds(t *testing.T) {
	// A file with one argon2id and one bcrypt user, written the way an
	// operator would with HashPassword.
	argon, err := authn.HashPassword("argon-pass", authn.HashArgon2id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(argon, "argon2id:$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("argon2id hash %q", argon)
	}
	bc, err := authn.HashPasswordBcryptCost("bcrypt-pass", 4)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, nil, carol)
	body, err := authn.MarshalCredentials(authn.CredentialsFile{Users: []authn.UserEntry{
		{Name: "argon", Plain: argon}, {Name: "bc", Plain: bc},
	}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, f.credPath, body)
	if err := f.p.ReloadCredentials(); err != nil {
		t.Fatal(err)
	}
	a := f.auth(t, "PLAIN")
	for _, c := range []struct {
		user, pass, reason string
	}{
		{"argon", "argon-pass", ""},
		{"argon", "argon-pasS", authn.ReasonBadPassword},
		{"bc", "bcrypt-pass", ""},
		{"bc", "bcrypt-pas", authn.ReasonBadPassword},
		{"bc", strings.Repeat("x", 100), authn.ReasonBadPassword},
	} {
		_, _, err := drive(a, plainMech("", c.user, c.pass))
		if got := reasonOf(err); got != c.reason || (c.reason == "" && err != nil) {
			t.Errorf("%s/%s: reason %q err %v, want %q", c.user, c.pass, got, err, c.reason)
		}
	}
}

func TestHashPasswordErrors(t *testing.T) {
	for _, c := range []struct{ pw, kind string }{
		{"", "bcrypt"},
		{"x", "md5"},
		{"x", "plain"},
		{strings.Repeat("x", 73), "bcrypt"},
		{strings.Repeat("x", 2000), "argon2id"},
	} {
		if _, err := authn.HashPassword(c.pw, c.kind); err == nil || !strings.HasPrefix(err.Error(), "authn: ") {
			t.Errorf("HashPassword(len %d, %q) err = %v", len(c.pw), c.kind, err)
		}
	}
}

func TestNewSCRAMCredential(t *testing.T) {
	c, err := authn.NewSCRAMCredential(authn.MechScramSHA256, "pw", 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Iterations != authn.DefaultSCRAMIterations {
		t.Fatalf("iterations %d", c.Iterations)
	}
	if k, _ := base64.StdEncoding.DecodeString(c.StoredKey); len(k) != 32 {
		t.Fatalf("stored key len %d", len(k))
	}
	c2, err := authn.NewSCRAMCredential(authn.MechScramSHA256, "pw", 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Salt == c2.Salt || c.StoredKey == c2.StoredKey {
		t.Fatal("two credentials share a salt")
	}
	for _, bad := range []struct {
		mech  string
		pw    string
		iters int
	}{{"SCRAM-SHA-1", "pw", 4096}, {authn.MechScramSHA512, "", 4096}, {authn.MechScramSHA512, "pw", 4095}} {
		if _, err := authn.NewSCRAMCredential(bad.mech, bad.pw, bad.iters); err == nil {
			t.Errorf("NewSCRAMCredential(%q, %q, %d) accepted", bad.mech, bad.pw, bad.iters)
		}
	}
}

// TestSCRAMRawMessages feeds hand-written SCRAM messages that a conforming
// client would not send.
func TestSCRAMRawMessages(t *testing.T) {
	f := newFixture(t, nil, alice)
	a := f.auth(t, "SCRAM-SHA-256")
	start := func(t *testing.T) filter.Session {
		s, err := a.Start(authn.MechScramSHA256, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := func(t *testing.T, msg string) (filter.Session, string, error) {
		s := start(t)
		reply, done, _, _, err := s.Step([]byte(msg))
		if done {
			t.Fatal("done after client-first")
		}
		return s, string(reply), err
	}
	for _, c := range []struct{ name, msg, reason string }{
		{"channel binding p=", "p=tls-unique,,n=alice,r=abc", authn.ReasonChannelBinding},
		{"bad flag", "x,,n=alice,r=abc", authn.ReasonMalformed},
		{"mandatory ext", "n,,m=x,n=alice,r=abc", authn.ReasonMalformed},
		{"no nonce", "n,,n=alice", authn.ReasonMalformed},
		{"empty nonce", "n,,n=alice,r=", authn.ReasonMalformed},
		{"bad escape", "n,,n=al=2Xice,r=abc", authn.ReasonMalformed},
		{"trailing =", "n,,n=alice=,r=abc", authn.ReasonMalformed},
		{"short escape", "n,,n=alice=2,r=abc", authn.ReasonMalformed},
		{"bad authzid escape", "n,a=x=,n=alice,r=abc", authn.ReasonMalformed},
		{"authzid without a=", "n,alice,n=alice,r=abc", authn.ReasonMalformed},
		{"gs2 unterminated", "n,", authn.ReasonMalformed},
		{"tokenauth", "n,,n=alice,r=abc,tokenauth=true", authn.ReasonMalformed},
		{"empty", "", authn.ReasonMalformed},
		{"not utf8", "n,,n=\xff,r=abc", authn.ReasonMalformed},
		{"too long", "n,,n=alice,r=" + strings.Repeat("a", 5000), authn.ReasonMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := first(t, c.msg)
			if got := reasonOf(err); got != c.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, c.reason)
			}
		})
	}

	t.Run("server-first", func(t *testing.T) {
		_, reply, err := first(t, "n,,n=alice,r=clientnonce")
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(reply, ",")
		if len(parts) != 3 || !strings.HasPrefix(parts[0], "r=clientnonce") || len(parts[0]) < len("r=clientnonce")+20 ||
			!strings.HasPrefix(parts[1], "s=") || parts[2] != "i=4096" {
			t.Fatalf("server-first %q", reply)
		}
	})
	t.Run("unknown user looks like a known one", func(t *testing.T) {
		_, r1, err := first(t, "n,,n=nobody,r=n1")
		if err != nil {
			t.Fatal(err)
		}
		_, r2, err := first(t, "n,,n=nobody,r=n1")
		if err != nil {
			t.Fatal(err)
		}
		salt := func(r string) string { return strings.Split(r, ",")[1] }
		if salt(r1) != salt(r2) {
			t.Fatalf("decoy salt changes between attempts: %q vs %q", r1, r2)
		}
		// A second gateway instance on the same file shows the same salt.
		p2, err := authn.New(authn.Config{CredentialsFile: f.credPath}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p2.Close()
		a2, _ := p2.ForListener([]string{"SCRAM-SHA-256"})
		s2, _ := a2.Start(authn.MechScramSHA256, nil)
		r3, _, _, _, err := s2.Step([]byte("n,,n=nobody,r=n1"))
		if err != nil || salt(string(r3)) != salt(r1) {
			t.Fatalf("decoy salt differs between instances: %q vs %q (%v)", r3, r1, err)
		}
		// alice's credential has 4096 iterations; the decoy shows the same.
		if !strings.HasSuffix(r1, ",i=4096") {
			t.Fatalf("decoy iterations: %q", r1)
		}
	})
	for _, c := range []struct{ name, final, reason string }{
		{"cbind mismatch", "c=eSws,r=NONCE,p=" + strings.Repeat("A", 43) + "=", authn.ReasonChannelBinding},
		{"nonce mismatch", "c=biws,r=other,p=" + strings.Repeat("A", 43) + "=", authn.ReasonMalformed},
		{"no proof", "c=biws,r=NONCE", authn.ReasonMalformed},
		{"short proof", "c=biws,r=NONCE,p=AAAA", authn.ReasonMalformed},
		{"zero proof", "c=biws,r=NONCE,p=" + strings.Repeat("A", 43) + "=", authn.ReasonBadProof},
		{"proof not last", "c=biws,p=AAAA,r=NONCE", authn.ReasonMalformed},
	} {
		t.Run("final/"+c.name, func(t *testing.T) {
			s, reply, err := first(t, "n,,n=alice,r=cn")
			if err != nil {
				t.Fatal(err)
			}
			nonce := strings.TrimPrefix(strings.Split(reply, ",")[0], "r=")
			_, done, p, _, err := s.Step([]byte(strings.ReplaceAll(c.final, "NONCE", nonce)))
			if done || p != nil {
				t.Fatal("authenticated")
			}
			if got := reasonOf(err); got != c.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, c.reason)
			}
			// The session is over; another step is an error, not a panic.
			if _, _, _, _, err := s.Step([]byte("x")); reasonOf(err) != authn.ReasonMalformed {
				t.Fatalf("step after failure: %v", err)
			}
		})
	}
}

func TestPLAINRawMessages(t *testing.T) {
	f := newFixture(t, nil, alice)
	a := f.auth(t, "PLAIN")
	for _, c := range []struct{ name, msg, reason string }{
		{"no nul", "alice", authn.ReasonMalformed},
		{"one nul", "alice\x00pw", authn.ReasonMalformed},
		{"three nul", "\x00alice\x00pw\x00x", authn.ReasonMalformed},
		{"empty user", "\x00\x00pw", authn.ReasonMalformed},
		{"empty password", "\x00alice\x00", authn.ReasonMalformed},
		{"not utf8", "\x00alice\x00\xff", authn.ReasonMalformed},
		{"too long", "\x00alice\x00" + strings.Repeat("p", 3000), authn.ReasonMalformed},
		{"bad authzid", "bob\x00alice\x00alice-secret", authn.ReasonBadAuthzid},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := a.Start(authn.MechPlain, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, done, p, _, err := s.Step([]byte(c.msg))
			if done || p != nil || reasonOf(err) != c.reason {
				t.Fatalf("done %v p %v err %v, want reason %q", done, p, err, c.reason)
			}
		})
	}
	t.Run("success then step again", func(t *testing.T) {
		s, _ := a.Start(authn.MechPlain, nil)
		if _, done, _, _, err := s.Step([]byte("\x00alice\x00alice-secret")); !done || err != nil {
			t.Fatalf("done %v err %v", done, err)
		}
		if _, done, _, _, err := s.Step([]byte("\x00alice\x00alice-secret")); done || err == nil {
			t.Fatal("a finished session authenticated again")
		}
	})
	t.Run("messages do not reveal users", func(t *testing.T) {
		_, _, e1 := drive(a, plainMech("", "nobody", "x"))
		_, _, e2 := drive(a, plainMech("", alice.Name, "x"))
		if e1 == nil || e2 == nil || e1.Error() != e2.Error() {
			t.Fatalf("unknown user %q vs wrong password %q", e1, e2)
		}
	})
}

func TestStartUnsupportedMechanism(t *testing.T) {
	f := newFixture(t, nil, alice)
	a := f.auth(t, "PLAIN")
	for _, m := range []string{"SCRAM-SHA-256", "GSSAPI", "plain", "mtls", strings.Repeat("X", 1000)} {
		s, err := a.Start(m, nil)
		if s != nil || reasonOf(err) != authn.ReasonUnsupportedMechanism {
			t.Errorf("Start(%.20q) = %v, %v", m, s, err)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("error message of %d bytes", len(err.Error()))
		}
	}
	if got := f.counter(t, "sluice_authn_failures_total", map[string]string{"mechanism": "unknown", "reason": "unsupported_mechanism"}); got != 5 {
		t.Errorf("unsupported_mechanism failures = %v, want 5", got)
	}
}

// TestConcurrentLoginsDuringReload runs logins of every mechanism on several
// goroutines while the credentials file is rewritten (run with -race).
func TestConcurrentLoginsDuringReload(t *testing.T) {
	f := newFixture(t, nil, alice, bob)
	a := f.auth(t, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
	done := make(chan struct{})
	errs := make(chan error, 16)
	for g := range 4 {
		go func() {
			defer func() { errs <- nil }()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				var m sasl.Mechanism
				switch (g + i) % 3 {
				case 0:
					m = plainMech("", alice.Name, alice.Password)
				case 1:
					m = scramMech(authn.MechScramSHA256, "", alice.Name, alice.Password)
				default:
					m = scramMech(authn.MechScramSHA512, "", alice.Name, alice.Password)
				}
				if _, _, err := drive(a, m); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range 3 {
		// alice keeps her password; only bob changes.
		b := bob
		b.Password += "x"
		if err := authntest.WriteCredentials(f.credPath, alice, b); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(done)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
