package audit

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy/filter"
)

func TestEventsWrittenAndVerified(t *testing.T) {
	cl := newCluster(t)
	env := start(t, cl, testConfig(t))
	f := NewFilter(env.a)
	ctx := context.Background()
	c := testConn(1, alice)

	env.a.Auth(c, "PLAIN", alice, nil)
	env.a.Auth(testConn(2, nil), "PLAIN", nil, errors.New("bad password"))
	env.a.PolicyReload("rev1", nil)
	d := allowTopic("orders", 0, 1)
	d.Obligations = &filter.Obligations{Mask: []filter.MaskRule{{Field: "customer.ssn", Strategy: "redact"}},
		RowFilter: &filter.RowFilter{Field: "region", Op: "in", Values: []string{"eu", "uk"}}}
	x := exchange(c, 1, d, denyTopic("payments"))
	x.Stats = filter.Stats{Records: 7, Bytes: 700}
	if err := f.OnRequest(ctx, x); err != nil {
		t.Fatal(err)
	}
	if err := f.OnResponse(ctx, x); err != nil {
		t.Fatal(err)
	}
	env.a.MaskFailure(c, "orders", 1, "schema 12 not found")
	env.close(t)

	recs, evs := events(t, cl)
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Data.Kind)
		if e.SpecVersion != "1.0" || e.Source != "sluice/gw-test" || e.DataContentType != "application/json" || e.Type != EventType(e.Data.Kind) {
			t.Errorf("bad envelope %+v", e)
		}
	}
	want := "authn authn policy_reload decision decision mask_failure chain_head"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("kinds = %s, want %s", got, want)
	}
	if evs[1].Data.Decision != Failure || evs[1].Data.Error != "bad password" {
		t.Errorf("authn failure event: %+v", evs[1].Data)
	}
	allow, deny := evs[3].Data, evs[4].Data
	if allow.Decision != Allow || allow.Principal.ID != "alice" || allow.Principal.Org != "acme" || allow.Resource != "orders" ||
		allow.GrantID != "g1" || allow.Purpose != "analytics" || allow.PolicyRevision != "rev1" || allow.Records != 7 || allow.Bytes != 700 ||
		allow.API.Name != "Fetch" || allow.Client.Address != "192.0.2.7:51000" || allow.Client.ClientID != "client-1" || allow.Count != 1 {
		t.Errorf("allow event: %+v", allow)
	}
	if o := allow.Obligations; o == nil || strings.Join(o.MaskedFields, ",") != "customer.ssn:redact" || o.RowFilter != "region in [eu,uk]" {
		t.Errorf("obligations: %+v", allow.Obligations)
	}
	if deny.Decision != Deny || deny.Resource != "payments" || deny.Reason != "no grant" || deny.Records != 0 {
		t.Errorf("deny event: %+v", deny)
	}
	if !evs[6].Data.Head.Final {
		t.Error("last head not final")
	}
	if got := metricValue(env.a.m.written); got != float64(len(recs)) {
		t.Errorf("written metric %v, want %d", got, len(recs))
	}
	rep := VerifyRecords(recs, env.pub)
	if !rep.OK() || len(rep.Chains) != 1 || rep.Chains[0].Events != 7 || !rep.Chains[0].Final || rep.Chains[0].UnsignedTail != 0 {
		var b bytes.Buffer
		rep.WriteText(&b)
		t.Fatalf("verify: %s", b.String())
	}
	// The same through the topic reader and text output.
	var out bytes.Buffer
	rep2, err := Verify(ctx, cl.opts, testTopic, env.pub, &out)
	if err != nil || !rep2.OK() || !strings.Contains(out.String(), "verify: OK") {
		t.Fatalf("Verify: %v\n%s", err, out.String())
	}
}

func TestFolding(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.FoldWindow = time.Minute // folds close on shutdown
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	ctx := context.Background()
	c1, c2 := testConn(1, alice), testConn(2, bob)
	for i := range 10 {
		x := exchange(c1, 0, allowTopic("orders", int32(i%3)))
		x.Stats = filter.Stats{Records: 2, Bytes: 100}
		f.OnResponse(ctx, x)
	}
	for range 3 {
		f.OnResponse(ctx, exchange(c1, 0, denyTopic("orders")))
	}
	f.OnResponse(ctx, exchange(c1, 0, allowTopic("other")))
	f.OnResponse(ctx, exchange(c2, 0, allowTopic("orders"))) // other connection
	env.close(t)

	_, evs := events(t, cl)
	var decisions, total int64
	byKey := map[string]*Data{}
	for _, e := range evs {
		if e.Data.Kind != KindDecision {
			continue
		}
		decisions++
		total += e.Data.Count
		d := e.Data
		byKey[d.Decision+"/"+d.Resource+"/"+d.Principal.ID] = &d
	}
	if decisions != 3+3 || total != 15 {
		t.Fatalf("%d events representing %d decisions, want 6 and 15", decisions, total)
	}
	o := byKey["allow/orders/alice"]
	if o == nil || o.Count != 10 || o.Records != 20 || o.Bytes != 1000 || len(o.Partitions) != 3 || o.FirstTime == "" || o.LastTime < o.FirstTime {
		t.Errorf("folded event %+v", o)
	}
	if d := byKey["deny/orders/alice"]; d == nil || d.Count != 1 {
		t.Errorf("deny event %+v", d)
	}
	if got := metricValue(env.a.m.decisions); got != 15 {
		t.Errorf("decisions metric %v, want 15", got)
	}
	if got := metricValue(env.a.m.folded); got != 9 {
		t.Errorf("folded metric %v, want 9", got)
	}
}

func TestFoldWindowCloses(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.FoldWindow = 30 * time.Millisecond
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	c := testConn(1, alice)
	f.OnResponse(context.Background(), exchange(c, 0, allowTopic("orders")))
	f.OnResponse(context.Background(), exchange(c, 0, allowTopic("orders")))
	// Flushed by the window, not by Close.
	waitFor(t, "fold flushed", func() bool { return metricValue(env.a.m.written) >= 1 })
	time.Sleep(40 * time.Millisecond)
	f.OnResponse(context.Background(), exchange(c, 0, allowTopic("orders")))
	env.close(t)
	_, evs := events(t, cl)
	var counts []int64
	for _, e := range evs {
		if e.Data.Kind == KindDecision {
			counts = append(counts, e.Data.Count)
		}
	}
	if len(counts) != 2 || counts[0] != 2 || counts[1] != 1 {
		t.Fatalf("counts %v, want [2 1]", counts)
	}
}

func TestCreatesMissingTopic(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.Topic = "audit-created"
	env := start(t, cl, cfg)
	env.a.PolicyReload("rev9", nil)
	env.close(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := ReadTopic(ctx, cl.opts, cfg.Topic)
	if err != nil {
		t.Fatal(err)
	}
	if rep := VerifyRecords(recs, env.pub); !rep.OK() || rep.Records != 2 {
		t.Fatalf("%+v", rep)
	}
}

func TestNewErrors(t *testing.T) {
	cl := newCluster(t)
	env := start(t, cl, testConfig(t))
	cfg := env.cfg
	// A second auditor on the same spool is refused, and leaves no
	// metrics behind.
	reg := prometheus.NewRegistry()
	if _, err := New(cfg, cl.opts, reg, nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("shared spool: %v", err)
	}
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Fatalf("metrics left registered: %d", len(mfs))
	}
	// The same registry twice is an error, not a panic.
	cfg.Spool.Dir = t.TempDir()
	if _, err := New(cfg, cl.opts, env.reg, nil); err == nil || !strings.Contains(err.Error(), "metrics") {
		t.Fatalf("duplicate metrics: %v", err)
	}
	cfg.Signing.KeyFile = "/nonexistent/key"
	if _, err := New(cfg, cl.opts, nil, nil); err == nil {
		t.Fatal("missing key accepted")
	}
	cfg.Enabled = false
	if _, err := New(cfg, cl.opts, nil, nil); err == nil {
		t.Fatal("disabled config started")
	}
}

// TestSequencerParksAndWakes: after a burst and a quiet spell, an event is
// written as promptly as one in the burst (the sequencer does not stall
// once idle).
func TestSequencerParksAndWakes(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.FoldWindow = 0 // every decision an event
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	ctx := context.Background()
	c := testConn(1, alice)
	for i := range 50 { // a burst
		f.OnResponse(ctx, exchange(c, 0, allowTopic("orders", int32(i))))
	}
	waitFor(t, "the burst written", func() bool { return metricValue(env.a.m.written) >= 50 })
	time.Sleep(300 * time.Millisecond) // idle
	t0 := time.Now()
	f.OnResponse(ctx, exchange(c, 0, allowTopic("orders", 99)))
	waitFor(t, "the event after the quiet spell written", func() bool { return metricValue(env.a.m.written) >= 51 })
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("the event after a quiet spell took %v", d)
	}
	env.close(t)
	if _, evs := events(t, cl); len(evs) < 51 {
		t.Fatalf("%d events in the topic, want at least 51", len(evs))
	}
}
