package authn

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
)

// SCRAM iteration bounds. RFC 7677 asks for at least 4096; the upper bound
// only catches typos (clients run PBKDF2 with this count on every login).
const (
	MinSCRAMIterations     = 4096
	DefaultSCRAMIterations = 8192
	maxSCRAMIterations     = 10_000_000
	scramSaltLen           = 24
)

// SCRAMCredential is what the server stores for one user and one SCRAM
// mechanism (RFC 5802 section 3): the salt and iteration count sent to the
// client, StoredKey = H(HMAC(SaltedPassword, "Client Key")) and ServerKey =
// HMAC(SaltedPassword, "Server Key"). Byte fields are standard base64. The
// password cannot be recovered from it, but StoredKey and ServerKey let
// whoever holds them impersonate the server, so keep the file private.
type SCRAMCredential struct {
	Salt       string `yaml:"salt" json:"salt"`
	Iterations int    `yaml:"iterations" json:"iterations"`
	StoredKey  string `yaml:"stored_key" json:"stored_key"`
	ServerKey  string `yaml:"server_key" json:"server_key"`
}

// scramHash returns the hash of a SCRAM mechanism name.
func scramHash(mech string) (func() hash.Hash, error) {
	switch mech {
	case MechScramSHA256:
		return sha256.New, nil
	case MechScramSHA512:
		return sha512.New, nil
	}
	return nil, fmt.Errorf("authn: %q is not a SCRAM mechanism (use SCRAM-SHA-256 or SCRAM-SHA-512)", mech)
}

// NewSCRAMCredential derives the stored credential for password under mech
// ("SCRAM-SHA-256" or "SCRAM-SHA-512") with a fresh random salt. iterations
// 0 means DefaultSCRAMIterations; fewer than MinSCRAMIterations is an error.
func NewSCRAMCredential(mech, password string, iterations int) (SCRAMCredential, error) {
	salt := make([]byte, scramSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return SCRAMCredential{}, fmt.Errorf("authn: scram credential: %w", err)
	}
	return newSCRAMCredentialSalt(mech, password, salt, iterations)
}

func newSCRAMCredentialSalt(mech, password string, salt []byte, iterations int) (SCRAMCredential, error) {
	h, err := scramHash(mech)
	if err != nil {
		return SCRAMCredential{}, err
	}
	if password == "" {
		return SCRAMCredential{}, errors.New("authn: scram credential: empty password")
	}
	if iterations == 0 {
		iterations = DefaultSCRAMIterations
	}
	if iterations < MinSCRAMIterations || iterations > maxSCRAMIterations {
		return SCRAMCredential{}, fmt.Errorf("authn: scram credential: iterations %d outside [%d, %d]", iterations, MinSCRAMIterations, maxSCRAMIterations)
	}
	salted, err := pbkdf2.Key(h, password, salt, iterations, h().Size())
	if err != nil {
		return SCRAMCredential{}, fmt.Errorf("authn: scram credential: %w", err)
	}
	clientKey := hmacSum(h, salted, []byte("Client Key"))
	d := h()
	d.Write(clientKey)
	storedKey := d.Sum(nil)
	serverKey := hmacSum(h, salted, []byte("Server Key"))
	enc := base64.StdEncoding.EncodeToString
	return SCRAMCredential{Salt: enc(salt), Iterations: iterations, StoredKey: enc(storedKey), ServerKey: enc(serverKey)}, nil
}

func hmacSum(h func() hash.Hash, key, msg []byte) []byte {
	m := hmac.New(h, key)
	m.Write(msg)
	return m.Sum(nil)
}

// scramKeys is a decoded SCRAMCredential.
type scramKeys struct {
	salt       []byte
	saltB64    string
	iterations int
	storedKey  []byte
	serverKey  []byte
}

func (c SCRAMCredential) decode(mech string) (*scramKeys, error) {
	h, err := scramHash(mech)
	if err != nil {
		return nil, err
	}
	size := h().Size()
	k := &scramKeys{iterations: c.Iterations}
	if k.salt, err = base64.StdEncoding.DecodeString(c.Salt); err != nil || len(k.salt) < 8 {
		return nil, errors.New("salt: must be standard base64 of at least 8 bytes")
	}
	k.saltB64 = base64.StdEncoding.EncodeToString(k.salt)
	if c.Iterations < MinSCRAMIterations || c.Iterations > maxSCRAMIterations {
		return nil, fmt.Errorf("iterations: %d outside [%d, %d]", c.Iterations, MinSCRAMIterations, maxSCRAMIterations)
	}
	if k.storedKey, err = base64.StdEncoding.DecodeString(c.StoredKey); err != nil || len(k.storedKey) != size {
		return nil, fmt.Errorf("stored_key: must be standard base64 of %d bytes", size)
	}
	if k.serverKey, err = base64.StdEncoding.DecodeString(c.ServerKey); err != nil || len(k.serverKey) != size {
		return nil, fmt.Errorf("server_key: must be standard base64 of %d bytes", size)
	}
	return k, nil
}
