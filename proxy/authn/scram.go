package authn

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"hash"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// maxSCRAMMsg bounds each SCRAM client message.
const maxSCRAMMsg = 4096

// scramSession is the server side of SCRAM-SHA-256 / SCRAM-SHA-512
// (RFC 5802, RFC 7677) without channel binding:
//
//	client-first  n,[a=authzid],n=user,r=cnonce[,ext...]
//	server-first  r=cnonce+snonce,s=salt,i=iterations
//	client-final  c=biws,r=cnonce+snonce[,ext...],p=proof
//	server-final  v=server-signature
type scramSession struct {
	p    *Provider
	mech string
	h    func() hash.Hash

	state int
	name  string
	u     *user      // nil when the user (or its credential) is unknown
	keys  *scramKeys // the user's keys, or a decoy for unknown users

	gs2Header       string
	clientFirstBare string
	serverFirst     string
	cnonce          string
	nonce           string
}

func newSCRAMSession(p *Provider, mech string) *scramSession {
	h, _ := scramHash(mech) // mech is checked by the caller
	return &scramSession{p: p, mech: mech, h: h}
}

func (s *scramSession) user() string { return s.name }

func (s *scramSession) step(msg []byte) ([]byte, bool, *filter.Principal, time.Duration, *filter.AuthError) {
	if len(msg) > maxSCRAMMsg {
		return nil, false, nil, 0, malformed("SCRAM message too long")
	}
	if !utf8.Valid(msg) {
		return nil, false, nil, 0, malformed("SCRAM message is not UTF-8")
	}
	switch s.state {
	case 0:
		s.state = 1
		reply, err := s.clientFirst(string(msg))
		return reply, false, nil, 0, err
	case 1:
		s.state = 2
		return s.clientFinal(string(msg))
	}
	return nil, false, nil, 0, malformed("SCRAM exchange already finished")
}

// unescapeSASLName decodes "=2C" and "=3D"; any other "=" is an error.
func unescapeSASLName(s string) (string, bool) {
	if !strings.Contains(s, "=") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		switch s[i+1 : i+3] {
		case "2C":
			b.WriteByte(',')
		case "3D":
			b.WriteByte('=')
		default:
			return "", false
		}
		i += 2
	}
	return b.String(), true
}

// parseGS2Header reads "n,[a=authzid]," or "y,[a=authzid]," from the front
// of msg; "p=..." (channel binding) is refused.
func parseGS2Header(msg string) (header, authzid, rest string, err *filter.AuthError) {
	if strings.HasPrefix(msg, "p=") {
		return "", "", "", authErr(ReasonChannelBinding, "channel binding is not supported")
	}
	if !strings.HasPrefix(msg, "n,") && !strings.HasPrefix(msg, "y,") {
		return "", "", "", malformed("GS2 header must start with \"n,\" or \"y,\"")
	}
	z, after, ok := strings.Cut(msg[2:], ",")
	if !ok {
		return "", "", "", malformed("GS2 header is not terminated")
	}
	if z != "" {
		if !strings.HasPrefix(z, "a=") {
			return "", "", "", malformed("GS2 authorization id must start with \"a=\"")
		}
		var good bool
		if authzid, good = unescapeSASLName(z[2:]); !good || authzid == "" {
			return "", "", "", malformed("GS2 authorization id is badly escaped")
		}
	}
	return msg[:len(msg)-len(after)], authzid, after, nil
}

func validNonce(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}

func (s *scramSession) clientFirst(msg string) ([]byte, *filter.AuthError) {
	header, authzid, bare, aerr := parseGS2Header(msg)
	if aerr != nil {
		return nil, aerr
	}
	attrs := strings.Split(bare, ",")
	if len(attrs) < 2 {
		return nil, malformed("client-first-message needs n= and r=")
	}
	if strings.HasPrefix(attrs[0], "m=") {
		return nil, malformed("mandatory SCRAM extensions are not supported")
	}
	if !strings.HasPrefix(attrs[0], "n=") || !strings.HasPrefix(attrs[1], "r=") {
		return nil, malformed("client-first-message must be n=user,r=nonce")
	}
	name, ok := unescapeSASLName(attrs[0][2:])
	if !ok || name == "" || len(name) > 255 {
		return nil, malformed("SCRAM user name is empty, too long or badly escaped")
	}
	cnonce := attrs[1][2:]
	if !validNonce(cnonce) {
		return nil, malformed("SCRAM client nonce must be printable ASCII without commas")
	}
	for _, ext := range attrs[2:] {
		k, _, ok := strings.Cut(ext, "=")
		if !ok || k == "" {
			return nil, malformed("SCRAM extension is not key=value")
		}
		if k == "tokenauth" {
			return nil, malformed("delegation-token SCRAM (tokenauth) is not supported")
		}
	}
	s.name = name
	if authzid != "" && authzid != name {
		return nil, authErr(ReasonBadAuthzid, "authorization id must be empty or equal to the user name")
	}
	creds := s.p.creds.Load()
	if u := creds.users[name]; u != nil && u.scram[s.mech] != nil {
		s.u, s.keys = u, u.scram[s.mech]
	} else {
		s.keys = s.decoyKeys(creds, name)
	}
	snonce := make([]byte, 24)
	if _, err := rand.Read(snonce); err != nil {
		return nil, authErr(ReasonUnavailable, "internal error")
	}
	s.gs2Header = header
	s.clientFirstBare = bare
	s.cnonce = cnonce
	s.nonce = cnonce + base64.RawURLEncoding.EncodeToString(snonce)
	s.serverFirst = "r=" + s.nonce + ",s=" + s.keys.saltB64 + ",i=" + strconv.Itoa(s.keys.iterations)
	return []byte(s.serverFirst), nil
}

// decoyKeys gives an unknown user a salt that is stable across attempts and
// the iteration count most known users have, so server-first does not
// reveal that the user does not exist (RFC 5802 section 9). Its keys match
// no proof.
func (s *scramSession) decoyKeys(creds *credStore, name string) *scramKeys {
	salt := hmacSum(s.h, creds.decoyKey, []byte(s.mech+"\x00"+name))[:scramSaltLen]
	return &scramKeys{salt: salt, saltB64: base64.StdEncoding.EncodeToString(salt), iterations: creds.decoyIterations(s.mech)}
}

func (s *scramSession) clientFinal(msg string) ([]byte, bool, *filter.Principal, time.Duration, *filter.AuthError) {
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return nil, false, nil, 0, malformed("client-final-message has no proof")
	}
	withoutProof, proofB64 := msg[:i], msg[i+3:]
	attrs := strings.Split(withoutProof, ",")
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "c=") || !strings.HasPrefix(attrs[1], "r=") {
		return nil, false, nil, 0, malformed("client-final-message must be c=...,r=...,p=...")
	}
	// c= must repeat the GS2 header. Some clients (franz-go up to at least
	// v1.22) send "biws" ("n,,") even after an authzid; the attribute is
	// covered by the proof either way, so the header without its authzid
	// is accepted too, but only with the same channel-binding flag.
	cb, err := base64.StdEncoding.DecodeString(attrs[0][2:])
	if err != nil || (string(cb) != s.gs2Header && string(cb) != s.gs2Header[:1]+",,") {
		return nil, false, nil, 0, authErr(ReasonChannelBinding, "channel binding data does not match the GS2 header")
	}
	// r= must repeat the combined nonce. librdkafka before 2.6.1 (so kcat
	// and confluent-kafka-python as Debian ships them) prepends its client
	// nonce once more (librdkafka#4895); that exact form is accepted too.
	// Either way r= is part of the AuthMessage the proof signs, and the
	// fresh server nonce is in it.
	if r := attrs[1][2:]; r != s.nonce && r != s.cnonce+s.nonce {
		return nil, false, nil, 0, malformed("client-final-message nonce does not match")
	}
	size := s.h().Size()
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil || len(proof) != size {
		return nil, false, nil, 0, malformed("client proof is not base64 of the hash size")
	}
	if s.u == nil {
		return nil, false, nil, 0, authErr(ReasonUnknownUser, msgBadCredentials)
	}
	var authMsg bytes.Buffer
	authMsg.Grow(len(s.clientFirstBare) + len(s.serverFirst) + len(withoutProof) + 2)
	authMsg.WriteString(s.clientFirstBare)
	authMsg.WriteByte(',')
	authMsg.WriteString(s.serverFirst)
	authMsg.WriteByte(',')
	authMsg.WriteString(withoutProof)

	// ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the proof
	// holds if H(ClientKey) == StoredKey.
	clientKey := hmacSum(s.h, s.keys.storedKey, authMsg.Bytes())
	subtle.XORBytes(clientKey, clientKey, proof)
	d := s.h()
	d.Write(clientKey)
	if subtle.ConstantTimeCompare(d.Sum(nil), s.keys.storedKey) != 1 {
		return nil, false, nil, 0, authErr(ReasonBadProof, msgBadCredentials)
	}
	m := hmac.New(s.h, s.keys.serverKey)
	m.Write(authMsg.Bytes())
	reply := "v=" + base64.StdEncoding.EncodeToString(m.Sum(nil))
	return []byte(reply), true, s.u.principal(s.mech), 0, nil
}
