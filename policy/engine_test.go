package policy

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/proxy/filter"
)

var (
	acme    = &filter.Principal{ID: "svc-acme", Org: "acme", Mechanism: "PLAIN", Roles: []string{"partner"}}
	globex  = &filter.Principal{ID: "svc-globex", Org: "globex", Mechanism: "PLAIN", Roles: []string{"partner"}}
	auditor = &filter.Principal{ID: "alice", Mechanism: "SCRAM-SHA-256", Roles: []string{"auditor"}}
	admin   = &filter.Principal{ID: "root", Mechanism: "mtls", Roles: []string{"admin"}}
	// A fixed clock inside every example grant's window.
	testNow = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
)

func exampleConfig() Config {
	cfg := DefaultConfig()
	cfg.Dir = "../configs/policies"
	cfg.DataDir = "../configs/data"
	// Generous: tests run under -race on shared machines; the timeout
	// path has its own test.
	cfg.EvalTimeout = 10 * time.Second
	return cfg
}

func newExample(t testing.TB, reg prometheus.Registerer) *Engine {
	t.Helper()
	e, err := New(context.Background(), exampleConfig(), Options{Registerer: reg, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestExamplePolicy(t *testing.T) {
	e := newExample(t, nil)
	tests := []struct {
		name   string
		p      *filter.Principal
		a      Action
		rt     ResourceType
		res    string
		allow  bool
		reason string
		grant  string
	}{
		{"grant allows read", acme, ActionRead, ResourceTopic, "orders.eu", true, "grant g-acme-orders-eu", "g-acme-orders-eu"},
		{"grant allows describe", acme, ActionDescribe, ResourceTopic, "orders.eu", true, "", "g-acme-orders-eu"},
		{"revoked grant", acme, ActionRead, ResourceTopic, "orders.us", false, "revoked", ""},
		{"no grant", acme, ActionRead, ResourceTopic, "payments.settled", false, "no grant", ""},
		{"classification ceiling", globex, ActionRead, ResourceTopic, "orders.eu", false, "allows up to", ""},
		{"pattern grant", globex, ActionRead, ResourceTopic, "catalog.products", true, "", "g-globex-catalog"},
		{"own inbound write", acme, ActionWrite, ResourceTopic, "inbound.acme.returns", true, "", ""},
		{"foreign inbound write", acme, ActionWrite, ResourceTopic, "inbound.globex.returns", false, "inbound.acme.", ""},
		{"own group", acme, ActionRead, ResourceGroup, "acme.fulfilment", true, "", ""},
		{"foreign group", acme, ActionRead, ResourceGroup, "globex.x", false, "groups named acme.*", ""},
		{"admin API denied", acme, ActionCreate, ResourceTopic, "inbound.acme.new", false, "administrative", ""},
		{"cluster alter denied", acme, ActionAlter, ResourceCluster, ClusterName, false, "administrative", ""},
		{"audit topic auditor", auditor, ActionRead, ResourceTopic, "_sluice_audit", true, "", ""},
		{"audit topic partner", acme, ActionRead, ResourceTopic, "_sluice_audit", false, "audit topic", ""},
		{"audit topic write", auditor, ActionWrite, ResourceTopic, "_sluice_audit", false, "never writable", ""},
		{"admin", admin, ActionAlter, ResourceCluster, ClusterName, true, "role admin", ""},
		{"anonymous", filter.Anonymous, ActionRead, ResourceTopic, "catalog.products", false, "no rule", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.Decide(context.Background(), &Query{Principal: tt.p, Action: tt.a, Resource: tt.rt, Name: tt.res, Now: testNow})
			if d.Allow != tt.allow {
				t.Fatalf("allow = %v, want %v (reason %q)", d.Allow, tt.allow, d.Reason)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", d.Reason, tt.reason)
			}
			if d.GrantID() != tt.grant {
				t.Errorf("grant %q, want %q", d.GrantID(), tt.grant)
			}
			if d.Error != "" || d.Revision != e.Revision() {
				t.Errorf("error %q revision %q", d.Error, d.Revision)
			}
		})
	}
}

func TestObligationsAndExpiry(t *testing.T) {
	e := newExample(t, nil)
	d := e.Decide(context.Background(), &Query{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: "orders.eu", Now: testNow})
	o := d.Obligations
	if !d.Allow || o == nil || o.GrantID != "g-acme-orders-eu" || o.Purpose != "fulfilment" {
		t.Fatalf("decision %+v", d)
	}
	if len(o.Mask) != 3 || o.Mask[1].Field != "customer.phone" || o.Mask[1].Strategy != "partial" || o.Mask[1].Params["keep_last"] != "4" {
		t.Errorf("mask %+v", o.Mask)
	}
	if o.RowFilter == nil || o.RowFilter.Op != "in" || len(o.RowFilter.Values) != 2 {
		t.Errorf("row filter %+v", o.RowFilter)
	}
	if want := time.Date(2027, 12, 31, 23, 59, 59, 0, time.UTC); !d.ExpiresAt.Equal(want) {
		t.Errorf("expires %v, want %v", d.ExpiresAt, want)
	}
	// Past the grant's valid_until the cached allow must not be served.
	late := time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC)
	d2 := e.Decide(context.Background(), &Query{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: "orders.eu", Now: late})
	if d2.Allow || d2.Cached {
		t.Errorf("after valid_until: %+v", d2)
	}
}

func TestCache(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newExample(t, reg)
	q := &Query{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: "orders.eu", Now: testNow}
	if d := e.Decide(context.Background(), q); d.Cached {
		t.Fatal("first decision cached")
	}
	d := e.Decide(context.Background(), q)
	if !d.Cached || !d.Allow || d.GrantID() != "g-acme-orders-eu" {
		t.Fatalf("second decision %+v", d)
	}
	// Same id in another organisation is another principal.
	other := *acme
	other.Org = "globex"
	if d := e.Decide(context.Background(), &Query{Principal: &other, Action: ActionRead, Resource: ResourceTopic, Name: "orders.eu", Now: testNow}); d.Cached || d.Allow {
		t.Fatalf("other org %+v", d)
	}
	// Another action is another key.
	if d := e.Decide(context.Background(), &Query{Principal: acme, Action: ActionWrite, Resource: ResourceTopic, Name: "orders.eu", Now: testNow}); d.Cached || d.Allow {
		t.Fatalf("write %+v", d)
	}
	// Credential expiry bounds the cached decision.
	exp := *acme
	exp.Expires = testNow.Add(time.Minute)
	qe := &Query{Principal: &exp, Action: ActionRead, Resource: ResourceTopic, Name: "orders.eu", Now: testNow}
	if d := e.Decide(context.Background(), qe); !d.Allow || !d.ExpiresAt.Equal(exp.Expires) {
		t.Fatalf("expiring principal %+v", d)
	}
	qe.Now = exp.Expires
	if d := e.Decide(context.Background(), qe); d.Allow || d.Reason != "credential expired" {
		t.Fatalf("expired principal %+v", d)
	}
	// The expiring credential is another key (its expiry is in the
	// input): evaluated, not served the first credential's decision.
	if got := counterValue(e.m.allow[1]); got != 1 {
		t.Errorf("cached allows = %v, want 1", got)
	}
	if got := counterValue(e.m.allow[0]); got != 2 {
		t.Errorf("uncached allows = %v, want 2", got)
	}
}

func TestCacheBoundedAndTTL(t *testing.T) {
	c := newCache(32)
	d := &Decision{Allow: true}
	for i := 0; i < 1000; i++ {
		k := cacheKey{id: "p", name: strings.Repeat("x", i%50) + string(rune('a'+i%26)), action: ActionRead, rtype: ResourceTopic}
		c.put(&k, c.hash(&k), d, 100)
	}
	if n := c.len(); n > 32 {
		t.Fatalf("cache holds %d entries, cap 32", n)
	}
	k := cacheKey{id: "p", name: "t"}
	c.put(&k, c.hash(&k), d, 100)
	if _, ok := c.get(&k, c.hash(&k), 99); !ok {
		t.Fatal("fresh entry missed")
	}
	if _, ok := c.get(&k, c.hash(&k), 100); ok {
		t.Fatal("stale entry served")
	}
}

// The lookup hashes a key with its principal's part memoised (keyHash); an
// entry is stored under the hash taken from the key alone (hash). The two
// must agree, or every decision would miss the cache, and principals that
// differ in any field must not share a key.
func TestCacheKeyHash(t *testing.T) {
	c := newCache(64)
	ps := []*filter.Principal{
		{ID: "a", Org: "acme", Mechanism: "PLAIN", Roles: []string{"partner"}},
		{ID: "a", Org: "acme", Mechanism: "PLAIN", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "x"}},
		{ID: "a", Org: "acme", Mechanism: "SCRAM-SHA-512", Roles: []string{"partner"}},
		{ID: "a", Org: "globex", Mechanism: "PLAIN", Roles: []string{"partner"}},
		{ID: "a", Org: "acme", Mechanism: "PLAIN", Roles: []string{"admin"}},
		{ID: "b"},
	}
	d := &Decision{Allow: true}
	for i, p := range ps {
		k := cacheKey{id: p.ID, org: p.Org, mech: p.Mechanism, name: "t", action: ActionRead, rtype: ResourceTopic}
		for range 2 { // computed, then memoised
			if h := c.keyHash(p, &k); h != c.hash(&k) {
				t.Fatalf("principal %d: keyHash %x, hash %x", i, h, c.hash(&k))
			}
		}
		if _, ok := c.get(&k, c.keyHash(p, &k), 1); ok {
			t.Fatalf("principal %d hit another principal's entry", i)
		}
		c.put(&k, c.hash(&k), d, 100)
		if _, ok := c.get(&k, c.keyHash(p, &k), 1); !ok {
			t.Fatalf("principal %d missed its own entry", i)
		}
	}
}

func writePolicy(t *testing.T, dir, name, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

const allowAll = `package sluice.authz
default decision := {"allow": true, "reason": "open"}
`

func tempEngine(t *testing.T, policy string, mut func(*Config), opts Options) (*Engine, string, error) {
	t.Helper()
	dir := t.TempDir()
	writePolicy(t, dir, "p.rego", policy)
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.EvalTimeout = 10 * time.Second
	if mut != nil {
		mut(&cfg)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	e, err := New(context.Background(), cfg, opts)
	return e, dir, err
}

func TestFailClosed(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		reason string
	}{
		{"undefined", `package sluice.authz
decision := {"allow": false} if input.action == "describe"
`, "undefined"},
		{"bad output", `package sluice.authz
default decision := {"allow": false}
decision := {"allowed": true} if input.action == "write"
`, "bad_output"},
		{"eval error", `package sluice.authz
default decision := {"allow": false}
decision := {"allow": true} if input.action == "write"
decision := {"allow": false} if input.resource.type == "topic"
`, "eval_error"},
		{"timeout", `package sluice.authz
default decision := {"allow": false}
decision := {"allow": true} if { input.action == "write"; count([x | some x in numbers.range(1, 100000000)]) > 0 }
`, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e, _, err := tempEngine(t, tt.policy, func(c *Config) {
				if tt.reason == "timeout" {
					c.EvalTimeout = 20 * time.Millisecond
				}
			}, Options{Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			q := &Query{Principal: acme, Action: ActionWrite, Resource: ResourceTopic, Name: "t", Now: testNow}
			for i := 0; i < 2; i++ { // never cached
				d := e.Decide(context.Background(), q)
				if d.Allow || d.Error != tt.reason || d.Cached {
					t.Fatalf("decision %+v, want deny with error %s", d, tt.reason)
				}
			}
			if got := counterValue(e.m.errors.WithLabelValues(tt.reason)); got != 2 {
				t.Errorf("errors{%s} = %v, want 2", tt.reason, got)
			}
		})
	}
}

func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name, policy string
		mut          func(*Config)
		want         string
	}{
		{"syntax", "package sluice.authz\ndecision := {", nil, "rego_parse_error"},
		{"no default", "package sluice.authz\ndecision := {\"allow\": true} if input.x\n", nil, "undefined for a probe"},
		{"wrong shape", "package sluice.authz\ndefault decision := true\n", nil, "probe decision"},
		{"bad query", allowAll, func(c *Config) { c.Query = "not a ref(" }, "query"},
		{"no dir", allowAll, func(c *Config) { c.Dir = "" }, "dir is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := tempEngine(t, tt.policy, tt.mut, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestGrantValidation(t *testing.T) {
	mk := func(grants string) func(*Config) {
		return func(c *Config) {
			f := filepath.Join(t.TempDir(), "grants.json")
			if err := os.WriteFile(f, []byte(grants), 0o644); err != nil {
				t.Fatal(err)
			}
			c.DataFiles = []string{f}
		}
	}
	tests := []struct{ name, grants, want string }{
		{"unknown key", `[{"id":"a","org":"o","topic":"t","purpose":"p","classification":"public","valid_untill":"x"}]`, "unknown field"},
		{"dup id", `[{"id":"a","org":"o","topic":"t"},{"id":"a","org":"o","topic":"u"}]`, "duplicate id"},
		{"topic and pattern", `[{"id":"a","org":"o","topic":"t","pattern":"u*"}]`, "exactly one"},
		{"window", `[{"id":"a","org":"o","topic":"t","valid_from":"2027-01-01T00:00:00Z","valid_until":"2026-01-01T00:00:00Z"}]`, "not before"},
		{"strategy", `[{"id":"a","org":"o","topic":"t","mask":[{"field":"f","strategy":"rot13"}]}]`, "unknown strategy"},
		{"row filter", `[{"id":"a","org":"o","topic":"t","row_filter":{"field":"f","op":"eq","values":["a","b"]}}]`, "exactly one value"},
		{"hook", `[{"id":"a","org":"o","topic":"t","mask":[{"field":"nope","strategy":"hash"}]}]`, "obligations rejected: no field nope in t"},
	}
	hook := func(topic string, o *filter.Obligations) error {
		for _, m := range o.Mask {
			if m.Field == "nope" {
				return &hookErr{"no field nope in " + topic}
			}
		}
		return nil
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := tempEngine(t, allowAll, mk(tt.grants), Options{Validate: hook})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	t.Run("example data passes", func(t *testing.T) {
		var seen []string
		cfg := exampleConfig()
		_, err := New(context.Background(), cfg, Options{Validate: func(topic string, o *filter.Obligations) error {
			seen = append(seen, topic+"/"+o.GrantID)
			return nil
		}})
		if err != nil || len(seen) != 9 { // every grant in configs/data/grants.json
			t.Fatalf("err %v, hook saw %v", err, seen)
		}
	})
}

type hookErr struct{ s string }

func (e *hookErr) Error() string { return e.s }

func TestReload(t *testing.T) {
	reg := prometheus.NewRegistry()
	var reloads []string
	e, dir, err := tempEngine(t, allowAll, func(c *Config) { c.ReloadInterval = 10 * time.Millisecond }, Options{
		Registerer: reg,
		OnReload: func(rev string, err error) {
			s := rev
			if err != nil {
				s += " error"
			}
			reloads = append(reloads, s)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	q := &Query{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: "t", Now: testNow}
	rev1 := e.Revision()
	e.Decide(context.Background(), q)
	if d := e.Decide(context.Background(), q); !d.Allow || !d.Cached {
		t.Fatalf("before reload %+v", d)
	}
	// A policy change takes effect on the next poll, cache cleared.
	writePolicy(t, dir, "p.rego", "package sluice.authz\ndefault decision := {\"allow\": false, \"reason\": \"closed\"}\n")
	e.poll(context.Background())
	rev2 := e.Revision()
	if rev2 == rev1 {
		t.Fatal("revision unchanged after edit")
	}
	if d := e.Decide(context.Background(), q); d.Allow || d.Cached || d.Reason != "closed" || d.Revision != rev2 {
		t.Fatalf("after reload %+v", d)
	}
	// A broken revision is rejected; the old keeps serving.
	writePolicy(t, dir, "p.rego", "package sluice.authz\ndecision := {{{")
	e.poll(context.Background())
	if e.Revision() != rev2 {
		t.Fatal("broken revision swapped in")
	}
	if d := e.Decide(context.Background(), q); d.Allow || d.Reason != "closed" {
		t.Fatalf("after broken reload %+v", d)
	}
	// An unchanged fingerprint is not reloaded again.
	e.poll(context.Background())
	if got := counterValue(e.m.reloads.WithLabelValues("error")); got != 1 {
		t.Errorf("reload errors = %v, want 1", got)
	}
	if len(reloads) != 3 || reloads[0] != rev1 || reloads[1] != rev2 || !strings.HasSuffix(reloads[2], " error") {
		t.Errorf("OnReload saw %v", reloads)
	}
	// Watch picks up a fix by itself.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Watch(ctx) }()
	writePolicy(t, dir, "p.rego", allowAll+"# fixed\n")
	deadline := time.Now().Add(5 * time.Second)
	for e.Revision() == rev2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if e.Revision() == rev2 {
		t.Fatal("watch did not reload the fixed policy")
	}
}

func TestRunTestsOnLoad(t *testing.T) {
	// The test says the policy denies; allowAll fails it.
	failing := `package sluice.authz_test
import data.sluice.authz
test_denies if { not authz.decision.allow }
`
	closed := "package sluice.authz\ndefault decision := {\"allow\": false, \"reason\": \"closed\"}\n"
	if !DefaultConfig().RunTestsOnLoad {
		t.Fatal("run_tests_on_load is not on by default")
	}
	t.Run("failing test rejects the first revision", func(t *testing.T) {
		_, _, err := tempEngine(t, allowAll, func(c *Config) { writePolicy(t, c.Dir, "p_test.rego", failing) }, Options{})
		if err == nil || !strings.Contains(err.Error(), "rego tests failed") || !strings.Contains(err.Error(), "test_denies") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("off: failing test ignored", func(t *testing.T) {
		_, _, err := tempEngine(t, allowAll, func(c *Config) {
			c.RunTestsOnLoad = false
			writePolicy(t, c.Dir, "p_test.rego", failing)
		}, Options{})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("policy eval does not run them", func(t *testing.T) {
		dir := t.TempDir()
		writePolicy(t, dir, "p.rego", allowAll)
		writePolicy(t, dir, "p_test.rego", failing)
		in := filepath.Join(t.TempDir(), "in.json")
		if err := os.WriteFile(in, []byte(`{"principal": {"id": "x"}, "action": "read", "resource": {"type": "topic", "name": "t"}}`), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Dir = dir
		if d, err := EvalFile(context.Background(), cfg, in); err != nil || !d.Allow {
			t.Fatalf("eval: %+v %v", d, err)
		}
	})
	t.Run("no tests loads", func(t *testing.T) {
		if _, _, err := tempEngine(t, allowAll, nil, Options{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("reload whose tests fail is rejected", func(t *testing.T) {
		var reloads []string
		e, dir, err := tempEngine(t, closed, func(c *Config) { writePolicy(t, c.Dir, "p_test.rego", failing) }, Options{
			Registerer: prometheus.NewRegistry(),
			OnReload: func(rev string, err error) {
				if err != nil {
					rev += " error: " + err.Error()
				}
				reloads = append(reloads, rev)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		q := &Query{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: "t", Now: testNow}
		rev := e.Revision()
		// The new policy compiles and probes fine; only its tests fail.
		writePolicy(t, dir, "p.rego", allowAll)
		e.poll(context.Background())
		if e.Revision() != rev {
			t.Fatal("a revision whose tests fail was swapped in")
		}
		if d := e.Decide(context.Background(), q); d.Allow || d.Reason != "closed" || d.Revision != rev {
			t.Fatalf("after the rejected reload: %+v", d)
		}
		if got := counterValue(e.m.reloads.WithLabelValues("error")); got != 1 {
			t.Errorf("reload errors = %v, want 1", got)
		}
		if len(reloads) != 2 || !strings.Contains(reloads[1], "rego tests failed") || !strings.Contains(reloads[1], "test_denies") {
			t.Errorf("OnReload saw %q", reloads)
		}
		// Fixing the tests (here: the policy back) is picked up.
		writePolicy(t, dir, "p.rego", closed+"# again\n")
		e.poll(context.Background())
		if e.Revision() == rev {
			t.Fatal("fixed revision not loaded")
		}
	})
	t.Run("tests see the revision's data", func(t *testing.T) {
		// A change to data that breaks a test is rejected too.
		pol := `package sluice.authz
default decision := {"allow": false, "reason": "closed"}
decision := {"allow": true, "reason": "listed"} if input.resource.name in data.open
`
		test := `package sluice.authz_test
import data.sluice.authz
test_open_is_open if { authz.decision.allow with input as {"resource": {"name": "open"}} }
`
		data := t.TempDir()
		if err := os.WriteFile(filepath.Join(data, "open.json"), []byte(`["open"]`), 0o644); err != nil {
			t.Fatal(err)
		}
		e, _, err := tempEngine(t, pol, func(c *Config) {
			c.DataDir = data
			writePolicy(t, c.Dir, "p_test.rego", test)
		}, Options{Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		rev := e.Revision()
		if err := os.WriteFile(filepath.Join(data, "open.json"), []byte(`["other"]`), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := e.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "test_open_is_open") {
			t.Fatalf("reload with data breaking a test: %v", err)
		}
		if e.Revision() != rev {
			t.Fatal("revision swapped")
		}
	})
}

func TestRunTests(t *testing.T) {
	var buf bytes.Buffer
	ok, err := RunTests(context.Background(), "../configs/policies", &buf)
	if err != nil || !ok {
		t.Fatalf("example tests: ok=%v err=%v\n%s", ok, err, buf.String())
	}
	if !strings.Contains(buf.String(), "PASS") {
		t.Errorf("report: %s", buf.String())
	}
	dir := t.TempDir()
	writePolicy(t, dir, "p.rego", allowAll)
	writePolicy(t, dir, "p_test.rego", "package x_test\nimport data.sluice.authz\ntest_closed if { not authz.decision.allow }\n")
	buf.Reset()
	ok, err = RunTests(context.Background(), dir, &buf)
	if err != nil || ok || !strings.Contains(buf.String(), "FAIL") {
		t.Fatalf("failing test: ok=%v err=%v\n%s", ok, err, buf.String())
	}
	if _, err := RunTests(context.Background(), filepath.Join(dir, "missing"), &buf); err == nil {
		t.Fatal("missing dir accepted")
	}
}

func TestEvalFile(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.json")
	if err := os.WriteFile(in, []byte(`{
	  "principal": {"id": "svc-acme", "org": "acme", "mechanism": "PLAIN", "roles": ["partner"]},
	  "action": "read",
	  "resource": {"type": "topic", "name": "orders.eu"},
	  "request": {"api_key": 1, "api_version": 16, "client_id": "cli", "source_address": "10.1.2.3", "listener": "bootstrap"},
	  "time": {"rfc3339": "2026-06-01T00:00:00Z"}
	}`), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := EvalFile(context.Background(), exampleConfig(), in)
	if err != nil || !d.Allow || d.GrantID() != "g-acme-orders-eu" {
		t.Fatalf("decision %+v err %v", d, err)
	}
	if err := os.WriteFile(in, []byte(`{"action": "read", "resourse": {}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := EvalFile(context.Background(), exampleConfig(), in); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Fatalf("typo accepted: %v", err)
	}
}

func BenchmarkDecideCached(b *testing.B) {
	e := newExample(b, nil)
	q := &Query{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: "orders.eu", Now: testNow}
	if d := e.Decide(context.Background(), q); !d.Allow {
		b.Fatal(d.Reason)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if d := e.Decide(ctx, q); !d.Cached {
			b.Fatal("not cached")
		}
	}
}

func BenchmarkDecideCachedParallel(b *testing.B) {
	e := newExample(b, nil)
	q := &Query{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: "orders.eu", Now: testNow}
	e.Decide(context.Background(), q)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e.Decide(context.Background(), q)
		}
	})
}

// BenchmarkDecideUncached measures cache misses: the clock moves past the
// cache TTL on every iteration, so every decision is evaluated (and
// cached), as the first request of a principal for a resource is.
func BenchmarkDecideUncached(b *testing.B) {
	cfg := exampleConfig()
	e, err := New(context.Background(), cfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		q    Query
	}{
		{"grant_allow", Query{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: "orders.eu", Now: testNow}},
		{"grant_allow_purpose", Query{Principal: &filter.Principal{ID: "acme-analyst", Org: "acme", Mechanism: "PLAIN",
			Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}}, Action: ActionRead, Resource: ResourceTopic, Name: "demo", Now: testNow}},
		{"no_grant_deny", Query{Principal: acme, Action: ActionRead, Resource: ResourceTopic, Name: "payments.settled", Now: testNow}},
		{"group_allow", Query{Principal: acme, Action: ActionRead, Resource: ResourceGroup, Name: "acme.c", Now: testNow}},
	} {
		q := bc.q // its clock only moves forward, across b.N rounds
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			failed := 0
			for i := 0; i < b.N; i++ {
				q.Now = q.Now.Add(cfg.CacheTTL + time.Second)
				d := e.Decide(context.Background(), &q)
				if d.Cached {
					b.Fatal("cached")
				}
				if d.Error != "" {
					// Only a timeout is expected, on a starved machine.
					if d.Error != "timeout" {
						b.Fatal(d.Reason)
					}
					failed++
				}
			}
			b.ReportMetric(float64(failed), "timeouts")
		})
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// The demo credentials (configs/credentials/users.yaml) act for the purpose
// "analytics": acme may read the demo topic, globex may not.
func TestDemoPrincipals(t *testing.T) {
	e := newExample(t, nil)
	acmeAnalyst := &filter.Principal{ID: "acme-analyst", Org: "acme", Mechanism: "PLAIN", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}}
	globexAnalyst := &filter.Principal{ID: "globex-analyst", Org: "globex", Mechanism: "PLAIN", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}}
	q := func(p *filter.Principal, topic string) Decision {
		return e.Decide(context.Background(), &Query{Principal: p, Action: ActionRead, Resource: ResourceTopic, Name: topic, Now: testNow})
	}
	if d := q(acmeAnalyst, "demo"); !d.Allow || d.GrantID() != "g-acme-demo" {
		t.Errorf("acme demo: %+v", d)
	}
	if d := q(globexAnalyst, "demo"); d.Allow {
		t.Errorf("globex demo allowed: %+v", d)
	}
	if d := q(acmeAnalyst, "orders.eu"); !d.Allow || d.GrantID() != "g-acme-orders-eu-analytics" || d.Obligations.Mask[0].Strategy != "redact" {
		t.Errorf("acme analyst orders.eu: %+v", d)
	}
}

// A principal re-authenticated with other roles or attributes does not hit
// its former self's cached decisions.
func TestCacheKeyIncludesRolesAndAttributes(t *testing.T) {
	e := newExample(t, nil)
	before := &filter.Principal{ID: "x", Org: "acme", Mechanism: "PLAIN", Roles: []string{"admin"}}
	after := &filter.Principal{ID: "x", Org: "acme", Mechanism: "PLAIN", Roles: []string{"partner"}}
	q := func(p *filter.Principal) Decision {
		return e.Decide(context.Background(), &Query{Principal: p, Action: ActionRead, Resource: ResourceTopic, Name: "payments.settled", Now: testNow})
	}
	if d := q(before); !d.Allow {
		t.Fatalf("admin: %+v", d)
	}
	if d := q(before); !d.Cached {
		t.Fatal("second admin decision not cached")
	}
	if d := q(after); d.Allow || d.Cached {
		t.Fatalf("after losing admin: %+v", d)
	}
	withPurpose := &filter.Principal{ID: "x", Org: "acme", Mechanism: "PLAIN", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}}
	if d := e.Decide(context.Background(), &Query{Principal: withPurpose, Action: ActionRead, Resource: ResourceTopic, Name: "orders.eu", Now: testNow}); d.Cached || d.GrantID() != "g-acme-orders-eu-analytics" {
		t.Fatalf("with purpose: %+v", d)
	}
}

// A principal as authn builds it: roles and an attribute.
func BenchmarkDecideCachedAnalyst(b *testing.B) {
	e := newExample(b, nil)
	p := &filter.Principal{ID: "acme-analyst", Org: "acme", Mechanism: "SCRAM-SHA-256", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}}
	q := &Query{Principal: p, Action: ActionRead, Resource: ResourceTopic, Name: "demo", Now: testNow}
	if d := e.Decide(context.Background(), q); !d.Allow {
		b.Fatal(d.Reason)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if d := e.Decide(ctx, q); !d.Cached {
			b.Fatal("not cached")
		}
	}
}

// The example inputs shipped for `sluice policy eval` decide as documented.
func TestExampleInputs(t *testing.T) {
	for file, want := range map[string]bool{"acme-reads-demo.json": true, "globex-reads-demo.json": false} {
		d, err := EvalFile(context.Background(), exampleConfig(), filepath.Join("../configs/policies/inputs", file))
		if err != nil || d.Allow != want {
			t.Errorf("%s: allow %v, want %v (%s, %v)", file, d.Allow, want, d.Reason, err)
		}
	}
}
