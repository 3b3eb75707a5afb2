package masking

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand"
	"strings"
	"testing"

	"github.com/hamba/avro/v2"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/schema"
)

type testRecord struct {
	key, value []byte
	headers    [][2]string
}

func encodeRecord(dst []byte, i int, r testRecord) []byte {
	var body []byte
	body = append(body, 0)               // attributes
	body = appendLong(body, int64(i*10)) // timestamp delta
	body = appendLong(body, int64(i))    // offset delta
	body = appendField(body, r.key)      // key
	body = appendField(body, r.value)    // value
	body = appendLong(body, int64(len(r.headers)))
	for _, h := range r.headers {
		body = appendField(body, []byte(h[0]))
		body = appendField(body, []byte(h[1]))
	}
	return append(appendLong(dst, int64(len(body))), body...)
}

// producerCompressor is codec as a franz-go producer compresses (for lz4,
// frames with a content checksum, unlike the rewriter's).
func producerCompressor(t testing.TB, codec int) kgo.Compressor {
	t.Helper()
	c, err := kgo.DefaultCompressor(map[int]kgo.CompressionCodec{
		1: kgo.GzipCompression(), 2: kgo.SnappyCompression(), 3: kgo.Lz4Compression(), 4: kgo.ZstdCompression(),
	}[codec])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// makeBatch encodes a magic-2 batch; lastDelta < 0 means len(recs)-1.
func makeBatch(t testing.TB, codec int, base int64, attrs int16, recs []testRecord, lastDelta int32) []byte {
	t.Helper()
	var raw []byte
	for i, r := range recs {
		raw = encodeRecord(raw, i, r)
	}
	if codec != 0 {
		var buf bytes.Buffer
		out, used := producerCompressor(t, codec).Compress(&buf, raw)
		if int(used) != codec {
			t.Fatal("compress")
		}
		raw = bytes.Clone(out)
	}
	if lastDelta < 0 {
		lastDelta = int32(len(recs) - 1)
	}
	b := kmsg.RecordBatch{
		FirstOffset: base, PartitionLeaderEpoch: 7, Magic: 2, Attributes: attrs | int16(codec),
		LastOffsetDelta: lastDelta, FirstTimestamp: 1_700_000_000_000, MaxTimestamp: 1_700_000_000_000 + int64(len(recs)*10),
		ProducerID: 4242, ProducerEpoch: 3, FirstSequence: 11, NumRecords: int32(len(recs)), Records: raw,
	}
	b.Length = int32(49 + len(raw))
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[offCRC:], crc32.Checksum(out[offAttributes:], crc32c))
	return out
}

func demoValues(t testing.TB, s *schema.Schema, n, from int) []testRecord {
	var recs []testRecord
	for i := range n {
		p := schema.DemoRecord(from + i)
		body, err := avro.Marshal(s.Avro, p)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, testRecord{key: []byte(p.ID), value: schema.AppendWire(nil, s.ID, body), headers: [][2]string{{"trace", fmt.Sprint(i)}}})
	}
	return recs
}

// staticSource serves fixed schemas (the registry is tested in schema/).
type staticSource map[int]*schema.Schema

func (s staticSource) SchemaByID(_ context.Context, id int) (*schema.Schema, error) {
	if sc, ok := s[id]; ok {
		return sc, nil
	}
	return nil, fmt.Errorf("%w: id %d", schema.ErrNotFound, id)
}

func (s staticSource) Latest(_ context.Context, subject string) (*schema.SubjectSchema, error) {
	for _, sc := range s {
		return &schema.SubjectSchema{Subject: subject, Version: 1, Schema: sc}, nil
	}
	return nil, schema.ErrNotFound
}

func (s staticSource) IDInSubject(_ context.Context, _ string, id int) (bool, error) {
	_, ok := s[id]
	return ok, nil
}

func newMasker(t testing.TB, src SchemaSource, tc TopicConfig, o *filter.Obligations) *recordMasker {
	t.Helper()
	p := NewPlanner(DefaultConfig(), src, testKeys(t))
	rs, err := p.RuleSet(o)
	if err != nil {
		t.Fatal(err)
	}
	if tc.Format == "" {
		tc.Format = FormatAvro
	}
	if tc.KeyFormat == "" {
		tc.KeyFormat = tc.Format
	}
	if tc.OnError == "" {
		tc.OnError = OnErrorMarker
	}
	return &recordMasker{ctx: context.Background(), p: p, rs: rs, tc: tc, row: true}
}

func consume(t testing.TB, batches []byte, offset int64) (kgo.FetchPartition, int64) {
	t.Helper()
	fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: offset, Topic: "payments", KeepControlRecords: true},
		&kmsg.FetchResponseTopicPartition{RecordBatches: batches, HighWatermark: 1 << 40}, kgo.DefaultDecompressor(), nil)
	if fp.Err != nil {
		t.Fatalf("kgo cannot consume the rewritten batches: %v", fp.Err)
	}
	return fp, next
}

var codecNames = []string{"none", "gzip", "snappy", "lz4", "zstd"}

func TestRewriteBatchesCodecs(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	src := staticSource{9: s}
	for codec, name := range codecNames {
		t.Run(name, func(t *testing.T) {
			recs := demoValues(t, s, 10, 0)
			in := makeBatch(t, codec, 100, 0x10 /* transactional */, recs, -1)
			in = append(in, makeBatch(t, codec, 110, 0, demoValues(t, s, 5, 10), -1)...)
			control := makeBatch(t, 0, 115, 0x30, []testRecord{{key: []byte{0, 0, 0, 1}, value: []byte{0, 0, 0, 0, 0, 0}}}, -1)
			in = append(in, control...)
			partial := makeBatch(t, codec, 116, 0, demoValues(t, s, 3, 20), -1)
			in = append(in, partial[:len(partial)-7]...)

			m := newMasker(t, src, TopicConfig{}, &filter.Obligations{Mask: demoRules})
			out, st, err := RewriteBatches(nil, in, m)
			if err != nil {
				t.Fatal(err)
			}
			if st.Records != 15 || st.Rewritten != 2 || st.Batches != 2 || st.Errors != 0 {
				t.Fatalf("stats %+v", st)
			}
			if !bytes.HasSuffix(out, control) {
				t.Fatal("control batch not passed through, or the trailing partial batch not dropped")
			}
			if bytes.Contains(out, partial[batchHeaderLen:len(partial)-7]) {
				t.Fatal("the trailing partial batch's records were passed unmasked")
			}
			// Header fields survive.
			var ib, ob kmsg.RecordBatch
			ib.ReadFrom(in)
			if err := ob.ReadFrom(out); err != nil {
				t.Fatal(err)
			}
			if ib.FirstOffset != ob.FirstOffset || ib.PartitionLeaderEpoch != ob.PartitionLeaderEpoch || ib.Attributes != ob.Attributes ||
				ib.LastOffsetDelta != ob.LastOffsetDelta || ib.FirstTimestamp != ob.FirstTimestamp || ib.MaxTimestamp != ob.MaxTimestamp ||
				ib.ProducerID != ob.ProducerID || ib.ProducerEpoch != ob.ProducerEpoch || ib.FirstSequence != ob.FirstSequence || ib.NumRecords != ob.NumRecords {
				t.Fatalf("batch header changed:\n in %+v\nout %+v", ib, ob)
			}
			fp, next := consume(t, out, 0)
			if len(fp.Records) != 16 || next != 116 {
				t.Fatalf("consumed %d records, next offset %d", len(fp.Records), next)
			}
			for i, r := range fp.Records[:15] {
				if r.Offset != int64(100+i) || string(r.Key) != string(recs[min(i, 9)].key) && i < 10 {
					t.Fatalf("record %d: offset %d key %q", i, r.Offset, r.Key)
				}
				if len(r.Headers) != 1 || r.Headers[0].Key != "trace" {
					t.Fatalf("record %d headers %v", i, r.Headers)
				}
				id, body, err := schema.ParseWire(r.Value)
				if err != nil || id != 9 {
					t.Fatalf("record %d: %v", i, err)
				}
				var p schema.DemoPayment
				if err := avro.Unmarshal(s.Avro, body, &p); err != nil {
					t.Fatal(err)
				}
				want := schema.DemoRecord(i)
				if p.Customer.SSN != refHash(want.Customer.SSN) || p.ID != want.ID {
					t.Fatalf("record %d not masked: %+v", i, p)
				}
			}
		})
	}
}

func TestRewriteUnchangedIsIdentical(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	in := makeBatch(t, 3, 0, 0, demoValues(t, s, 4, 0), -1)
	// Key rules on null keys and value rules on null values change nothing.
	recs := []testRecord{{key: nil, value: nil}, {key: nil, value: nil}}
	in = append(in, makeBatch(t, 1, 4, 0, recs, -1)...)
	m := newMasker(t, staticSource{9: s}, TopicConfig{}, &filter.Obligations{Mask: []filter.MaskRule{{Field: "x", Strategy: "redact", Target: "key"}}})
	m.tc.KeyFormat = FormatJSON
	out, _, err := RewriteBatches(nil, in[4*0:len(in)], &passThrough{})
	if err != nil || !bytes.Equal(out, in) {
		t.Fatalf("untouched batches changed: %v", err)
	}
	out, _, err = RewriteBatches(nil, in[len(in)-len(makeBatch(t, 1, 4, 0, recs, -1)):], m)
	if err != nil || !bytes.Equal(out, in[len(in)-len(out):]) {
		t.Fatalf("null keys rewritten: %v", err)
	}
}

type passThrough struct{}

func (passThrough) Transform(_, _ []byte, _ *RecordEdit) error { return nil }

func TestRowFilter(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	src := staticSource{9: s}
	for codec, name := range codecNames {
		t.Run(name, func(t *testing.T) {
			recs := demoValues(t, s, 30, 0)
			in := makeBatch(t, codec, 1000, 0, recs, -1)
			m := newMasker(t, src, TopicConfig{}, &filter.Obligations{RowFilter: &filter.RowFilter{Field: "region", Op: "eq", Values: []string{"EU"}}})
			out, st, err := RewriteBatches(nil, in, m)
			if err != nil {
				t.Fatal(err)
			}
			var wantEU []int64
			for i := range recs {
				if schema.DemoRecord(i).Region == "EU" {
					wantEU = append(wantEU, int64(1000+i))
				}
			}
			if st.Records != len(wantEU) || st.Dropped != 30-len(wantEU) {
				t.Fatalf("stats %+v, want %d kept", st, len(wantEU))
			}
			fp, next := consume(t, out, 1000)
			if next != 1030 {
				t.Fatalf("next offset %d, want 1030", next)
			}
			var got []int64
			for _, r := range fp.Records {
				got = append(got, r.Offset)
			}
			if fmt.Sprint(got) != fmt.Sprint(wantEU) {
				t.Fatalf("offsets %v, want %v", got, wantEU)
			}

			// A filter nothing matches leaves a zero-record batch that
			// consumers still advance past.
			m = newMasker(t, src, TopicConfig{}, &filter.Obligations{RowFilter: &filter.RowFilter{Field: "merchant_category", Op: "in", Values: []string{"none", "0000"}}})
			out, st, err = RewriteBatches(nil, in, m)
			if err != nil || st.Records != 0 || st.Dropped != 30 {
				t.Fatalf("%+v %v", st, err)
			}
			fp, next = consume(t, out, 1000)
			if len(fp.Records) != 0 || next != 1030 {
				t.Fatalf("empty batch: %d records, next %d", len(fp.Records), next)
			}
		})
	}
}

func TestRowFilterTypes(t *testing.T) {
	s := parseSchema(t, 3, kitchenSchema)
	recs := goldenRecords(t, s)
	src := staticSource{3: s}
	for _, tc := range []struct {
		rf   filter.RowFilter
		want int
	}{
		{filter.RowFilter{Field: "n", Op: "eq", Values: []string{"42"}}, 3},
		{filter.RowFilter{Field: "big", Op: "in", Values: []string{"1", "-9000000000"}}, 3},
		{filter.RowFilter{Field: "ok", Op: "eq", Values: []string{"true"}}, 3},
		{filter.RowFilter{Field: "color", Op: "eq", Values: []string{"BLUE"}}, 3},
		{filter.RowFilter{Field: "color", Op: "eq", Values: []string{"RED"}}, 0},
		{filter.RowFilter{Field: "choice", Op: "eq", Values: []string{"choice-secret"}}, 1},
		{filter.RowFilter{Field: "next.label", Op: "eq", Values: []string{"lbl"}}, 1},
	} {
		t.Run(tc.rf.Field, func(t *testing.T) {
			m := newMasker(t, src, TopicConfig{}, &filter.Obligations{RowFilter: &tc.rf})
			n := 0
			for _, body := range recs {
				var e RecordEdit
				if err := m.Transform(nil, schema.AppendWire(nil, 3, body), &e); err != nil {
					t.Fatal(err)
				}
				if !e.Drop {
					n++
				}
			}
			if n != tc.want {
				t.Fatalf("kept %d, want %d", n, tc.want)
			}
		})
	}
	p := NewPlanner(DefaultConfig(), src, nil)
	if err := p.ValidateObligations(context.Background(), "t", &filter.Obligations{RowFilter: &filter.RowFilter{Field: "items", Op: "eq", Values: []string{"x"}}}); err == nil {
		t.Fatal("row filter on an array accepted")
	}
}

func TestFailurePolicy(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	src := staticSource{9: s}
	good := demoValues(t, s, 3, 0)
	bad := []testRecord{
		good[0],
		{key: []byte("k1"), value: []byte("plain text, not wire format")},
		{key: []byte("k2"), value: schema.AppendWire(nil, 9, []byte{0x99})},          // truncated body
		{key: []byte("k3"), value: schema.AppendWire(nil, 12345, good[1].value[5:])}, // unknown schema id
		good[2],
	}
	in := makeBatch(t, 4, 0, 0, bad, -1)
	obl := &filter.Obligations{Mask: demoRules}

	m := newMasker(t, src, TopicConfig{}, obl)
	out, st, err := RewriteBatches(nil, in, m)
	if err != nil {
		t.Fatal(err)
	}
	if st.Errors != 3 || st.Records != 5 {
		t.Fatalf("stats %+v", st)
	}
	fp, _ := consume(t, out, 0)
	for i, r := range fp.Records {
		isBad := i >= 1 && i <= 3
		hdr := ""
		for _, h := range r.Headers {
			if h.Key == ErrorHeader {
				hdr = string(h.Value)
			}
		}
		if isBad != (hdr != "") || isBad && r.Value != nil {
			t.Fatalf("record %d: value %q header %q", i, r.Value, hdr)
		}
		if bytes.Contains(r.Value, []byte("plain text")) {
			t.Fatal("unparseable value delivered in clear")
		}
		t.Logf("record %d: %s", i, hdr)
	}
	for _, want := range []string{"format:", "decode:", "schema:"} {
		if !strings.Contains(fmt.Sprint(m.reasons), strings.TrimSuffix(want, ":")) {
			t.Fatalf("reasons %v lack %s", m.reasons, want)
		}
	}

	m = newMasker(t, src, TopicConfig{OnError: OnErrorFailPartition}, obl)
	if _, _, err := RewriteBatches(nil, in, m); err == nil {
		t.Fatal("fail_partition did not fail")
	}

	// A corrupt batch (bad CRC) fails whatever the policy.
	corrupt := bytes.Clone(in)
	corrupt[len(corrupt)-1] ^= 0xff
	if _, _, err := RewriteBatches(nil, corrupt, newMasker(t, src, TopicConfig{}, obl)); !errors.Is(err, ErrCorruptBatch) {
		t.Fatalf("corrupt batch: %v", err)
	}
}

func TestKeyMasking(t *testing.T) {
	keySchema := parseSchema(t, 5, `{"type":"record","name":"Key","fields":[{"name":"account","type":"string"},{"name":"n","type":"int"}]}`)
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	src := staticSource{5: keySchema, 9: s}
	kb, _ := avro.Marshal(keySchema.Avro, map[string]any{"account": "DE1234567890", "n": 3})
	recs := demoValues(t, s, 2, 0)
	recs[0].key = schema.AppendWire(nil, 5, kb)
	recs[1].key = nil
	in := makeBatch(t, 0, 0, 0, recs, -1)
	m := newMasker(t, src, TopicConfig{}, &filter.Obligations{Mask: []filter.MaskRule{{Field: "account", Strategy: "partial", Target: "key"}}})
	out, _, err := RewriteBatches(nil, in, m)
	if err != nil {
		t.Fatal(err)
	}
	fp, _ := consume(t, out, 0)
	_, body, _ := schema.ParseWire(fp.Records[0].Key)
	var k map[string]any
	if err := avro.Unmarshal(keySchema.Avro, body, &k); err != nil || k["account"] != "********7890" || k["n"] != 3 {
		t.Fatalf("key %v %v", k, err)
	}
	if fp.Records[1].Key != nil || !bytes.Equal(fp.Records[0].Value, recs[0].value) {
		t.Fatal("null key or value changed")
	}

	// JSON keys.
	recs[0].key = []byte(`{"account":"DE1234567890"}`)
	in = makeBatch(t, 0, 0, 0, recs, -1)
	m = newMasker(t, src, TopicConfig{KeyFormat: FormatJSON}, &filter.Obligations{Mask: []filter.MaskRule{{Field: "account", Strategy: "redact", Target: "key"}}})
	out, _, err = RewriteBatches(nil, in, m)
	if err != nil {
		t.Fatal(err)
	}
	fp, _ = consume(t, out, 0)
	if string(fp.Records[0].Key) != `{"account":"REDACTED"}` {
		t.Fatalf("json key %s", fp.Records[0].Key)
	}
}

func TestEmptyBatchPassesThrough(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	// An empty batch as compaction leaves it: no records, no payload, even
	// though the codec bits say lz4.
	b := kmsg.RecordBatch{FirstOffset: 50, Magic: 2, Attributes: 3, LastOffsetDelta: 9, NumRecords: 0}
	b.Length = 49
	in := b.AppendTo(nil)
	binary.BigEndian.PutUint32(in[offCRC:], crc32.Checksum(in[offAttributes:], crc32c))
	m := newMasker(t, staticSource{9: s}, TopicConfig{}, &filter.Obligations{Mask: demoRules})
	out, _, err := RewriteBatches(nil, in, m)
	if err != nil || !bytes.Equal(out, in) {
		t.Fatalf("empty batch: %v", err)
	}
	if _, next := consume(t, out, 50); next != 60 {
		t.Fatalf("next offset %d", next)
	}
}

// The broker cuts a partition at the fetch's byte limit, leaving a
// trailing partial batch whose whole records a client that parses them can
// read: it is dropped from a masked or filtered partition (consumers fetch
// again from the next offset), never passed in clear, and a partition that
// is a fragment alone goes out empty.
func TestTrailingPartialBatchDropped(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	ssn := []byte(schema.DemoRecord(3).Customer.SSN)
	for _, o := range []*filter.Obligations{
		{Mask: demoRules},
		{RowFilter: &filter.RowFilter{Field: "region", Op: "eq", Values: []string{"nowhere"}}},
	} {
		m := newMasker(t, staticSource{9: s}, TopicConfig{}, o)
		first := makeBatch(t, 0, 0, 0, demoValues(t, s, 2, 0), -1)
		second := makeBatch(t, 0, 2, 0, demoValues(t, s, 5, 2), -1)
		if !bytes.Contains(second[:len(second)-10], ssn) {
			t.Fatal("setup: the cut batch does not hold record 3 whole")
		}
		out, _, err := RewriteBatches(nil, append(append([]byte{}, first...), second[:len(second)-10]...), m)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(out, ssn) {
			t.Fatalf("mask %v, row filter %v: record 3's SSN went out in clear", o.Mask != nil, o.RowFilter != nil)
		}
		if _, next := consume(t, out, 0); next != 2 {
			t.Fatalf("next offset %d after the whole batch, want 2", next)
		}
		// A later partition of a response that filled its byte budget
		// may hold a fragment alone: no records, no error.
		if out, _, err := RewriteBatches(nil, second[:len(second)-10], m); err != nil || len(out) != 0 {
			t.Fatalf("a partition that is a partial batch alone: %d bytes out, %v", len(out), err)
		}
	}
}

// A batch that counts no records but carries some (a hostile or broken
// upstream) is refused, uncompressed or compressed: a consumer that reads
// the payload to its end would otherwise get them unmasked. An empty
// payload, or one that inflates to nothing, still passes.
func TestZeroCountBatchWithRecordsRefused(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	m := newMasker(t, staticSource{9: s}, TopicConfig{}, &filter.Obligations{Mask: demoRules})
	for _, codec := range []int{0, 1, 2, 3, 4} {
		b := makeBatch(t, codec, 0, 0, demoValues(t, s, 3, 0), -1)
		binary.BigEndian.PutUint32(b[57:], 0) // the record count
		binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], crc32c))
		if out, _, err := RewriteBatches(nil, b, m); !errors.Is(err, ErrCorruptBatch) {
			t.Fatalf("codec %d: a zero-count batch with 3 records passed (%d bytes out, %v)", codec, len(out), err)
		}
		empty := makeBatch(t, codec, 0, 0, nil, 0)
		if _, _, err := RewriteBatches(nil, empty, m); err != nil {
			t.Fatalf("codec %d: an empty batch: %v", codec, err)
		}
	}
}

// TestRowFilterEmptiedBatch: a batch whose records the row filter all
// removes is written as Kafka's log cleaner writes an empty batch: the
// header kept (offsets, timestamps, producer, transactional flag and
// timestamp type), no records, no payload and no codec. librdkafka 2.0
// aborts on a compressed batch whose payload decompresses to nothing
// (found by test/e2e TestMaskingEveryCodec).
func TestRowFilterEmptiedBatch(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	src := staticSource{9: s}
	const attrs = 0x10 | 0x08 // transactional, log-append time
	for codec, name := range codecNames {
		t.Run(name, func(t *testing.T) {
			in := makeBatch(t, codec, 1000, attrs, demoValues(t, s, 30, 0), -1)
			m := newMasker(t, src, TopicConfig{}, &filter.Obligations{RowFilter: &filter.RowFilter{Field: "merchant_category", Op: "eq", Values: []string{"none"}}})
			out, st, err := RewriteBatches(nil, in, m)
			if err != nil || st.Dropped != 30 || st.Rewritten != 1 {
				t.Fatalf("%+v %v", st, err)
			}
			if len(out) != batchHeaderLen {
				t.Fatalf("emptied batch is %d bytes, want a bare %d-byte header", len(out), batchHeaderLen)
			}
			var got, want kmsg.RecordBatch
			if err := got.ReadFrom(out); err != nil {
				t.Fatal(err)
			}
			if err := want.ReadFrom(in); err != nil {
				t.Fatal(err)
			}
			if got.Attributes != attrs {
				t.Errorf("attributes %#x, want %#x (codec cleared, flags kept)", got.Attributes, attrs)
			}
			if crc := int32(crc32.Checksum(out[offAttributes:], crc32c)); got.CRC != crc {
				t.Errorf("crc %#x, want %#x", got.CRC, crc)
			}
			want.Attributes, want.Length, want.CRC, want.NumRecords, want.Records = attrs, batchHeaderLen-12, got.CRC, 0, got.Records
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
				t.Errorf("header\n got %+v\nwant %+v", got, want)
			}
			if fp, next := consume(t, out, 1000); len(fp.Records) != 0 || next != 1030 {
				t.Fatalf("%d records, next offset %d, want none and 1030", len(fp.Records), next)
			}
		})
	}
}

// TestZigzagVarint: zz reads what binary.Uvarint reads, and fails where it
// fails (truncated, longer than ten bytes, overflowing 64 bits).
func TestZigzagVarint(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	for i := 0; i < 200000; i++ {
		b := make([]byte, rng.Intn(12))
		for j := range b {
			b[j] = byte(rng.Intn(256))
			if rng.Intn(3) == 0 {
				b[j] |= 0x80
			}
		}
		p := 0
		if len(b) > 0 {
			p = rng.Intn(len(b) + 1)
		}
		u, n := binary.Uvarint(b[p:])
		v, next := zz(b, p)
		if n <= 0 {
			if next >= 0 {
				t.Fatalf("% x at %d: zz read %d, Uvarint fails", b, p, v)
			}
			continue
		}
		if want := int64(u>>1) ^ -int64(u&1); v != want || next != p+n {
			t.Fatalf("% x at %d: zz = %d, %d; want %d, %d", b, p, v, next, want, p+n)
		}
	}
}

// transformOnly hides a Transformer's fast path (valueAppender), so every
// record goes through Transform and RecordEdit.
type transformOnly struct{ Transformer }

// TestFastPathMatchesTransform checks that the rewriter's in-place value
// path writes the same bytes, counts and failures as Transform does, for
// values whose masked length moves their length varints (and the record's)
// across a byte boundary in both directions, null values, values that do
// not decode (marker path), row filters and both kinds of batch.
func TestFastPathMatchesTransform(t *testing.T) {
	const text = `{"type":"record","name":"F","fields":[{"name":"a","type":"string"},{"name":"b","type":"string"},{"name":"region","type":"string"}]}`
	s := parseSchema(t, 3, text)
	rng := rand.New(rand.NewSource(7))
	var recs []testRecord
	for i := range 400 {
		// a is hashed (64 hex characters); b redacted; their lengths
		// straddle the one/two byte (63/64) and two/three byte
		// (8191/8192) varint boundaries of values and records.
		a := strings.Repeat("x", []int{0, 5, 30, 63, 64, 70, 120}[rng.Intn(7)])
		b := strings.Repeat("y", []int{0, 20, 50, 60, 8100, 8150, 8191, 8200}[rng.Intn(8)]+rng.Intn(4))
		region := []string{"EU", "US"}[rng.Intn(2)]
		body, err := avro.Marshal(s.Avro, map[string]any{"a": a, "b": b, "region": region})
		if err != nil {
			t.Fatal(err)
		}
		r := testRecord{key: []byte(fmt.Sprint(i)), value: schema.AppendWire(nil, 3, body)}
		switch rng.Intn(10) {
		case 0:
			r.value = nil
		case 1:
			r.value = []byte("not wire format")
		case 2:
			r.key = nil
			r.headers = [][2]string{{"h", region}}
		}
		recs = append(recs, r)
	}
	mask := []filter.MaskRule{{Field: "a", Strategy: "hash"}, {Field: "b", Strategy: "redact"}}
	for _, tc := range []struct {
		name string
		o    filter.Obligations
	}{
		{"mask", filter.Obligations{Mask: mask}},
		{"mask+row", filter.Obligations{Mask: mask, RowFilter: &filter.RowFilter{Field: "region", Op: "eq", Values: []string{"EU"}}}},
		{"mask key", filter.Obligations{Mask: append([]filter.MaskRule{{Field: "a", Strategy: "hash", Target: "key"}}, mask...)}}, // keys are not Avro: markers, all through Transform
	} {
		for _, codec := range []int{0, 3} {
			t.Run(fmt.Sprintf("%s/%s", tc.name, codecNames[codec]), func(t *testing.T) {
				in := makeBatch(t, codec, 100, 0, recs[:200], -1)
				in = append(in, makeBatch(t, codec, 300, 0, recs[200:], -1)...)
				fast := newMasker(t, staticSource{3: s}, TopicConfig{}, &tc.o)
				slow := newMasker(t, staticSource{3: s}, TopicConfig{}, &tc.o)
				got, gst, err := RewriteBatches(nil, in, fast)
				if err != nil {
					t.Fatal(err)
				}
				want, wst, err := RewriteBatches(nil, in, transformOnly{slow})
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("fast path output differs from Transform's (%d bytes against %d)", len(got), len(want))
				}
				if gst != wst || fast.failures != slow.failures || fast.failures == 0 {
					t.Fatalf("stats %+v failures %d, want %+v failures %d (> 0)", gst, fast.failures, wst, slow.failures)
				}
				if tc.o.RowFilter != nil && gst.Dropped == 0 {
					t.Fatal("the row filter dropped nothing")
				}
				// What the consumer reads: every delivered value is
				// masked, or carries the error marker.
				fp, _ := consume(t, got, 100)
				if fp.Err != nil || len(fp.Records) != gst.Records {
					t.Fatalf("consumed %d records (err %v), want %d", len(fp.Records), fp.Err, gst.Records)
				}
				for _, r := range fp.Records {
					if bytes.Contains(r.Value, []byte("yyy")) || bytes.Contains(r.Value, []byte("xxxxx")) {
						t.Fatalf("offset %d delivered in clear", r.Offset)
					}
				}
			})
		}
	}
}

// TestLz4FramedAsKafka: a rewritten lz4 batch is framed as Kafka's own
// producer frames one (independent 64 KiB blocks, no block or content
// checksum: the batch CRC covers it), and decodes back to the masked
// records.
func TestLz4FramedAsKafka(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	in := makeBatch(t, codecLz4, 0, 0, demoValues(t, s, 300, 0), -1)
	m := newMasker(t, staticSource{9: s}, TopicConfig{}, &filter.Obligations{Mask: []filter.MaskRule{{Field: "customer.ssn", Strategy: "redact"}}})
	out, st, err := RewriteBatches(nil, in, m)
	if err != nil || st.Rewritten != 1 {
		t.Fatalf("rewritten %d, err %v", st.Rewritten, err)
	}
	frame := out[batchHeaderLen:]
	if len(frame) < 7 || binary.LittleEndian.Uint32(frame) != 0x184d2204 {
		t.Fatalf("not an lz4 frame: % x", frame[:min(len(frame), 8)])
	}
	flg, bd := frame[4], frame[5]
	if flg != 0x60 || bd != 0x40 {
		t.Fatalf("FLG %#x BD %#x, want 0x60 (version 1, independent blocks, no checksums) and 0x40 (64 KiB blocks)", flg, bd)
	}
	fp, _ := consume(t, out, 0)
	if fp.Err != nil || len(fp.Records) != 300 {
		t.Fatalf("consumed %d records, err %v", len(fp.Records), fp.Err)
	}
	for _, r := range fp.Records {
		if bytes.Contains(r.Value, []byte(schema.DemoRecord(int(r.Offset)).Customer.SSN)) {
			t.Fatalf("offset %d: ssn in clear", r.Offset)
		}
	}
}

// TestBatchChecksum: a byte flipped anywhere in a large uncompressed batch
// (in the header, in a value the walk still parses, in the last byte)
// fails with the checksum error, and the rewritten batch's checksum is
// right with and without dropped records. The batch spans several of the
// chunks in which the checksums of a batch rebuilt in place are summed.
func TestBatchChecksum(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	recs := demoValues(t, s, 600, 0)
	in := makeBatch(t, 0, 0, 0, recs, -1)
	if len(in) < 64<<10 {
		t.Fatalf("batch of %d bytes: want a large one", len(in))
	}
	for _, o := range []filter.Obligations{
		{Mask: demoRules},
		{Mask: demoRules, RowFilter: &filter.RowFilter{Field: "region", Op: "eq", Values: []string{"EU"}}},
	} {
		out, st, err := RewriteBatches(nil, in, newMasker(t, staticSource{9: s}, TopicConfig{}, &o))
		if err != nil || st.Rewritten != 1 {
			t.Fatalf("rewritten %d, err %v", st.Rewritten, err)
		}
		if fp, _ := consume(t, out, 0); len(fp.Records) != st.Records { // kgo checks the CRC
			t.Fatalf("consumed %d of %d records", len(fp.Records), st.Records)
		}
		if o.RowFilter != nil && st.Dropped == 0 {
			t.Fatal("the row filter dropped nothing")
		}
	}
	// A flipped byte inside a record's id keeps the batch parseable (the
	// same length, a different letter), so only the checksum can tell.
	id := []byte(schema.DemoRecord(300).ID)
	at := bytes.Index(in[len(in)/2:], id)
	if at < 0 {
		t.Fatal("record 300's id not found")
	}
	if len(in) < 3*crcChunk {
		t.Fatalf("batch of %d bytes: want several %d-byte chunks", len(in), crcChunk)
	}
	for _, pos := range []int{offAttributes + 1, offAttributes + 20, batchHeaderLen + 3, len(in)/2 + at + len(id) - 1, len(in) - 1} {
		bad := bytes.Clone(in)
		bad[pos] ^= 0x01
		_, _, err := RewriteBatches(nil, bad, newMasker(t, staticSource{9: s}, TopicConfig{}, &filter.Obligations{Mask: demoRules}))
		if !errors.Is(err, errCRC) {
			t.Fatalf("byte %d of %d flipped: %v, want the checksum error", pos, len(in), err)
		}
	}
}

// lz4Frame is content as one lz4 frame written with opts.
func lz4Frame(t testing.TB, content []byte, opts ...lz4.Option) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := lz4.NewWriter(&buf)
	if err := w.Apply(opts...); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestDecodeLz4Frame: frames as franz-go, Kafka's producer and other
// writers make them (every block size, with and without block and content
// checksums, stored blocks of incompressible data) decode to what the
// standard reader gives; frames this does not read (dependent blocks,
// concatenated frames, truncated or corrupt ones) are left to it.
func TestDecodeLz4Frame(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	content := make([]byte, 3<<20)
	for i := range content {
		if i%4096 < 2048 {
			content[i] = byte(i / 512) // compressible
		} else {
			content[i] = byte(rng.Intn(256)) // stored
		}
	}
	for _, size := range []lz4.BlockSize{lz4.Block64Kb, lz4.Block256Kb, lz4.Block1Mb, lz4.Block4Mb} {
		for _, sums := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
			for _, n := range []int{0, 1, 1000, len(content)} {
				src := lz4Frame(t, content[:n], lz4.BlockSizeOption(size), lz4.ChecksumOption(sums[0]), lz4.BlockChecksumOption(sums[1]))
				got, ok := decodeLz4Frame(nil, src)
				if !ok || !bytes.Equal(got, content[:n]) {
					t.Fatalf("block size %v, checksums %v, %d bytes: ok %v, %d bytes out", size, sums, n, ok, len(got))
				}
			}
		}
	}
	src := lz4Frame(t, content[:100000])
	for name, bad := range map[string][]byte{
		"concatenated": append(bytes.Clone(src), src...),
		"truncated":    src[:len(src)/2],
		"no end mark":  src[:len(src)-8],
		"dependent":    append(append(bytes.Clone(src[:4]), src[4]&^0x20), src[5:]...),
		"dictionary":   append(append(bytes.Clone(src[:4]), src[4]|0x01), src[5:]...),
		"not lz4":      []byte("not an lz4 frame at all"),
	} {
		if out, ok := decodeLz4Frame([]byte("keep"), bad); ok || string(out) != "keep" {
			t.Fatalf("%s: read as a frame (ok %v), dst %q", name, ok, out[:min(len(out), 8)])
		}
	}
	corrupt := bytes.Clone(src)
	corrupt[20] ^= 0xff // inside the first block's data
	if got, ok := decodeLz4Frame(nil, corrupt); ok && bytes.Equal(got, content[:100000]) {
		t.Fatal("a corrupt block decoded to the original")
	}
}

// FuzzDecodeLz4Frame: any bytes never panic the frame reader, and what it
// reads, the standard reader reads the same.
func FuzzDecodeLz4Frame(f *testing.F) {
	for _, opts := range [][]lz4.Option{nil, {lz4.ChecksumOption(false), lz4.BlockSizeOption(lz4.Block64Kb)}, {lz4.BlockChecksumOption(true)}} {
		f.Add(lz4Frame(f, bytes.Repeat([]byte("sluice masks records "), 500), opts...))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		got, ok := decodeLz4Frame(nil, src)
		if !ok {
			return
		}
		want, err := kgo.DefaultDecompressor().Decompress(src, kgo.CodecLz4)
		if err != nil {
			// The standard reader also checks the header and content
			// checksums, which the batch CRC covers here.
			return
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read %d bytes, the standard reader %d", len(got), len(want))
		}
	})
}
