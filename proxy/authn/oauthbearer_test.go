package authn_test

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sasl/oauth"

	"github.com/sluice-gw/sluice/proxy/authn"
	"github.com/sluice-gw/sluice/proxy/authn/authntest"
)

const (
	testIssuer   = "https://idp.example"
	testAudience = "sluice"
)

func newIssuer(t testing.TB, alg, kid string) *authntest.Issuer {
	t.Helper()
	i, err := authntest.NewIssuer(testIssuer, alg, kid)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func token(t testing.TB, i *authntest.Issuer, sub string, ttl time.Duration, extra map[string]any) string {
	t.Helper()
	tok, err := i.Token(sub, testAudience, ttl, extra)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// oauthFixture is a Provider with OAUTHBEARER over a JWKS file holding the
// given issuers' keys.
func oauthFixture(t testing.TB, mod func(*authn.OAuthBearerConfig), issuers ...*authntest.Issuer) (*fixture, string) {
	t.Helper()
	jwksPath := filepath.Join(t.TempDir(), "jwks.json")
	if err := authntest.WriteJWKS(jwksPath, issuers...); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *authn.Config) {
		o := authn.DefaultOAuthBearerConfig()
		o.JWKSFile = jwksPath
		o.Issuer = testIssuer
		o.Audience = testAudience
		o.OrgClaim = "org"
		o.RolesClaim = "realm_access.roles"
		o.AttributeClaims = map[string]string{"purpose": "purpose", "tier": "tier"}
		if mod != nil {
			mod(&o)
		}
		c.OAuthBearer = &o
		c.CredentialsFile = ""
	})
	return f, jwksPath
}

func TestOAuthBearer(t *testing.T) {
	rs := newIssuer(t, "RS256", "rs")
	es := newIssuer(t, "ES256", "es")
	ed := newIssuer(t, "EdDSA", "ed")
	ps := newIssuer(t, "PS256", "ps")
	es384 := newIssuer(t, "ES384", "es384")
	other := newIssuer(t, "RS256", "rs") // same kid as rs, different key
	f, _ := oauthFixture(t, nil, rs, es, ed, ps, es384)
	a := f.auth(t, "OAUTHBEARER")
	now := time.Now()
	org := map[string]any{"org": "acme"}
	with := func(m map[string]any) map[string]any {
		out := map[string]any{"org": "acme"}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	goodHeader := func(h map[string]any) string {
		tok, err := rs.SignHeader(h, map[string]any{"iss": testIssuer, "aud": testAudience, "sub": "u", "org": "acme", "exp": now.Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for _, c := range []struct {
		name   string
		tok    string
		reason string
	}{
		{"RS256", token(t, rs, "u1", time.Hour, org), ""},
		{"ES256", token(t, es, "u1", time.Hour, org), ""},
		{"EdDSA", token(t, ed, "u1", time.Hour, org), ""},
		{"PS256 not in default set", token(t, ps, "u1", time.Hour, org), authn.ReasonBadAlgorithm},
		{"ES384 not in default set", token(t, es384, "u1", time.Hour, org), authn.ReasonBadAlgorithm},
		{"expired", token(t, rs, "u1", -time.Hour, org), authn.ReasonExpired},
		{"expired within skew", token(t, rs, "u1", -10*time.Second, org), ""},
		{"not yet valid", token(t, rs, "u1", time.Hour, with(map[string]any{"nbf": now.Add(time.Hour).Unix()})), authn.ReasonNotYetValid},
		{"issued in the future", token(t, rs, "u1", 2*time.Hour, with(map[string]any{"iat": now.Add(time.Hour).Unix()})), authn.ReasonNotYetValid},
		{"wrong key same kid", token(t, other, "u1", time.Hour, org), authn.ReasonBadSignature},
		{"unknown kid", goodHeader(map[string]any{"alg": "RS256", "kid": "nope"}), authn.ReasonBadSignature},
		{"no kid", goodHeader(map[string]any{"alg": "RS256"}), ""},
		{"alg swapped to ES256", goodHeader(map[string]any{"alg": "ES256", "kid": "rs"}), authn.ReasonBadSignature},
		{"alg HS256", goodHeader(map[string]any{"alg": "HS256", "kid": "rs"}), authn.ReasonBadAlgorithm},
		{"crit header", goodHeader(map[string]any{"alg": "RS256", "kid": "rs", "crit": []string{"exp"}}), authn.ReasonMalformed},
		{"alg none", authntest.UnsignedToken(map[string]any{"iss": testIssuer, "aud": testAudience, "sub": "u", "org": "acme", "exp": now.Add(time.Hour).Unix()}), authn.ReasonBadAlgorithm},
		{"wrong issuer", token(t, rs, "u1", time.Hour, with(map[string]any{"iss": "https://evil.example"})), authn.ReasonBadIssuer},
		{"no issuer", token(t, rs, "u1", time.Hour, with(map[string]any{"iss": nil})), authn.ReasonBadIssuer},
		{"wrong audience", func() string {
			tok, err := rs.Token("u", "kafka-other", time.Hour, org)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}(), authn.ReasonBadAudience},
		{"audience list", token(t, rs, "u1", time.Hour, with(map[string]any{"aud": []string{"x", testAudience}})), ""},
		{"no exp", token(t, rs, "u1", time.Hour, with(map[string]any{"exp": nil})), authn.ReasonBadClaims},
		{"exp string", token(t, rs, "u1", time.Hour, with(map[string]any{"exp": "tomorrow"})), authn.ReasonBadClaims},
		{"no sub", token(t, rs, "u1", time.Hour, with(map[string]any{"sub": nil})), authn.ReasonBadClaims},
		{"sub not string", token(t, rs, "u1", time.Hour, with(map[string]any{"sub": 42})), authn.ReasonBadClaims},
		{"no org", token(t, rs, "u1", time.Hour, nil), authn.ReasonBadClaims},
		{"roles wrong type", token(t, rs, "u1", time.Hour, with(map[string]any{"realm_access": map[string]any{"roles": 5}})), authn.ReasonBadClaims},
		{"tampered payload", func() string {
			tok := token(t, rs, "u1", time.Hour, org)
			parts := strings.Split(tok, ".")
			other := strings.Split(token(t, rs, "admin", time.Hour, org), ".")
			return parts[0] + "." + other[1] + "." + parts[2]
		}(), authn.ReasonBadSignature},
		{"not a jwt", "abc", authn.ReasonMalformed},
		{"bad base64", "a.b!.c", authn.ReasonMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, lifetime, err := drive(a, oauth.Auth{Token: c.tok}.AsMechanism())
			if c.reason == "" {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				if p.ID != "u1" && p.ID != "u" || p.Mechanism != "OAUTHBEARER" || p.Org != "acme" {
					t.Fatalf("principal %+v", p)
				}
				if lifetime <= 0 || lifetime > time.Hour {
					t.Fatalf("lifetime %v", lifetime)
				}
				return
			}
			if got := reasonOf(err); got != c.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, c.reason)
			}
		})
	}
	if got := f.counter(t, "sluice_authn_failures_total", map[string]string{"mechanism": "OAUTHBEARER", "reason": "expired"}); got != 1 {
		t.Errorf("expired failures = %v, want 1", got)
	}
}

func TestOAuthBearerClaimMapping(t *testing.T) {
	rs := newIssuer(t, "RS256", "k1")
	f, _ := oauthFixture(t, func(o *authn.OAuthBearerConfig) {
		o.PrincipalClaim = "preferred_username"
	}, rs)
	a := f.auth(t, "oauthbearer")
	exp := time.Now().Add(30 * time.Minute).Truncate(time.Second)
	tok := token(t, rs, "uuid-1", time.Hour, map[string]any{
		"preferred_username": "acme-analyst",
		"org":                "acme",
		"realm_access":       map[string]any{"roles": []string{"partner", "reader"}},
		"purpose":            []string{"analytics", "billing"},
		"tier":               3,
		"exp":                exp.Unix(),
	})
	p, lifetime, err := drive(a, oauth.Auth{Token: tok, Zid: "acme-analyst", Extensions: map[string]string{"traceid": "abc"}}.AsMechanism())
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != "acme-analyst" || p.Org != "acme" || !slices.Equal(p.Roles, []string{"partner", "reader"}) ||
		p.Attributes["purpose"] != "analytics,billing" || p.Attributes["tier"] != "3" || !p.Expires.Equal(exp) {
		t.Fatalf("principal %+v", p)
	}
	// Session lifetime is the time left on the token (KIP-368).
	if lifetime > 30*time.Minute || lifetime < 29*time.Minute {
		t.Fatalf("lifetime %v, want about 30m", lifetime)
	}
	// Space-separated roles (OAuth "scope" style) work too.
	tok = token(t, rs, "x", time.Hour, map[string]any{"preferred_username": "u", "org": "acme", "realm_access": map[string]any{"roles": "a b"}})
	if p, _, err = drive(a, oauth.Auth{Token: tok}.AsMechanism()); err != nil || !slices.Equal(p.Roles, []string{"a", "b"}) {
		t.Fatalf("roles %v err %v", p, err)
	}
	// An authzid naming someone else is refused.
	if _, _, err = drive(a, oauth.Auth{Token: tok, Zid: "admin"}.AsMechanism()); reasonOf(err) != authn.ReasonBadAuthzid {
		t.Fatalf("authzid: %v", err)
	}
}

func TestOAuthBearerLifetimeCapAndClock(t *testing.T) {
	rs := newIssuer(t, "RS256", "k1")
	f, _ := oauthFixture(t, nil, rs)
	a := f.auth(t, "OAUTHBEARER")
	tok := token(t, rs, "u", 2*time.Hour, map[string]any{"org": "acme"})
	// A clock three hours ahead sees the token as expired.
	authn.SetNow(f.p, func() time.Time { return time.Now().Add(3 * time.Hour) })
	if _, _, err := drive(a, oauth.Auth{Token: tok}.AsMechanism()); reasonOf(err) != authn.ReasonExpired {
		t.Fatalf("want expired, got %v", err)
	}
	// Just past expiry but inside the skew: accepted with a 1s lifetime.
	authn.SetNow(f.p, func() time.Time { return time.Now().Add(2*time.Hour + 10*time.Second) })
	if _, lt, err := drive(a, oauth.Auth{Token: tok}.AsMechanism()); err != nil || lt != time.Second {
		t.Fatalf("lifetime %v err %v", lt, err)
	}
	authn.SetNow(f.p, time.Now)

	capped := newFixture(t, func(c *authn.Config) {
		c.SessionLifetime = 10 * time.Minute
		o := authn.DefaultOAuthBearerConfig()
		o.JWKSFile = filepath.Join(t.TempDir(), "jwks.json")
		if err := authntest.WriteJWKS(o.JWKSFile, rs); err != nil {
			t.Fatal(err)
		}
		o.Issuer, o.Audience = testIssuer, testAudience
		c.OAuthBearer = &o
	}, alice)
	if _, lt, err := drive(capped.auth(t, "OAUTHBEARER"), oauth.Auth{Token: tok}.AsMechanism()); err != nil || lt != 10*time.Minute {
		t.Fatalf("capped lifetime %v err %v", lt, err)
	}
}

func TestOAuthBearerRawMessages(t *testing.T) {
	rs := newIssuer(t, "RS256", "k1")
	f, _ := oauthFixture(t, nil, rs)
	a := f.auth(t, "OAUTHBEARER")
	tok := token(t, rs, "u", time.Hour, map[string]any{"org": "acme"})
	for _, c := range []struct{ name, msg, reason string }{
		{"ok", "n,,\x01auth=Bearer " + tok + "\x01\x01", ""},
		{"lower-case scheme", "n,,\x01auth=bearer " + tok + "\x01\x01", ""},
		{"extensions", "n,,\x01host=x\x01auth=Bearer " + tok + "\x01port=1\x01\x01", ""},
		{"abort", "\x01", authn.ReasonMalformed},
		{"channel binding", "p=tls-unique,,\x01auth=Bearer " + tok + "\x01\x01", authn.ReasonChannelBinding},
		{"no auth", "n,,\x01host=x\x01\x01", authn.ReasonMalformed},
		{"duplicate auth", "n,,\x01auth=Bearer " + tok + "\x01auth=Bearer x\x01\x01", authn.ReasonMalformed},
		{"basic scheme", "n,,\x01auth=Basic Zm9vOmJhcg==\x01\x01", authn.ReasonMalformed},
		{"missing terminator", "n,,\x01auth=Bearer " + tok + "\x01", authn.ReasonMalformed},
		{"bad key", "n,,\x01au th=x\x01auth=Bearer " + tok + "\x01\x01", authn.ReasonMalformed},
		{"control char", "n,,\x01auth=Bearer " + tok + "\x00\x01\x01", authn.ReasonMalformed},
		{"empty", "", authn.ReasonMalformed},
		{"huge", "n,,\x01auth=Bearer " + strings.Repeat("a", 70000) + "\x01\x01", authn.ReasonMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := a.Start("OAUTHBEARER", nil)
			if err != nil {
				t.Fatal(err)
			}
			reply, done, p, _, err := s.Step([]byte(c.msg))
			if c.reason == "" {
				if err != nil || !done || p == nil || len(reply) != 0 {
					t.Fatalf("reply %q done %v p %v err %v", reply, done, p, err)
				}
				return
			}
			if done || reasonOf(err) != c.reason {
				t.Fatalf("done %v err %v, want %q", done, err, c.reason)
			}
		})
	}
}

func TestJWKSFileReload(t *testing.T) {
	old := newIssuer(t, "ES256", "2025")
	next := newIssuer(t, "EdDSA", "2026")
	f, jwksPath := oauthFixture(t, nil, old)
	a := f.auth(t, "OAUTHBEARER")
	oldTok := token(t, old, "u", time.Hour, map[string]any{"org": "acme"})
	newTok := token(t, next, "u", time.Hour, map[string]any{"org": "acme"})
	if _, _, err := drive(a, oauth.Auth{Token: oldTok}.AsMechanism()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := drive(a, oauth.Auth{Token: newTok}.AsMechanism()); reasonOf(err) != authn.ReasonBadSignature {
		t.Fatalf("new key before rotation: %v", err)
	}
	// Rotate: publish only the new key.
	if err := authntest.WriteJWKS(jwksPath, next); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "JWKS reload", func() bool {
		_, _, err := drive(a, oauth.Auth{Token: newTok}.AsMechanism())
		return err == nil
	})
	if _, _, err := drive(a, oauth.Auth{Token: oldTok}.AsMechanism()); reasonOf(err) != authn.ReasonBadSignature {
		t.Fatalf("old key after rotation: %v", err)
	}
	// A broken JWKS keeps the current keys.
	writeFile(t, jwksPath, []byte(`{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}`))
	waitFor(t, "failed reload counted", func() bool {
		return f.counter(t, "sluice_authn_reloads_total", map[string]string{"source": "jwks", "result": "failure"}) == 1
	})
	if _, _, err := drive(a, oauth.Auth{Token: newTok}.AsMechanism()); err != nil {
		t.Fatalf("after broken JWKS: %v", err)
	}
}

func TestJWKSURL(t *testing.T) {
	k1 := newIssuer(t, "RS256", "k1")
	k2 := newIssuer(t, "ES256", "k2")
	var current atomic.Pointer[[]byte]
	set := func(b []byte) { current.Store(&b) }
	set(authntest.JWKS(k1))
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(*current.Load())
	}))
	defer srv.Close()
	f := newFixture(t, func(c *authn.Config) {
		o := authn.DefaultOAuthBearerConfig()
		o.JWKSURL = srv.URL + "/jwks"
		o.JWKSRefresh = time.Hour
		o.JWKSMinRefresh = time.Millisecond
		o.Issuer, o.Audience = testIssuer, testAudience
		c.OAuthBearer = &o
		c.CredentialsFile = ""
	})
	a := f.auth(t, "OAUTHBEARER")
	if _, _, err := drive(a, oauth.Auth{Token: token(t, k1, "u", time.Hour, nil)}.AsMechanism()); err != nil {
		t.Fatal(err)
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches at start, want 1", n)
	}
	// The IdP rotates to k2: a token with the unknown kid triggers a
	// refetch and succeeds.
	set(authntest.JWKS(k1, k2))
	time.Sleep(5 * time.Millisecond)
	if _, _, err := drive(a, oauth.Auth{Token: token(t, k2, "u", time.Hour, nil)}.AsMechanism()); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after rotation, want 2", n)
	}
}

func TestJWKSURLUnavailable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	k1 := newIssuer(t, "RS256", "k1")
	f := newFixture(t, func(c *authn.Config) {
		o := authn.DefaultOAuthBearerConfig()
		o.JWKSURL = srv.URL
		o.Issuer, o.Audience = testIssuer, testAudience
		c.OAuthBearer = &o
		c.CredentialsFile = ""
	})
	_, _, err := drive(f.auth(t, "OAUTHBEARER"), oauth.Auth{Token: token(t, k1, "u", time.Hour, nil)}.AsMechanism())
	if reasonOf(err) != authn.ReasonUnavailable {
		t.Fatalf("want unavailable, got %v", err)
	}
	if got := f.counter(t, "sluice_authn_reloads_total", map[string]string{"source": "jwks", "result": "failure"}); got < 1 {
		t.Fatalf("jwks failures %v", got)
	}
}

func TestOAuthBearerConfiguredAlgorithms(t *testing.T) {
	ps := newIssuer(t, "PS256", "ps")
	es := newIssuer(t, "ES384", "es")
	ed := newIssuer(t, "EdDSA", "ed")
	f, _ := oauthFixture(t, func(o *authn.OAuthBearerConfig) { o.Algorithms = []string{"PS256", "ES384"} }, ps, es, ed)
	a := f.auth(t, "OAUTHBEARER")
	for _, c := range []struct {
		iss    *authntest.Issuer
		reason string
	}{{ps, ""}, {es, ""}, {ed, authn.ReasonBadAlgorithm}} {
		_, _, err := drive(a, oauth.Auth{Token: token(t, c.iss, "u", time.Hour, map[string]any{"org": "acme"})}.AsMechanism())
		if reasonOf(err) != c.reason || (c.reason == "" && err != nil) {
			t.Errorf("%s: %v, want %q", c.iss.Alg, err, c.reason)
		}
	}
}
