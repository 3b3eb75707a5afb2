package masking

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/hamba/avro/v2"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/schema"
)

var (
	testHashKey  = []byte("0123456789abcdef-hash-key")
	testTokenKey = []byte("0123456789abcdef-token-key")
)

func testKeys(t testing.TB) *Keys {
	k, err := NewKeys(map[string][]byte{DefaultHashKey: testHashKey, DefaultTokenKey: testTokenKey})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func parseSchema(t testing.TB, id int, text string) *schema.Schema {
	t.Helper()
	a, err := avro.ParseWithCache(text, "", &avro.SchemaCache{})
	if err != nil {
		t.Fatal(err)
	}
	return &schema.Schema{ID: id, Avro: a, Text: text}
}

func parseRules(t testing.TB, rules []filter.MaskRule) []*rule {
	t.Helper()
	var out []*rule
	for _, mr := range rules {
		r, err := parseRule(mr, testKeys(t))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func mustPlan(t testing.TB, s *schema.Schema, rules []filter.MaskRule) *Plan {
	t.Helper()
	p, err := compileSchema(s, parseRules(t, rules))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Independent implementations of the strategies, for expectations.
func refHash(v string) string {
	m := hmac.New(sha256.New, testHashKey)
	m.Write([]byte(v))
	return hex.EncodeToString(m.Sum(nil))
}

func refToken(v string) string {
	m := hmac.New(sha256.New, testTokenKey)
	m.Write([]byte(v))
	return "tok_" + strings.ToLower(base32.StdEncoding.EncodeToString(m.Sum(nil)[:15]))
}

func refPartial(v string, first, last int, mc string) string {
	r := []rune(v)
	if len(r) <= first+last {
		return strings.Repeat(mc, len(r))
	}
	return string(r[:first]) + strings.Repeat(mc, len(r)-first-last) + string(r[len(r)-last:])
}
