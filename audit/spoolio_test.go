package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// The spool "cannot be written" (an I/O error, not the configured bound)
// in two ways that hold even for root, who ignores file modes: the next
// segment's path is a directory (open fails with EISDIR), or the segment
// is /dev/full (every write fails with ENOSPC).

// requireDenied asserts that the audit filter refuses a request with
// DenyCode and a reason containing every want, and returns the reason.
func requireDenied(t *testing.T, f filter.Filter, c *filter.Conn, want ...string) string {
	t.Helper()
	err := f.OnRequest(context.Background(), exchange(c, 0))
	d, ok := filter.AsDenial(err)
	if !ok || d.Code != DenyCode {
		t.Fatalf("OnRequest while the spool cannot be written = %v, want a denial with code %d", err, DenyCode)
	}
	for _, w := range want {
		if !strings.Contains(d.Reason, w) {
			t.Errorf("denial reason %q lacks %q", d.Reason, w)
		}
	}
	return d.Reason
}

// TestSpoolUnwritableFailsClosedAndRecovers: the topic cannot be written
// and the spool's next segment cannot be created. The auditor fails
// closed with a reason naming the I/O error (not "spool full"); once the
// segment can be created, the held events are spooled and requests are
// served again while the topic is still down; when the topic recovers,
// every event arrives in order and the chain verifies.
func TestSpoolUnwritableFailsClosedAndRecovers(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.Spool.MaxBytes = 1 << 20 // segments of 128 KiB
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	ctx := context.Background()
	c := testConn(1, alice)

	// The path of segment 1 is taken by a directory: rotating to it
	// fails, as root too.
	blocker := filepath.Join(cfg.Spool.Dir, fmt.Sprintf("%016d.seg", 1))
	if err := os.Mkdir(blocker, 0o700); err != nil {
		t.Fatal(err)
	}
	cl.failing.Store(true)
	n := 0
	for env.a.Healthy() == nil {
		if n > 20000 {
			t.Fatal("never failed closed")
		}
		f.OnResponse(ctx, exchange(c, 0, denyTopic(fmt.Sprintf("t%d", n))))
		n++
		if n%50 == 0 {
			waitFor(t, "queue empty", func() bool { return env.a.QueueDepth() == 0 || env.a.Healthy() != nil })
		}
	}
	herr := env.a.Healthy().Error()
	t.Logf("failing closed after %d events: %s", n, herr)
	for _, w := range []string{"spool not writable", "is a directory", "topic write failed"} {
		if !strings.Contains(herr, w) {
			t.Errorf("Healthy() = %q, lacks %q", herr, w)
		}
	}
	if strings.Contains(herr, "spool full") {
		t.Errorf("an I/O error reported as a full spool: %q", herr)
	}
	if sb := env.a.spoolBytes.Load(); sb == 0 || sb >= cfg.Spool.MaxBytes/2 {
		t.Errorf("spool holds %d bytes: it should have filled one segment, far from its bound", sb)
	}
	if metricValue(env.a.m.failingClose) != 1 {
		t.Error("failing_closed gauge not 1")
	}
	requireDenied(t, f, c, "audit unavailable: spool not writable", "is a directory")
	if err := f.OnRequest(ctx, exchange(c, 18)); err != nil {
		t.Fatalf("ApiVersions denied: %v", err)
	}
	// Still failing closed a few retry intervals later: the error is not
	// forgotten.
	spooled := metricValue(env.a.m.spooled)
	waitFor(t, "retries", func() bool { return metricValue(env.a.m.produceErrs) >= 3 })
	requireDenied(t, f, c, "spool not writable")

	// The spool is writable again, the topic is still down: the held
	// events go to the spool and requests are served.
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "healthy with the topic still down", func() bool { return env.a.Healthy() == nil })
	if err := f.OnRequest(ctx, exchange(c, 0)); err != nil {
		t.Fatalf("still denied after the spool recovered: %v", err)
	}
	if metricValue(env.a.m.failingClose) != 0 {
		t.Error("failing_closed gauge not 0")
	}
	if got := metricValue(env.a.m.spooled); got <= spooled {
		t.Errorf("spooled %v, was %v: the held events did not go to the spool", got, spooled)
	}
	if metricValue(env.a.m.replayed) != 0 {
		t.Fatal("events replayed while the topic is down")
	}
	f.OnResponse(ctx, exchange(c, 0, denyTopic(fmt.Sprintf("t%d", n))))
	n++

	cl.failing.Store(false)
	waitFor(t, "spool drained", func() bool { return env.a.spoolBytes.Load() == 0 })
	env.close(t)
	checkAll(t, env, n)
	if d := metricValue(env.a.m.dropped); d != 0 {
		t.Errorf("%v events dropped", d)
	}
}

// TestSpoolWriteErrorFailsClosed: every write to the spool fails with
// ENOSPC (its segment is /dev/full) while the topic cannot be written.
// The auditor fails closed, naming the write error; when the topic
// recovers, the held events are written to it directly (the spool is
// empty), requests are served again, and nothing is lost.
func TestSpoolWriteErrorFailsClosed(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	cl := newCluster(t)
	cfg := testConfig(t)
	if err := os.MkdirAll(cfg.Spool.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/full", filepath.Join(cfg.Spool.Dir, fmt.Sprintf("%016d.seg", 0))); err != nil {
		t.Fatal(err)
	}
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	ctx := context.Background()
	c := testConn(1, alice)
	f.OnResponse(ctx, exchange(c, 0, denyTopic("t0")))
	waitFor(t, "first event written", func() bool { return metricValue(env.a.m.written) >= 1 })

	cl.failing.Store(true)
	const n = 20
	for i := 1; i < n; i++ {
		f.OnResponse(ctx, exchange(c, 0, denyTopic(fmt.Sprintf("t%d", i))))
	}
	waitFor(t, "failing closed", func() bool { return env.a.Healthy() != nil })
	reason := requireDenied(t, f, c, "audit unavailable: spool not writable", "write", "no space left on device", "topic write failed")
	t.Logf("denial: %s", reason)
	if metricValue(env.a.m.spooled) != 0 || env.a.spoolBytes.Load() != 0 {
		t.Errorf("spooled %v events (%d bytes) to a spool that cannot be written", metricValue(env.a.m.spooled), env.a.spoolBytes.Load())
	}
	if metricValue(env.a.m.failingClose) != 1 {
		t.Error("failing_closed gauge not 1")
	}

	cl.failing.Store(false)
	waitFor(t, "healthy again", func() bool { return env.a.Healthy() == nil })
	if err := f.OnRequest(ctx, exchange(c, 0)); err != nil {
		t.Fatalf("still denied after the topic recovered: %v", err)
	}
	if metricValue(env.a.m.failingClose) != 0 {
		t.Error("failing_closed gauge not 0")
	}
	env.close(t)
	checkAll(t, env, n)
	if d := metricValue(env.a.m.dropped); d != 0 {
		t.Errorf("%v events dropped", d)
	}
	if w := metricValue(env.a.m.written); w < n {
		t.Errorf("written %v, want every event written directly", w)
	}
}
