package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/schema"
	"github.com/sluice-gw/sluice/test/harness"
)

// The masking fixture: two partners, acme and globex, read topics named
// "payments*" holding the demo payments (schema.DemoPaymentsSchema) in the
// Confluent wire format, each under its own grant of the example policy
// (configs/policies):
//
//	acme:   customer.ssn hash, account_number partial (last 4), card null
//	globex: customer.name redact ("anonymous"), customer.ssn redact,
//	        customer.email null, account_number redact, card null;
//	        row filter region = EU
//
// Expected values are computed here from schema.DemoRecord, never read from
// the gateway.
const (
	maskAcme      = "acme-analyst"
	maskAcmePw    = "acme-pw"
	maskGlobex    = "globex-analyst"
	maskGlobexPw  = "globex-pw"
	maskAdmin     = "mask-admin"
	maskAdminPw   = "admin-pw"
	maskHashKey   = "e2e-masking-hash-key-0123456789" // the hash key's bytes
	maskHashEnv   = "SLUICE_E2E_MASK_HASH_KEY"
	maskNameRedac = "anonymous"
)

const maskGrants = `[
 {"id": "g-acme-payments", "org": "acme", "pattern": "payments*", "purpose": "analytics", "classification": "internal",
  "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2100-01-01T00:00:00Z",
  "mask": [
   {"field": "customer.ssn", "strategy": "hash"},
   {"field": "account_number", "strategy": "partial", "params": {"keep_last": "4"}},
   {"field": "card", "strategy": "null"}]},
 {"id": "g-globex-payments", "org": "globex", "pattern": "payments*", "purpose": "analytics", "classification": "internal",
  "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2100-01-01T00:00:00Z",
  "mask": [
   {"field": "customer.name", "strategy": "redact", "params": {"replacement": "anonymous"}},
   {"field": "customer.ssn", "strategy": "redact"},
   {"field": "customer.email", "strategy": "null"},
   {"field": "account_number", "strategy": "redact"},
   {"field": "card", "strategy": "null"}],
  "row_filter": {"field": "region", "op": "eq", "values": ["EU"]}}
]`

// partner is one consumer identity of the fixture.
type partner struct {
	name, user, pass, org string
}

var (
	acme   = partner{"acme", maskAcme, maskAcmePw, "acme"}
	globex = partner{"globex", maskGlobex, maskGlobexPw, "globex"}
)

// saslArgs are the driver flags that log in as p.
func (p partner) saslArgs() []string {
	return []string{"--sasl-mechanism", "PLAIN", "--user", p.user, "--password", p.pass}
}

func (p partner) kgoOpt() kgo.Opt {
	return kgo.SASL(plain.Auth{User: p.user, Pass: p.pass}.AsMechanism())
}

// maskEnv is a kfake cluster, an embedded schema registry with the demo
// schema registered for every topic, and the gateway with authn, the
// example policy over maskGrants, masking and the registry.
type maskEnv struct {
	cluster  *harness.Cluster
	gw       *harness.Gateway
	srURL    string
	registry *schema.Registry // the test's own client of the registry
	ids      map[string]int   // topic -> demo schema id
	k        *kgoClient
}

// startMaskEnv seeds the topics (name -> partitions), registers the demo
// schema under each topic's value subject, and starts the gateway with
// masking (merged over the fixture's masking section).
func startMaskEnv(t *testing.T, topics map[string]int32, masking map[string]any) *maskEnv {
	t.Helper()
	dir := t.TempDir()
	creds := filepath.Join(dir, "users.yaml")
	if err := authntest.WriteCredentials(creds,
		authntest.User{Name: maskAcme, Password: maskAcmePw, Org: "acme", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}},
		authntest.User{Name: maskGlobex, Password: maskGlobexPw, Org: "globex", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}},
		authntest.User{Name: maskAdmin, Password: maskAdminPw, Org: "sluice", Roles: []string{"admin"}},
	); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"partners.json": `{"acme": {"name": "Acme", "active": true, "purposes": ["analytics"], "max_classification": "confidential"},
			"globex": {"name": "Globex", "active": true, "purposes": ["analytics"], "max_classification": "internal"}}`,
		"topics.json": `{"payments*": {"classification": "internal"}, "inbound.*": {"classification": "internal"}}`,
		"grants.json": maskGrants,
	} {
		if err := os.WriteFile(filepath.Join(data, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	emb, err := schema.StartEmbedded("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Close() })
	cfg := schema.DefaultConfig()
	cfg.URL = emb.URL()
	reg, err := schema.New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	env := &maskEnv{srURL: emb.URL(), registry: reg, ids: map[string]int{}, k: &kgoClient{}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var opts []kfake.Opt
	for topic, parts := range topics {
		opts = append(opts, kfake.SeedTopics(parts, topic))
		if env.ids[topic], err = schema.RegisterDemo(ctx, reg.Client(), topic); err != nil {
			t.Fatal(err)
		}
	}
	env.cluster = harness.StartCluster(t, 3, opts...)
	env.gw = harness.StartGateway(t, env.cluster, map[string]any{
		"listeners": []any{map[string]any{"sasl": []string{"PLAIN"}}},
		"authn":     map[string]any{"credentials_file": creds},
		"policy": map[string]any{
			"dir":      filepath.Join(harness.ModuleRoot(), "configs", "policies"),
			"data_dir": data,
		},
		"schema_registry": map[string]any{"url": emb.URL()},
		"masking": harness.Merge(map[string]any{
			"keys": map[string]any{"hash": map[string]any{"env": maskHashEnv}},
		}, masking),
	}, maskHashEnv+"="+maskHashKey)
	return env
}

// direct returns a franz-go client of the cluster itself (the provider's
// side, not through the gateway).
func (e *maskEnv) direct(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.cluster.Addrs()...), kgo.FetchMaxWait(250 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// via returns a franz-go client of the gateway logged in as p.
func (e *maskEnv) via(t *testing.T, p partner, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl := e.k.newClient(t, e.gw.Bootstrap, append([]kgo.Opt{p.kgoOpt()}, opts...)...)
	t.Cleanup(cl.Close)
	return cl
}

// encode returns demo record i of topic in the Confluent wire format.
func (e *maskEnv) encode(ctx context.Context, t *testing.T, topic string, i int) []byte {
	t.Helper()
	s, err := e.registry.SchemaByID(ctx, e.ids[topic])
	if err != nil {
		t.Fatal(err)
	}
	body, err := avro.Marshal(s.Avro, schema.DemoRecord(i))
	if err != nil {
		t.Fatal(err)
	}
	return schema.AppendWire(nil, e.ids[topic], body)
}

// demoRecord is demo payment i as a record keyed by the payment id.
func (e *maskEnv) demoRecord(ctx context.Context, t *testing.T, topic string, i int) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: []byte(schema.DemoRecord(i).ID), Value: e.encode(ctx, t, topic, i)}
}

// produceDemo produces demo payments idx straight to the cluster with cl,
// one ProduceSync per group of indexes (so a group is one batch per
// partition).
func (e *maskEnv) produceDemo(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, groups ...[]int) {
	t.Helper()
	for _, g := range groups {
		recs := make([]*kgo.Record, len(g))
		for j, i := range g {
			recs[j] = e.demoRecord(ctx, t, topic, i)
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce demo payments to %s: %v", topic, err)
		}
	}
}

func seq(from, to int) []int {
	out := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// chunks splits idx into groups of n.
func chunks(idx []int, n int) [][]int {
	var out [][]int
	for len(idx) > 0 {
		k := min(n, len(idx))
		out = append(out, idx[:k])
		idx = idx[k:]
	}
	return out
}

// hashHex is the hash strategy's output: lowercase hex HMAC-SHA-256 under
// the configured key.
func hashHex(v string) string {
	m := hmac.New(sha256.New, []byte(maskHashKey))
	m.Write([]byte(v))
	return hex.EncodeToString(m.Sum(nil))
}

// masked returns demo payment i as partner p must see it, and whether p
// sees it at all (globex's row filter).
func masked(p partner, i int) (schema.DemoPayment, bool) {
	r := schema.DemoRecord(i)
	switch p.name {
	case "acme":
		r.Customer.SSN = hashHex(r.Customer.SSN)
		r.AccountNumber = strings.Repeat("*", len(r.AccountNumber)-4) + r.AccountNumber[len(r.AccountNumber)-4:]
		r.Card = nil
		return r, true
	case "globex":
		r.Customer.Name = maskNameRedac
		r.Customer.SSN = "REDACTED"
		r.Customer.Email = nil
		r.AccountNumber = "REDACTED"
		r.Card = nil
		return r, r.Region == "EU"
	}
	panic("unknown partner " + p.name)
}

// visible returns the indexes of idx that p sees.
func visible(p partner, idx []int) []int {
	var out []int
	for _, i := range idx {
		if _, ok := masked(p, i); ok {
			out = append(out, i)
		}
	}
	return out
}

// secrets returns the clear values of demo payment i that p must never
// receive in any form: masked fields, and for a record p's row filter
// removes, its id (the record key) too.
func secrets(p partner, i int) []string {
	r := schema.DemoRecord(i)
	out := []string{r.Customer.SSN, r.AccountNumber, r.AccountNumber[:len(r.AccountNumber)-4]}
	if r.Card != nil {
		out = append(out, r.Card.Number)
	}
	if p.name == "globex" {
		out = append(out, r.Customer.Name)
		if r.Customer.Email != nil {
			out = append(out, *r.Customer.Email)
		}
		if r.Region != "EU" {
			out = append(out, r.ID)
		}
	}
	return out
}

// assertNoSecrets fails if raw contains a secret of any of idx.
func assertNoSecrets(t *testing.T, what string, p partner, raw []byte, idx []int) {
	t.Helper()
	for _, i := range idx {
		for _, s := range secrets(p, i) {
			if bytes.Contains(raw, []byte(s)) {
				t.Errorf("%s: %s received %q of payment %d in clear", what, p.name, s, i)
			}
		}
	}
}

// paymentJSON is the drivers' JSON form of a decoded payment (see
// test/clients/README.md): decimal as text, timestamp-millis as epoch
// millis, date as days since the epoch; then through encoding/json so it
// compares with what a driver printed.
func paymentJSON(t *testing.T, p schema.DemoPayment) any {
	t.Helper()
	var card any
	if p.Card != nil {
		card = map[string]any{"number": p.Card.Number, "expiry": p.Card.Expiry, "network": p.Card.Network}
	}
	var settled any
	if p.SettledOn != nil {
		settled = p.SettledOn.Unix() / 86400
	}
	var amount any
	if p.Amount != nil {
		amount = p.Amount.FloatString(2)
	}
	m := map[string]any{
		"id":                p.ID,
		"customer":          map[string]any{"name": p.Customer.Name, "ssn": p.Customer.SSN, "email": p.Customer.Email},
		"account_number":    p.AccountNumber,
		"amount":            amount,
		"currency":          p.Currency,
		"merchant_category": p.MerchantCategory,
		"region":            p.Region,
		"card":              card,
		"tags":              p.Tags,
		"attrs":             p.Attrs,
		"created_at":        p.CreatedAt.UnixMilli(),
		"settled_on":        settled,
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// demoIndex maps payment ids (record keys) of the first n demo payments to
// their index.
func demoIndex(n int) map[string]int {
	m := make(map[string]int, n)
	for i := 0; i < n; i++ {
		m[schema.DemoRecord(i).ID] = i
	}
	return m
}

// avroLine is a driver's consume line with --avro-registry.
type avroLine struct {
	Topic     string            `json:"topic"`
	Partition int32             `json:"partition"`
	Offset    int64             `json:"offset"`
	Key       *string           `json:"key"`
	ValueB64  *string           `json:"value_b64"`
	Headers   map[string]string `json:"headers"`
	SchemaID  int               `json:"schema_id"`
	Avro      any               `json:"avro"`
	AvroError string            `json:"avro_error"`
}

func parseAvroLines(t *testing.T, stdout string) []avroLine {
	t.Helper()
	var out []avroLine
	for _, l := range strings.Split(stdout, "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var r avroLine
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("driver line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// checkDecoded checks records a partner received (key, decoded value, raw
// value) against the demo payments among idx it must see: each exactly
// once, masked exactly, nothing else, no secret in the raw bytes.
func checkDecoded(t *testing.T, what string, p partner, idx []int, lines []avroLine, wantSchemaID int) {
	t.Helper()
	byID := map[string]int{}
	for _, i := range idx {
		byID[schema.DemoRecord(i).ID] = i
	}
	want := visible(p, idx)
	seen := map[int]bool{}
	for _, l := range lines {
		if l.Key == nil {
			t.Errorf("%s: record at %s[%d]@%d without key", what, l.Topic, l.Partition, l.Offset)
			continue
		}
		i, ok := byID[*l.Key]
		if !ok {
			t.Errorf("%s: unexpected record key %q", what, *l.Key)
			continue
		}
		if seen[i] {
			t.Errorf("%s: payment %d delivered twice", what, i)
		}
		seen[i] = true
		exp, vis := masked(p, i)
		if !vis {
			t.Errorf("%s: payment %d (region %s) passed %s's row filter", what, i, schema.DemoRecord(i).Region, p.name)
		}
		if l.AvroError != "" || l.Avro == nil {
			t.Errorf("%s: payment %d did not decode: %q (headers %v)", what, i, l.AvroError, l.Headers)
			continue
		}
		if l.SchemaID != wantSchemaID {
			t.Errorf("%s: payment %d has schema id %d, want %d", what, i, l.SchemaID, wantSchemaID)
		}
		if got, w := l.Avro, paymentJSON(t, exp); !reflect.DeepEqual(got, w) {
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(w)
			t.Errorf("%s: payment %d:\n got %s\nwant %s", what, i, gb, wb)
		}
		if l.ValueB64 == nil {
			t.Errorf("%s: payment %d without raw value", what, i)
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(*l.ValueB64)
		if err != nil {
			t.Fatal(err)
		}
		assertNoSecrets(t, fmt.Sprintf("%s raw value of payment %d", what, i), p, raw, []int{i})
	}
	for _, i := range want {
		if !seen[i] {
			t.Errorf("%s: payment %d was not delivered", what, i)
		}
	}
}

// checkKgo decodes franz-go records (wire format, demo schema) and checks
// them like checkDecoded.
func (e *maskEnv) checkKgo(ctx context.Context, t *testing.T, what string, p partner, topic string, idx []int, recs []*kgo.Record) {
	t.Helper()
	s, err := e.registry.SchemaByID(ctx, e.ids[topic])
	if err != nil {
		t.Fatal(err)
	}
	lines := make([]avroLine, 0, len(recs))
	for _, r := range recs {
		key := string(r.Key)
		b64 := base64.StdEncoding.EncodeToString(r.Value)
		l := avroLine{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: &key, ValueB64: &b64, Headers: map[string]string{}}
		for _, h := range r.Headers {
			l.Headers[h.Key] = string(h.Value)
		}
		id, body, err := schema.ParseWire(r.Value)
		if err != nil {
			l.AvroError = err.Error()
			lines = append(lines, l)
			continue
		}
		l.SchemaID = id
		var pay schema.DemoPayment
		if err := avro.Unmarshal(s.Avro, body, &pay); err != nil {
			l.AvroError = err.Error()
		} else {
			l.Avro = paymentJSON(t, pay)
		}
		lines = append(lines, l)
	}
	checkDecoded(t, what, p, idx, lines, e.ids[topic])
}

// rawFetch fetches every partition of topic from offset 0 with hand-made
// Fetch requests through cl (a client of the gateway, or of the cluster)
// and returns each partition's record batch bytes exactly as delivered, and
// the high watermarks.
func rawFetch(ctx context.Context, t *testing.T, cl *kgo.Client, topic string) (map[int32][]byte, map[int32]int64) {
	t.Helper()
	mreq := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	mreq.Topics = append(mreq.Topics, mt)
	md, err := mreq.RequestWith(ctx, cl)
	if err != nil || len(md.Topics) != 1 || md.Topics[0].ErrorCode != 0 {
		t.Fatalf("metadata of %s: %v %+v", topic, err, md)
	}
	batches := map[int32][]byte{}
	hwm := map[int32]int64{}
	for _, mp := range md.Topics[0].Partitions {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxWaitMillis = 100
		req.MaxBytes = 64 << 20
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic, ft.TopicID = topic, md.Topics[0].TopicID
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.Partition, fp.FetchOffset, fp.PartitionMaxBytes = mp.Partition, 0, 32<<20
		fp.LogStartOffset, fp.CurrentLeaderEpoch = -1, -1
		ft.Partitions = append(ft.Partitions, fp)
		req.Topics = append(req.Topics, ft)
		resp, err := req.RequestWith(ctx, cl.Broker(int(mp.Leader)))
		if err != nil {
			t.Fatalf("raw fetch %s[%d]: %v", topic, mp.Partition, err)
		}
		if resp.ErrorCode != 0 || len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			t.Fatalf("raw fetch %s[%d]: error %d, %d topics", topic, mp.Partition, resp.ErrorCode, len(resp.Topics))
		}
		rp := resp.Topics[0].Partitions[0]
		if rp.ErrorCode != 0 {
			t.Fatalf("raw fetch %s[%d]: partition error %d", topic, mp.Partition, rp.ErrorCode)
		}
		batches[mp.Partition] = rp.RecordBatches
		hwm[mp.Partition] = rp.HighWatermark
	}
	return batches, hwm
}

// batchHeader is what a gateway must keep of a record batch.
type batchHeader struct {
	BaseOffset      int64
	LeaderEpoch     int32
	Magic           int8
	Attributes      int16
	LastOffsetDelta int32
	FirstTimestamp  int64
	MaxTimestamp    int64
	ProducerID      int64
	ProducerEpoch   int16
	BaseSequence    int32
	NumRecords      int32 // not kept by a row filter
}

// batchHeaders walks the record batches (magic 2) in b; a trailing partial
// batch is ignored.
func batchHeaders(t *testing.T, b []byte) []batchHeader {
	t.Helper()
	var out []batchHeader
	for len(b) >= 61 {
		length := int64(int32(binary.BigEndian.Uint32(b[8:])))
		if 12+length > int64(len(b)) {
			break
		}
		if b[16] != 2 {
			t.Fatalf("batch of magic %d", b[16])
		}
		out = append(out, batchHeader{
			BaseOffset:      int64(binary.BigEndian.Uint64(b[0:])),
			LeaderEpoch:     int32(binary.BigEndian.Uint32(b[12:])),
			Magic:           int8(b[16]),
			Attributes:      int16(binary.BigEndian.Uint16(b[21:])),
			LastOffsetDelta: int32(binary.BigEndian.Uint32(b[23:])),
			FirstTimestamp:  int64(binary.BigEndian.Uint64(b[27:])),
			MaxTimestamp:    int64(binary.BigEndian.Uint64(b[35:])),
			ProducerID:      int64(binary.BigEndian.Uint64(b[43:])),
			ProducerEpoch:   int16(binary.BigEndian.Uint16(b[51:])),
			BaseSequence:    int32(binary.BigEndian.Uint32(b[53:])),
			NumRecords:      int32(binary.BigEndian.Uint32(b[57:])),
		})
		b = b[12+length:]
	}
	return out
}
