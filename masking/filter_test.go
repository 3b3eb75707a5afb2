package masking

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/sluice-gw/sluice/proxy/bufpool"
	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/schema"
)

type resolver map[[16]byte]string

func (r resolver) TopicName(id [16]byte) (string, bool) { n, ok := r[id]; return n, ok }
func (r resolver) TopicKnown(name string) bool          { _, ok := r.TopicID(name); return ok }
func (r resolver) TopicID(name string) ([16]byte, bool) {
	for id, n := range r {
		if n == name {
			return id, true
		}
	}
	return [16]byte{}, false
}

func testConfig(t testing.TB) Config {
	t.Setenv("SLUICE_TEST_HASH_KEY", string(testHashKey))
	dir := t.TempDir()
	f := dir + "/token.key"
	if err := os.WriteFile(f, append(testTokenKey, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.Keys = map[string]KeySource{DefaultHashKey: {Env: "SLUICE_TEST_HASH_KEY"}, DefaultTokenKey: {File: f}}
	return c
}

func TestFilterFetch(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	cfg := testConfig(t)
	cfg.Topics = map[string]TopicConfig{"strict": {OnError: OnErrorFailPartition}}
	f, err := newFilter(cfg, staticSource{9: s}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	payID, otherID, strictID := [16]byte{1}, [16]byte{2}, [16]byte{3}
	good := makeBatch(t, 3, 0, 0, demoValues(t, s, 5, 0), -1)
	bad := makeBatch(t, 0, 0, 0, []testRecord{{value: []byte("not avro")}}, -1)
	for _, version := range []int16{12, 13} {
		resp := kmsg.NewPtrFetchResponse()
		resp.Version = version
		for _, tc := range []struct {
			name string
			id   [16]byte
			b    []byte
		}{{"payments", payID, good}, {"other", otherID, good}, {"strict", strictID, bad}, {"unknown", [16]byte{9}, good}} {
			tp := kmsg.NewFetchResponseTopic()
			if version < 13 {
				tp.Topic = tc.name
			} else {
				tp.TopicID = tc.id
			}
			p := kmsg.NewFetchResponseTopicPartition()
			p.RecordBatches = tc.b
			tp.Partitions = append(tp.Partitions, p)
			resp.Topics = append(resp.Topics, tp)
		}
		x := &filter.Exchange{
			Key: 1, Version: version, Response: resp,
			Topics: resolver{payID: "payments", otherID: "other", strictID: "strict"},
			Obligations: map[string]*filter.Obligations{
				"payments": {Mask: demoRules},
				"strict":   {Mask: demoRules},
			},
		}
		if err := f.OnResponse(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		pay, other, strict, unknown := &resp.Topics[0].Partitions[0], &resp.Topics[1].Partitions[0], &resp.Topics[2].Partitions[0], &resp.Topics[3].Partitions[0]
		if !x.ResponseChanged() {
			t.Fatal("masked response not marked changed: the proxy would send the upstream's bytes")
		}
		if &other.RecordBatches[0] != &good[0] || len(other.RecordBatches) != len(good) {
			t.Fatal("partition without obligations was copied")
		}
		fp, _ := consume(t, pay.RecordBatches, 0)
		for i, r := range fp.Records {
			_, body, _ := schema.ParseWire(r.Value)
			var p schema.DemoPayment
			if err := avro.Unmarshal(s.Avro, body, &p); err != nil || p.Customer.SSN != refHash(schema.DemoRecord(i).Customer.SSN) {
				t.Fatalf("v%d record %d not masked: %v", version, i, err)
			}
		}
		if strict.ErrorCode != kerr.UnknownServerError.Code || len(strict.RecordBatches) != 0 {
			t.Fatalf("fail_partition: code %d", strict.ErrorCode)
		}
		if version >= 13 {
			if unknown.ErrorCode != kerr.UnknownTopicID.Code || len(unknown.RecordBatches) != 0 {
				t.Fatalf("unresolvable topic id delivered: code %d", unknown.ErrorCode)
			}
		}
		if x.Stats.Records < 10 || x.Stats.Bytes == 0 {
			t.Fatalf("stats %+v", x.Stats)
		}
		// The masked partition's buffer is the exchange's until Done,
		// then the pool's: the next rewrite of its size class gets it.
		// (One P, so the pool's Gets see what its Puts kept; the
		// strict partition's buffer, given back when it failed, is of
		// the same class.)
		masked := &pay.RecordBatches[:1][0]
		procs := runtime.GOMAXPROCS(1)
		x.Done()
		reused := false
		for range 2 {
			if b := bufpool.Get(len(good) + len(good)/8); &(*b)[:1][0] == masked {
				reused = true
			}
		}
		runtime.GOMAXPROCS(procs)
		if !reused && !raceEnabled {
			t.Fatal("Done did not give the masked partition's buffer back")
		}
	}
}

func TestFilterProduceContract(t *testing.T) {
	fake := srfake.New()
	defer fake.Close()
	payID, _, err := fake.RegisterSchema("payments-value", sr.Schema{Schema: schema.DemoPaymentsSchema})
	if err != nil {
		t.Fatal(err)
	}
	otherID, _, err := fake.RegisterSchema("other-value", sr.Schema{Schema: `{"type":"record","name":"O","fields":[{"name":"x","type":"string"}]}`})
	if err != nil {
		t.Fatal(err)
	}
	rcfg := schema.DefaultConfig()
	rcfg.URL = fake.URL()
	reg, err := schema.New(rcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Topics = map[string]TopicConfig{"payments": {Contract: true}}
	f, err := NewFilter(cfg, reg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := reg.SchemaByID(context.Background(), payID)
	if err != nil {
		t.Fatal(err)
	}
	goodRecs := demoValues(t, s, 3, 0)
	wrongID := goodRecs[0]
	wrongID.value = schema.AppendWire(nil, otherID, []byte{2, 'h', 'i'})
	corrupt := goodRecs[1]
	corrupt.value = corrupt.value[:len(corrupt.value)-3]

	req := kmsg.NewPtrProduceRequest()
	req.Version = 9
	req.Acks = -1
	tp := kmsg.NewProduceRequestTopic()
	tp.Topic = "payments"
	for i, recs := range [][]testRecord{goodRecs, {goodRecs[0], wrongID}, {corrupt}} {
		p := kmsg.NewProduceRequestTopicPartition()
		p.Partition = int32(i)
		p.Records = makeBatch(t, 2, 0, 0, recs, -1)
		tp.Partitions = append(tp.Partitions, p)
	}
	req.Topics = append(req.Topics, tp)
	x := &filter.Exchange{Key: 0, Version: 9, Request: req, Topics: resolver{}}
	if err := f.OnRequest(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if len(req.Topics) != 1 || len(req.Topics[0].Partitions) != 1 || req.Topics[0].Partitions[0].Partition != 0 {
		t.Fatalf("forwarded %+v", req.Topics)
	}
	if x.Local != nil {
		t.Fatal("local response although a partition is forwarded")
	}
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	resp.Version = 9
	rt := kmsg.NewProduceResponseTopic()
	rt.Topic = "payments"
	rp := kmsg.NewProduceResponseTopicPartition()
	rt.Partitions = append(rt.Partitions, rp)
	resp.Topics = append(resp.Topics, rt)
	x.Response = resp
	if err := f.OnResponse(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	ps := resp.Topics[0].Partitions
	if len(ps) != 3 {
		t.Fatalf("response partitions %+v", ps)
	}
	// The filter reports Produce response changes (filter.ChangeReporter),
	// so the proxy re-encodes the response only when it says so.
	if !f.ReportsResponseChanges(0) || !x.ResponseChanged() {
		t.Fatal("refused partitions added without marking the response changed")
	}
	for _, p := range ps[1:] {
		if p.ErrorCode != kerr.InvalidRecord.Code || p.ErrorMessage == nil {
			t.Fatalf("partition %d: code %d", p.Partition, p.ErrorCode)
		}
		t.Logf("partition %d: %s", p.Partition, *p.ErrorMessage)
	}
	if !strings.Contains(*ps[1].ErrorMessage, "not registered under subject") || !strings.Contains(*ps[2].ErrorMessage, "does not decode") {
		t.Fatalf("messages: %q, %q", *ps[1].ErrorMessage, *ps[2].ErrorMessage)
	}

	// Nothing refused: the response is left as the broker sent it.
	req3 := kmsg.NewPtrProduceRequest()
	req3.Version = 9
	tp3 := kmsg.NewProduceRequestTopic()
	tp3.Topic = "payments"
	p3 := kmsg.NewProduceRequestTopicPartition()
	p3.Records = makeBatch(t, 2, 0, 0, goodRecs, -1)
	tp3.Partitions = append(tp3.Partitions, p3)
	req3.Topics = append(req3.Topics, tp3)
	x3 := &filter.Exchange{Key: 0, Version: 9, Request: req3, Topics: resolver{}}
	if err := f.OnRequest(context.Background(), x3); err != nil || x3.Local != nil {
		t.Fatalf("good records: %v, local %v", err, x3.Local)
	}
	resp3 := req3.ResponseKind().(*kmsg.ProduceResponse)
	resp3.Version = 9
	x3.Response = resp3
	if err := f.OnResponse(context.Background(), x3); err != nil {
		t.Fatal(err)
	}
	if x3.ResponseChanged() || len(resp3.Topics) != 0 {
		t.Fatalf("response with nothing refused marked changed (%v) or edited: %+v", x3.ResponseChanged(), resp3.Topics)
	}

	// Every partition refused: answered locally.
	req2 := kmsg.NewPtrProduceRequest()
	req2.Version = 9
	tp2 := kmsg.NewProduceRequestTopic()
	tp2.Topic = "payments"
	p := kmsg.NewProduceRequestTopicPartition()
	p.Records = makeBatch(t, 0, 0, 0, []testRecord{corrupt}, -1)
	tp2.Partitions = append(tp2.Partitions, p)
	req2.Topics = append(req2.Topics, tp2)
	x2 := &filter.Exchange{Key: 0, Version: 9, Request: req2, Topics: resolver{}}
	f.OnRequest(context.Background(), x2)
	if x2.Local == nil {
		t.Fatal("no local response")
	}
	x2.Response = x2.Local
	f.OnResponse(context.Background(), x2)
	lr := x2.Local.(*kmsg.ProduceResponse)
	if len(lr.Topics) != 1 || lr.Topics[0].Partitions[0].ErrorCode != kerr.InvalidRecord.Code {
		t.Fatalf("local response %+v", lr)
	}
}

func TestFilterProduceMasking(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	f, err := newFilter(testConfig(t), staticSource{9: s}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrProduceRequest()
	tp := kmsg.NewProduceRequestTopic()
	tp.Topic = "inbound"
	p := kmsg.NewProduceRequestTopicPartition()
	p.Records = makeBatch(t, 4, 0, 0, demoValues(t, s, 4, 0), -1)
	tp.Partitions = append(tp.Partitions, p)
	req.Topics = append(req.Topics, tp)
	x := &filter.Exchange{Request: req, Topics: resolver{}, Obligations: map[string]*filter.Obligations{"inbound": {Mask: demoRules}}}
	if err := f.OnRequest(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if !x.RequestChanged() {
		t.Fatal("masked produce request not marked changed: the proxy would forward the clear records")
	}
	fp, _ := consume(t, req.Topics[0].Partitions[0].Records, 0)
	if len(fp.Records) != 4 {
		t.Fatalf("%d records", len(fp.Records))
	}
	for i, r := range fp.Records {
		_, body, _ := schema.ParseWire(r.Value)
		var d schema.DemoPayment
		if err := avro.Unmarshal(s.Avro, body, &d); err != nil || d.Customer.SSN != refHash(schema.DemoRecord(i).Customer.SSN) {
			t.Fatalf("record %d not masked", i)
		}
	}
	// An unparseable inbound record refuses the partition.
	p.Records = makeBatch(t, 0, 0, 0, []testRecord{{value: []byte("junk")}}, -1)
	req.Topics = []kmsg.ProduceRequestTopic{{Topic: "inbound", Partitions: []kmsg.ProduceRequestTopicPartition{p}}}
	x = &filter.Exchange{Request: req, Topics: resolver{}, Obligations: map[string]*filter.Obligations{"inbound": {Mask: demoRules}}}
	f.OnRequest(context.Background(), x)
	if len(req.Topics) != 0 || x.Local == nil {
		t.Fatal("unparseable inbound record forwarded")
	}
	// A data batch flagged as a control batch (which the rewrite passes
	// unread) refuses the partition: only brokers write markers.
	p.Records = makeBatch(t, 0, 0, 0x20, demoValues(t, s, 2, 0), -1)
	req.Topics = []kmsg.ProduceRequestTopic{{Topic: "inbound", Partitions: []kmsg.ProduceRequestTopicPartition{p}}}
	x = &filter.Exchange{Request: req, Topics: resolver{}, Obligations: map[string]*filter.Obligations{"inbound": {Mask: demoRules}}}
	f.OnRequest(context.Background(), x)
	if len(req.Topics) != 0 || x.Local == nil {
		t.Fatal("a control-flagged batch of clear records forwarded")
	}
}

func TestPlannerValidate(t *testing.T) {
	fake := srfake.New()
	defer fake.Close()
	if _, _, err := fake.RegisterSchema("payments-value", sr.Schema{Schema: schema.DemoPaymentsSchema}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fake.RegisterSchema("payments-key", sr.Schema{Schema: `"string"`}); err != nil {
		t.Fatal(err)
	}
	rcfg := schema.DefaultConfig()
	rcfg.URL = fake.URL()
	reg, _ := schema.New(rcfg, nil)
	cfg := testConfig(t)
	cfg.Topics = map[string]TopicConfig{"events": {Format: FormatJSON}}
	f, err := NewFilter(cfg, reg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		topic string
		rules []filter.MaskRule
		err   string
	}{
		{"payments", demoRules, ""},
		{"payments", []filter.MaskRule{{Field: "amount", Strategy: "partial"}}, "cannot apply"},
		{"payments", []filter.MaskRule{{Field: "nope", Strategy: "redact"}}, "no field"},
		{"payments", []filter.MaskRule{{Field: "x", Strategy: "redact", Target: "key"}}, "no field"},
		// No schema registered yet: accepted now, checked when a plan
		// is compiled at fetch time (and failing closed there).
		{"missing", []filter.MaskRule{{Field: "x", Strategy: "redact"}}, ""},
		{"events", []filter.MaskRule{{Field: "a.b[]", Strategy: "hash"}}, ""},
		{"events", []filter.MaskRule{{Field: "a", Strategy: "default"}}, "schema default"},
	} {
		err := f.Planner().Validate(ctx, tc.topic, tc.rules)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s %v: err = %v, want %q", tc.topic, tc.rules, err, tc.err)
		}
	}
}

// TestRegistryOutage: an unreachable registry fails closed under both
// policies, after bounded retries, once per schema id per partition.
func TestRegistryOutage(t *testing.T) {
	fake := srfake.New()
	defer fake.Close()
	id, _, err := fake.RegisterSchema("payments-value", sr.Schema{Schema: schema.DemoPaymentsSchema})
	if err != nil {
		t.Fatal(err)
	}
	var calls int
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		calls++
		http.Error(w, `{"error_code":50001,"message":"down"}`, http.StatusInternalServerError)
		return true
	})
	rcfg := schema.DefaultConfig()
	rcfg.URL = fake.URL()
	rcfg.RetryBackoff = time.Millisecond
	reg, err := schema.New(rcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := parseSchema(t, id, schema.DemoPaymentsSchema)
	recs := demoValues(t, s, 20, 0)
	in := makeBatch(t, 0, 0, 0, recs, -1)
	for _, policy := range []string{OnErrorMarker, OnErrorFailPartition} {
		calls = 0
		m := newMasker(t, reg, TopicConfig{OnError: policy}, &filter.Obligations{Mask: demoRules})
		out, st, err := RewriteBatches(nil, in, m)
		if policy == OnErrorFailPartition {
			if err == nil {
				t.Fatal("fail_partition delivered records during an outage")
			}
			continue
		}
		if err != nil || st.Errors != 20 {
			t.Fatalf("marker: %+v %v", st, err)
		}
		if bytes.Contains(out, []byte(schema.DemoRecord(0).Customer.SSN)) {
			t.Fatal("ssn delivered in clear during a registry outage")
		}
		if m.reasons[reasonRegistry] != 20 {
			t.Fatalf("reasons %v", m.reasons)
		}
		if calls != rcfg.Retries+1 {
			t.Fatalf("%d registry calls for one schema id, want %d", calls, rcfg.Retries+1)
		}
	}
}

func TestOldMagicFailsClosed(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	f, err := newFilter(testConfig(t), staticSource{9: s}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A magic-1 message: offset, size, crc, magic 1, attributes, timestamp,
	// key, value (the value in clear).
	value := []byte("ssn=123-45-6789")
	var msg []byte
	msg = binary.BigEndian.AppendUint32(msg, 0) // crc (not checked here)
	msg = append(msg, 1, 0)
	msg = binary.BigEndian.AppendUint64(msg, 0)
	msg = binary.BigEndian.AppendUint32(msg, 0xffffffff)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(value)))
	msg = append(msg, value...)
	var set []byte
	set = binary.BigEndian.AppendUint64(set, 0)
	set = binary.BigEndian.AppendUint32(set, uint32(len(msg)))
	set = append(set, msg...)

	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 12
	tp := kmsg.NewFetchResponseTopic()
	tp.Topic = "payments"
	p := kmsg.NewFetchResponseTopicPartition()
	p.RecordBatches = set
	tp.Partitions = append(tp.Partitions, p)
	resp.Topics = append(resp.Topics, tp)
	var reported []string
	f.OnFailure(func(_ *filter.Conn, topic string, partition int32, reason string) {
		reported = append(reported, fmt.Sprintf("%s/%d: %s", topic, partition, reason))
	})
	x := &filter.Exchange{Conn: &filter.Conn{}, Response: resp, Topics: resolver{}, Obligations: map[string]*filter.Obligations{"payments": {Mask: demoRules}}}
	f.OnResponse(context.Background(), x)
	got := resp.Topics[0].Partitions[0]
	if got.ErrorCode != kerr.UnknownServerError.Code || bytes.Contains(got.RecordBatches, value) {
		t.Fatalf("old-magic message set delivered: code %d", got.ErrorCode)
	}
	if len(reported) != 1 || !strings.HasPrefix(reported[0], "payments/0: partition failed") {
		t.Fatalf("failure hook told %q", reported)
	}
	// Without obligations it passes untouched.
	out, st, err := RewriteBatches(nil, set, passThrough{})
	if err != nil || !bytes.Equal(out, set) || st.OldMagic != 1 {
		t.Fatalf("passthrough: %v %+v", err, st)
	}
}

func TestProduceUnknownTopicID(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	cfg := testConfig(t)
	cfg.Topics = map[string]TopicConfig{"payments": {Contract: true}}
	f, err := newFilter(cfg, staticSource{9: s}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrProduceRequest()
	req.Version = 13
	tp := kmsg.NewProduceRequestTopic()
	tp.TopicID = [16]byte{7}
	p := kmsg.NewProduceRequestTopicPartition()
	p.Records = makeBatch(t, 0, 0, 0, []testRecord{{value: []byte("x")}}, -1)
	tp.Partitions = append(tp.Partitions, p)
	req.Topics = append(req.Topics, tp)
	x := &filter.Exchange{Request: req, Topics: resolver{}}
	f.OnRequest(context.Background(), x)
	if len(req.Topics) != 0 || x.Local == nil {
		t.Fatal("produce to an unresolvable topic id forwarded while a contract is configured")
	}
	x.Response = x.Local
	f.OnResponse(context.Background(), x)
	rp := x.Local.(*kmsg.ProduceResponse).Topics[0]
	if rp.TopicID != [16]byte{7} || rp.Partitions[0].ErrorCode != kerr.UnknownTopicID.Code {
		t.Fatalf("response %+v", rp)
	}
}

// TestFetchStreaming: the mask filter takes a Fetch response streamed only
// when no topic carries obligations, and withholds any topic of a streamed
// response that turns out to carry some (or cannot be resolved while some
// exist), never relaying it in clear.
func TestFetchStreaming(t *testing.T) {
	f, err := newFilter(testConfig(t), staticSource{}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	x := &filter.Exchange{Key: 1, Topics: resolver{[16]byte{1}: "payments"}}
	if !f.StreamFetch(x) {
		t.Fatal("no obligations: not streamed")
	}
	if c := f.FetchTopic(ctx, x, "payments", [16]byte{}); c != 0 {
		t.Fatalf("topic without obligations withheld: %d", c)
	}
	x.Obligations = map[string]*filter.Obligations{"payments": {Mask: demoRules}}
	if f.StreamFetch(x) {
		t.Fatal("obligations to apply, yet streamed")
	}
	if c := f.FetchTopic(ctx, x, "payments", [16]byte{}); c != kerr.UnknownServerError.Code {
		t.Fatalf("topic with obligations relayed (code %d)", c)
	}
	if c := f.FetchTopic(ctx, x, "", [16]byte{1}); c != kerr.UnknownServerError.Code {
		t.Fatalf("topic with obligations named by id relayed (code %d)", c)
	}
	if c := f.FetchTopic(ctx, x, "", [16]byte{9}); c != kerr.UnknownTopicID.Code {
		t.Fatalf("unresolvable topic id relayed while obligations exist (code %d)", c)
	}
}

// TestProduceStreaming: the mask filter lets a Produce request be streamed
// only to a topic without a schema contract and without obligations, and
// declines one named by an id it cannot resolve.
func TestProduceStreaming(t *testing.T) {
	cfg := testConfig(t)
	cfg.Topics = map[string]TopicConfig{"contracted": {Contract: true}}
	f, err := newFilter(cfg, staticSource{}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	x := func(topic string, id [16]byte) *filter.Exchange {
		req := kmsg.NewPtrProduceRequest()
		req.Topics = []kmsg.ProduceRequestTopic{{Topic: topic, TopicID: id}}
		return &filter.Exchange{Key: 0, Request: req, Topics: resolver{[16]byte{1}: "payments"}}
	}
	if !f.StreamProduce(ctx, x("payments", [16]byte{})) || !f.StreamProduce(ctx, x("", [16]byte{1})) {
		t.Fatal("a plain topic is not streamed")
	}
	if f.StreamProduce(ctx, x("contracted", [16]byte{})) {
		t.Fatal("a topic with a schema contract streamed: its records would go unchecked")
	}
	if f.StreamProduce(ctx, x("", [16]byte{9})) {
		t.Fatal("an unresolvable topic id streamed")
	}
	xo := x("payments", [16]byte{})
	xo.Obligations = map[string]*filter.Obligations{"payments": {Mask: demoRules}}
	if f.StreamProduce(ctx, xo) {
		t.Fatal("a topic with masking obligations streamed")
	}
}

// TestFetchPrepared: partitions masked as the response arrived
// (FetchPartition, FetchRead) are taken by OnResponse when its partition
// holds the very bytes masked under the same obligations, and give the
// same response as masking after the read; a partition whose obligations
// the policy replaced on the response side is masked again under the new
// ones, and results nothing takes are given back.
func TestFetchPrepared(t *testing.T) {
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	f, err := newFilter(testConfig(t), staticSource{9: s}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	build := func() *kmsg.FetchResponse {
		resp := kmsg.NewPtrFetchResponse()
		resp.Version = 12
		for _, name := range []string{"payments", "refunds", "open"} {
			tp := kmsg.NewFetchResponseTopic()
			tp.Topic = name
			for part := range int32(2) {
				p := kmsg.NewFetchResponseTopicPartition()
				p.Partition = part
				p.RecordBatches = makeBatch(t, 0, 0, 0, demoValues(t, s, 20, int(part)*20), -1)
				tp.Partitions = append(tp.Partitions, p)
			}
			resp.Topics = append(resp.Topics, tp)
		}
		return resp
	}
	ssnOnly := &filter.Obligations{Mask: []filter.MaskRule{{Field: "customer.ssn", Strategy: "hash"}}}
	exchange := func(resp *kmsg.FetchResponse) *filter.Exchange {
		return &filter.Exchange{Key: 1, Version: 12, Response: resp, Topics: resolver{},
			Obligations: map[string]*filter.Obligations{"payments": {Mask: demoRules}, "refunds": ssnOnly}}
	}

	// Masked after the read, as without a head start.
	plain := build()
	if err := f.OnResponse(context.Background(), exchange(plain)); err != nil {
		t.Fatal(err)
	}

	resp := build()
	x := exchange(resp)
	if !f.PrepareFetch(x) {
		t.Fatal("a response with obligations not prepared")
	}
	for _, tp := range resp.Topics {
		for _, p := range tp.Partitions {
			f.FetchPartition(context.Background(), x, tp.Topic, tp.TopicID, p.Partition, p.RecordBatches)
		}
	}
	f.FetchRead(x)
	pr := x.Get(prepKey{}).(*prepared)
	if len(pr.done) != 4 {
		t.Fatalf("%d partitions masked ahead, want 4 (two topics with obligations)", len(pr.done))
	}
	// The policy attaches other obligations for refunds on the response
	// side: card numbers are now redacted too.
	x.Obligations["refunds"] = &filter.Obligations{Mask: append(ssnOnly.Mask[:1:1], filter.MaskRule{Field: "card.number", Strategy: "redact", Params: map[string]string{"replacement": "XXXX"}})}
	if err := f.OnResponse(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if len(pr.done) != 0 {
		t.Fatalf("%d results left over, not given back", len(pr.done))
	}
	// Two payments partitions taken, the two refunds ones masked again;
	// the plain run above masked four after the read.
	if a, r := counterValue(t, f.prepared.WithLabelValues("arriving")), counterValue(t, f.prepared.WithLabelValues("read")); a != 2 || r != 6 {
		t.Fatalf("partitions masked arriving %v, read %v; want 2 and 6", a, r)
	}
	for ti, tp := range resp.Topics {
		for pi, p := range tp.Partitions {
			want := plain.Topics[ti].Partitions[pi].RecordBatches
			if tp.Topic != "refunds" && !bytes.Equal(p.RecordBatches, want) {
				t.Fatalf("%s[%d] differs from masking after the read", tp.Topic, pi)
			}
			if tp.Topic == "refunds" {
				fp, _ := consume(t, p.RecordBatches, 0)
				for _, r := range fp.Records {
					_, body, _ := schema.ParseWire(r.Value)
					var d schema.DemoPayment
					if err := avro.Unmarshal(s.Avro, body, &d); err != nil {
						t.Fatal(err)
					}
					if d.Card != nil && d.Card.Number != "XXXX" {
						t.Fatalf("refunds[%d] offset %d: card number %q under the obligations of the request side", pi, r.Offset, d.Card.Number)
					}
				}
			}
		}
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
