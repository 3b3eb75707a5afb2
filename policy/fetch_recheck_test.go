package policy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// The response side of a Fetch decides again "because a long poll can
// return records produced after a revocation made while it waited". It
// decides at x.Received (when the request was read), not when the response
// arrives: a credential that expired during the long poll still reads.
func TestFetchResponseDecidesAtResponseTime(t *testing.T) {
	f := newExampleFilter(t)
	ctx := context.Background()
	now := time.Now()
	// An OAUTHBEARER principal whose token expired 1 s ago, while its
	// fetch (read 30 s ago, MaxWaitMillis 60 s) was waiting upstream.
	tok := &filter.Principal{ID: "svc-acme", Org: "acme", Mechanism: "OAUTHBEARER", Roles: []string{"partner"},
		Expires: now.Add(-time.Second)}
	req := fetchReqFor(11, false, "demo")
	req.MaxWaitMillis = 60000
	x := exchange(tok, req)
	x.Received = now.Add(-30 * time.Second)
	if err := f.OnRequest(ctx, x); err != nil || x.Local != nil {
		t.Fatalf("request side: err %v local %v", err, x.Local)
	}
	// The broker answers now, after the credential's expiry.
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 11
	resp.Topics = append(resp.Topics, fetchRespTopic("demo", [16]byte{}))
	x.Response = resp
	if err := f.OnResponse(ctx, x); err != nil {
		t.Fatal(err)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != kerr.TopicAuthorizationFailed.Code || len(p.RecordBatches) != 0 {
		t.Errorf("credential expired %v ago, records still delivered: code %d, %d record bytes",
			time.Since(tok.Expires).Round(time.Second), p.ErrorCode, len(p.RecordBatches))
	}
	// The streamed path decides the same way.
	if c := f.FetchTopic(ctx, x, "demo", [16]byte{}); c != kerr.TopicAuthorizationFailed.Code {
		t.Errorf("streamed: expired credential's topic delivered (code %d)", c)
	}
}

// Same with the decision's own expiry (expires_at, the grant's
// valid_until in the example): the cached decision is served after it
// lapsed, because the cache is asked with the request's time.
func TestFetchResponseDecisionExpiredDuringPoll(t *testing.T) {
	now := time.Now()
	exp := now.Add(-time.Second) // the grant lapsed 1 s ago
	pol := fmt.Sprintf(`package sluice.authz
default decision := {"allow": false, "reason": "closed"}
decision := {"allow": true, "reason": "grant", "expires_at": %d} if {
	input.resource.name == "demo"
	input.time.ns < %d
}
`, exp.UnixNano(), exp.UnixNano())
	e, _, err := tempEngine(t, pol, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := newFilter(e, nil, nil)
	ctx := context.Background()
	req := fetchReqFor(11, false, "demo")
	x := exchange(acme, req)
	x.Received = now.Add(-30 * time.Second) // read while the grant was valid
	if err := f.OnRequest(ctx, x); err != nil || x.Local != nil {
		t.Fatalf("request side: err %v local %v", err, x.Local)
	}
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 11
	resp.Topics = append(resp.Topics, fetchRespTopic("demo", [16]byte{}))
	x.Response = resp
	if err := f.OnResponse(ctx, x); err != nil {
		t.Fatal(err)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != kerr.TopicAuthorizationFailed.Code || len(p.RecordBatches) != 0 {
		t.Errorf("decision expired at %v (now %v), records still delivered: code %d", exp.Format(time.RFC3339Nano),
			time.Now().Format(time.RFC3339Nano), p.ErrorCode)
	}
}

// Masking runs before the policy filter on responses (cmd/sluice/chain.go:
// response mask -> policy), so the obligations of every topic that can come
// back must be on the exchange when OnRequest ends. After a fetch answered
// locally (every listed topic denied) the filter forgets the session
// (sessions.reset), but the broker never saw that request and the client
// may keep using its session: the next incremental fetch returns the
// session's topics with no obligations attached, and the decoded response
// path (Fetch v7-11, or v12+ with a denied topic) delivers them unmasked.
func TestFetchSessionKeptAfterLocalAnswer(t *testing.T) {
	f := newExampleFilter(t)
	ctx := context.Background()
	c := &filter.Conn{ID: 77}
	c.SetPrincipal(acme)
	do := func(req *kmsg.FetchRequest) *filter.Exchange {
		x := exchange(acme, req)
		x.Conn = c
		if err := f.OnRequest(ctx, x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	// 1. Full fetch: the broker creates session 9 with orders.eu (masked).
	full := fetchReqFor(11, false, "orders.eu")
	full.SessionID, full.SessionEpoch = 0, 0
	if x := do(full); x.Obligations["orders.eu"] == nil {
		t.Fatalf("full fetch obligations %v", x.Obligations)
	}
	// 2. Incremental fetch of session 9 naming only a denied topic:
	// answered locally, never forwarded; the broker's session is intact.
	inc := fetchReqFor(11, false, "payments.settled")
	inc.SessionID, inc.SessionEpoch = 9, 1
	if x := do(inc); x.Local == nil {
		t.Fatal("expected a local answer")
	}
	// 3. The client reuses session 9, epoch 1 (the broker's next epoch),
	// listing nothing.
	inc2 := fetchReqFor(11, false)
	inc2.SessionID, inc2.SessionEpoch = 9, 1
	x := do(inc2)
	if x.Local != nil {
		t.Fatal("forwarded request expected")
	}
	maskSees := x.Obligations["orders.eu"] // what the mask filter's OnResponse reads
	// The broker returns orders.eu from the session.
	resp := kmsg.NewPtrFetchResponse()
	resp.Version, resp.SessionID = 11, 9
	resp.Topics = append(resp.Topics, fetchRespTopic("orders.eu", [16]byte{}))
	x.Response = resp
	if err := f.OnResponse(ctx, x); err != nil {
		t.Fatal(err)
	}
	p := resp.Topics[0].Partitions[0]
	if maskSees == nil && p.ErrorCode == 0 && len(p.RecordBatches) > 0 {
		t.Errorf("orders.eu (mask: customer.email hash, payment.card redact; row filter) delivered with code 0 and %d record bytes; "+
			"the mask filter ran with obligations %v, policy attached %v only afterwards", len(p.RecordBatches), maskSees, x.Obligations["orders.eu"] != nil)
	}
}

// Same gap without any client trickery: a policy reload during the long
// poll that adds obligations to an allowed read. The streamed path
// withholds such a topic (UNKNOWN_SERVER_ERROR); the decoded path delivers
// it without the mask.
func TestFetchResponseObligationsAddedDuringPoll(t *testing.T) {
	open := `package sluice.authz
default decision := {"allow": false, "reason": "closed"}
decision := {"allow": true, "reason": "open"} if input.resource.name == "orders.eu"
`
	masked := `package sluice.authz
default decision := {"allow": false, "reason": "closed"}
decision := {"allow": true, "reason": "masked", "obligations": {"grant_id": "g", "mask": [{"field": "payment.card", "strategy": "redact"}]}} if input.resource.name == "orders.eu"
`
	e, dir, err := tempEngine(t, open, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := newFilter(e, nil, nil)
	ctx := context.Background()
	x := exchange(acme, fetchReqFor(11, false, "orders.eu"))
	if err := f.OnRequest(ctx, x); err != nil || x.Local != nil {
		t.Fatalf("err %v local %v", err, x.Local)
	}
	writePolicy(t, dir, "p.rego", masked)
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	maskSees := x.Obligations["orders.eu"]
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 11
	resp.Topics = append(resp.Topics, fetchRespTopic("orders.eu", [16]byte{}))
	x.Response = resp
	if err := f.OnResponse(ctx, x); err != nil {
		t.Fatal(err)
	}
	p := resp.Topics[0].Partitions[0]
	if maskSees == nil && p.ErrorCode == 0 && len(p.RecordBatches) > 0 {
		t.Errorf("topic now requiring a mask delivered unmasked (code 0, %d bytes); streamed path would answer %d",
			len(p.RecordBatches), kerr.UnknownServerError.Code)
	}
}
