package masking

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

// TestKeyedHashMatchesHMAC checks the pooled HMAC against crypto/hmac for
// short, block-sized and long keys and values.
func TestKeyedHashMatchesHMAC(t *testing.T) {
	for _, key := range []string{"0123456789abcdef", strings.Repeat("k", 64), strings.Repeat("long-key-", 20)} {
		k := newKeyedHash([]byte(key))
		for _, v := range []string{"", "a", "123-45-6789", strings.Repeat("x", 55), strings.Repeat("y", 64), strings.Repeat("z", 70000)} {
			m := hmac.New(sha256.New, []byte(key))
			m.Write([]byte(v))
			want := hex.EncodeToString(m.Sum(nil))
			if got := string(k.appendHex(nil, []byte(v))); got != want {
				t.Fatalf("key %d bytes, value %d bytes: %s, want %s", len(key), len(v), got, want)
			}
		}
	}
}

func BenchmarkKeyedHash(b *testing.B) {
	k := newKeyedHash(testHashKey)
	dst := make([]byte, 0, 128)
	v := []byte("123-45-6789")
	b.ReportAllocs()
	cpuLoop(b, func() { dst = k.appendHex(dst[:0], v) })
}
