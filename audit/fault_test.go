package audit

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// checkAll asserts the topic holds exactly n decision events for topics
// "t0".."t<n-1>" in order, and verifies.
func checkAll(t *testing.T, env *testEnv, n int) {
	t.Helper()
	recs, evs := events(t, env.cl)
	i := 0
	seen := map[string]bool{}
	dups := 0
	for j, e := range evs {
		if seen[string(recs[j].Value)] { // a timed-out write that landed, then replayed
			dups++
			continue
		}
		seen[string(recs[j].Value)] = true
		if e.Data.Kind != KindDecision {
			continue
		}
		if want := "t" + strconv.Itoa(i); e.Data.Resource != want {
			t.Fatalf("decision %d is for %s, want %s", i, e.Data.Resource, want)
		}
		i++
	}
	if i != n {
		t.Fatalf("%d decision events in the topic, want %d", i, n)
	}
	rep := VerifyRecords(recs, env.pub)
	if !rep.OK() || rep.Chains[len(rep.Chains)-1].Duplicates != dups {
		var b bytes.Buffer
		rep.WriteText(&b)
		t.Fatalf("verify (%d duplicates seen):\n%s", dups, b.String())
	}
	if dups > 0 {
		t.Logf("%d byte-identical duplicates", dups)
	}
}

func TestSpoolAndReplayInOrder(t *testing.T) {
	cl := newCluster(t)
	env := start(t, cl, testConfig(t))
	f := NewFilter(env.a)
	ctx := context.Background()
	c := testConn(1, alice)
	n := 0
	send := func(k int) {
		for range k {
			f.OnResponse(ctx, exchange(c, 0, denyTopic(fmt.Sprintf("t%d", n))))
			n++
		}
	}
	send(20)
	waitFor(t, "first events written", func() bool { return metricValue(env.a.m.written) >= 20 })

	cl.failing.Store(true)
	send(50)
	waitFor(t, "events spooled", func() bool { return metricValue(env.a.m.spooled) >= 50 })
	if env.a.Healthy() != nil {
		t.Fatal("unhealthy while the spool has room")
	}
	if env.a.spoolBytes.Load() == 0 {
		t.Fatal("spool bytes gauge is 0")
	}
	send(30) // still behind the spool

	cl.failing.Store(false)
	// Drained: the spool is empty and everything that went into it came
	// back out. (Not "replayed >= 80": how many of the 80 decisions were
	// spooled rather than held back in the queue depends on timing.)
	waitFor(t, "spool drained", func() bool {
		return env.a.spoolBytes.Load() == 0 && metricValue(env.a.m.replayed) >= metricValue(env.a.m.spooled)
	})
	send(10)
	env.close(t)
	checkAll(t, env, 110)
	if got := metricValue(env.a.m.written) + metricValue(env.a.m.replayed); got < 110 {
		t.Errorf("written+replayed = %v", got)
	}
}

func TestSpoolFullFailsClosed(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.Spool.MaxBytes = 1 << 20 // the smallest allowed
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	ctx := context.Background()
	c := testConn(1, alice)

	cl.failing.Store(true)
	n := 0
	for env.a.Healthy() == nil {
		if n > 20000 {
			t.Fatal("spool never filled")
		}
		f.OnResponse(ctx, exchange(c, 0, denyTopic(fmt.Sprintf("t%d", n))))
		n++
		if n%100 == 0 {
			waitFor(t, "queue empty", func() bool { return env.a.QueueDepth() == 0 || env.a.Healthy() != nil })
		}
	}
	if metricValue(env.a.m.failingClose) != 1 {
		t.Error("failing_closed gauge not 1")
	}
	// Decisions made meanwhile (responses already on their way) are held
	// in memory, and the queue depth gauge counts them.
	const late = 50
	for range late {
		f.OnResponse(ctx, exchange(c, 0, denyTopic(fmt.Sprintf("t%d", n))))
		n++
	}
	waitFor(t, "sequenced and shipped", func() bool { return len(env.a.in) == 0 && len(env.a.out) == 0 })
	if d := gaugeValue(t, env.reg, "sluice_audit_queue_depth_events"); d < late {
		t.Errorf("sluice_audit_queue_depth_events = %v while at least %d events are held in memory", d, late)
	}
	x := exchange(c, 0)
	err := f.OnRequest(ctx, x)
	d, ok := filter.AsDenial(err)
	if !ok || d.Code != DenyCode {
		t.Fatalf("OnRequest while failing closed = %v, want denial code %d", err, DenyCode)
	}
	t.Logf("denial: %s", d.Reason)
	// ApiVersions still passes so clients can connect.
	if err := f.OnRequest(ctx, exchange(c, 18)); err != nil {
		t.Fatalf("ApiVersions denied: %v", err)
	}
	// A denied exchange produces no event.
	x.Decisions = []filter.Decision{denyTopic("never")}
	f.OnResponse(ctx, x)

	cl.failing.Store(false)
	waitFor(t, "healthy again", func() bool { return env.a.Healthy() == nil })
	if err := f.OnRequest(ctx, exchange(c, 0)); err != nil {
		t.Fatalf("still denied after recovery: %v", err)
	}
	if metricValue(env.a.m.failingClose) != 0 {
		t.Error("failing_closed gauge not 0")
	}
	env.close(t)
	checkAll(t, env, n)
}

func TestSpoolSurvivesRestart(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	c := testConn(1, alice)
	cl.failing.Store(true)
	for i := range 20 {
		f.OnResponse(context.Background(), exchange(c, 0, denyTopic(fmt.Sprintf("t%d", i))))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*1e6)
	err := env.a.Close(ctx)
	cancel()
	if err == nil {
		t.Fatal("close with an unwritable topic reported no error")
	}
	cl.failing.Store(false)
	// Same spool and key, new instance id: the next run replays the old
	// chain first, keyed by its own instance.
	cfg2 := env.cfg
	cfg2.InstanceID = "gw-next"
	env2 := start(t, cl, cfg2)
	NewFilter(env2.a).OnResponse(context.Background(), exchange(c, 0, denyTopic("t20")))
	env2.close(t)
	checkAll(t, env2, 21)
	recs, evs := events(t, cl)
	if rep := VerifyRecords(recs, env.pub); len(rep.Chains) != 2 {
		t.Fatalf("want 2 chains, got %+v", rep.Chains)
	}
	for i, r := range recs {
		if string(r.Key) != evs[i].Data.Instance {
			t.Fatalf("record %d keyed %q, instance %q", i, r.Key, evs[i].Data.Instance)
		}
	}
	if evs[0].Data.Instance != "gw-test" || evs[len(evs)-1].Data.Instance != "gw-next" {
		t.Fatal("old chain not replayed first")
	}
}

func TestHungClusterSpools(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.ProduceTimeout = time.Second
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	c := testConn(1, alice)
	f.OnResponse(context.Background(), exchange(c, 0, denyTopic("t0")))
	waitFor(t, "first write", func() bool { return metricValue(env.a.m.written) >= 1 })
	cl.hung.Store(true)
	for i := 1; i < 20; i++ {
		f.OnResponse(context.Background(), exchange(c, 0, denyTopic(fmt.Sprintf("t%d", i))))
	}
	waitFor(t, "spooled", func() bool { return metricValue(env.a.m.spooled) >= 19 })
	cl.hung.Store(false)
	waitFor(t, "replayed", func() bool { return env.a.spoolBytes.Load() == 0 })
	env.close(t)
	checkAll(t, env, 20)
}

func TestConcurrentTrafficWithFlappingTopic(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.QueueSize = 256
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := testConn(uint64(w), alice)
			for n := range each {
				f.OnResponse(context.Background(), exchange(c, 0, denyTopic(fmt.Sprintf("w%d-%d", w, n))))
				if n%5 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	stop := make(chan struct{})
	flapped := make(chan struct{})
	go func() {
		defer close(flapped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				cl.failing.Store(false)
				return
			case <-time.After(15 * time.Millisecond):
				cl.failing.Store(i%2 == 0)
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-flapped
	env.close(t)

	recs, evs := events(t, cl)
	seen := map[string]bool{}
	unique := map[string]bool{}
	for i, e := range evs {
		if seen[string(recs[i].Value)] {
			continue
		}
		seen[string(recs[i].Value)] = true
		if e.Data.Kind == KindDecision {
			if unique[e.Data.Resource] {
				t.Fatalf("decision for %s recorded twice as different events", e.Data.Resource)
			}
			unique[e.Data.Resource] = true
		}
	}
	if len(unique) != workers*each {
		t.Fatalf("%d decisions in the topic, want %d", len(unique), workers*each)
	}
	rep := VerifyRecords(recs, env.pub)
	if !rep.OK() {
		var b bytes.Buffer
		rep.WriteText(&b)
		t.Fatalf("verify:\n%s", b.String())
	}
	t.Logf("written %v spooled %v replayed %v produce errors %v", metricValue(env.a.m.written), metricValue(env.a.m.spooled),
		metricValue(env.a.m.replayed), metricValue(env.a.m.produceErrs))
}
