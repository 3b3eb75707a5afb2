package masking

import (
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// Two grants with different rules share one cached RuleSet because the
// fingerprint joins free-text components with separator bytes that the
// components themselves may contain. The grant seen second is then masked
// under the first grant's rules.
func TestRuleSetKeyUnambiguous(t *testing.T) {
	p := NewPlanner(DefaultConfig(), nil, testKeys(t))
	// Grant A: redact "a" with an (odd but legal) replacement text.
	a := &filter.Obligations{Mask: []filter.MaskRule{
		{Field: "a", Strategy: "redact", Params: map[string]string{"replacement": "R\x01b\x00hash\x00"}},
	}}
	// Grant B: redact "a", hash "b".
	b := &filter.Obligations{Mask: []filter.MaskRule{
		{Field: "a", Strategy: "redact", Params: map[string]string{"replacement": "R"}},
		{Field: "b", Strategy: "hash"},
	}}
	rsA, err := p.RuleSet(a)
	if err != nil {
		t.Fatal(err)
	}
	rsB, err := p.RuleSet(b)
	if err != nil {
		t.Fatal(err)
	}
	if rsA == rsB {
		t.Errorf("grants A and B got the same cached RuleSet (fingerprint %q); B has %d value rules instead of 2", rsA.fp, len(rsB.value))
	}
	// Consequence on a JSON topic: B's field b is delivered in clear.
	m := &recordMasker{p: p, rs: rsB, tc: TopicConfig{Format: FormatJSON, KeyFormat: FormatJSON, OnError: OnErrorMarker}}
	var e RecordEdit
	if err := m.Transform(nil, []byte(`{"a":"x","b":"SECRET-B"}`), &e); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(e.Value), "SECRET-B") {
		t.Errorf("grant B's hashed field delivered in clear: %s", e.Value)
	}

	// Row filters: values joined by NUL.
	p2 := NewPlanner(DefaultConfig(), nil, testKeys(t))
	one, _ := p2.RuleSet(&filter.Obligations{RowFilter: &filter.RowFilter{Field: "region", Op: "in", Values: []string{"EU\x00US"}}})
	two, _ := p2.RuleSet(&filter.Obligations{RowFilter: &filter.RowFilter{Field: "region", Op: "in", Values: []string{"EU", "US"}}})
	if one == two {
		t.Errorf("row filters in [\"EU\\x00US\"] and in [\"EU\",\"US\"] share a RuleSet: values %q", two.row.Values)
	}
}
