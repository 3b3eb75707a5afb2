package masking

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/policy"
	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/schema"
)

// Produce-side masking ("obligations on a produce decision") never happens
// through the real chain: the policy filter's produceReq drops the write
// decision's obligations (codes[i], _ = f.topicCode(...)) and attach is only
// called for reads, so the mask filter sees no obligations and forwards the
// partner's records as they came.
func TestProduceObligationsFromPolicyMask(t *testing.T) {
	dir := t.TempDir()
	pol := `package sluice.authz
decision := {"allow": true, "reason": "inbound", "obligations": {
	"grant_id": "g-in", "purpose": "p",
	"mask": [{"field": "customer.ssn", "strategy": "hash"}],
}}
`
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := policy.DefaultConfig()
	cfg.Dir = dir
	e, err := policy.New(context.Background(), cfg, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pf := policy.NewFilter(e, nil, nil)
	s := parseSchema(t, 9, schema.DemoPaymentsSchema)
	mf, err := newFilter(testConfig(t), staticSource{9: s}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}

	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks = 9, -1
	tp := kmsg.NewProduceRequestTopic()
	tp.Topic = "inbound.acme.payments"
	p := kmsg.NewProduceRequestTopicPartition()
	p.Records = makeBatch(t, 0, 0, 0, demoValues(t, s, 3, 0), -1)
	tp.Partitions = append(tp.Partitions, p)
	req.Topics = append(req.Topics, tp)
	c := &filter.Conn{ID: 1}
	c.SetPrincipal(&filter.Principal{ID: "svc-acme", Org: "acme"})
	x := &filter.Exchange{Conn: c, Key: 0, Version: 9, Request: req, Topics: resolver{}}
	// The chain of cmd/sluice/chain.go: policy, then mask.
	for _, fl := range []filter.Filter{pf, mf} {
		if err := fl.OnRequest(context.Background(), x); err != nil {
			t.Fatal(err)
		}
	}
	var d *filter.Decision
	for i := range x.Decisions {
		if x.Decisions[i].Action == "write" {
			d = &x.Decisions[i]
		}
	}
	if d == nil || d.Obligations.Empty() {
		t.Fatalf("test setup: write decision without obligations: %+v", x.Decisions)
	}
	ssn := []byte(schema.DemoRecord(0).Customer.SSN)
	if x.Obligations["inbound.acme.payments"] == nil {
		t.Errorf("write decision carries obligations %+v, none attached to the exchange", d.Obligations.Mask)
	}
	if bytes.Contains(req.Topics[0].Partitions[0].Records, ssn) {
		t.Errorf("produce forwarded with the SSN %q in clear despite mask obligations on the write", ssn)
	}
}
