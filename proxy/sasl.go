package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/proxy/bufpool"
	"github.com/sluice-gw/sluice/proxy/filter"
)

// The gateway terminates client SASL itself (PROTOCOL-NOTES: kfake's and
// other brokers' SASL differ in what clients need); nothing of it is
// forwarded. SaslHandshake v0 is followed by raw length-prefixed tokens,
// v1 by SaslAuthenticate requests.

func (c *clientConn) saslHandshake(h requestHeader, frame []byte, tRead time.Time) bool {
	req := kmsg.NewPtrSASLHandshakeRequest()
	req.SetVersion(h.Version)
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	resp.SetVersion(h.Version)
	if h.Version > 1 {
		c.log.Warn("closing connection: unsupported SaslHandshake version", zap.Int16("api_version", h.Version))
		return false
	}
	if err := req.ReadFrom(frame[h.BodyOffset:]); err != nil {
		c.log.Warn("closing connection: malformed SaslHandshake", zap.Error(err))
		c.authEvent("unknown", nil, &filter.AuthError{Reason: "malformed", Message: "malformed SaslHandshake", Gateway: true})
		return false
	}
	if c.g.auth == nil || len(c.g.cfg.SASL) == 0 {
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		c.authEvent(req.Mechanism, nil, &filter.AuthError{Reason: "unsupported_mechanism", Message: "SASL is not enabled on this listener", Gateway: true})
		return c.answerLocal(h, resp, tRead, true)
	}
	resp.SupportedMechanisms = c.g.auth.Mechanisms()
	if c.saslSession != nil {
		resp.ErrorCode = kerr.IllegalSaslState.Code
		c.authEvent(req.Mechanism, nil, &filter.AuthError{Reason: "illegal_state", Message: "SaslHandshake during an exchange", Gateway: true})
		return c.answerLocal(h, resp, tRead, true)
	}
	sess, err := c.g.auth.Start(req.Mechanism, c.fc)
	if err != nil {
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		c.log.Info("client asked for a SASL mechanism that is not enabled", zap.String("mechanism", req.Mechanism))
		c.authEvent(req.Mechanism, nil, &filter.AuthError{Reason: "unsupported_mechanism", Message: err.Error()})
		return c.answerLocal(h, resp, tRead, true)
	}
	c.saslMech = req.Mechanism
	c.saslSession = sess
	c.saslRaw = h.Version == 0
	return c.answerLocal(h, resp, tRead, false)
}

func (c *clientConn) saslAuthenticate(h requestHeader, frame []byte, tRead time.Time) bool {
	req := kmsg.NewPtrSASLAuthenticateRequest()
	req.SetVersion(h.Version)
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	resp.SetVersion(h.Version)
	if h.Version > 2 {
		c.log.Warn("closing connection: unsupported SaslAuthenticate version", zap.Int16("api_version", h.Version))
		return false
	}
	if c.saslSession == nil || c.saslRaw {
		resp.ErrorCode = kerr.IllegalSaslState.Code
		msg := "SaslAuthenticate before SaslHandshake"
		resp.ErrorMessage = &msg
		c.log.Info("closing connection: " + msg)
		c.authEvent("unknown", nil, &filter.AuthError{Reason: "illegal_state", Message: msg, Gateway: true})
		return c.answerLocal(h, resp, tRead, true)
	}
	if err := req.ReadFrom(frame[h.BodyOffset:]); err != nil {
		c.log.Warn("closing connection: malformed SaslAuthenticate", zap.Error(err))
		c.authEvent(c.saslMech, nil, &filter.AuthError{Reason: "malformed", Message: "malformed SaslAuthenticate", Gateway: true})
		return false
	}
	reply, done, _, lifetime, err := c.step(req.SASLAuthBytes)
	if err != nil {
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: " + err.Error()
		resp.ErrorMessage = &msg
		return c.answerLocal(h, resp, tRead, true)
	}
	resp.SASLAuthBytes = reply
	if done && h.Version >= 1 && lifetime > 0 {
		resp.SessionLifetimeMillis = lifetime.Milliseconds()
	}
	return c.answerLocal(h, resp, tRead, false)
}

// saslRawToken handles a raw token after SaslHandshake v0.
func (c *clientConn) saslRawToken(buf *[]byte, token []byte, tRead time.Time) bool {
	defer bufpool.Put(buf)
	reply, _, _, _, err := c.step(token)
	if err != nil {
		// v0 has no error channel: the connection is closed.
		return false
	}
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(reply)))
	frame = append(frame, reply...)
	p := &pending{local: frame, tRead: tRead}
	p.x.Key = keySaslAuthenticate
	return c.enqueue(p)
}

// step advances the SASL exchange and, when it completes, installs the
// principal.
func (c *clientConn) step(msg []byte) (reply []byte, done bool, p *filter.Principal, lifetime time.Duration, err error) {
	mech := c.saslMech
	reply, done, p, lifetime, err = c.saslSession.Step(msg)
	if err == nil && done && p == nil {
		err = &filter.AuthError{Reason: "error", Message: "authenticator returned no principal", Gateway: true}
	}
	if err == nil && done && c.authenticated {
		// KIP-368 re-authentication must keep the principal.
		if old := c.fc.Principal(); old.ID != p.ID || old.Org != p.Org {
			err = &filter.AuthError{Reason: "principal_changed", Message: "re-authentication as a different principal", Gateway: true}
		}
	}
	if err != nil {
		c.saslSession = nil
		c.saslRaw = false
		var ae *filter.AuthError
		if !errors.As(err, &ae) {
			ae = &filter.AuthError{Reason: "error", Message: err.Error(), Gateway: true}
			err = ae
		}
		c.log.Info("client authentication failed", zap.String("mechanism", mech), zap.String("reason", ae.Reason), zap.String("error", ae.Message))
		c.authEvent(mech, nil, err)
		return nil, false, nil, 0, err
	}
	if !done {
		return reply, false, nil, 0, nil
	}
	c.saslSession = nil
	c.saslRaw = false
	c.authenticated = true
	c.fc.SetPrincipal(p)
	c.sessionExpiry = time.Time{}
	if lifetime > 0 {
		c.sessionExpiry = time.Now().Add(lifetime)
	}
	c.log.Info("client authenticated", zap.String("mechanism", mech), zap.String("principal", p.ID), zap.String("org", p.Org))
	c.authEvent(mech, p, nil)
	return reply, true, p, lifetime, nil
}

// cacheVersions remembers the latest upstream ApiVersions answer, used to
// answer ApiVersions before a client has authenticated (so strangers cannot
// make the gateway dial upstream).
func (s *Server) cacheVersions(v *kmsg.ApiVersionsResponse) { s.lastVersions.Store(v) }

func (s *Server) cachedVersions() *kmsg.ApiVersionsResponse { return s.lastVersions.Load() }

// loadVersions fills the version cache, when it is empty, with an
// ApiVersions exchange over the gateway's own metadata client (one at a
// time), so that a client not yet authenticated is answered without an
// upstream connection of its own: a stranger never makes the gateway dial
// and log in upstream for it.
func (s *Server) loadVersions(ctx context.Context) *kmsg.ApiVersionsResponse {
	if v := s.cachedVersions(); v != nil || s.meta == nil {
		return v
	}
	s.versionsMu.Lock()
	defer s.versionsMu.Unlock()
	if v := s.cachedVersions(); v != nil {
		return v
	}
	resp, err := s.meta.Request(ctx, kmsg.NewPtrApiVersionsRequest())
	if err != nil {
		s.log.Info("upstream api versions not loaded", zap.Error(err))
		return nil
	}
	v, ok := resp.(*kmsg.ApiVersionsResponse)
	if !ok || v.ErrorCode != 0 || len(v.ApiKeys) == 0 {
		return nil
	}
	s.cacheVersions(v)
	return v
}
