package policy

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// input.principal.expires is part of the documented input, but not of the
// decision cache key: a decision taken for one credential of a principal is
// served to another credential of the same principal with another expiry.
func TestCacheKeyedByCredentialExpiry(t *testing.T) {
	const pol = `package sluice.authz
default decision := {"allow": false, "reason": "long-lived token"}
decision := {"allow": true, "reason": "short token"} if {
	time.parse_rfc3339_ns(input.principal.expires) - input.time.ns <= 3600000000000
}
`
	e, _, err := tempEngine(t, pol, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	short := &filter.Principal{ID: "svc", Org: "acme", Mechanism: "OAUTHBEARER", Expires: now.Add(30 * time.Minute)}
	long := &filter.Principal{ID: "svc", Org: "acme", Mechanism: "OAUTHBEARER", Expires: now.Add(48 * time.Hour)}
	q := func(p *filter.Principal) *Query {
		return &Query{Principal: p, Action: ActionRead, Resource: ResourceTopic, Name: "t", Now: now}
	}
	if d := e.Decide(context.Background(), q(short)); !d.Allow {
		t.Fatalf("short token: %+v", d)
	}
	d := e.Decide(context.Background(), q(long))
	if d.Allow {
		t.Fatalf("long-lived token allowed from the cache of the short one: %+v", d)
	}
}
