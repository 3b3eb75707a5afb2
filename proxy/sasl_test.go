package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"go.uber.org/zap/zaptest"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// plainAuth is a minimal PLAIN authenticator for the proxy's SASL state
// machine tests: user "alice" with password "secret", and a lifetime.
type plainAuth struct{ lifetime time.Duration }

func (plainAuth) Mechanisms() []string { return []string{"PLAIN"} }

func (a plainAuth) Start(mech string, _ *filter.Conn) (filter.Session, error) {
	if mech != "PLAIN" {
		return nil, errors.New("mechanism not enabled")
	}
	return plainSession{a.lifetime}, nil
}

func (plainAuth) TLSPrincipal(tls.ConnectionState) (*filter.Principal, error) { return nil, nil }

type plainSession struct{ lifetime time.Duration }

func (s plainSession) Step(msg []byte) ([]byte, bool, *filter.Principal, time.Duration, error) {
	parts := strings.Split(string(msg), "\x00")
	if len(parts) != 3 || parts[2] != "secret" {
		return nil, false, nil, 0, &filter.AuthError{Reason: "bad_password", Message: "invalid credentials"}
	}
	return nil, true, &filter.Principal{ID: parts[1], Mechanism: "PLAIN"}, s.lifetime, nil
}

type authEvent struct {
	mech string
	p    *filter.Principal
	err  error
}

func newSASLEnv(t *testing.T, lifetime time.Duration) (string, chan authEvent) {
	t.Helper()
	return newSASLEnvWith(t, lifetime, nil)
}

func newSASLEnvWith(t *testing.T, lifetime time.Duration, edit func(*Config)) (string, chan authEvent) {
	t.Helper()
	kf, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	zero := 0
	cfg.BrokerPortBase = &zero
	cfg.Listeners = []ListenerConfig{{SASL: []string{"PLAIN"}}}
	cfg.Upstream.Brokers = kf.ListenAddrs()
	if edit != nil {
		edit(&cfg)
	}
	events := make(chan authEvent, 64)
	srv, err := New(Options{Config: cfg, Logger: zaptest.NewLogger(t), Registerer: prometheus.NewRegistry(),
		Authenticator: func(ListenerConfig) (filter.Authenticator, error) { return plainAuth{lifetime}, nil },
		OnAuth: func(_ *filter.Conn, mech string, p *filter.Principal, err error) {
			events <- authEvent{mech, p, err}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return srv.Addrs()["default"], events
}

// wantAuthFailure waits for the next authentication event and fails the
// test unless it is a failure with reason.
func wantAuthFailure(t *testing.T, events chan authEvent, reason, what string) {
	t.Helper()
	select {
	case ev := <-events:
		var ae *filter.AuthError
		if !errors.As(ev.err, &ae) || ae.Reason != reason {
			t.Fatalf("%s: auth event %+v, want reason %s", what, ev, reason)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no authentication failure reported", what)
	}
}

// rawClient speaks hand-made frames to the gateway.
type rawClient struct {
	t *testing.T
	c net.Conn
	f *kmsg.RequestFormatter
}

func dialRaw(t *testing.T, addr string) *rawClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawClient{t: t, c: c, f: kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw"))}
}

func (r *rawClient) send(req kmsg.Request) {
	if _, err := r.c.Write(r.f.AppendRequest(nil, req, 1)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) recv(resp kmsg.Response) error {
	var sz [4]byte
	if _, err := io.ReadFull(r.c, sz[:]); err != nil {
		return err
	}
	b := make([]byte, binary.BigEndian.Uint32(sz[:]))
	if _, err := io.ReadFull(r.c, b); err != nil {
		return err
	}
	off, err := responseBodyOffset(b, resp.Key(), resp.GetVersion())
	if err != nil {
		return err
	}
	return resp.ReadFrom(b[off:])
}

func (r *rawClient) closed() bool {
	_ = r.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := r.c.Read(make([]byte, 1))
	return err != nil
}

func handshake(r *rawClient, version int16, mech string) *kmsg.SASLHandshakeResponse {
	req := kmsg.NewPtrSASLHandshakeRequest()
	req.SetVersion(version)
	req.Mechanism = mech
	r.send(req)
	resp := kmsg.NewPtrSASLHandshakeResponse()
	resp.SetVersion(version)
	if err := r.recv(resp); err != nil {
		r.t.Fatalf("handshake: %v", err)
	}
	return resp
}

func authenticate(r *rawClient, msg string) (*kmsg.SASLAuthenticateResponse, error) {
	req := kmsg.NewPtrSASLAuthenticateRequest()
	req.SetVersion(1)
	req.SASLAuthBytes = []byte(msg)
	r.send(req)
	resp := kmsg.NewPtrSASLAuthenticateResponse()
	resp.SetVersion(1)
	return resp, r.recv(resp)
}

func metadataOK(r *rawClient) error {
	req := kmsg.NewPtrMetadataRequest()
	req.SetVersion(9)
	r.send(req)
	resp := kmsg.NewPtrMetadataResponse()
	resp.SetVersion(9)
	return r.recv(resp)
}

func TestSASLStateMachine(t *testing.T) {
	addr, events := newSASLEnv(t, 0)

	t.Run("v1 success then requests flow", func(t *testing.T) {
		r := dialRaw(t, addr)
		hs := handshake(r, 1, "PLAIN")
		if hs.ErrorCode != 0 || len(hs.SupportedMechanisms) != 1 || hs.SupportedMechanisms[0] != "PLAIN" {
			t.Fatalf("handshake %+v", hs)
		}
		resp, err := authenticate(r, "\x00alice\x00secret")
		if err != nil || resp.ErrorCode != 0 {
			t.Fatalf("authenticate: %+v %v", resp, err)
		}
		if err := metadataOK(r); err != nil {
			t.Fatalf("metadata after auth: %v", err)
		}
		if ev := <-events; ev.err != nil || ev.p.ID != "alice" {
			t.Fatalf("auth event %+v", ev)
		}
	})
	t.Run("v0 raw tokens", func(t *testing.T) {
		r := dialRaw(t, addr)
		if hs := handshake(r, 0, "PLAIN"); hs.ErrorCode != 0 {
			t.Fatalf("handshake v0 %+v", hs)
		}
		tok := []byte("\x00alice\x00secret")
		frame := binary.BigEndian.AppendUint32(nil, uint32(len(tok)))
		if _, err := r.c.Write(append(frame, tok...)); err != nil {
			t.Fatal(err)
		}
		var sz [4]byte
		if _, err := io.ReadFull(r.c, sz[:]); err != nil || binary.BigEndian.Uint32(sz[:]) != 0 {
			t.Fatalf("raw token answer %v %v", sz, err)
		}
		if err := metadataOK(r); err != nil {
			t.Fatalf("metadata after v0 auth: %v", err)
		}
		<-events
	})
	for _, tc := range []struct {
		name string
		run  func(r *rawClient) int16 // returns the error code seen
		code int16
	}{
		{"wrong password", func(r *rawClient) int16 {
			handshake(r, 1, "PLAIN")
			resp, err := authenticate(r, "\x00alice\x00nope")
			if err != nil {
				t.Fatalf("no answer to a failed authentication: %v", err)
			}
			if resp.ErrorMessage == nil || !strings.Contains(*resp.ErrorMessage, "invalid credentials") {
				t.Errorf("error message %v", resp.ErrorMessage)
			}
			return resp.ErrorCode
		}, 58},
		{"unknown mechanism lists enabled ones", func(r *rawClient) int16 {
			hs := handshake(r, 1, "GSSAPI")
			if len(hs.SupportedMechanisms) != 1 {
				t.Errorf("mechanisms not listed on failure: %v", hs.SupportedMechanisms)
			}
			return hs.ErrorCode
		}, 33},
		{"authenticate before handshake", func(r *rawClient) int16 {
			resp, err := authenticate(r, "\x00alice\x00secret")
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			return resp.ErrorCode
		}, 34},
		{"random bytes", func(r *rawClient) int16 {
			handshake(r, 1, "PLAIN")
			resp, err := authenticate(r, "\xff\xfe\x00\x01garbage")
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			return resp.ErrorCode
		}, 58},
		{"request before authentication", func(r *rawClient) int16 {
			if err := metadataOK(r); err == nil {
				t.Fatal("metadata answered before authentication")
			}
			return -1
		}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, addr)
			if code := tc.run(r); code != tc.code {
				t.Fatalf("error code %d, want %d", code, tc.code)
			}
			if !r.closed() {
				t.Fatal("connection left open after a failed authentication")
			}
			if ev := <-events; ev.err == nil {
				t.Fatalf("failure not reported: %+v", ev)
			}
		})
	}
}

func TestSASLSessionLifetime(t *testing.T) {
	addr, events := newSASLEnv(t, 300*time.Millisecond)
	r := dialRaw(t, addr)
	handshake(r, 1, "PLAIN")
	resp, err := authenticate(r, "\x00alice\x00secret")
	if err != nil || resp.SessionLifetimeMillis != 300 {
		t.Fatalf("lifetime %d, %v", resp.SessionLifetimeMillis, err)
	}
	<-events
	if err := metadataOK(r); err != nil {
		t.Fatal(err)
	}
	// Re-authenticating as someone else is refused.
	handshake(r, 1, "PLAIN")
	if resp, err := authenticate(r, "\x00mallory\x00secret"); err != nil || resp.ErrorCode != 58 {
		t.Fatalf("re-authentication as another principal: %+v %v", resp, err)
	}
	<-events

	// A session that expires without re-authentication is closed.
	r2 := dialRaw(t, addr)
	handshake(r2, 1, "PLAIN")
	if _, err := authenticate(r2, "\x00alice\x00secret"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	req := kmsg.NewPtrMetadataRequest()
	r2.send(req)
	if !r2.closed() {
		t.Fatal("expired session still served")
	}
}

// TestSASLWithFranzGo proves the whole path with a real client.
func TestSASLWithFranzGo(t *testing.T) {
	addr, _ := newSASLEnv(t, 0)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.SASL(plain.Auth{User: "alice", Pass: "secret"}.AsMechanism()),
		kgo.AllowAutoTopicCreation(), kgo.DefaultProduceTopic("sasl"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	bad, _ := kgo.NewClient(kgo.SeedBrokers(addr), kgo.SASL(plain.Auth{User: "alice", Pass: "x"}.AsMechanism()))
	defer bad.Close()
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, bad); err == nil || !strings.Contains(err.Error(), "SASL_AUTHENTICATION_FAILED") {
		t.Fatalf("bad password: %v", err)
	}
}

// TestSASLFrameLimit: before authentication no frame may exceed
// max_sasl_frame_bytes, so a stranger cannot make the gateway allocate
// max_frame_bytes per connection; the size prefix alone closes the
// connection, unread. After authentication SASL frames stay bounded
// (re-authentication) while other requests may be large. Each refusal is
// counted as an authentication failure.
func TestSASLFrameLimit(t *testing.T) {
	addr, events := newSASLEnv(t, 0)
	sizePrefix := func(r *rawClient, n uint32) {
		var sz [4]byte
		binary.BigEndian.PutUint32(sz[:], n)
		if _, err := r.c.Write(sz[:]); err != nil {
			t.Fatal(err)
		}
	}
	const limit = 512 << 10

	// A size prefix over the limit, nothing else: closed at once.
	r := dialRaw(t, addr)
	sizePrefix(r, limit+1)
	if !r.closed() {
		t.Fatal("a frame over max_sasl_frame_bytes before authentication was not refused on its size")
	}
	wantAuthFailure(t, events, "frame_too_large", "size prefix before authentication")

	// Under the limit but large (cut-through size): read and answered
	// like any SaslAuthenticate before a handshake.
	r = dialRaw(t, addr)
	if resp, err := authenticate(r, strings.Repeat("x", 300<<10)); err != nil || resp.ErrorCode != 34 {
		t.Fatalf("a 300 KiB SaslAuthenticate before a handshake: %+v %v, want ILLEGAL_SASL_STATE", resp, err)
	}
	if ev := <-events; ev.err == nil {
		t.Fatalf("illegal state not reported: %+v", ev)
	}

	// Authenticated: a large Produce passes, a SaslAuthenticate over the
	// limit closes the connection.
	r = dialRaw(t, addr)
	handshake(r, 1, "PLAIN")
	if resp, err := authenticate(r, "\x00alice\x00secret"); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("authenticate: %+v %v", resp, err)
	}
	<-events
	if err := metadataOK(r); err != nil {
		t.Fatal(err)
	}
	prod := kmsg.NewPtrProduceRequest()
	prod.SetVersion(7)
	prod.Acks, prod.TimeoutMillis = 1, 5000
	pt := kmsg.NewProduceRequestTopic()
	pt.Topic = "big"
	pp := kmsg.NewProduceRequestTopicPartition()
	pp.Records = make([]byte, limit+1) // not a valid batch: the broker says so
	pt.Partitions = append(pt.Partitions, pp)
	prod.Topics = append(prod.Topics, pt)
	r.send(prod)
	presp := kmsg.NewPtrProduceResponse()
	presp.SetVersion(7)
	if err := r.recv(presp); err != nil {
		t.Fatalf("a produce over max_sasl_frame_bytes after authentication: %v", err)
	}
	handshake(r, 1, "PLAIN")
	req := kmsg.NewPtrSASLAuthenticateRequest()
	req.SetVersion(1)
	req.SASLAuthBytes = make([]byte, limit)
	r.send(req)
	if !r.closed() {
		t.Fatal("a SaslAuthenticate over max_sasl_frame_bytes after authentication was not refused")
	}
	wantAuthFailure(t, events, "frame_too_large", "re-authentication frame")
}

// TestAuthenticationTimeout: a connection on a SASL listener that has not
// authenticated within authentication_timeout of its accept is closed
// (nothing sent, or a handshake and no token) and counted; one that
// authenticated in time is not, however long it then waits.
func TestAuthenticationTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr, events := newSASLEnvWith(t, 0, func(c *Config) { c.AuthenticationTimeout = timeout })
	for _, tc := range []struct {
		name string
		run  func(r *rawClient)
	}{
		{"nothing sent", func(*rawClient) {}},
		{"handshake and no token", func(r *rawClient) { handshake(r, 1, "PLAIN") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := dialRaw(t, addr)
			tc.run(r)
			if !r.closed() {
				t.Fatal("an unauthenticated connection outlived authentication_timeout")
			}
			if el := time.Since(start); el < timeout {
				t.Fatalf("closed after %v, before the %v timeout", el, timeout)
			}
			wantAuthFailure(t, events, "timeout", tc.name)
		})
	}
	r := dialRaw(t, addr)
	handshake(r, 1, "PLAIN")
	if resp, err := authenticate(r, "\x00alice\x00secret"); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("authenticate: %+v %v", resp, err)
	}
	<-events
	time.Sleep(3 * timeout)
	if err := metadataOK(r); err != nil {
		t.Fatalf("an authenticated connection was closed by authentication_timeout: %v", err)
	}
}
