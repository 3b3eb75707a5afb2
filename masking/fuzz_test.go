package masking

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/schema"
)

const (
	sentinel     = "SENTINEL-SSN-4242"
	cardSentinel = "SENTINEL-CARD-4111111111111111"
	// redacted is what fuzzRules' redact of card.number writes (the
	// strategy's default replacement).
	redacted = "REDACTED"
)

var fuzzRules = []filter.MaskRule{{Field: "customer.ssn", Strategy: "hash"}, {Field: "card.number", Strategy: "redact"}}

// sentinelRecords are demo payments with the sentinel SSN and, on every
// record but each third (which has a null card), a card with the sentinel
// number.
func sentinelRecords(t testing.TB, s *schema.Schema, n int) []testRecord {
	recs := demoValues(t, s, n, 0)
	for i := range recs {
		p := schema.DemoRecord(i)
		p.Customer.SSN = sentinel
		p.Card = nil
		if i%3 != 2 {
			p.Card = &schema.DemoCard{Number: cardSentinel, Expiry: "12/29", Network: "visa"}
		}
		body, err := avro.Marshal(s.Avro, p)
		if err != nil {
			t.Fatal(err)
		}
		recs[i].value = schema.AppendWire(nil, s.ID, body)
	}
	return recs
}

func fuzzSeeds(t testing.TB, s *schema.Schema) [][]byte {
	var seeds [][]byte
	for codec := range 5 {
		seeds = append(seeds, makeBatch(t, codec, 0, 0, sentinelRecords(t, s, 3), -1))
	}
	two := append(makeBatch(t, 0, 0, 0x10, sentinelRecords(t, s, 2), -1), makeBatch(t, 3, 2, 0, sentinelRecords(t, s, 1), -1)...)
	seeds = append(seeds, two, two[:len(two)-9])
	return seeds
}

// FuzzRewriteBatches feeds arbitrary partition bytes through the mask
// rewrite. Invariants: no panic; on success, every record of every complete
// magic-2 data batch in the output has a null value (the error marker) or a
// value that decodes under the schema with customer.ssn hashed and, where
// the card is not null, card.number redacted, so neither sentinel is ever
// delivered in clear.
func FuzzRewriteBatches(f *testing.F) {
	s := parseSchema(f, 9, schema.DemoPaymentsSchema)
	for _, seed := range fuzzSeeds(f, s) {
		f.Add(seed)
	}
	m := newMasker(f, staticSource{9: s}, TopicConfig{}, &filter.Obligations{Mask: fuzzRules})
	slow := newMasker(f, staticSource{9: s}, TopicConfig{}, &filter.Obligations{Mask: fuzzRules})
	f.Fuzz(func(t *testing.T, in []byte) {
		out, _, err := RewriteBatches(nil, in, m)
		// The rewriter's in-place value path must agree with Transform
		// byte for byte, failures included.
		want, _, werr := RewriteBatches(nil, in, transformOnly{slow})
		if (err == nil) != (werr == nil) || !bytes.Equal(out, want) {
			t.Fatalf("fast path: %d bytes, err %v; Transform: %d bytes, err %v", len(out), err, len(want), werr)
		}
		if err != nil {
			return
		}
		for b := out; len(b) >= batchHeaderLen; {
			length := int64(int32(binary.BigEndian.Uint32(b[offLength:])))
			if length < 0 || 12+length > int64(len(b)) {
				return // trailing partial batch, passed through
			}
			batch := b[:12+length]
			b = b[12+length:]
			if batch[offMagic] != 2 {
				continue // older magic, passed through
			}
			attrs := binary.BigEndian.Uint16(batch[offAttributes:])
			if attrs&attrControl != 0 {
				continue
			}
			raw := batch[batchHeaderLen:]
			if codec := attrs & attrCodecMask; codec != 0 {
				if raw, err = kgo.DefaultDecompressor().Decompress(raw, kgo.CompressionCodecType(codec)); err != nil {
					t.Fatalf("output batch does not decompress: %v", err)
				}
			}
			for pos := 0; pos < len(raw); {
				var r rawRecord
				if err := parseRecord(raw, &pos, &r); err != nil {
					t.Fatalf("output record does not parse: %v", err)
				}
				if r.value == nil {
					continue
				}
				_, body, err := schema.ParseWire(r.value)
				if err != nil {
					t.Fatalf("delivered value is not wire format: %v", err)
				}
				var p schema.DemoPayment
				if err := avro.Unmarshal(s.Avro, body, &p); err != nil {
					t.Fatalf("delivered value does not decode: %v", err)
				}
				if len(p.Customer.SSN) != HashHexLen || p.Customer.SSN == sentinel {
					t.Fatalf("ssn delivered unmasked: %q", p.Customer.SSN)
				}
				if p.Card != nil && p.Card.Number != redacted {
					t.Fatalf("card number delivered unredacted: %q", p.Card.Number)
				}
				if bytes.Contains(r.value, []byte(sentinel)) || bytes.Contains(r.value, []byte(cardSentinel)) {
					t.Fatalf("sentinel in a delivered value")
				}
			}
		}
	})
}

// FuzzAvroPlan masks arbitrary bodies. Invariants: no panic; a body the
// plan accepts yields output that validates and decodes under the schema
// with the masked field hashed.
func FuzzAvroPlan(f *testing.F) {
	s := parseSchema(f, 3, kitchenSchema)
	for _, b := range goldenRecords(f, s) {
		f.Add(b)
	}
	p := mustPlan(f, s, []filter.MaskRule{{Field: "items[].sku", Strategy: "hash"}, {Field: "choice", Strategy: "null"}, {Field: "notes{}", Strategy: "partial"}})
	plain := mustPlan(f, s, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := p.AppendMasked(nil, body)
		if err != nil {
			if plain.Validate(body) == nil {
				t.Fatalf("valid body refused: %v", err)
			}
			return
		}
		if err := plain.Validate(body); err != nil {
			t.Fatalf("plan accepted a body the validator refuses: %v", err)
		}
		if err := plain.Validate(out); err != nil {
			t.Fatalf("masked output is not valid: %v", err)
		}
		var v map[string]any
		if err := avro.Unmarshal(s.Avro, out, &v); err != nil {
			t.Fatalf("masked output does not decode: %v", err)
		}
		for _, it := range v["items"].([]any) {
			if sku := it.(map[string]any)["sku"].(string); len(sku) != HashHexLen {
				t.Fatalf("sku not hashed: %q", sku)
			}
		}
		if v["choice"] != nil {
			t.Fatalf("choice not nulled: %v", v["choice"])
		}
	})
}

// TestWriteFuzzSeeds regenerates testdata/fuzz when SLUICE_WRITE_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("SLUICE_WRITE_SEEDS") == "" {
		t.Skip("set SLUICE_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	write := func(name string, seeds [][]byte) {
		dir := filepath.Join("testdata", "fuzz", name)
		os.MkdirAll(dir, 0o755)
		for i, s := range seeds {
			c := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("FuzzRewriteBatches", fuzzSeeds(t, parseSchema(t, 9, schema.DemoPaymentsSchema)))
	write("FuzzAvroPlan", goldenRecords(t, parseSchema(t, 3, kitchenSchema)))
}
