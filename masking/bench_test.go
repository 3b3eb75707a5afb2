package masking

import (
	"context"
	"testing"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/schema"
)

// benchRules mask 3 of the demo payment's fields.
var benchRules = map[string][]filter.MaskRule{
	"redact-partial-null": {
		{Field: "customer.ssn", Strategy: "redact"},
		{Field: "account_number", Strategy: "partial"},
		{Field: "settled_on", Strategy: "null"},
	},
	"hash-partial-tokenize": {
		{Field: "customer.ssn", Strategy: "hash"},
		{Field: "account_number", Strategy: "partial"},
		{Field: "customer.email", Strategy: "tokenize"},
	},
	"none": nil,
}

func BenchmarkPlan(b *testing.B) {
	s := parseSchema(b, 1, schema.DemoPaymentsSchema)
	rec := schema.DemoRecord(3)
	body, err := avro.Marshal(s.Avro, rec)
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"none", "redact-partial-null", "hash-partial-tokenize"} {
		b.Run(name, func(b *testing.B) {
			p := mustPlan(b, s, benchRules[name])
			dst := make([]byte, 0, 1024)
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			cpuLoop(b, func() {
				if _, err := p.AppendMasked(dst[:0], body); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkReference is the generic decode/mask/encode path, for comparison.
func BenchmarkReference(b *testing.B) {
	s := parseSchema(b, 1, schema.DemoPaymentsSchema)
	body, _ := avro.Marshal(s.Avro, schema.DemoRecord(3))
	rules := parseRules(b, benchRules["redact-partial-null"])
	b.ReportAllocs()
	for b.Loop() {
		if _, err := refMask(s.Avro, rules, body); err != nil {
			b.Fatal(err)
		}
	}
}

// flat10 is a flat record of 10 fields, 3 of them masked in BenchmarkPlan10.
const flat10 = `{"type":"record","name":"Flat","fields":[
 {"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"ssn","type":"string"},
 {"name":"account","type":"string"},{"name":"amount","type":"double"},{"name":"mcc","type":"string"},
 {"name":"region","type":"string"},{"name":"email","type":["null","string"]},{"name":"ts","type":"long"},
 {"name":"ok","type":"boolean"}]}`

func BenchmarkPlan10(b *testing.B) {
	s := parseSchema(b, 1, flat10)
	body, err := avro.Marshal(s.Avro, map[string]any{
		"id": int64(123456789), "name": "Grace Hopper", "ssn": "123-45-6789", "account": "DE89370400440532013000",
		"amount": 1234.5, "mcc": "5411", "region": "EU", "email": "grace@example.com", "ts": int64(1700000000000), "ok": true,
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		rules []filter.MaskRule
	}{
		{"none", nil},
		{"redact-partial-null", []filter.MaskRule{{Field: "ssn", Strategy: "redact"}, {Field: "account", Strategy: "partial"}, {Field: "email", Strategy: "null"}}},
		{"hash-partial-tokenize", []filter.MaskRule{{Field: "ssn", Strategy: "hash"}, {Field: "account", Strategy: "partial"}, {Field: "email", Strategy: "tokenize"}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p := mustPlan(b, s, tc.rules)
			dst := make([]byte, 0, 1024)
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			cpuLoop(b, func() {
				if _, err := p.AppendMasked(dst[:0], body); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkRewriteBatch rewrites one 100-record batch of demo payments with
// 3 fields masked (redact, partial, null), per codec.
func BenchmarkRewriteBatch(b *testing.B) {
	s := parseSchema(b, 9, schema.DemoPaymentsSchema)
	for _, codec := range []int{0, 3, 4} {
		b.Run(codecNames[codec], func(b *testing.B) {
			in := makeBatch(b, codec, 0, 0, demoValues(b, s, 100, 0), -1)
			m := newMasker(b, staticSource{9: s}, TopicConfig{}, &filter.Obligations{Mask: benchRules["redact-partial-null"]})
			benchRewrite(b, in, m)
		})
	}
}

// benchRewrite rewrites the batches in with m over and over, into one
// output buffer, and reports the output's size against the input's.
func benchRewrite(b *testing.B, in []byte, m Transformer) {
	dst := make([]byte, 0, 2*len(in)+4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	var out []byte
	cpuLoop(b, func() {
		var err error
		if out, _, err = RewriteBatches(dst[:0], in, m); err != nil {
			b.Fatal(err)
		}
	})
	b.ReportMetric(float64(len(out))/float64(len(in)), "out/in")
}

// flat10Records is 100 flat 10-field records (schema id 1) in the wire
// format, for the batch and partition benchmarks.
func flat10Records(b *testing.B) (*schema.Schema, []testRecord) {
	s := parseSchema(b, 1, flat10)
	var recs []testRecord
	for i := range 100 {
		body, err := avro.Marshal(s.Avro, map[string]any{
			"id": int64(123456789 + i), "name": "Grace Hopper", "ssn": "123-45-6789", "account": "DE89370400440532013000",
			"amount": 1234.5, "mcc": "5411", "region": "EU", "email": "grace@example.com", "ts": int64(1700000000000), "ok": true,
		})
		if err != nil {
			b.Fatal(err)
		}
		recs = append(recs, testRecord{key: []byte("k"), value: schema.AppendWire(nil, 1, body)})
	}
	return s, recs
}

// BenchmarkRewriteBatch10 rewrites a 100-record uncompressed batch of flat
// 10-field records with 3 fields masked (redact, partial, null).
func BenchmarkRewriteBatch10(b *testing.B) {
	s, recs := flat10Records(b)
	for _, codec := range []int{0, 3} {
		b.Run(codecNames[codec], func(b *testing.B) {
			in := makeBatch(b, codec, 0, 0, recs, -1)
			m := newMasker(b, staticSource{1: s}, TopicConfig{}, &filter.Obligations{Mask: []filter.MaskRule{
				{Field: "ssn", Strategy: "redact"}, {Field: "account", Strategy: "partial"}, {Field: "email", Strategy: "null"}}})
			benchRewrite(b, in, m)
		})
	}
}

// BenchmarkRewritePartition10 rewrites a partition of 4 MiB of flat
// 10-field records: what a Fetch response's partition holds, larger than
// the caches, unlike BenchmarkRewriteBatch10. The batches hold 100 records
// (10 KiB) or, as a producer with 1 MiB batches and some linger writes
// them (the end-to-end bench), 10000 (1 MiB, larger than a core's L2
// cache); uncompressed or lz4. MB/s counts the records uncompressed.
func BenchmarkRewritePartition10(b *testing.B) {
	s, recs := flat10Records(b)
	m := newMasker(b, staticSource{1: s}, TopicConfig{}, &filter.Obligations{Mask: []filter.MaskRule{
		{Field: "ssn", Strategy: "redact"}, {Field: "account", Strategy: "partial"}, {Field: "email", Strategy: "null"}}})
	for _, tc := range []struct {
		name  string
		recs  int
		codec int
		fresh bool
	}{
		{"reused-output", 100, 0, false},
		{"fresh-output", 100, 0, true}, // as the fetch path allocates it
		{"1MiB-batches", 10000, 0, false},
		{"lz4", 100, codecLz4, false},
		{"lz4-1MiB-batches", 10000, codecLz4, false},
	} {
		var many []testRecord
		for len(many) < tc.recs {
			many = append(many, recs...)
		}
		plain := makeBatch(b, 0, 0, 0, many, -1)
		one := makeBatch(b, tc.codec, 0, 0, many, -1)
		var in []byte
		size := 0
		for ; size < 4<<20; size += len(plain) {
			in = append(in, one...)
		}
		fresh := tc.fresh
		b.Run(tc.name, func(b *testing.B) {
			dst := make([]byte, 0, len(in)+len(in)/8)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			cpuLoop(b, func() {
				if fresh {
					dst = make([]byte, 0, len(in)+len(in)/8)
				}
				if _, _, err := RewriteBatches(dst[:0], in, m); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkFilterProduceMasking masks a produced 100-record batch of demo
// payments (inbound masking, 3 fields) through the filter, as the proxy
// runs it: OnRequest, then Done once the request is answered.
func BenchmarkFilterProduceMasking(b *testing.B) {
	s := parseSchema(b, 9, schema.DemoPaymentsSchema)
	f, err := newFilter(testConfig(b), staticSource{9: s}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	records := makeBatch(b, 0, 0, 0, demoValues(b, s, 100, 0), -1)
	obl := map[string]*filter.Obligations{"inbound": {Mask: benchRules["redact-partial-null"]}}
	req := kmsg.NewPtrProduceRequest()
	parts := make([]kmsg.ProduceRequestTopicPartition, 1)
	b.ReportAllocs()
	b.SetBytes(int64(len(records)))
	for b.Loop() {
		parts[0] = kmsg.ProduceRequestTopicPartition{Records: records}
		req.Topics = append(req.Topics[:0], kmsg.ProduceRequestTopic{Topic: "inbound", Partitions: parts})
		x := &filter.Exchange{Request: req, Topics: resolver{}, Obligations: obl}
		if err := f.OnRequest(context.Background(), x); err != nil || len(req.Topics) != 1 {
			b.Fatalf("err %v, %d topics forwarded", err, len(req.Topics))
		}
		x.Done()
	}
}
