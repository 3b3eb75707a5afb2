package audit

import (
	"context"
	"fmt"
	"testing"
)

// TestBatchLargerThanSpoolRecovers: a burst whose batch is larger than the
// whole spool arrives while the topic cannot be written. What fits is
// spooled, the rest is held (failing closed); when the topic is writable
// again, the spool drains and the held events are written too, so the
// auditor recovers and loses nothing. (Spooling a batch all or nothing
// used to hold it forever: it never fit, and held events never went to
// the topic.)
func TestBatchLargerThanSpoolRecovers(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.Spool.MaxBytes = 1 << 20 // the smallest allowed
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	ctx := context.Background()
	c := testConn(1, alice)

	cl.failing.Store(true)
	const n = 4000 // ~2.4 MB of events, queued at once
	for i := 0; i < n; i++ {
		f.OnResponse(ctx, exchange(c, 0, denyTopic(fmt.Sprintf("t%d", i))))
	}
	waitFor(t, "failing closed", func() bool { return env.a.Healthy() != nil })
	waitFor(t, "spool filled", func() bool { return env.a.spoolBytes.Load() > cfg.Spool.MaxBytes/2 })

	cl.failing.Store(false)
	waitFor(t, "healthy again", func() bool { return env.a.Healthy() == nil })
	env.close(t)
	checkAll(t, env, n)
	if d := metricValue(env.a.m.dropped); d != 0 {
		t.Errorf("%v events dropped", d)
	}
}
