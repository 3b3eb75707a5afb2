package audit

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// holdProduces makes the cluster hold every Produce request (no answer)
// while hold is set, until release is closed; held counts the requests
// held so far. Other requests and connections are served meanwhile.
func holdProduces(cl *cluster, hold *atomic.Bool, release <-chan struct{}, held *atomic.Int64) {
	cl.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if hold.Load() {
			held.Add(1)
			cl.c.SleepControl(func() { <-release })
		}
		return nil, nil, false // then handled normally
	})
}

// gaugeValue is the value of a gauge in reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestRequestPathDoesNotWaitOnHungCluster: while the cluster holds the
// audit topic's Produce requests unanswered (shorter than produce_timeout,
// so the sink keeps waiting instead of spooling), the request path —
// OnRequest, OnResponse, Auth, PolicyReload — keeps returning at once:
// events wait in the in-memory queue (sluice_audit_queue_depth_events
// shows them), not in the requests. When the cluster answers, the queue
// drains to zero and every event is in the topic, in order.
func TestRequestPathDoesNotWaitOnHungCluster(t *testing.T) {
	const hang = 4 * time.Second
	cl := newCluster(t)
	var hold atomic.Bool
	var held atomic.Int64
	release := make(chan struct{})
	holdProduces(cl, &hold, release, &held)
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
	})
	cfg := testConfig(t)
	cfg.ProduceTimeout = 30 * time.Second // far longer than the hang: nothing spools
	cfg.Signing.Interval = time.Hour      // no heads on a timer; the final one at Close
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	ctx := context.Background()
	c := testConn(1, alice)
	if d := gaugeValue(t, env.reg, "sluice_audit_queue_depth_events"); d != 0 {
		t.Errorf("queue depth %v before any event", d)
	}
	n := 0
	f.OnResponse(ctx, exchange(c, 0, denyTopic(fmt.Sprintf("t%d", n))))
	n++
	waitFor(t, "first event written", func() bool { return metricValue(env.a.m.written) >= 1 })

	// The next batch is held by the cluster: the sink now waits on it.
	hold.Store(true)
	hangStart := time.Now()
	f.OnResponse(ctx, exchange(c, 0, denyTopic(fmt.Sprintf("t%d", n))))
	n++
	waitFor(t, "a Produce held", func() bool { return held.Load() >= 1 })
	// The sink writes one batch at a time: with this one held, nothing
	// more is written until the cluster answers.
	written := metricValue(env.a.m.written)

	const rounds = 500
	var slowest, took time.Duration
	var callErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		begin := time.Now()
		defer func() { took = time.Since(begin) }()
		for i := 0; i < rounds; i++ {
			s := time.Now()
			x := exchange(c, 0, denyTopic(fmt.Sprintf("t%d", n)), denyTopic(fmt.Sprintf("t%d", n+1)))
			if callErr = f.OnRequest(ctx, x); callErr != nil {
				return
			}
			if callErr = f.OnResponse(ctx, x); callErr != nil {
				return
			}
			n += 2
			if i%100 == 0 {
				env.a.Auth(c, "PLAIN", alice, nil)
				env.a.PolicyReload("rev1", nil)
			}
			slowest = max(slowest, time.Since(s))
		}
	}()
	// Generous bound: a request path that waits on the sink would take
	// the whole hang.
	select {
	case <-done:
	case <-time.After(hang / 2):
		close(release)
		released = true
		<-done
		t.Fatalf("the request path did not return within %v while the cluster hung (%d decisions made): it waits on audit I/O", hang/2, n)
	}
	if callErr != nil {
		t.Fatalf("request path while the cluster hangs: %v", callErr)
	}
	t.Logf("%d request-path rounds in %v (slowest %v) while the cluster holds the audit Produce", rounds, took, slowest)
	if slowest >= time.Second {
		t.Fatalf("slowest request-path round took %v while the cluster hung", slowest)
	}
	if w := metricValue(env.a.m.written); w != written {
		t.Fatalf("%v events written while the cluster holds every Produce (%v before): the hang is not in effect", w, written)
	}
	// The events wait in memory, and the gauge says so.
	waitFor(t, "events queued", func() bool { return env.a.QueueDepth() >= 2*rounds })
	if d := gaugeValue(t, env.reg, "sluice_audit_queue_depth_events"); d < 2*rounds {
		t.Errorf("sluice_audit_queue_depth_events = %v while %d decisions wait behind a hung write", d, 2*rounds)
	}
	if env.a.Healthy() != nil {
		t.Errorf("unhealthy while the queue has room: %v", env.a.Healthy())
	}

	// Keep the cluster hung for the whole hang, then let it answer.
	time.Sleep(time.Until(hangStart.Add(hang)))
	if w := metricValue(env.a.m.written); w != written {
		t.Fatalf("%v events written during the hang (%v before)", w, written)
	}
	close(release)
	released = true
	hold.Store(false)
	waitFor(t, "queue drained", func() bool { return gaugeValue(t, env.reg, "sluice_audit_queue_depth_events") == 0 })
	waitFor(t, "all written", func() bool { return metricValue(env.a.m.written) >= float64(n) })
	env.close(t)
	checkAll(t, env, n)
	if s := metricValue(env.a.m.spooled); s != 0 {
		t.Errorf("%v events spooled: the hang was shorter than produce_timeout", s)
	}
}
