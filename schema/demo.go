package schema

import (
	"context"
	"fmt"
	"math/big"
	"math/rand/v2"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// DemoPaymentsSchema is the Avro schema of the demo payments topic: nested
// records, a nullable record, an enum, an array, a map, and the decimal,
// uuid, timestamp-millis and date logical types.
const DemoPaymentsSchema = `{
  "type": "record", "name": "Payment", "namespace": "sluice.demo",
  "fields": [
    {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "customer", "type": {"type": "record", "name": "Customer", "fields": [
      {"name": "name", "type": "string"},
      {"name": "ssn", "type": "string"},
      {"name": "email", "type": ["null", "string"], "default": null}
    ]}},
    {"name": "account_number", "type": "string"},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}},
    {"name": "currency", "type": "string", "default": "EUR"},
    {"name": "merchant_category", "type": "string"},
    {"name": "region", "type": {"type": "enum", "name": "Region", "symbols": ["EU", "US", "APAC"]}},
    {"name": "card", "type": ["null", {"type": "record", "name": "Card", "fields": [
      {"name": "number", "type": "string"},
      {"name": "expiry", "type": "string"},
      {"name": "network", "type": "string"}
    ]}], "default": null},
    {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    {"name": "attrs", "type": {"type": "map", "values": "string"}, "default": {}},
    {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "settled_on", "type": ["null", {"type": "int", "logicalType": "date"}], "default": null}
  ]
}`

// DemoPayment is one record of DemoPaymentsSchema.
type DemoPayment struct {
	ID               string            `avro:"id"`
	Customer         DemoCustomer      `avro:"customer"`
	AccountNumber    string            `avro:"account_number"`
	Amount           *big.Rat          `avro:"amount"`
	Currency         string            `avro:"currency"`
	MerchantCategory string            `avro:"merchant_category"`
	Region           string            `avro:"region"`
	Card             *DemoCard         `avro:"card"`
	Tags             []string          `avro:"tags"`
	Attrs            map[string]string `avro:"attrs"`
	CreatedAt        time.Time         `avro:"created_at"`
	SettledOn        *time.Time        `avro:"settled_on"`
}

// DemoCustomer is the nested customer record.
type DemoCustomer struct {
	Name  string  `avro:"name"`
	SSN   string  `avro:"ssn"`
	Email *string `avro:"email"`
}

// DemoCard is the nullable card record.
type DemoCard struct {
	Number  string `avro:"number"`
	Expiry  string `avro:"expiry"`
	Network string `avro:"network"`
}

var (
	demoNames   = []string{"Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov", "Ken Thompson"}
	demoMCC     = []string{"5411", "5812", "4111", "5999", "7011"}
	demoRegions = []string{"EU", "US", "APAC"}
	demoNets    = []string{"visa", "mastercard", "amex"}
)

// DemoRecord returns the i-th demo payment; the same i gives the same
// record.
func DemoRecord(i int) DemoPayment {
	rng := rand.New(rand.NewPCG(uint64(i), 0x5eed))
	name := demoNames[rng.IntN(len(demoNames))]
	p := DemoPayment{
		ID: fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), rng.IntN(1<<12), rng.Uint64()&(1<<48-1)),
		Customer: DemoCustomer{
			Name: name,
			SSN:  fmt.Sprintf("%03d-%02d-%04d", 100+rng.IntN(800), 10+rng.IntN(89), rng.IntN(10000)),
		},
		AccountNumber:    fmt.Sprintf("DE%02d%018d", rng.IntN(100), rng.Int64N(1e18)),
		Amount:           big.NewRat(rng.Int64N(1_000_000), 100),
		Currency:         "EUR",
		MerchantCategory: demoMCC[rng.IntN(len(demoMCC))],
		Region:           demoRegions[rng.IntN(len(demoRegions))],
		Tags:             []string{"demo"},
		Attrs:            map[string]string{"channel": []string{"web", "pos", "app"}[rng.IntN(3)]},
		CreatedAt:        time.UnixMilli(1_700_000_000_000 + int64(i)*1000).UTC(),
	}
	if rng.IntN(3) > 0 {
		email := fmt.Sprintf("user%d@example.com", i)
		p.Customer.Email = &email
	}
	if rng.IntN(4) > 0 {
		p.Card = &DemoCard{
			Number:  fmt.Sprintf("4%015d", rng.Int64N(1e15)),
			Expiry:  fmt.Sprintf("%02d/%02d", 1+rng.IntN(12), 27+rng.IntN(5)),
			Network: demoNets[rng.IntN(len(demoNets))],
		}
		p.Tags = append(p.Tags, "card")
	}
	if rng.IntN(2) == 0 {
		d := time.Date(2023, 11, 15+rng.IntN(10), 0, 0, 0, 0, time.UTC)
		p.SettledOn = &d
	}
	return p
}

// RegisterDemo registers DemoPaymentsSchema under the topic's value subject
// and returns its schema id. Registering again returns the same id.
func RegisterDemo(ctx context.Context, cl *sr.Client, topic string) (int, error) {
	ss, err := cl.CreateSchema(ctx, ValueSubject(topic), sr.Schema{Schema: DemoPaymentsSchema, Type: sr.TypeAvro})
	if err != nil {
		return 0, fmt.Errorf("schema: register demo schema: %w", err)
	}
	return ss.ID, nil
}

// SeedDemo registers the demo schema for topic and produces n demo payments
// to it in Confluent wire format, keyed by payment id. The topic must exist
// or be auto-created by the cluster.
func SeedDemo(ctx context.Context, reg *Registry, cl *kgo.Client, topic string, n int) error {
	id, err := RegisterDemo(ctx, reg.Client(), topic)
	if err != nil {
		return err
	}
	s, err := reg.SchemaByID(ctx, id)
	if err != nil {
		return err
	}
	const chunk = 500
	recs := make([]*kgo.Record, 0, min(n, chunk))
	for i := 0; i < n; i++ {
		p := DemoRecord(i)
		body, err := avro.Marshal(s.Avro, p)
		if err != nil {
			return fmt.Errorf("schema: encode demo record: %w", err)
		}
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(p.ID), Value: AppendWire(nil, id, body)})
		if len(recs) == chunk || i == n-1 {
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				return fmt.Errorf("schema: produce demo records: %w", err)
			}
			recs = recs[:0]
		}
	}
	return nil
}
