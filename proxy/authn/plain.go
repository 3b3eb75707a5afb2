package authn

import (
	"bytes"
	"time"
	"unicode/utf8"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// maxPlainMsg bounds a PLAIN message: authzid, authcid (255 bytes each)
// and a password of at most maxPasswordLen.
const maxPlainMsg = 2*255 + maxPasswordLen + 2

// plainSession is SASL PLAIN (RFC 4616): one client message
// "authzid NUL authcid NUL passwd", verified against the user's bcrypt or
// argon2id hash.
type plainSession struct {
	p    *Provider
	name string
}

func (s *plainSession) user() string { return s.name }

func (s *plainSession) step(msg []byte) ([]byte, bool, *filter.Principal, time.Duration, *filter.AuthError) {
	if len(msg) > maxPlainMsg {
		return nil, false, nil, 0, malformed("PLAIN message too long")
	}
	authzid, rest, ok1 := bytes.Cut(msg, []byte{0})
	authcid, passwd, ok2 := bytes.Cut(rest, []byte{0})
	if !ok1 || !ok2 || bytes.IndexByte(passwd, 0) >= 0 {
		return nil, false, nil, 0, malformed("PLAIN message must be authzid NUL authcid NUL password")
	}
	if len(authcid) == 0 || len(passwd) == 0 || len(authcid) > 255 || len(authzid) > 255 {
		return nil, false, nil, 0, malformed("PLAIN user name and password must be non-empty")
	}
	if !utf8.Valid(authcid) || !utf8.Valid(authzid) || !utf8.Valid(passwd) {
		return nil, false, nil, 0, malformed("PLAIN fields must be UTF-8")
	}
	s.name = string(authcid)
	if len(authzid) > 0 && !bytes.Equal(authzid, authcid) {
		return nil, false, nil, 0, authErr(ReasonBadAuthzid, "authorization id must be empty or equal to the user name")
	}
	creds := s.p.creds.Load()
	u := creds.users[s.name]
	if u == nil || u.plain == nil {
		// Spend the time a real verification takes, so the answer does
		// not tell which user names exist.
		if creds.decoy != nil {
			s.p.verifyPassword(creds.decoy, passwd)
		}
		return nil, false, nil, 0, authErr(ReasonUnknownUser, msgBadCredentials)
	}
	if !s.p.verifyPassword(u.plain, passwd) {
		return nil, false, nil, 0, authErr(ReasonBadPassword, msgBadCredentials)
	}
	return nil, true, u.principal(MechPlain), 0, nil
}
