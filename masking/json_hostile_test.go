package masking

import (
	"encoding/json"
	"testing"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// A JSON row filter reads the first of duplicate keys (fastjson Get), while
// consumers' JSON parsers (Go encoding/json, Python json, JavaScript
// JSON.parse) keep the last: a record every consumer reads as region US
// passes a filter that keeps only EU. Masking treats a duplicate key on a
// masked path as a failure for this very reason; the row filter does not.
func TestJSONRowFilterDuplicateKey(t *testing.T) {
	m := newMasker(t, nil, TopicConfig{Format: FormatJSON}, &filter.Obligations{
		RowFilter: &filter.RowFilter{Field: "region", Op: "eq", Values: []string{"EU"}},
	})
	in := []byte(`{"region":"EU","region":"US","amount":1}`)
	var consumer struct{ Region string }
	json.Unmarshal(in, &consumer)
	var e RecordEdit
	if err := m.Transform(nil, in, &e); err != nil {
		t.Fatal(err)
	}
	if !e.Drop && e.Error == "" {
		t.Fatalf("record kept by row filter region=EU, but consumers read region=%q", consumer.Region)
	}
}

// A numeric JSON field redacted with a replacement that strconv.ParseFloat
// accepts but JSON does not (NaN, Inf, +1, .5, 1., 0x1p4) is written as that
// raw text: the masked value is no longer JSON.
func TestJSONRedactNumberReplacementValid(t *testing.T) {
	for _, repl := range []string{"NaN", "Inf", "+1", ".5", "1.", "0x1p4"} {
		p, err := compileJSON(parseRules(t, []filter.MaskRule{{Field: "amount", Strategy: "redact", Params: map[string]string{"replacement": repl}}}))
		if err != nil {
			t.Fatal(err)
		}
		out, err := p.AppendMasked(nil, []byte(`{"amount":12.5}`))
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(out) {
			t.Errorf("replacement %q: masked output is not JSON: %s", repl, out)
		}
	}
}
