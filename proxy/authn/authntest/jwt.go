package authntest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"time"
)

// Issuer is a token issuer with one signing key.
type Issuer struct {
	// Issuer is the "iss" claim Token sets.
	Issuer string
	// Alg is the JWS algorithm: RS256, PS256, ES256, ES384 or EdDSA.
	Alg string
	// KeyID is the "kid" header and JWK key id.
	KeyID string

	key crypto.Signer
}

// NewIssuer generates a key for alg.
func NewIssuer(issuer, alg, kid string) (*Issuer, error) {
	var key crypto.Signer
	var err error
	switch alg {
	case "RS256", "PS256":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "EdDSA":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("authntest: unsupported alg %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("authntest: %w", err)
	}
	return &Issuer{Issuer: issuer, Alg: alg, KeyID: kid, key: key}, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// JWK returns the issuer's public key as a JWK object.
func (i *Issuer) JWK() map[string]any {
	k := map[string]any{"kid": i.KeyID, "use": "sig", "alg": i.Alg}
	switch pub := i.key.Public().(type) {
	case *rsa.PublicKey:
		k["kty"] = "RSA"
		k["n"] = b64(pub.N.Bytes())
		k["e"] = b64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		size := (pub.Curve.Params().BitSize + 7) / 8
		raw, _ := pub.Bytes() // uncompressed 0x04 || X || Y
		k["kty"] = "EC"
		k["crv"] = pub.Curve.Params().Name
		k["x"] = b64(raw[1 : 1+size])
		k["y"] = b64(raw[1+size:])
	case ed25519.PublicKey:
		k["kty"] = "OKP"
		k["crv"] = "Ed25519"
		k["x"] = b64(pub)
	}
	return k
}

// JWKS returns a JWKS document holding the public keys of issuers (more
// than one for key rotation tests).
func JWKS(issuers ...*Issuer) []byte {
	keys := make([]map[string]any, 0, len(issuers))
	for _, i := range issuers {
		keys = append(keys, i.JWK())
	}
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

// WriteJWKS writes JWKS(issuers...) to path atomically.
func WriteJWKS(path string, issuers ...*Issuer) error {
	return WriteFileAtomic(path, JWKS(issuers...))
}

// Token signs a token for sub and aud, valid from now for ttl (negative for
// an expired token), with extra claims added (they override the defaults).
func (i *Issuer) Token(sub, aud string, ttl time.Duration, extra map[string]any) (string, error) {
	now := time.Now()
	claims := map[string]any{
		"iss": i.Issuer,
		"sub": sub,
		"aud": aud,
		"iat": now.Add(-time.Minute).Unix(),
		"exp": now.Add(ttl).Unix(),
	}
	for k, v := range extra {
		if v == nil {
			delete(claims, k)
			continue
		}
		claims[k] = v
	}
	return i.Sign(claims)
}

// Sign signs claims as a compact JWS.
func (i *Issuer) Sign(claims map[string]any) (string, error) {
	return i.SignHeader(map[string]any{"alg": i.Alg, "typ": "JWT", "kid": i.KeyID}, claims)
}

// SignHeader signs claims under a caller-chosen header (for tests of bad
// headers); the signature always uses the issuer's own algorithm.
func (i *Issuer) SignHeader(header, claims map[string]any) (string, error) {
	hb, err := json.Marshal(header)
	if err != nil {
		return "", fmt.Errorf("authntest: %w", err)
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("authntest: %w", err)
	}
	input := b64(hb) + "." + b64(cb)
	sig, err := i.sign([]byte(input))
	if err != nil {
		return "", err
	}
	return input + "." + b64(sig), nil
}

func (i *Issuer) sign(input []byte) ([]byte, error) {
	switch k := i.key.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(k, input), nil
	case *rsa.PrivateKey:
		d := sha256.Sum256(input)
		if i.Alg == "PS256" {
			return rsa.SignPSS(rand.Reader, k, crypto.SHA256, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		return rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
	case *ecdsa.PrivateKey:
		var digest []byte
		if i.Alg == "ES384" {
			d := sha512.Sum384(input)
			digest = d[:]
		} else {
			d := sha256.Sum256(input)
			digest = d[:]
		}
		r, s, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			return nil, fmt.Errorf("authntest: %w", err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		out := make([]byte, 2*size)
		r.FillBytes(out[:size])
		s.FillBytes(out[size:])
		return out, nil
	}
	return nil, fmt.Errorf("authntest: unsupported key %T", i.key)
}

// UnsignedToken returns an alg "none" token for claims, which a verifier
// must refuse.
func UnsignedToken(claims map[string]any) string {
	hb, _ := json.Marshal(map[string]any{"alg": "none", "typ": "JWT"})
	cb, _ := json.Marshal(claims)
	return b64(hb) + "." + b64(cb) + "."
}

// OAuthMessage frames a token as an OAUTHBEARER initial client response.
func OAuthMessage(token string) []byte {
	return []byte("n,,\x01auth=Bearer " + token + "\x01\x01")
}
