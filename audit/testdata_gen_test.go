package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestGenerateFuzzChain rewrites testdata/chain.jsonl and chain.pub when
// SLUICE_AUDIT_REGEN=1.
func TestGenerateFuzzChain(t *testing.T) {
	if os.Getenv("SLUICE_AUDIT_REGEN") != "1" {
		t.Skip("set SLUICE_AUDIT_REGEN=1 to regenerate testdata/chain.jsonl")
	}
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.Signing.Interval = 10 * time.Millisecond
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	c := testConn(1, alice)
	for i := range 12 {
		f.OnResponse(context.Background(), exchange(c, 0, denyTopic(fmt.Sprintf("t%d", i))))
		if i == 5 {
			waitFor(t, "head", func() bool { return metricValue(env.a.m.heads) >= 1 })
		}
	}
	env.close(t)
	recs, _ := events(t, cl)
	os.MkdirAll("testdata", 0o755)
	out, err := os.Create(filepath.Join("testdata", "chain.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := WriteRecords(out, recs); err != nil {
		t.Fatal(err)
	}
	pub, _ := os.ReadFile(env.cfg.Signing.KeyFile + ".pub")
	if err := os.WriteFile(filepath.Join("testdata", "chain.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
}
