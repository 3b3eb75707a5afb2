package authn_test

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/proxy/authn"
)

// scramFinal computes an RFC 5802 client-final-message for SHA-256 from the
// server-first-message, with c= set to base64(cbind).
func scramFinal(t *testing.T, password, clientFirstBare, serverFirst, cbind string) string {
	return scramFinalNonce(t, password, clientFirstBare, serverFirst, cbind, func(n string) string { return n })
}

// scramFinalNonce is scramFinal with the r= value rewritten by nonceFn.
func scramFinalNonce(t *testing.T, password, clientFirstBare, serverFirst, cbind string, nonceFn func(string) string) string {
	t.Helper()
	var nonce, saltB64 string
	var iters int
	for _, kv := range strings.Split(serverFirst, ",") {
		switch {
		case strings.HasPrefix(kv, "r="):
			nonce = kv[2:]
		case strings.HasPrefix(kv, "s="):
			saltB64 = kv[2:]
		case strings.HasPrefix(kv, "i="):
			iters, _ = strconv.Atoi(kv[2:])
		}
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil {
		t.Fatal(err)
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iters, 32)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	withoutProof := "c=" + base64.StdEncoding.EncodeToString([]byte(cbind)) + ",r=" + nonceFn(nonce)
	sig := mac(stored[:], clientFirstBare+","+serverFirst+","+withoutProof)
	for i := range sig {
		sig[i] ^= clientKey[i]
	}
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(sig)
}

// TestSCRAMChannelBindingAttribute checks the c= attribute against the GS2
// header with an independent client computation: the RFC form and the
// franz-go form (authzid dropped) pass, a different flag does not.
func TestSCRAMChannelBindingAttribute(t *testing.T) {
	f := newFixture(t, nil, alice)
	a := f.auth(t, "SCRAM-SHA-256")
	for _, c := range []struct {
		name, gs2, cbind, reason string
	}{
		{"plain n", "n,,", "n,,", ""},
		{"y flag", "y,,", "y,,", ""},
		{"authzid, RFC form", "n,a=alice,", "n,a=alice,", ""},
		{"authzid, franz-go form", "n,a=alice,", "n,,", ""},
		{"flag changed", "n,,", "y,,", authn.ReasonChannelBinding},
		{"authzid changed", "n,a=alice,", "n,a=bob,", authn.ReasonChannelBinding},
		{"cbind data appended", "n,,", "n,,data", authn.ReasonChannelBinding},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := a.Start(authn.MechScramSHA256, nil)
			if err != nil {
				t.Fatal(err)
			}
			bare := "n=alice,r=rfc5802nonce"
			sf, _, _, _, err := s.Step([]byte(c.gs2 + bare))
			if err != nil {
				t.Fatal(err)
			}
			final := scramFinal(t, alice.Password, bare, string(sf), c.cbind)
			reply, done, p, _, err := s.Step([]byte(final))
			if c.reason != "" {
				if done || reasonOf(err) != c.reason {
					t.Fatalf("done %v err %v, want %q", done, err, c.reason)
				}
				return
			}
			if err != nil || !done || p.ID != "alice" || !strings.HasPrefix(string(reply), "v=") {
				t.Fatalf("reply %q done %v p %v err %v", reply, done, p, err)
			}
		})
	}
	// A wrong password computed the same way fails with bad_proof.
	s, _ := a.Start(authn.MechScramSHA256, nil)
	sf, _, _, _, _ := s.Step([]byte("n,,n=alice,r=x"))
	if _, _, _, _, err := s.Step([]byte(scramFinal(t, "wrong", "n=alice,r=x", string(sf), "n,,"))); reasonOf(err) != authn.ReasonBadProof {
		t.Fatalf("wrong password: %v", err)
	}
}

// TestSCRAMNonceForms: the final nonce must be the combined nonce, or the
// client nonce followed by it (librdkafka before 2.6.1, librdkafka#4895);
// anything else is refused even with a proof over it.
func TestSCRAMNonceForms(t *testing.T) {
	f := newFixture(t, nil, alice)
	a := f.auth(t, "SCRAM-SHA-256")
	const cnonce = "=6X-J>}<P>49}KH~^|.lQ"
	for _, c := range []struct {
		name   string
		nonce  func(combined string) string
		reason string
	}{
		{"combined", func(n string) string { return n }, ""},
		{"librdkafka < 2.6.1", func(n string) string { return cnonce + n }, ""},
		{"other prefix", func(n string) string { return "x" + n }, authn.ReasonMalformed},
		{"client nonce only", func(string) string { return cnonce }, authn.ReasonMalformed},
		{"truncated", func(n string) string { return n[:len(n)-1] }, authn.ReasonMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, _ := a.Start(authn.MechScramSHA256, nil)
			bare := "n=alice,r=" + cnonce
			sf, _, _, _, err := s.Step([]byte("n,," + bare))
			if err != nil {
				t.Fatal(err)
			}
			_, done, _, _, err := s.Step([]byte(scramFinalNonce(t, alice.Password, bare, string(sf), "n,,", c.nonce)))
			if c.reason == "" {
				if err != nil || !done {
					t.Fatalf("done %v err %v", done, err)
				}
				return
			}
			if done || reasonOf(err) != c.reason {
				t.Fatalf("done %v err %v, want %q", done, err, c.reason)
			}
		})
	}
}
