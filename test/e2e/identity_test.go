package e2e

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestIdentityOAuthAndMTLS proves issue 3's enforcement for principals
// that come from a JWT (SASL OAUTHBEARER against a JWKS file) and from a
// client certificate (mTLS listener, CN = id, O = organisation), through
// the sluice binary running the example policy: the allowed partner
// produces to its inbound topic and consumes its granted topic in its own
// group; the restricted topic, a foreign group and everything for an
// unknown organisation are refused with Kafka's own errors, and metadata
// does not reveal what the principal may not describe.
func TestIdentityOAuthAndMTLS(t *testing.T) {
	t.Parallel()
	env := startIdentityEnv(t, true, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel) // the parallel subtests run after this function returns
	seeded := values(idGranted, 3)
	env.seed(ctx, t, idGranted, seeded...)
	env.seed(ctx, t, idSecret, values(idSecret, 2)...)

	// A group of another organisation exists (the admin used it), so
	// ListGroups has something to hide.
	admin := env.admin(t)
	t.Cleanup(admin.Close)
	rg := env.admin(t, kgo.ConsumeTopics(idGranted), kgo.ConsumerGroup("rival.readers"),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err := rg.CommitRecords(ctx, env.k.poll(ctx, t, rg, 3)...); err != nil {
		t.Fatalf("admin commit in rival.readers: %v", err)
	}
	rg.Close()
	if all := listGroups(ctx, t, admin); !slices.Contains(all, "rival.readers") {
		t.Fatalf("admin ListGroups %v lacks rival.readers: the fixture did not create it", all)
	}

	tlsClient := func(t *testing.T, name string) *kgoClient {
		cfg, err := env.pki.ClientTLSConfig(name)
		if err != nil {
			t.Fatal(err)
		}
		return &kgoClient{tls: cfg}
	}
	kinds := []struct {
		name            string
		allowed, denied func(t *testing.T, opts ...kgo.Opt) *kgo.Client
	}{
		{
			name: "oauthbearer",
			allowed: func(t *testing.T, opts ...kgo.Opt) *kgo.Client {
				tok := env.token(t, "oauth-partner", "e2e", time.Hour)
				return env.k.newClient(t, env.gw.Bootstrap, append([]kgo.Opt{kgo.SASL(oauthMech(func() string { return tok }, nil))}, opts...)...)
			},
			denied: func(t *testing.T, opts ...kgo.Opt) *kgo.Client {
				tok := env.token(t, "oauth-rival", "rival", time.Hour)
				return env.k.newClient(t, env.gw.Bootstrap, append([]kgo.Opt{kgo.SASL(oauthMech(func() string { return tok }, nil))}, opts...)...)
			},
		},
		{
			name: "mtls",
			allowed: func(t *testing.T, opts ...kgo.Opt) *kgo.Client {
				return tlsClient(t, "partner").newClient(t, env.mtls, opts...)
			},
			denied: func(t *testing.T, opts ...kgo.Opt) *kgo.Client {
				return tlsClient(t, "rival").newClient(t, env.mtls, opts...)
			},
		},
	}
	// Certificates that do not make a principal: none at all (the listener
	// requires one: the TLS handshake fails), and one without the
	// organisation the mapping needs (refused after the handshake, counted).
	t.Run("mtls/refused", func(t *testing.T) {
		t.Parallel()
		before := metricValue(t, env, `sluice_authn_failures_total{mechanism="mtls",reason="bad_certificate"}`)
		for _, name := range []string{"", "noorg"} {
			cl := tlsClient(t, name).newClient(t, env.mtls, kgo.RequestRetries(0))
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := kmsg.NewPtrMetadataRequest().RequestWith(rctx, cl)
			rcancel()
			cl.Close()
			if err == nil {
				t.Errorf("client certificate %q: metadata answered on the mTLS listener", name)
			}
		}
		if after := metricValue(t, env, `sluice_authn_failures_total{mechanism="mtls",reason="bad_certificate"}`); after <= before {
			t.Errorf("sluice_authn_failures_total{mechanism=\"mtls\",reason=\"bad_certificate\"} stayed at %v after a certificate without organisation", after)
		}
	})
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			group := "e2e." + kind.name
			t.Run("allowed", func(t *testing.T) {
				cl := kind.allowed(t, kgo.RequestRetries(2), kgo.RecordDeliveryTimeout(10*time.Second))
				defer cl.Close()
				if err := cl.ProduceSync(ctx, &kgo.Record{Topic: idInbound, Value: []byte(kind.name + "-in")}).FirstErr(); err != nil {
					t.Errorf("produce to own inbound topic: %v", err)
				}
				if err := cl.ProduceSync(ctx, &kgo.Record{Topic: idGranted, Value: []byte(kind.name + "-out")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
					t.Errorf("produce to read-only %s: %v, want TOPIC_AUTHORIZATION_FAILED", idGranted, err)
				}

				// Metadata: the listing hides the restricted topic; naming it
				// answers exactly like naming a topic that does not exist.
				all := metadataTopics(ctx, t, cl)
				if _, ok := all[idSecret]; ok {
					t.Errorf("all-topics metadata reveals %s: %v", idSecret, all)
				}
				for _, want := range []string{idInbound, idGranted} {
					if code, ok := all[want]; !ok || code != 0 {
						t.Errorf("all-topics metadata: %s missing or failed (%v): %v", want, code, all)
					}
				}
				named := metadataTopics(ctx, t, cl, idSecret, "no.such.topic", idGranted)
				for _, n := range []string{idSecret, "no.such.topic"} {
					if named[n] != kerr.TopicAuthorizationFailed.Code {
						t.Errorf("metadata naming %s: %v, want TOPIC_AUTHORIZATION_FAILED", n, kerr.ErrorForCode(named[n]))
					}
				}
				if named[idGranted] != 0 {
					t.Errorf("metadata naming %s: %v", idGranted, kerr.ErrorForCode(named[idGranted]))
				}

				// The granted topic in an own group.
				cons := kind.allowed(t, kgo.ConsumeTopics(idGranted), kgo.ConsumerGroup(group),
					kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
				recs := env.k.poll(ctx, t, cons, len(seeded))
				assertSameValues(t, recordValues(recs), seeded)
				if err := cons.CommitRecords(ctx, recs...); err != nil {
					t.Errorf("commit in own group: %v", err)
				}
				cons.Close()

				// The restricted topic: an error, no record.
				sec := kind.allowed(t, kgo.ConsumeTopics(idSecret), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
				got, errs := pollFor(ctx, sec, 5*time.Second, 1)
				sec.Close()
				if len(got) > 0 || !hasErr(errs, kerr.TopicAuthorizationFailed) {
					t.Errorf("consume %s: %d records, errors %v; want TOPIC_AUTHORIZATION_FAILED and none", idSecret, len(got), errs)
				}

				// A group that is not "<org>.*".
				fc := kmsg.NewPtrFindCoordinatorRequest()
				fc.CoordinatorKeys = []string{"rival.readers", group}
				fcr, err := fc.RequestWith(ctx, cl)
				if err != nil {
					t.Fatalf("FindCoordinator: %v", err)
				}
				codes := map[string]int16{}
				for _, c := range fcr.Coordinators {
					codes[c.Key] = c.ErrorCode
				}
				if codes["rival.readers"] != kerr.GroupAuthorizationFailed.Code || codes[group] != 0 {
					t.Errorf("FindCoordinator: rival.readers %v, %s %v; want GROUP_AUTHORIZATION_FAILED and no error",
						kerr.ErrorForCode(codes["rival.readers"]), group, kerr.ErrorForCode(codes[group]))
				}
				foreign := kind.allowed(t, kgo.ConsumeTopics(idGranted), kgo.ConsumerGroup("rival.readers"),
					kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
				got, errs = pollFor(ctx, foreign, 10*time.Second, 1)
				foreign.Close()
				if len(got) > 0 || !hasErr(errs, kerr.GroupAuthorizationFailed) {
					t.Errorf("consume in group rival.readers: %d records, errors %v; want GROUP_AUTHORIZATION_FAILED and none", len(got), errs)
				}

				// ListGroups shows the organisation's groups only.
				groups := listGroups(ctx, t, cl)
				if !slices.Contains(groups, group) || slices.ContainsFunc(groups, func(g string) bool { return !strings.HasPrefix(g, "e2e.") }) {
					t.Errorf("ListGroups: %v, want %s and only e2e.* groups", groups, group)
				}
			})
			t.Run("denied", func(t *testing.T) {
				cl := kind.denied(t, kgo.RequestRetries(2), kgo.RecordDeliveryTimeout(10*time.Second))
				defer cl.Close()
				if err := cl.ProduceSync(ctx, &kgo.Record{Topic: idInbound, Value: []byte(kind.name + "-rival")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
					t.Errorf("produce to %s: %v, want TOPIC_AUTHORIZATION_FAILED", idInbound, err)
				}
				if all := metadataTopics(ctx, t, cl); len(all) != 0 {
					t.Errorf("all-topics metadata for an unknown organisation lists %v", all)
				}
				cons := kind.denied(t, kgo.ConsumeTopics(idGranted), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
				got, errs := pollFor(ctx, cons, 5*time.Second, 1)
				cons.Close()
				if len(got) > 0 || !hasErr(errs, kerr.TopicAuthorizationFailed) {
					t.Errorf("consume %s: %d records, errors %v; want TOPIC_AUTHORIZATION_FAILED and none", idGranted, len(got), errs)
				}
				if groups := listGroups(ctx, t, cl); len(groups) != 0 {
					t.Errorf("ListGroups for an unknown organisation: %v", groups)
				}
			})
		})
	}
}

// TestIdentityOAuthSessionLifetime checks KIP-368 through the binary: the
// SaslAuthenticate answer to an OAUTHBEARER login carries a session
// lifetime no longer than the token has left, and franz-go, given
// short-lived tokens, re-authenticates on its open connections (it asks
// for a new token) while it keeps consuming, without reconnecting.
func TestIdentityOAuthSessionLifetime(t *testing.T) {
	t.Parallel()
	env := startIdentityEnv(t, false, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for _, ttl := range []time.Duration{time.Hour, 20 * time.Second} {
		rc := dialRaw(t, env.gw.Bootstrap)
		before := time.Now()
		ar := rc.saslLogin(t, "OAUTHBEARER", 2, []byte("n,,\x01auth=Bearer "+env.token(t, "oauth-partner", "e2e", ttl)+"\x01\x01"))
		if ar.ErrorCode != 0 {
			t.Fatalf("SaslAuthenticate: %v %v", kerr.ErrorForCode(ar.ErrorCode), ar.ErrorMessage)
		}
		// Token exp is whole seconds: at most ttl from now (plus the second
		// the issuer truncated), and not much less.
		lt := time.Duration(ar.SessionLifetimeMillis) * time.Millisecond
		if lt <= 0 || lt > ttl+time.Second || lt < ttl-5*time.Second-time.Since(before) {
			t.Errorf("token valid %v: SessionLifetimeMillis = %d, want about %v", ttl, ar.SessionLifetimeMillis, ttl)
		}
		rc.conn.Close()
	}

	// A client that does not re-authenticate: once the token's session is
	// over, its next request closes the connection (KIP-368, as Kafka).
	{
		rc := dialRaw(t, env.gw.Bootstrap)
		hs := kmsg.NewPtrSASLHandshakeRequest()
		hs.SetVersion(1)
		hs.Mechanism = "OAUTHBEARER"
		if _, err := rc.roundTrip(hs); err != nil {
			t.Fatal(err)
		}
		au := kmsg.NewPtrSASLAuthenticateRequest()
		au.SetVersion(2)
		au.SASLAuthBytes = []byte("n,,\x01auth=Bearer " + env.token(t, "oauth-partner", "e2e", 2*time.Second) + "\x01\x01")
		resp, err := rc.roundTrip(au)
		if err != nil || resp.(*kmsg.SASLAuthenticateResponse).ErrorCode != 0 {
			t.Fatalf("SaslAuthenticate: %v %+v", err, resp)
		}
		lt := time.Duration(resp.(*kmsg.SASLAuthenticateResponse).SessionLifetimeMillis) * time.Millisecond
		md := kmsg.NewPtrMetadataRequest()
		md.SetVersion(12)
		if _, err := rc.roundTrip(md); err != nil {
			t.Fatalf("metadata inside the session (lifetime %v): %v", lt, err)
		}
		time.Sleep(lt + 200*time.Millisecond)
		if _, err := rc.roundTrip(md); err == nil || !closed(err) {
			t.Errorf("metadata after the session lifetime (%v) ended: %v, want the connection closed", lt, err)
		}
	}

	// franz-go with 3s tokens: it must re-authenticate on the connection
	// before the session ends, and consuming goes on.
	env.seed(ctx, t, idGranted, "before-reauth")
	var tokens, connects atomic.Int64
	cl := env.k.newClient(t, env.gw.Bootstrap,
		kgo.SASL(oauthMech(func() string { return env.token(t, "oauth-partner", "e2e", 3*time.Second) }, &tokens)),
		kgo.WithHooks(connectHook{n: &connects, t: t}),
		kgo.ConsumeTopics(idGranted), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	if got := recordValues(env.k.poll(ctx, t, cl, 1)); got[0] != "before-reauth" {
		t.Fatalf("consumed %q", got)
	}
	t0 := tokens.Load()
	time.Sleep(5 * time.Second)
	env.seed(ctx, t, idGranted, "after-reauth")
	if got := recordValues(env.k.poll(ctx, t, cl, 1)); got[0] != "after-reauth" {
		t.Fatalf("consumed %q after re-authentication", got)
	}
	// Every connection authenticates once when it opens; more token
	// requests than connections means franz-go re-authenticated on open
	// connections (KIP-368), which it does only for a bounded session.
	// (franz-go may also reopen a fetch connection when it cancels a
	// fetch, so connections are counted, not required to stay the same.)
	if tok, conns := tokens.Load(), connects.Load(); tok <= t0 || tok <= conns {
		t.Errorf("franz-go did not re-authenticate in place within 5s of 3s tokens: %d token requests for %d connections", tok, conns)
	}
	if strings.Contains(env.gw.Logs(), "panic") {
		t.Errorf("gateway log mentions a panic")
	}
}

// connectHook counts franz-go's broker connections and disconnections.
type connectHook struct {
	n, closed *atomic.Int64
	t         *testing.T
}

func (h connectHook) OnBrokerConnect(m kgo.BrokerMetadata, _ time.Duration, c net.Conn, err error) {
	if err == nil {
		h.n.Add(1)
		h.t.Logf("%s franz-go connected to broker %d (%s)", time.Now().Format("15:04:05.000"), m.NodeID, c.LocalAddr())
	}
}

func (h connectHook) OnBrokerDisconnect(m kgo.BrokerMetadata, c net.Conn) {
	if h.closed != nil {
		h.closed.Add(1)
	}
	h.t.Logf("%s franz-go disconnected from broker %d (%s)", time.Now().Format("15:04:05.000"), m.NodeID, c.LocalAddr())
}
