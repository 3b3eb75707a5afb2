package authn

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// minRSABits is the smallest RSA modulus accepted in a JWKS.
const minRSABits = 2048

// jwk is one usable verification key of a JWKS.
type jwk struct {
	kid string
	alg string // "" when the JWK does not restrict its algorithm
	pub crypto.PublicKey
}

// keySet is one immutable revision of a JWKS.
type keySet struct {
	keys []jwk
}

type rawJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	D   string `json:"d"`
}

// parseJWKS parses a JSON Web Key Set (RFC 7517). Keys of unknown types or
// for encryption are skipped; skipped is how many. A set without any usable
// key, or with a private key in it, is an error.
func parseJWKS(data []byte) (ks *keySet, skipped int, err error) {
	var doc struct {
		Keys []rawJWK `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, 0, fmt.Errorf("not a JWKS document: %v", err)
	}
	ks = &keySet{}
	for i, r := range doc.Keys {
		if r.D != "" {
			return nil, 0, fmt.Errorf("keys[%d] (kid %q): holds a private key; publish only public keys", i, r.Kid)
		}
		if r.Use != "" && r.Use != "sig" {
			skipped++
			continue
		}
		if r.Alg != "" && !supportedAlgs[r.Alg] {
			skipped++
			continue
		}
		pub, err := r.publicKey()
		if errors.Is(err, errSkipKey) {
			skipped++
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("keys[%d] (kid %q): %v", i, r.Kid, err)
		}
		if r.Alg != "" && !algFitsKey(r.Alg, pub) {
			return nil, 0, fmt.Errorf("keys[%d] (kid %q): alg %s does not fit a %s key", i, r.Kid, r.Alg, r.Kty)
		}
		ks.keys = append(ks.keys, jwk{kid: r.Kid, alg: r.Alg, pub: pub})
	}
	if len(ks.keys) == 0 {
		return nil, skipped, errors.New("no usable signing key (RSA >= 2048 bits, EC P-256/P-384/P-521 or OKP Ed25519)")
	}
	return ks, skipped, nil
}

var errSkipKey = errors.New("skip")

func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(s)
}

func (r rawJWK) publicKey() (crypto.PublicKey, error) {
	switch r.Kty {
	case "RSA":
		n, err := b64url(r.N)
		if err != nil || len(n) == 0 {
			return nil, errors.New("n: not base64url")
		}
		e, err := b64url(r.E)
		if err != nil || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("e: not a base64url exponent of at most 4 bytes")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits is shorter than %d", pub.N.BitLen(), minRSABits)
		}
		if pub.E < 3 || pub.E%2 == 0 {
			return nil, fmt.Errorf("RSA exponent %d is invalid", pub.E)
		}
		return pub, nil
	case "EC":
		var c elliptic.Curve
		switch r.Crv {
		case "P-256":
			c = elliptic.P256()
		case "P-384":
			c = elliptic.P384()
		case "P-521":
			c = elliptic.P521()
		default:
			return nil, errSkipKey
		}
		size := (c.Params().BitSize + 7) / 8
		x, err1 := b64url(r.X)
		y, err2 := b64url(r.Y)
		if err1 != nil || err2 != nil || len(x) != size || len(y) != size {
			return nil, fmt.Errorf("x, y: must be base64url of %d bytes each for %s", size, r.Crv)
		}
		pt := make([]byte, 0, 1+2*size)
		pt = append(pt, 4)
		pt = append(pt, x...)
		pt = append(pt, y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(c, pt)
		if err != nil {
			return nil, fmt.Errorf("EC point: %v", err)
		}
		return pub, nil
	case "OKP":
		if r.Crv != "Ed25519" {
			return nil, errSkipKey
		}
		x, err := b64url(r.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("x: must be base64url of %d bytes", ed25519.PublicKeySize)
		}
		return ed25519.PublicKey(x), nil
	default:
		return nil, errSkipKey
	}
}

// algFitsKey reports whether a JWS algorithm can be verified with pub.
func algFitsKey(alg string, pub crypto.PublicKey) bool {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return k.Curve == elliptic.P256()
		case "ES384":
			return k.Curve == elliptic.P384()
		case "ES512":
			return k.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// candidates returns the keys that may have signed a token with this kid
// and alg, and whether the kid was known.
func (ks *keySet) candidates(kid, alg string) (keys []jwk, kidKnown bool) {
	if ks == nil {
		return nil, false
	}
	for _, k := range ks.keys {
		if kid != "" && k.kid != kid {
			continue
		}
		kidKnown = true
		if k.alg != "" && k.alg != alg {
			continue
		}
		if !algFitsKey(alg, k.pub) {
			continue
		}
		keys = append(keys, k)
	}
	return keys, kidKnown
}
