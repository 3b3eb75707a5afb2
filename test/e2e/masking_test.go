package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/sluice-gw/sluice/schema"
	"github.com/sluice-gw/sluice/test/harness"
)

// consumeAvro runs a driver's consume with --avro-registry as p in group
// (the policy lets a partner use groups "<org>.*") and returns its lines.
func (e *maskEnv) consumeAvro(ctx context.Context, t *testing.T, d harness.Driver, p partner, topic, group string, n int, extra ...string) []avroLine {
	t.Helper()
	args := append([]string{"consume", "--bootstrap", e.gw.Bootstrap, "--topic", topic, "--count", strconv.Itoa(n),
		"--group", group, "--avro-registry", e.srURL, "--timeout", "40"}, p.saslArgs()...)
	r := d.Run(ctx, harness.DefaultClientTimeout, append(args, extra...)...)
	if !r.OK() {
		t.Fatalf("%s consume of %s as %s: %s", d.Name, topic, p.name, r)
	}
	return parseAvroLines(t, r.Stdout)
}

// pollKgo polls cl until it has n records, failing on any partition error
// or after 30s.
func pollKgo(ctx context.Context, t *testing.T, what string, cl *kgo.Client, n int) []*kgo.Record {
	t.Helper()
	recs, errs := pollFor(ctx, cl, 30*time.Second, n)
	if len(errs) > 0 {
		t.Fatalf("%s: %v", what, errs)
	}
	if len(recs) < n {
		t.Fatalf("%s: got %d of %d records", what, len(recs), n)
	}
	return recs
}

// assertNoMore fails if cl delivers another record within d.
func assertNoMore(ctx context.Context, t *testing.T, what string, cl *kgo.Client, d time.Duration) {
	t.Helper()
	recs, errs := pollFor(ctx, cl, d, 0)
	if len(errs) > 0 {
		t.Errorf("%s: %v", what, errs)
	}
	for _, r := range recs {
		t.Errorf("%s: unexpected record %s[%d]@%d key %q", what, r.Topic, r.Partition, r.Offset, r.Key)
	}
}

// TestMaskingTwoPartners: acme and globex consume the same Avro topic
// through the gateway and each sees its own masking. confluent-kafka-python
// decodes with Apache Avro's Python library and kafkajs with
// @kafkajs/confluent-schema-registry, both fetching the writer schema from
// the registry by the id in each value; the masked values must equal what
// the grant's rules give (HMAC-SHA-256 under the configured key, last four
// characters, null, redact), every other field must be intact, globex must
// get exactly the EU payments, and no masked value may be in the bytes
// delivered.
func TestMaskingTwoPartners(t *testing.T) {
	t.Parallel()
	const topic, n = "payments", 60
	env := startMaskEnv(t, map[string]int32{topic: 3}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	idx := seq(0, n)
	env.produceDemo(ctx, t, env.direct(t, kgo.ProducerBatchCompression(kgo.NoCompression())), topic, chunks(idx, 7)...)
	if len(visible(globex, idx)) == 0 || len(visible(globex, idx)) == n {
		t.Fatalf("demo data: %d of %d payments are EU; the row filter would prove nothing", len(visible(globex, idx)), n)
	}

	// The bytes on the wire: uncompressed batches as the gateway sends
	// them hold no masked value, and the masked values are there.
	for _, p := range []partner{acme, globex} {
		batches, hwm := rawFetch(ctx, t, env.via(t, p), topic)
		var raw []byte
		var total int64
		for part, b := range batches {
			raw = append(raw, b...)
			total += hwm[part]
		}
		if total != n {
			t.Fatalf("raw fetch as %s: high watermarks sum to %d, want %d", p.name, total, n)
		}
		assertNoSecrets(t, "raw fetch", p, raw, idx)
		for _, i := range visible(p, idx) {
			m, _ := masked(p, i)
			for _, v := range []string{m.ID, m.Customer.SSN, m.AccountNumber} {
				if !bytes.Contains(raw, []byte(v)) {
					t.Errorf("raw fetch as %s: payment %d's %q is missing", p.name, i, v)
				}
			}
		}
	}

	t.Run("franz-go", func(t *testing.T) {
		for _, p := range []partner{acme, globex} {
			want := len(visible(p, idx))
			cl := env.via(t, p, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			recs := pollKgo(ctx, t, "franz-go as "+p.name, cl, want)
			assertNoMore(ctx, t, "franz-go as "+p.name, cl, time.Second)
			env.checkKgo(ctx, t, "franz-go as "+p.name, p, topic, idx, recs)
		}
	})
	for _, d := range []harness.Driver{harness.PythonDriver(), harness.KafkaJSDriver()} {
		t.Run(d.Name, func(t *testing.T) {
			t.Parallel()
			requireAvailable(t, driverClient{d})
			for _, p := range []partner{acme, globex} {
				group := p.org + ".mask-" + strings.ReplaceAll(d.Name, "-", "")
				lines := env.consumeAvro(ctx, t, d, p, topic, group, len(visible(p, idx)))
				checkDecoded(t, d.Name+" as "+p.name, p, idx, lines, env.ids[topic])
			}
		})
	}
}

var codecs = []struct {
	name  string
	codec kgo.CompressionCodec
	attr  int16
}{
	{"none", kgo.NoCompression(), 0},
	{"gzip", kgo.GzipCompression(), 1},
	{"snappy", kgo.SnappyCompression(), 2},
	{"lz4", kgo.Lz4Compression(), 3},
	{"zstd", kgo.ZstdCompression(), 4},
}

// TestMaskingEveryCodec: Avro payments produced with franz-go straight to
// the cluster with each compression codec are consumed masked through the
// gateway. The batches keep their codec, offsets, timestamps and producer
// fields; globex's row filter empties some batches entirely (zero-record
// batches, written without payload or codec), which librdkafka and kafkajs
// (gzip built in; snappy, lz4 and zstd through the pure-JS codecs the
// driver registers) must skip, for every codec.
func TestMaskingEveryCodec(t *testing.T) {
	t.Parallel()
	topics := map[string]int32{}
	for _, c := range codecs {
		topics["payments."+c.name] = 2
	}
	env := startMaskEnv(t, topics, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	const n = 40
	idx := seq(0, n)
	// Single-record groups first (a non-EU one is an empty batch for
	// globex), then groups of five.
	groups := append(chunks(idx[:8], 1), chunks(idx[8:], 5)...)
	for _, c := range codecs {
		env.produceDemo(ctx, t, env.direct(t, kgo.ProducerBatchCompression(c.codec)), "payments."+c.name, groups...)
	}

	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			topic := "payments." + c.name
			direct, _ := rawFetch(ctx, t, env.direct(t), topic)
			for _, p := range []partner{acme, globex} {
				cl := env.via(t, p, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
				want := len(visible(p, idx))
				recs := pollKgo(ctx, t, "franz-go as "+p.name, cl, want)
				assertNoMore(ctx, t, "franz-go as "+p.name, cl, 500*time.Millisecond)
				env.checkKgo(ctx, t, c.name+" franz-go as "+p.name, p, topic, idx, recs)

				via, _ := rawFetch(ctx, t, env.via(t, p), topic)
				for part, b := range via {
					assertBatchFidelity(t, fmt.Sprintf("%s[%d] as %s", topic, part, p.name), c.attr, direct[part], b)
				}
			}
			for _, d := range []harness.Driver{harness.PythonDriver(), harness.KafkaJSDriver()} {
				if d.Available() != nil {
					requireAvailable(t, driverClient{d})
				}
				for _, p := range []partner{acme, globex} {
					group := p.org + ".codec-" + c.name + "-" + strings.ReplaceAll(d.Name, "-", "")
					lines := env.consumeAvro(ctx, t, d, p, topic, group, len(visible(p, idx)))
					checkDecoded(t, d.Name+" as "+p.name, p, idx, lines, env.ids[topic])
				}
			}
		})
	}
}

// assertBatchFidelity compares the batches the gateway delivered with the
// cluster's: the same batches in order, with every header field kept but
// the record count (a row filter removes records), and the codec of the
// topic (but a batch the row filter emptied has none).
func assertBatchFidelity(t *testing.T, what string, codecAttr int16, direct, via []byte) {
	t.Helper()
	dh, vh := batchHeaders(t, direct), batchHeaders(t, via)
	if len(dh) == 0 || len(dh) != len(vh) {
		t.Errorf("%s: %d batches through the gateway, %d in the cluster", what, len(vh), len(dh))
		return
	}
	for i := range dh {
		d, v := dh[i], vh[i]
		if d.Attributes&7 != codecAttr {
			t.Fatalf("%s: the cluster's batch %d has codec %d, want %d (test setup)", what, i, d.Attributes&7, codecAttr)
		}
		if v.NumRecords > d.NumRecords {
			t.Errorf("%s: batch %d grew from %d to %d records", what, i, d.NumRecords, v.NumRecords)
		}
		if v.NumRecords == 0 && d.NumRecords > 0 {
			// Emptied by the row filter: written as Kafka's log cleaner
			// writes an empty batch, without payload or codec.
			if v.Attributes != d.Attributes&^7 {
				t.Errorf("%s: emptied batch %d has attributes %#x, want %#x", what, i, v.Attributes, d.Attributes&^7)
			}
			v.Attributes = d.Attributes
		}
		d.NumRecords, v.NumRecords = 0, 0
		if d != v {
			t.Errorf("%s: batch %d header changed:\ncluster %+v\ngateway %+v", what, i, d, v)
		}
	}
}

// TestMaskingReadCommitted: committed and aborted transactions produced
// with franz-go straight to the cluster; read_committed consumers through
// the gateway (confluent-kafka-python with isolation.level=read_committed,
// franz-go) get only the committed records, masked. A read_uncommitted
// consumer gets the aborted ones too, also masked, which shows they were
// there to leak.
func TestMaskingReadCommitted(t *testing.T) {
	t.Parallel()
	const topic = "payments.txn"
	env := startMaskEnv(t, map[string]int32{topic: 2}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	txn := env.direct(t, kgo.TransactionalID("e2e-mask-txn"), kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	committed := slices.Concat(seq(0, 10), seq(20, 30), seq(30, 35))
	for _, step := range []struct {
		idx    []int
		commit bool
	}{{seq(0, 10), true}, {seq(10, 20), false}, {seq(20, 30), true}, {seq(40, 50), false}, {seq(30, 35), true}} {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		env.produceDemo(ctx, t, txn, topic, step.idx)
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(step.commit)); err != nil {
			t.Fatalf("end transaction (commit %v): %v", step.commit, err)
		}
	}
	all := seq(0, 50)
	aborted := slices.DeleteFunc(slices.Clone(all), func(i int) bool { return slices.Contains(committed, i) || (i >= 35 && i < 40) })

	t.Run("confluent-kafka-python", func(t *testing.T) {
		d := harness.PythonDriver()
		requireAvailable(t, driverClient{d})
		for _, p := range []partner{acme, globex} {
			lines := env.consumeAvro(ctx, t, d, p, topic, p.org+".txn-python", len(visible(p, committed)), "--isolation", "read_committed")
			checkDecoded(t, "python read_committed as "+p.name, p, committed, lines, env.ids[topic])
		}
	})
	t.Run("franz-go", func(t *testing.T) {
		for _, p := range []partner{acme, globex} {
			cl := env.via(t, p, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()))
			recs := pollKgo(ctx, t, "read_committed as "+p.name, cl, len(visible(p, committed)))
			assertNoMore(ctx, t, "read_committed as "+p.name, cl, time.Second)
			env.checkKgo(ctx, t, "franz-go read_committed as "+p.name, p, topic, committed, recs)
		}
		cl := env.via(t, acme, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchIsolationLevel(kgo.ReadUncommitted()))
		both := slices.Concat(committed, aborted)
		recs := pollKgo(ctx, t, "read_uncommitted as acme", cl, len(both))
		env.checkKgo(ctx, t, "franz-go read_uncommitted as acme", acme, topic, both, recs)
	})
}

// TestMaskingRowFilterGroupCommits: globex's row filter removes records
// (whole batches of them, compressed) from a partition; a consumer group
// still advances and commits. The first member (confluent-kafka-python)
// reads two records and commits; the second (kafkajs) resumes right after
// that commit, past the filtered batches, with no re-delivery and no stall;
// the group's committed offset ends at the partition end.
func TestMaskingRowFilterGroupCommits(t *testing.T) {
	t.Parallel()
	const topic, group = "payments.rf", "globex.rf"
	env := startMaskEnv(t, map[string]int32{topic: 1}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	py, js := harness.PythonDriver(), harness.KafkaJSDriver()
	requireAvailable(t, driverClient{py})
	requireAvailable(t, driverClient{js})

	var eu, other []int
	for i := 0; len(eu) < 8 || len(other) < 11; i++ {
		if schema.DemoRecord(i).Region == "EU" {
			eu = append(eu, i)
		} else {
			other = append(other, i)
		}
	}
	eu, other = eu[:8], other[:11]
	// Batches (one ProduceSync each, gzip): EU records interleaved with
	// batches the filter empties completely, ending with an EU record.
	groups := [][]int{
		{eu[0], other[0]}, {other[1], other[2]}, {eu[1]}, {other[3], other[4], other[5]},
		{eu[2], other[6], eu[3]}, {other[7], other[8]}, {eu[4]}, {other[9]}, {eu[5], eu[6]}, {other[10]}, {eu[7]},
	}
	var idx []int
	for _, g := range groups {
		idx = append(idx, g...)
	}
	env.produceDemo(ctx, t, env.direct(t, kgo.ProducerBatchCompression(kgo.GzipCompression())), topic, groups...)

	first := env.consumeAvro(ctx, t, py, globex, topic, group, 2, "--commit")
	second := env.consumeAvro(ctx, t, js, globex, topic, group, 6, "--commit")
	checkDecoded(t, "both members", globex, idx, append(slices.Clone(first), second...), env.ids[topic])
	if len(first) != 2 || len(second) != 6 {
		t.Fatalf("members read %d and %d records, want 2 and 6", len(first), len(second))
	}
	keys := func(ls []avroLine) []int {
		byID := demoIndex(200)
		var out []int
		for _, l := range ls {
			out = append(out, byID[*l.Key])
		}
		return out
	}
	if got := keys(first); !slices.Equal(got, eu[:2]) {
		t.Errorf("first member read payments %v, want %v", got, eu[:2])
	}
	if got := keys(second); !slices.Equal(got, eu[2:]) {
		t.Errorf("second member read payments %v, want %v (resuming after the first member's commit)", got, eu[2:])
	}
	t.Logf("first member (python) read offsets %d, %d; second (kafkajs) read %d..%d of %d", first[0].Offset, first[1].Offset,
		second[0].Offset, second[len(second)-1].Offset, len(idx))
	if second[0].Offset <= first[1].Offset {
		t.Errorf("second member started at offset %d, not after the first member's last %d", second[0].Offset, first[1].Offset)
	}

	adm := kadm.NewClient(env.direct(t))
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, ok := ends.Lookup(topic, 0)
	if !ok || end.Err != nil || end.Offset != int64(len(idx)) {
		t.Fatalf("end offset of %s[0]: %+v, want %d", topic, end, len(idx))
	}
	c, ok := offs.Lookup(topic, 0)
	if !ok || c.Err != nil || c.At != end.Offset {
		t.Errorf("group %s committed %+v on %s[0], want the partition end %d", group, c, topic, end.Offset)
	}
}

// TestMaskingProduceContract: with masking.topics.<t>.contract, a record
// whose schema id is not registered for the topic's subject, one whose id
// is unknown, one with a corrupt body and one not in wire format are each
// refused with INVALID_RECORD (seen by confluent-kafka-python and
// franz-go), and a valid record is accepted. Only the valid records reach
// the topic.
func TestMaskingProduceContract(t *testing.T) {
	t.Parallel()
	const topic = "inbound.acme.payments" // acme may write its inbound topics
	env := startMaskEnv(t, map[string]int32{topic: 1}, map[string]any{
		"topics": map[string]any{topic: map[string]any{"contract": true}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	other, err := env.registry.Client().CreateSchema(ctx, "other-value", sr.Schema{
		Type: sr.TypeAvro, Schema: `{"type": "record", "name": "Other", "fields": [{"name": "x", "type": "string"}]}`,
	})
	if err != nil {
		t.Fatal(err)
	}
	valid := env.encode(ctx, t, topic, 0)
	id := env.ids[topic]
	if other.ID == id {
		t.Fatalf("test setup: both schemas have id %d", id)
	}
	cases := []struct {
		name  string
		value []byte
		ok    bool
	}{
		{"valid", valid, true},
		{"schema id of another subject", schema.AppendWire(nil, other.ID, valid[5:]), false},
		{"unknown schema id", schema.AppendWire(nil, 9999, valid[5:]), false},
		{"corrupt body", valid[:len(valid)/2], false},
		{"trailing bytes", append(slices.Clone(valid), 0x02, 0x02), false},
		{"not wire format", []byte(`{"id": "x"}`), false},
	}
	var mu sync.Mutex
	var accepted [][]byte // values that must be in the topic, in no order

	t.Run("franz-go", func(t *testing.T) {
		for _, c := range cases {
			// A client per record: a refused batch must not disturb the
			// next one's idempotent sequence.
			cl := env.via(t, acme, kgo.DefaultProduceTopic(topic), kgo.RecordRetries(2), kgo.RecordDeliveryTimeout(15*time.Second))
			err := cl.ProduceSync(ctx, &kgo.Record{Value: c.value}).FirstErr()
			switch {
			case c.ok && err != nil:
				t.Errorf("%s: refused: %v", c.name, err)
			case c.ok:
				mu.Lock()
				accepted = append(accepted, c.value)
				mu.Unlock()
			case !errors.Is(err, kerr.InvalidRecord):
				t.Errorf("%s: got %v, want INVALID_RECORD", c.name, err)
			}
		}
	})
	t.Run("confluent-kafka-python", func(t *testing.T) {
		d := harness.PythonDriver()
		requireAvailable(t, driverClient{d})
		for _, c := range cases {
			r := d.Run(ctx, harness.DefaultClientTimeout, append([]string{"produce", "--bootstrap", env.gw.Bootstrap,
				"--topic", topic, "--count", "1", "--value-hex", hex.EncodeToString(c.value), "--timeout", "20"}, acme.saslArgs()...)...)
			switch {
			case c.ok && !r.OK():
				t.Errorf("%s: refused: %s", c.name, r)
			case c.ok:
				mu.Lock()
				accepted = append(accepted, c.value)
				mu.Unlock()
			case r.ExitCode != 1 || !strings.Contains(r.Stderr, `"name": "INVALID_RECORD"`):
				t.Errorf("%s: want exit 1 naming INVALID_RECORD: %s", c.name, r)
			}
		}
	})

	// The topic holds exactly the accepted values.
	cl := env.direct(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	recs := pollKgo(ctx, t, "direct consume of "+topic, cl, len(accepted))
	assertNoMore(ctx, t, "direct consume of "+topic, cl, time.Second)
	for _, r := range recs {
		if !bytes.Equal(r.Value, valid) {
			t.Errorf("%s holds a value that is not the valid record: %x", topic, r.Value)
		}
	}
}
