package masking

import (
	"encoding/json"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/schema"
)

var update = flag.Bool("update", false, "rewrite golden files")

// demoRules mask 3 of the demo payment's top-level fields and several
// nested ones, with every strategy.
var demoRules = []filter.MaskRule{
	{Field: "customer.ssn", Strategy: "hash"},
	{Field: "customer.email", Strategy: "tokenize"},
	{Field: "customer.name", Strategy: "partial", Params: map[string]string{"keep_first": "1", "keep_last": "0"}},
	{Field: "account_number", Strategy: "partial", Params: map[string]string{"keep_last": "4", "mask_char": "#"}},
	{Field: "card.number", Strategy: "redact", Params: map[string]string{"replacement": "XXXX"}},
	{Field: "currency", Strategy: "default"},
	{Field: "settled_on", Strategy: "null"},
	{Field: "tags[]", Strategy: "redact"},
	{Field: "attrs{}", Strategy: "hash"},
	{Field: "created_at", Strategy: "redact"},
	{Field: "region", Strategy: "redact", Params: map[string]string{"replacement": "US"}},
}

func TestDemoMasking(t *testing.T) {
	s := parseSchema(t, 7, schema.DemoPaymentsSchema)
	p := mustPlan(t, s, demoRules)
	for i := range 50 {
		in := schema.DemoRecord(i)
		in.Currency = "USD"
		body, err := avro.Marshal(s.Avro, in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := p.AppendMasked([]byte("prefix"), body)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(out), "prefix") {
			t.Fatal("dst prefix lost")
		}
		var got schema.DemoPayment
		if err := avro.Unmarshal(s.Avro, out[6:], &got); err != nil {
			t.Fatalf("masked record %d does not decode: %v", i, err)
		}
		want := in
		want.Customer.SSN = refHash(in.Customer.SSN)
		if in.Customer.Email != nil {
			tok := refToken(*in.Customer.Email)
			want.Customer.Email = &tok
		}
		want.Customer.Name = refPartial(in.Customer.Name, 1, 0, "*")
		want.AccountNumber = refPartial(in.AccountNumber, 0, 4, "#")
		if in.Card != nil {
			c := *in.Card
			c.Number = "XXXX"
			want.Card = &c
		}
		want.Currency = "EUR"
		want.SettledOn = nil
		want.Tags = nil
		for range in.Tags {
			want.Tags = append(want.Tags, DefaultReplacement)
		}
		want.Attrs = map[string]string{}
		for k, v := range in.Attrs {
			want.Attrs[k] = refHash(v)
		}
		want.CreatedAt = time.UnixMilli(0).UTC()
		want.Region = "US"
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		if string(gj) != string(wj) {
			t.Fatalf("record %d:\n got %s\nwant %s", i, gj, wj)
		}
		if got.Amount.Cmp(in.Amount) != 0 || got.ID != in.ID || got.MerchantCategory != in.MerchantCategory {
			t.Fatalf("untouched fields changed")
		}
	}
}

// kitchenSchema has nested records, arrays of records, maps of records,
// general unions, recursion, fixed, enums and logical types.
const kitchenSchema = `{
 "type": "record", "name": "K", "namespace": "t",
 "fields": [
  {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
  {"name": "n", "type": "int"},
  {"name": "big", "type": "long"},
  {"name": "f", "type": "float"},
  {"name": "d", "type": "double"},
  {"name": "ok", "type": "boolean"},
  {"name": "raw", "type": "bytes"},
  {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
  {"name": "day", "type": {"type": "int", "logicalType": "date"}},
  {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "fx", "type": {"type": "fixed", "name": "F4", "size": 4}},
  {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"], "default": "RED"}},
  {"name": "items", "type": {"type": "array", "items": {"type": "record", "name": "Item", "fields": [
     {"name": "sku", "type": "string"},
     {"name": "card", "type": ["null", "string"], "default": null},
     {"name": "qty", "type": "int", "default": 1}
  ]}}},
  {"name": "byname", "type": {"type": "map", "values": "Item"}},
  {"name": "notes", "type": {"type": "map", "values": "string"}},
  {"name": "matrix", "type": {"type": "array", "items": {"type": "array", "items": "string"}}},
  {"name": "choice", "type": ["null", "string", "long", "Item"], "default": null},
  {"name": "next", "type": ["null", "K"], "default": null},
  {"name": "label", "type": "string", "default": "none"}
 ]}`

var kitchenRules = [][]filter.MaskRule{
	{{Field: "items[].card", Strategy: "hash"}, {Field: "items[].sku", Strategy: "partial"}},
	{{Field: "byname{}.sku", Strategy: "tokenize"}, {Field: "notes{}", Strategy: "redact"}},
	{{Field: "matrix[][]", Strategy: "partial", Params: map[string]string{"keep_first": "2"}}},
	{{Field: "choice.sku", Strategy: "redact"}, {Field: "label", Strategy: "default"}, {Field: "raw", Strategy: "hash"}},
	{{Field: "choice", Strategy: "null"}, {Field: "next", Strategy: "null"}, {Field: "id", Strategy: "redact"}},
	{{Field: "n", Strategy: "redact", Params: map[string]string{"replacement": "-7"}}, {Field: "big", Strategy: "redact"},
		{Field: "f", Strategy: "redact"}, {Field: "d", Strategy: "redact", Params: map[string]string{"replacement": "1.5"}},
		{Field: "ok", Strategy: "redact"}, {Field: "amount", Strategy: "redact"}, {Field: "day", Strategy: "redact"},
		{Field: "ts", Strategy: "redact"}, {Field: "fx", Strategy: "redact"}, {Field: "color", Strategy: "redact"}},
	{{Field: "items", Strategy: "redact"}, {Field: "byname", Strategy: "redact"}, {Field: "raw", Strategy: "tokenize"}},
	{{Field: "next.items[].sku", Strategy: "hash"}, {Field: "next.next.label", Strategy: "redact"}},
}

func TestCompileErrors(t *testing.T) {
	demo := parseSchema(t, 1, schema.DemoPaymentsSchema)
	kitchen := parseSchema(t, 2, kitchenSchema)
	for _, tc := range []struct {
		name string
		s    *schema.Schema
		rule filter.MaskRule
		err  string
	}{
		{"partial on long", kitchen, filter.MaskRule{Field: "big", Strategy: "partial"}, "only applies to strings"},
		{"hash on decimal", demo, filter.MaskRule{Field: "amount", Strategy: "hash"}, "not be a valid decimal"},
		{"tokenize uuid", demo, filter.MaskRule{Field: "id", Strategy: "tokenize"}, "valid uuid"},
		{"null not nullable", demo, filter.MaskRule{Field: "customer.ssn", Strategy: "null"}, "not nullable"},
		{"default without default", demo, filter.MaskRule{Field: "account_number", Strategy: "default"}, "no default"},
		{"default in array", kitchen, filter.MaskRule{Field: "matrix[]", Strategy: "default"}, "no default"},
		{"redact record", demo, filter.MaskRule{Field: "customer", Strategy: "redact"}, "mask its fields"},
		{"missing field", demo, filter.MaskRule{Field: "customer.phone", Strategy: "redact"}, "no field"},
		{"array without []", demo, filter.MaskRule{Field: "tags.x", Strategy: "redact"}, "must say []"},
		{"map with []", demo, filter.MaskRule{Field: "attrs[]", Strategy: "redact"}, "must say {}"},
		{"into string", demo, filter.MaskRule{Field: "account_number.x", Strategy: "redact"}, "no field"},
		{"union without path", kitchen, filter.MaskRule{Field: "choice.nope", Strategy: "redact"}, "no branch"},
		{"union mixed types", kitchen, filter.MaskRule{Field: "choice", Strategy: "partial"}, "only applies to strings"},
		{"enum without symbol", kitchen, filter.MaskRule{Field: "color", Strategy: "redact", Params: map[string]string{"replacement": "PINK"}}, "symbols"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileSchema(tc.s, parseRules(t, []filter.MaskRule{tc.rule}))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
	t.Run("conflict", func(t *testing.T) {
		_, err := compileSchema(demo, parseRules(t, []filter.MaskRule{{Field: "customer.ssn", Strategy: "hash"}, {Field: "customer.ssn", Strategy: "redact"}}))
		if err == nil || !strings.Contains(err.Error(), "differently") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestRuleParseErrors(t *testing.T) {
	for _, tc := range []struct {
		rule filter.MaskRule
		err  string
	}{
		{filter.MaskRule{Field: "a", Strategy: "scramble"}, "unknown strategy"},
		{filter.MaskRule{Field: "a", Strategy: "redact", Params: map[string]string{"keep_last": "2"}}, "no parameter"},
		{filter.MaskRule{Field: "a", Strategy: "partial", Params: map[string]string{"keep_last": "-1"}}, "keep_last"},
		{filter.MaskRule{Field: "a", Strategy: "partial", Params: map[string]string{"mask_char": "ab"}}, "one character"},
		{filter.MaskRule{Field: "a", Strategy: "hash", Params: map[string]string{"key": "nope"}}, "no hash key"},
		{filter.MaskRule{Field: "a", Strategy: "hash", Target: "header"}, "target"},
		{filter.MaskRule{Field: "a..b", Strategy: "hash"}, "empty name"},
		{filter.MaskRule{Field: "", Strategy: "hash"}, "empty field path"},
	} {
		t.Run(tc.err, func(t *testing.T) {
			_, err := parseRule(tc.rule, testKeys(t))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

// TestGolden masks fixed kitchen-sink records and compares the decoded
// output with testdata/golden (run with -update to rewrite).
func TestGolden(t *testing.T) {
	s := parseSchema(t, 3, kitchenSchema)
	recs := goldenRecords(t, s)
	for i, rules := range kitchenRules {
		p := mustPlan(t, s, rules)
		var outs []any
		for _, body := range recs {
			out, err := p.AppendMasked(nil, body)
			if err != nil {
				t.Fatal(err)
			}
			var v any
			if err := avro.Unmarshal(s.Avro, out, &v); err != nil {
				t.Fatalf("rules %d: masked output does not decode: %v", i, err)
			}
			outs = append(outs, v)
		}
		got, err := json.MarshalIndent(map[string]any{"rules": rules, "masked": outs}, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("testdata", "golden", "kitchen_"+string(rune('a'+i))+".json")
		if *update {
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestGolden -update)", err)
		}
		if string(got) != string(want) {
			t.Errorf("%s differs:\n%s", path, got)
		}
	}
}

func goldenRecords(t testing.TB, s *schema.Schema) [][]byte {
	card := "4111111111111111"
	item := map[string]any{"sku": "SKU-123456", "card": map[string]any{"string": card}, "qty": 2}
	item2 := map[string]any{"sku": "ä€𝄞x", "card": nil, "qty": 1}
	base := func(next any, choice any) map[string]any {
		return map[string]any{
			"id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "n": 42, "big": int64(-9000000000), "f": float32(1.25), "d": 3.5, "ok": true,
			"raw": []byte{0, 1, 2, 0xff}, "amount": big.NewRat(-12345, 100), "day": time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC),
			"ts": time.UnixMilli(1700000000123).UTC(), "fx": [4]byte{1, 2, 3, 4}, "color": "BLUE",
			"items": []any{item, item2}, "byname": map[string]any{"a": item}, "notes": map[string]any{"k": "secret note"},
			"matrix": []any{[]any{"abcdef", "x"}, []any{}}, "choice": choice, "next": next, "label": "lbl",
		}
	}
	inner := base(nil, map[string]any{"long": int64(5)})
	vals := []any{
		base(nil, nil),
		base(map[string]any{"t.K": inner}, map[string]any{"t.Item": item}),
		base(nil, map[string]any{"string": "choice-secret"}),
	}
	var out [][]byte
	for _, v := range vals {
		b, err := avro.Marshal(s.Avro, v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}
