package masking

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/proxy/filter"
)

func TestJSONMasking(t *testing.T) {
	in := `{"id":7,"customer":{"name":"Ada Lovelace","ssn":"123-45-6789","email":null},"ssn":"top","amount":12.5,
 "ok":true,"items":[{"card":"4111111111111111","n":1},{"card":"5500005555555559"},{"other":1}],
 "attrs":{"a":{"x":"secret-a"},"b":{"x":"secret-b"}},"tags":["t1","t2"],"dup":"one","nested":{"deep":[1,2]}}`
	rules := []filter.MaskRule{
		{Field: "customer.ssn", Strategy: "hash"},
		{Field: "customer.name", Strategy: "partial", Params: map[string]string{"keep_first": "2", "keep_last": "0"}},
		{Field: "customer.email", Strategy: "tokenize"},
		{Field: "amount", Strategy: "redact"},
		{Field: "ok", Strategy: "redact"},
		{Field: "items[].card", Strategy: "partial"},
		{Field: "attrs{}.x", Strategy: "tokenize"},
		{Field: "tags[]", Strategy: "null"},
		{Field: "dup", Strategy: "redact", Params: map[string]string{"replacement": "***"}},
		{Field: "nested", Strategy: "hash"},
		{Field: "absent.path", Strategy: "redact"},
	}
	p, err := compileJSON(parseRules(t, rules))
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.AppendMasked(nil, []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(out) {
		t.Fatalf("invalid JSON: %s", out)
	}
	for _, leak := range []string{"123-45-6789", "Ada Lovelace", "4111111111111111", "secret-a", "secret-b", `"one"`, "t1", "[1,2]"} {
		if strings.Contains(string(out), leak) {
			t.Fatalf("%q in clear: %s", leak, out)
		}
	}
	var got map[string]any
	json.Unmarshal(out, &got)
	cust := got["customer"].(map[string]any)
	if cust["ssn"] != refHash("123-45-6789") || cust["name"] != "Ad**********" || cust["email"] != nil {
		t.Fatalf("customer %v", cust)
	}
	if got["amount"] != 0.0 || got["ok"] != false || got["ssn"] != "top" || got["id"] != 7.0 {
		t.Fatalf("scalars %v", got)
	}
	items := got["items"].([]any)
	if items[0].(map[string]any)["card"] != "************1111" || items[1].(map[string]any)["card"] != "************5559" {
		t.Fatalf("items %v", items)
	}
	if got["attrs"].(map[string]any)["a"].(map[string]any)["x"] != refToken("secret-a") {
		t.Fatalf("attrs %v", got["attrs"])
	}
	if got["nested"] != refHash(`{"deep":[1,2]}`) {
		t.Fatalf("nested %v", got["nested"])
	}
	if _, err := p.AppendMasked(nil, []byte(`{"a":`)); err == nil {
		t.Fatal("invalid JSON accepted")
	}
	// Duplicate keys on a masked path are refused (only the first would be
	// replaced), elsewhere they pass.
	if _, err := p.AppendMasked(nil, []byte(`{"dup":"one","dup":"two"}`)); err == nil {
		t.Fatal("duplicate masked key accepted")
	}
	if out, err := p.AppendMasked(nil, []byte(`{"free":1,"free":2}`)); err != nil || string(out) != `{"free":1,"free":2}` {
		t.Fatalf("duplicate unmasked key: %s %v", out, err)
	}
	// fastjson shares true/false/null values: masking one must not
	// change the others.
	out, _ = p.AppendMasked(nil, []byte(`{"ok":true,"x":true}`))
	if string(out) != `{"ok":false,"x":true}` {
		t.Fatalf("shared true clobbered: %s", out)
	}
	out, _ = p.AppendMasked(nil, []byte(`{"y":true}`))
	if string(out) != `{"y":true}` {
		t.Fatalf("shared true clobbered: %s", out)
	}
}

func TestJSONRowFilter(t *testing.T) {
	rs, err := NewPlanner(DefaultConfig(), nil, nil).RuleSet(&filter.Obligations{RowFilter: &filter.RowFilter{Field: "geo.region", Op: "in", Values: []string{"EU", "7", "true"}}})
	if err != nil {
		t.Fatal(err)
	}
	p := rs.jsonPredicate()
	for in, want := range map[string]bool{
		`{"geo":{"region":"EU"}}`: true, `{"geo":{"region":"US"}}`: false, `{"geo":{"region":7}}`: true,
		`{"geo":{"region":true}}`: true, `{"geo":{}}`: false, `{"geo":{"region":null}}`: false, `[]`: false,
	} {
		got, err := p.match([]byte(in))
		if err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
}

func TestPaths(t *testing.T) {
	for in, want := range map[string]string{
		"a": "a", "a.b": "a.b", "items[].card": "items[].card", "m{}": "m{}", "m{}.x": "m{}.x", "x[][]": "x[][]", "[]": "[]", "[].a": "[].a",
	} {
		st, err := parsePath(in)
		if err != nil || stepsString(st) != want {
			t.Errorf("%s: %s %v", in, stepsString(st), err)
		}
	}
	for _, bad := range []string{"", ".", "a.", "a..b", "a[", "a[]b", "a b"} {
		if _, err := parsePath(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct{ yaml, err string }{
		{"default: {format: avro, on_error: marker}\n", ""},
		{"topics: {t: {format: json}}\n", ""},
		{"topics: {t: {format: xml}}\n", "format"},
		{"topics: {t: {on_error: drop}}\n", "on_error"},
		{"topics: {t: {format: json, contract: true}}\n", "contract"},
		{"keys: {hash: {env: A, file: b}}\n", "exactly one"},
		{"bogus: 1\n", "bogus"},
	} {
		_, err := ParseConfig([]byte(tc.yaml))
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.err)
		}
	}
	c, _ := ParseConfig([]byte("default: {format: avro, on_error: fail_partition}\ntopics: {t: {format: json}}\n"))
	if tc := c.Topic("t"); tc.Format != FormatJSON || tc.KeyFormat != FormatJSON || tc.OnError != OnErrorFailPartition {
		t.Fatalf("topic t: %+v", tc)
	}
	if tc := c.Topic("u"); tc.Format != FormatAvro || tc.OnError != OnErrorFailPartition {
		t.Fatalf("topic u: %+v", tc)
	}
	c.Keys = map[string]KeySource{"hash": {Env: "SLUICE_TEST_SHORT_KEY"}}
	t.Setenv("SLUICE_TEST_SHORT_KEY", "short")
	if _, err := c.LoadKeys(); err == nil || !strings.Contains(err.Error(), "16 bytes") {
		t.Fatalf("short key: %v", err)
	}
}
