package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

func TestObligationsMemo(t *testing.T) {
	m := newObligationsMemo()
	a := ast.MustParseTerm(`{"grant_id": "g1", "purpose": "p", "mask": [{"field": "f", "strategy": "hash"}], "row_filter": null}`).Value
	a2 := ast.MustParseTerm(`{"row_filter": null, "purpose": "p", "grant_id": "g1", "mask": [{"strategy": "hash", "field": "f"}]}`).Value
	b := ast.MustParseTerm(`{"grant_id": "g1", "purpose": "p", "mask": [{"field": "f", "strategy": "redact"}], "row_filter": null}`).Value

	oa, err := m.parse(a)
	if err != nil || oa.GrantID != "g1" || len(oa.Mask) != 1 || oa.Mask[0].Strategy != "hash" {
		t.Fatalf("parse a: %+v, %v", oa, err)
	}
	if o, _ := m.parse(a); o != oa {
		t.Error("the same value parsed twice gives two obligations")
	}
	if o, _ := m.parse(a2); o != oa {
		t.Error("an equal value (other key order) is not memoised")
	}
	ob, err := m.parse(b)
	if err != nil || ob == oa || ob.Mask[0].Strategy != "redact" {
		t.Fatalf("a different value got %+v (%v)", ob, err)
	}

	// Bad obligations fail every time and are not remembered.
	bad := ast.MustParseTerm(`{"mask": [{"field": "f", "strategy": "rot13"}]}`).Value
	for i := 0; i < 2; i++ {
		if _, err := m.parse(bad); err == nil {
			t.Fatalf("round %d: bad obligations accepted", i)
		}
	}
	if m.n != 2 {
		t.Errorf("memo holds %d entries, want 2", m.n)
	}

	// A full memo still parses, without growing.
	m.n = obligationsMemoMax
	c := ast.MustParseTerm(`{"grant_id": "g3"}`).Value
	if o, err := m.parse(c); err != nil || o.GrantID != "g3" {
		t.Fatalf("full memo: %+v, %v", o, err)
	}
	if m.n != obligationsMemoMax || len(m.m[c.Hash()]) != 0 {
		t.Error("a full memo grew")
	}

	// Without a memo (the load probe), parsing works the same.
	var none *obligationsMemo
	if o, err := none.parse(b); err != nil || o.Mask[0].Strategy != "redact" {
		t.Fatalf("nil memo: %+v, %v", o, err)
	}
}

func TestParseResultNotATerm(t *testing.T) {
	// A query that is an expression rather than a term (x == y) yields a
	// bool, not a decision.
	if _, err := parseResult(true, nil); err == nil {
		t.Fatal("a bool result was accepted as a decision")
	}
	d, err := parseResult(ast.MustParseTerm(`{"allow": true, "reason": "r", "expires_at": "2027-01-01T00:00:00Z", "obligations": null}`), newObligationsMemo())
	if err != nil || !d.Allow || d.Reason != "r" || d.ExpiresAt.Year() != 2027 || d.Obligations != nil {
		t.Fatalf("decision %+v, %v", d, err)
	}
	if _, err := parseResult(ast.MustParseTerm(`{"allow": true, "extra": 1}`), nil); err == nil {
		t.Error("unknown key accepted")
	}
	if _, err := parseResult(ast.MustParseTerm(`{"reason": "no allow"}`), nil); err == nil {
		t.Error("decision without allow accepted")
	}
}

// The engine completes every grant it puts in input.grants: the window in
// nanoseconds and the optional fields with their defaults, so policies
// read fields instead of defaulting them.
func TestGrantInputDefaults(t *testing.T) {
	raw := `[
		{"id": "bare", "org": "o", "topic": "t", "purpose": "p", "classification": "public"},
		{"id": "full", "org": "o", "topic": "t", "purpose": "p", "classification": "public", "revoked": true,
		 "valid_from": "2025-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z",
		 "mask": [{"field": "f", "strategy": "hash"}], "row_filter": {"field": "r", "op": "eq", "values": ["x"]}}
	]`
	var doc any
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		t.Fatal(err)
	}
	grants, err := parseGrants(doc, nil)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := indexGrants(doc, grants)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"bare": `{"id": "bare", "org": "o", "topic": "t", "purpose": "p", "classification": "public",
			"revoked": false, "valid_from": null, "valid_until": null, "mask": [], "row_filter": null,
			"valid_from_ns": 0, "valid_until_ns": 7258118400000000000}`,
		"full": `{"id": "full", "org": "o", "topic": "t", "purpose": "p", "classification": "public", "revoked": true,
			"valid_from": "2025-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z",
			"mask": [{"field": "f", "strategy": "hash"}], "row_filter": {"field": "r", "op": "eq", "values": ["x"]},
			"valid_from_ns": 1735689600000000000, "valid_until_ns": 1798761600000000000}`,
	}
	if len(idx["o"]) != 2 {
		t.Fatalf("index %v", idx)
	}
	for _, g := range idx["o"] {
		id := string(g.term.Get(ast.StringTerm("id")).Value.(ast.String))
		if w := ast.MustParseTerm(want[id]); g.term.Value.Compare(w.Value) != 0 {
			t.Errorf("%s:\n got %v\nwant %v", id, g.term, w)
		}
	}
}

// freshInput is q's input built without the memos, for org.
func freshInput(rev *revision, q *Query, org string) ast.Value {
	labels, grants := rev.lookup(q.Resource, q.Name, org)
	return q.input(enrichment{partner: rev.partners[org], resource: q.resourceDoc(labels), grants: ast.ArrayTerm(grants...), request: q.requestDoc()})
}

// The input terms memoised per revision (resource with labels and grants,
// request) are the ones a fresh build gives, for each query, on a miss and
// on a hit; and the memo stops growing at termMemoMax.
func TestInputMemo(t *testing.T) {
	e := newExample(t, nil)
	rev := e.rev.Load()
	src := netip.MustParseAddrPort("10.1.2.3:4000")
	queries := []Query{
		{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: "orders.eu", APIKey: 1, APIVersion: 16, ClientID: "a", Source: src},
		{Principal: globex, Action: ActionRead, Resource: ResourceTopic, Name: "orders.eu", APIKey: 1, APIVersion: 16, ClientID: "a", Source: src},
		{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: "orders.eu", APIKey: 1, APIVersion: 15, ClientID: "b", Listener: "l"},
		{Principal: acme, Action: ActionRead, Resource: ResourceGroup, Name: "orders.eu", APIKey: 11, APIVersion: 9, ClientID: "a", Source: src},
		{Principal: auditor, Action: ActionRead, Resource: ResourceTopic, Name: "_sluice_audit", APIKey: 1, APIVersion: 16},
		{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: "catalog.x", APIKey: 1, APIVersion: 16, Source: netip.MustParseAddrPort("10.9.9.9:1")},
	}
	for round := 0; round < 2; round++ {
		for i := range queries {
			q := &queries[i]
			q.Now = testNow
			org := ""
			if q.Principal != nil {
				org = q.Principal.Org
			}
			if got, want := q.input(rev.enrich(q)), freshInput(rev, q, org); got.Compare(want) != 0 {
				t.Errorf("round %d, query %d: memoised input\n%v\nwant\n%v", round, i, got, want)
			}
		}
	}
	if n := len(rev.resources.m); n != 5 { // queries 0 and 2 share a resource
		t.Errorf("%d resources memoised, want 5", n)
	}
	if n := len(rev.requests.m); n != 5 { // queries 0 and 1 share a request
		t.Errorf("%d requests memoised, want 5", n)
	}
	for i := 0; i < termMemoMax+10; i++ {
		q := Query{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: fmt.Sprintf("t%d", i), ClientID: fmt.Sprintf("c%d", i)}
		rev.enrich(&q)
	}
	if len(rev.resources.m) != termMemoMax || len(rev.requests.m) != termMemoMax {
		t.Errorf("memos grew to %d and %d entries, bound %d", len(rev.resources.m), len(rev.requests.m), termMemoMax)
	}

	// Long names and client ids are never memoised, yet give the input a
	// fresh build gives.
	fresh := newExample(t, nil).rev.Load() // memos empty
	long := strings.Repeat("x", memoKeyMax+1)
	q := Query{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: "orders." + long, ClientID: long, Now: testNow}
	before := len(fresh.resources.m) + len(fresh.requests.m)
	if got, want := q.input(fresh.enrich(&q)), freshInput(fresh, &q, "acme"); got.Compare(want) != 0 {
		t.Errorf("long keys: input\n%v\nwant\n%v", got, want)
	}
	if after := len(fresh.resources.m) + len(fresh.requests.m); after != before {
		t.Errorf("long keys memoised: %d entries, %d before", after, before)
	}
	q.Name, q.ClientID = "orders.eu", "short"
	fresh.enrich(&q)
	if after := len(fresh.resources.m) + len(fresh.requests.m); after != before+2 {
		t.Errorf("short keys: %d entries, want %d", after, before+2)
	}
}

// The Rego tests build input.grants with with_ns (configs/policies/
// authz_test.rego); it must complete a grant exactly as the engine does, or
// the tests exercise inputs the engine never produces.
func TestRegoFixtureCompletesGrantsAsTheEngine(t *testing.T) {
	src, err := os.ReadFile("../configs/policies/authz_test.rego")
	if err != nil {
		t.Fatal(err)
	}
	pol, err := os.ReadFile("../configs/policies/authz.rego")
	if err != nil {
		t.Fatal(err)
	}
	pq, err := rego.New(
		rego.Query("x := data.sluice.authz_test.with_ns(input)"),
		rego.Module("authz_test.rego", string(src)),
		rego.Module("authz.rego", string(pol)),
		rego.SetRegoVersion(ast.RegoV1),
	).PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e := newExample(t, nil)
	rev := e.rev.Load()
	raw, err := os.ReadFile("../configs/data/grants.json")
	if err != nil {
		t.Fatal(err)
	}
	var grants []map[string]any
	if err := json.Unmarshal(raw, &grants); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range grants {
		rs, err := pq.Eval(context.Background(), rego.EvalInput(g))
		if err != nil || len(rs) != 1 {
			t.Fatalf("%v: %v, %v", g["id"], rs, err)
		}
		fixture, err := ast.InterfaceToValue(rs[0].Bindings["x"])
		if err != nil {
			t.Fatal(err)
		}
		for _, gt := range rev.byOrg[g["org"].(string)] {
			if gt.term.Get(ast.StringTerm("id")).Value.Compare(ast.String(g["id"].(string))) == 0 {
				n++
				if gt.term.Value.Compare(fixture) != 0 {
					t.Errorf("%v:\n engine  %v\n fixture %v", g["id"], gt.term, fixture)
				}
			}
		}
	}
	if n != len(grants) || n == 0 {
		t.Errorf("compared %d of %d grants", n, len(grants))
	}
}
