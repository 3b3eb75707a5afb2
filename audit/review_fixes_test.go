package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
)

// TestCloseHonoursDeadlineWhileFailingClosed: the topic is down, the
// spool cannot be written (fail_closed) and more than queue_size events
// are held in memory. Close(ctx) must return by (about) ctx's deadline,
// reporting the loss, instead of hanging forever.
func TestCloseHonoursDeadlineWhileFailingClosed(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.QueueSize = 4
	cfg.ProduceTimeout = time.Second
	if err := os.MkdirAll(cfg.Spool.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/full", filepath.Join(cfg.Spool.Dir, fmt.Sprintf("%016d.seg", 0))); err != nil {
		t.Fatal(err)
	}
	cl.failing.Store(true)
	// Not start(): its cleanup would call Close again and hang with it.
	kf := filepath.Join(t.TempDir(), "audit.key")
	if _, err := GenerateKey(kf); err != nil {
		t.Fatal(err)
	}
	cfg.Signing.KeyFile = kf
	a, err := New(cfg, cl.opts, prometheus.NewRegistry(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{cl: cl, a: a, cfg: cfg}
	f := NewFilter(env.a)
	c := testConn(1, alice)
	go func() {
		for i := range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			f.OnResponse(ctx, exchange(c, 0, denyTopic(fmt.Sprintf("t%d", i))))
			cancel()
		}
	}()
	waitFor(t, "failing closed with held events", func() bool {
		return env.a.Healthy() != nil && env.a.shipping.Load() >= int64(cfg.QueueSize)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- env.a.Close(ctx) }()
	select {
	case err := <-done:
		t.Logf("Close returned: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close(ctx with a 2s deadline) still blocked after 10s: the shipper never leaves its main loop")
	}
}

// TestSpoolZeroFilledTailIsCut: a crash can leave the end of the last
// segment zero-filled (the file size reached the disk, the data did not).
// A zero header is length 0 with CRC-32C 0, which is the CRC of the empty
// payload, so recover() and peek() take every 8 zero bytes as a valid
// empty record instead of cutting the torn tail.
func TestSpoolZeroFilledTailIsCut(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.append(vals(0, 3)); err != nil {
		t.Fatal(err)
	}
	seg := s.segPath(s.segs[len(s.segs)-1])
	s.close()
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, err = openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	got := drain(t, s)
	empty := 0
	for _, v := range got {
		if len(v) == 0 {
			empty++
		}
	}
	if len(got) != 3 {
		t.Fatalf("reopened spool returned %d records (%d of them empty), want the 3 written: the zero-filled torn tail was not cut and would be replayed to the audit topic", len(got), empty)
	}
}

// TestVerifyEventAfterFinalHead: an event appended after a chain's final
// signed head (correct sequence and prevhash, nothing else touched) is an
// inserted event the verifier can see, since the final head says the run
// ended; it is accepted.
func TestVerifyEventAfterFinalHead(t *testing.T) {
	env, recs := chainCopy(t)
	last := recs[len(recs)-1]
	fin, seq, err := ParseEvent(last.Value)
	if err != nil || fin.Data.Head == nil || !fin.Data.Head.Final {
		t.Fatalf("last record is not the final head: %v", err)
	}
	forged := Envelope{
		SpecVersion: SpecVersion, ID: fmt.Sprintf("%s-%d", fin.ChainID, seq+1), Source: fin.Source,
		Type: EventType(KindDecision), Time: fin.Time, DataContentType: "application/json", DataSchema: DataSchema,
		Sequence: fmt.Sprint(seq + 1), PrevHash: HashRecord(last.Value), ChainID: fin.ChainID,
		Data: Data{SchemaVersion: SchemaVersion, Kind: KindDecision, Instance: fin.Data.Instance,
			Principal: &PrincipalRef{ID: "mallory"}, Action: "read", ResourceType: "topic", Resource: "secrets",
			Decision: Allow, Reason: "grant g1", Count: 1},
	}
	b, err := json.Marshal(&forged)
	if err != nil {
		t.Fatal(err)
	}
	rs := append(cloneRecords(recs), Record{Partition: last.Partition, Offset: last.Offset + 1, Key: last.Key, Value: b})
	rep := VerifyRecords(rs, env.pub)
	if rep.OK() {
		var out bytes.Buffer
		rep.WriteText(&out)
		t.Fatalf("an event inserted after the final signed head verified:\n%s", out.String())
	}
}
