package authn

import (
	"testing"
)

// FuzzJWKS parses arbitrary JWKS documents (a JWKS URL is fetched over the
// network). Invariants: no panic; an accepted set has at least one key and
// every key can verify at least one supported algorithm.
func FuzzJWKS(f *testing.F) {
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","alg":"RS256"},{"kty":"oct","k":"c2VjcmV0"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ks, _, err := parseJWKS(data)
		if err != nil {
			if ks != nil {
				t.Fatal("error with a key set")
			}
			return
		}
		if len(ks.keys) == 0 {
			t.Fatal("accepted an empty key set")
		}
		for _, k := range ks.keys {
			fits := false
			for alg := range supportedAlgs {
				if algFitsKey(alg, k.pub) {
					fits = true
				}
			}
			if !fits {
				t.Fatalf("key %q fits no algorithm", k.kid)
			}
		}
	})
}
