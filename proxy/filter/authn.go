package filter

import (
	"crypto/tls"
	"time"
)

// Authenticator terminates client authentication for one listener. The proxy
// answers SaslHandshake (v0 and v1) and SaslAuthenticate itself and drives
// the SASL exchange through a Session; nothing of the client's SASL reaches
// the upstream cluster, which the gateway authenticates to with its own
// credentials.
type Authenticator interface {
	// Mechanisms lists the enabled SASL mechanisms in preference order
	// ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"). It is
	// always sent in the SaslHandshake response.
	Mechanisms() []string
	// Start begins an exchange for one mechanism. It returns an error for
	// a mechanism that is not enabled.
	Start(mechanism string, c *Conn) (Session, error)
	// TLSPrincipal maps a verified client certificate to a principal. It
	// returns (nil, nil) when the listener does not derive principals from
	// certificates.
	TLSPrincipal(state tls.ConnectionState) (*Principal, error)
}

// Session is one SASL exchange. Step consumes one client message and returns
// the server's reply. When done is true the exchange succeeded and p is the
// authenticated principal; lifetime, if non-zero, bounds the session
// (KIP-368): the client must re-authenticate before it passes.
//
// An error fails authentication; its text is sent to the client in the
// SaslAuthenticate error message, so it must not leak secrets. Use
// *AuthError to attach a metric reason.
type Session interface {
	Step(msg []byte) (reply []byte, done bool, p *Principal, lifetime time.Duration, err error)
}

// AuthError is an authentication failure with a bounded reason for metrics
// ("bad_password", "unknown_user", "expired", "bad_signature", "malformed",
// ...) and a message safe to send to the client.
type AuthError struct {
	Reason  string
	Message string
	// Gateway marks failures the proxy detected itself (SASL state,
	// malformed frames, requests before authentication) rather than the
	// Authenticator, which counts its own.
	Gateway bool
}

func (e *AuthError) Error() string { return e.Message }
