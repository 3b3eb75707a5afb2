package masking

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// The per-value bound on zero-byte collection items sums block counts in
// an int64: a first block of one item and a second claiming 2^63-1 wrap
// the sum negative, the bound passes, and the walker loops ~2^63 times on
// a 14-byte value (one core spinning per record, fetch never answered).
func TestZeroItemsBoundCannotWrap(t *testing.T) {
	s := parseSchema(t, 5, `{"type":"record","name":"R","fields":[
	  {"name":"ssn","type":"string"},
	  {"name":"marks","type":{"type":"array","items":"null"}}]}`)
	p := mustPlan(t, s, []filter.MaskRule{{Field: "ssn", Strategy: "hash"}})
	body := appendBytes(nil, []byte("123-45-6789"))
	body = appendLong(body, 1)             // one null: zeroItems = 1
	body = appendLong(body, math.MaxInt64) // 1 + MaxInt64 wraps negative
	body = append(body, 0)
	done := make(chan error, 1)
	go func() {
		_, err := p.AppendMasked(nil, body)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errLength) {
			t.Fatalf("err = %v, want errLength", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("AppendMasked of a %d-byte value still running after 3s (zero-item bound wrapped)", len(body))
	}
}

// An array whose items are records of zero-byte fields (here a null field)
// with a rule inside them: the deep record node built for the rule's path
// has zero=false, so the count is bounded by the remaining input bytes and
// every valid value with more than one item fails to decode, though the
// rule was accepted at compile time and the reference masks it.
func TestDeepZeroByteRecordItems(t *testing.T) {
	s := parseSchema(t, 6, `{"type":"record","name":"R","fields":[
	  {"name":"xs","type":{"type":"array","items":{"type":"record","name":"E","fields":[{"name":"z","type":"null"}]}}}]}`)
	rules := []filter.MaskRule{{Field: "xs[].z", Strategy: "null"}}
	p := mustPlan(t, s, rules) // accepted
	body := []byte{6, 0}       // xs: three {z: null}
	want, err := refMask(s.Avro, parseRules(t, rules), body)
	if err != nil {
		t.Fatal(err)
	}
	if err := mustPlan(t, s, nil).Validate(body); err != nil {
		t.Logf("even the rule-free validator: %v", err)
	}
	if _, err := p.AppendMasked(nil, body); err != nil {
		t.Fatalf("valid value (reference masks it to %x) fails: %v", want, err)
	}
}

// Masked JSON is re-serialized by fastjson, whose escapeString falls back to
// strconv.AppendQuote for any string holding '"', '\\' or a byte < 0x20:
// Go quoting, not JSON (\x00, \a, \v, \x7f). That hits (a) the keys of
// every object on a masked path, which are unescaped once visited, and (b)
// partial's output, which keeps characters of the input. The record is
// then delivered as text no JSON parser accepts.
func TestJSONOutputEscaping(t *testing.T) {
	p, err := compileJSON(parseRules(t, []filter.MaskRule{
		{Field: "customer.ssn", Strategy: "hash"},
		{Field: "name", Strategy: "partial", Params: map[string]string{"keep_first": "4"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{
		`{"customer":{"ssn":"123-45-6789","note\u0000":1}}`,   // sibling key with NUL
		`{"customer":{"ssn":"123-45-6789","tab\u000bkey":1}}`, // sibling key with VT
		`{"customer":{"ssn":"123-45-6789","q\"\u007f":1}}`,    // quote + DEL
		`{"name":"ab\u000bcdefgh"}`,                           // partial keeps a VT
		`{"name":"a\u0001bcdefgh"}`,                           // partial keeps a SOH
	} {
		if !json.Valid([]byte(in)) {
			t.Fatalf("test input %s is not JSON", in)
		}
		out, err := p.AppendMasked(nil, []byte(in))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if !json.Valid(out) {
			t.Errorf("input %s\n masked output is not JSON: %q", in, out)
		}
	}
}
