package authn

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	_ "crypto/sha256" // JWS hashes
	_ "crypto/sha512"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// maxTokenLen bounds a bearer token.
const maxTokenLen = 32 << 10

type jwtHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Typ  string          `json:"typ"`
	Crit json.RawMessage `json:"crit"`
}

// jwtToken is a parsed, not yet verified, compact JWS.
type jwtToken struct {
	header       jwtHeader
	signingInput []byte
	sig          []byte
	claims       map[string]any
}

// parseJWT splits and decodes a compact JWS. It checks syntax only.
func parseJWT(tok string) (*jwtToken, *filter.AuthError) {
	if len(tok) > maxTokenLen {
		return nil, malformed("token too long")
	}
	h, rest, ok1 := strings.Cut(tok, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s, ".") {
		return nil, malformed("token is not a compact JWS (header.payload.signature)")
	}
	hb, err := b64url(h)
	if err != nil {
		return nil, malformed("token header is not base64url")
	}
	pb, err := b64url(p)
	if err != nil {
		return nil, malformed("token payload is not base64url")
	}
	sig, err := b64url(s)
	if err != nil {
		return nil, malformed("token signature is not base64url")
	}
	t := &jwtToken{signingInput: []byte(tok[:len(h)+1+len(p)]), sig: sig}
	if err := json.Unmarshal(hb, &t.header); err != nil {
		return nil, malformed("token header is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(pb))
	dec.UseNumber()
	if err := dec.Decode(&t.claims); err != nil || t.claims == nil || dec.More() {
		return nil, malformed("token payload is not a JSON object")
	}
	return t, nil
}

var algHash = map[string]crypto.Hash{
	"RS256": crypto.SHA256, "RS384": crypto.SHA384, "RS512": crypto.SHA512,
	"PS256": crypto.SHA256, "PS384": crypto.SHA384, "PS512": crypto.SHA512,
	"ES256": crypto.SHA256, "ES384": crypto.SHA384, "ES512": crypto.SHA512,
}

// verifySig checks the token signature with one key.
func (t *jwtToken) verifySig(k jwk) bool {
	alg := t.header.Alg
	if alg == "EdDSA" {
		pub, ok := k.pub.(ed25519.PublicKey)
		return ok && ed25519.Verify(pub, t.signingInput, t.sig)
	}
	hf, ok := algHash[alg]
	if !ok {
		return false
	}
	h := hf.New()
	h.Write(t.signingInput)
	digest := h.Sum(nil)
	switch pub := k.pub.(type) {
	case *rsa.PublicKey:
		switch alg[0] {
		case 'R':
			return rsa.VerifyPKCS1v15(pub, hf, digest, t.sig) == nil
		case 'P':
			return rsa.VerifyPSS(pub, hf, digest, t.sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		}
	case *ecdsa.PublicKey:
		size := (pub.Curve.Params().BitSize + 7) / 8
		if len(t.sig) != 2*size {
			return false
		}
		r := new(big.Int).SetBytes(t.sig[:size])
		s := new(big.Int).SetBytes(t.sig[size:])
		return ecdsa.Verify(pub, digest, r, s)
	}
	return false
}

// numericDate reads a NumericDate claim. ok is false when the claim is
// absent; err is set when it is present but not a number.
func numericDate(claims map[string]any, name string) (t time.Time, ok bool, err *filter.AuthError) {
	v, present := claims[name]
	if !present {
		return time.Time{}, false, nil
	}
	n, isNum := v.(json.Number)
	if !isNum {
		return time.Time{}, false, authErr(ReasonBadClaims, "token claim "+name+" is not a number")
	}
	f, e := n.Float64()
	if e != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e11 {
		return time.Time{}, false, authErr(ReasonBadClaims, "token claim "+name+" is out of range")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// claimPath follows a dotted claim path through nested objects.
func claimPath(claims map[string]any, path string) (any, bool) {
	var cur any = claims
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// claimString renders a scalar claim (string, number, bool) or an array of
// scalars (joined with ",") as a string.
func claimString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		if x {
			return "true", true
		}
		return "false", true
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := claimString(e)
			if !ok {
				return "", false
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), true
	}
	return "", false
}

// claimStrings reads a roles-like claim: an array of strings or a
// space-separated string.
func claimStrings(v any) ([]string, bool) {
	switch x := v.(type) {
	case string:
		return strings.Fields(x), true
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

// audienceHas reports whether the aud claim (string or array) names aud.
func audienceHas(v any, aud string) bool {
	switch x := v.(type) {
	case string:
		return x == aud
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok && s == aud {
				return true
			}
		}
	}
	return false
}

func claimsErr(format string, args ...any) *filter.AuthError {
	return authErr(ReasonBadClaims, ""+fmt.Sprintf(format, args...))
}
