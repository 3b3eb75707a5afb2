package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// upstream dials the provider's brokers with the gateway's own transport
// security and credentials.
type upstream struct {
	cfg    UpstreamConfig
	tls    *tls.Config
	mech   sasl.Mechanism
	dialer net.Dialer
	format *kmsg.RequestFormatter
}

func newUpstream(cfg UpstreamConfig) (*upstream, error) {
	u := &upstream{
		cfg:    cfg,
		dialer: net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		format: kmsg.NewRequestFormatter(kmsg.FormatterClientID("sluice")),
	}
	if cfg.TLS.Enabled {
		t, err := cfg.TLS.build()
		if err != nil {
			return nil, err
		}
		u.tls = t
	}
	if cfg.SASL.Mechanism != "" {
		pass, err := cfg.SASL.password()
		if err != nil {
			return nil, err
		}
		switch cfg.SASL.Mechanism {
		case "PLAIN":
			u.mech = plain.Auth{User: cfg.SASL.Username, Pass: pass}.AsMechanism()
		case "SCRAM-SHA-256":
			u.mech = scram.Auth{User: cfg.SASL.Username, Pass: pass}.AsSha256Mechanism()
		case "SCRAM-SHA-512":
			u.mech = scram.Auth{User: cfg.SASL.Username, Pass: pass}.AsSha512Mechanism()
		}
	}
	return u, nil
}

// KgoOpts returns franz-go client options that reach the upstream cluster
// with the gateway's credentials, for the gateway's own clients (metadata,
// audit sink, grants).
func (cfg UpstreamConfig) KgoOpts() ([]kgo.Opt, error) {
	u, err := newUpstream(cfg)
	if err != nil {
		return nil, err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.DialTimeout(cfg.DialTimeout)}
	if u.tls != nil {
		opts = append(opts, kgo.DialTLSConfig(u.tls))
	}
	if u.mech != nil {
		opts = append(opts, kgo.SASL(u.mech))
	}
	return opts, nil
}

// upConn is an authenticated connection to one upstream broker.
type upConn struct {
	net.Conn
	versions *kmsg.ApiVersionsResponse
	// lifetime is the SASL session lifetime the broker gave (KIP-368,
	// connections.max.reauth.ms), counted from authStart; 0: none. The
	// broker closes the connection on its first use after it ends.
	lifetime  time.Duration
	authStart time.Time
}

// dial connects to addr, negotiates versions and authenticates.
func (u *upstream) dial(ctx context.Context, addr string) (*upConn, error) {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.DialTimeout)
	defer cancel()
	var c net.Conn
	var err error
	if u.tls != nil {
		cfg := u.tls.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		d := tls.Dialer{NetDialer: &u.dialer, Config: cfg}
		c, err = d.DialContext(ctx, "tcp", addr)
	} else {
		c, err = u.dialer.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("proxy: dial upstream %s: %w", addr, err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	uc := &upConn{Conn: c}
	if err := u.handshake(ctx, uc, addr); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return uc, nil
}

func (u *upstream) handshake(ctx context.Context, uc *upConn, addr string) error {
	corr := int32(-1 << 30) // gateway-originated correlation ids never reach clients
	next := func() int32 { corr++; return corr }

	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(3)
	req.ClientSoftwareName = "sluice"
	req.ClientSoftwareVersion = "1"
	var resp kmsg.ApiVersionsResponse
	if err := u.roundTrip(uc, req, &resp, next()); err != nil {
		return fmt.Errorf("proxy: upstream %s api versions: %w", addr, err)
	}
	if resp.ErrorCode == kerr.UnsupportedVersion.Code {
		req.SetVersion(0)
		resp = kmsg.ApiVersionsResponse{}
		if err := u.roundTrip(uc, req, &resp, next()); err != nil {
			return fmt.Errorf("proxy: upstream %s api versions v0: %w", addr, err)
		}
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return fmt.Errorf("proxy: upstream %s api versions: %w", addr, err)
	}
	uc.versions = &resp
	if u.mech == nil {
		return nil
	}

	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.SetVersion(1)
	hs.Mechanism = u.mech.Name()
	var hsResp kmsg.SASLHandshakeResponse
	if err := u.roundTrip(uc, hs, &hsResp, next()); err != nil {
		return fmt.Errorf("proxy: upstream %s sasl handshake: %w", addr, err)
	}
	if err := kerr.ErrorForCode(hsResp.ErrorCode); err != nil {
		return fmt.Errorf("proxy: upstream %s sasl handshake (broker offers %v): %w", addr, hsResp.SupportedMechanisms, err)
	}
	host, _, _ := net.SplitHostPort(addr)
	sess, msg, err := u.mech.Authenticate(ctx, host)
	if err != nil {
		return fmt.Errorf("proxy: upstream %s sasl: %w", addr, err)
	}
	authVersion := int16(1)
	for _, k := range resp.ApiKeys {
		if k.ApiKey == keySaslAuthenticate && k.MaxVersion < authVersion {
			authVersion = k.MaxVersion
		}
	}
	uc.authStart = time.Now()
	for {
		ar := kmsg.NewPtrSASLAuthenticateRequest()
		ar.SetVersion(authVersion)
		ar.SASLAuthBytes = msg
		var arResp kmsg.SASLAuthenticateResponse
		if err := u.roundTrip(uc, ar, &arResp, next()); err != nil {
			return fmt.Errorf("proxy: upstream %s sasl authenticate: %w", addr, err)
		}
		if err := kerr.ErrorForCode(arResp.ErrorCode); err != nil {
			detail := ""
			if arResp.ErrorMessage != nil {
				detail = ": " + *arResp.ErrorMessage
			}
			return fmt.Errorf("proxy: upstream %s sasl authenticate as %q: %w%s", addr, u.cfg.SASL.Username, err, detail)
		}
		if arResp.SessionLifetimeMillis > 0 {
			uc.lifetime = time.Duration(arResp.SessionLifetimeMillis) * time.Millisecond
		}
		done, next, err := sess.Challenge(arResp.SASLAuthBytes)
		if err != nil {
			return fmt.Errorf("proxy: upstream %s sasl: %w", addr, err)
		}
		if done {
			return nil
		}
		msg = next
	}
}

// roundTrip writes req and reads one response into resp.
func (u *upstream) roundTrip(c net.Conn, req kmsg.Request, resp kmsg.Response, corr int32) error {
	resp.SetVersion(req.GetVersion())
	if _, err := c.Write(u.format.AppendRequest(nil, req, corr)); err != nil {
		return err
	}
	frame, err := readFrame(c, 64<<20)
	if err != nil {
		return err
	}
	if got := int32(binary.BigEndian.Uint32(frame)); got != corr {
		return fmt.Errorf("correlation id %d, expected %d", got, corr)
	}
	off, err := responseBodyOffset(frame, req.Key(), req.GetVersion())
	if err != nil {
		return err
	}
	return resp.ReadFrom(frame[off:])
}

var errFrameTooLarge = errors.New("proxy: frame larger than max_frame_bytes")

// readFrame reads one size-prefixed frame and returns it without the prefix.
func readFrame(r io.Reader, max int32) ([]byte, error) {
	var sz [4]byte
	if _, err := io.ReadFull(r, sz[:]); err != nil {
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(sz[:]))
	if n < 0 || n > max {
		return nil, fmt.Errorf("%w: %d bytes", errFrameTooLarge, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}
