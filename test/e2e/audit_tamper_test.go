package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-gw/sluice/audit"
)

// TestAuditTamperEvidence exports the audit topic of a short session with
// `sluice audit export`, then changes one byte of one event, deletes one
// event and swaps two in copies of the export: `sluice audit verify --file`
// fails on each with a non-zero exit and names the kind of problem, the
// offset and the sequence; the untouched copy passes.
func TestAuditTamperEvidence(t *testing.T) {
	t.Parallel()
	e := startAuditEnv(t, map[string]any{"fold_window": "0s"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := e.client(t, audAcme, kgo.DefaultProduceTopic(audInbound))
	for i := 0; i < 5; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	e.settle(t)
	e.stop(t)

	dir := t.TempDir()
	export := filepath.Join(dir, "audit.jsonl")
	r := audSluice(t, "audit", "export", "--upstream", e.upstream(), "--topic", audTopic, "--out", export)
	if !r.OK() || !strings.Contains(r.Stderr, "exported ") {
		t.Fatalf("sluice audit export: %s", r)
	}
	raw, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	recs := make([]audit.Record, len(lines))
	for i, l := range lines {
		if err := json.Unmarshal([]byte(l), &recs[i]); err != nil {
			t.Fatalf("export line %d: %v", i, err)
		}
	}
	if len(recs) < 10 {
		t.Fatalf("only %d events exported", len(recs))
	}
	// Tamper in the middle, with a decision event whose successor is one
	// too (not the signed head at the end).
	victim := -1
	for i := len(recs) / 2; i < len(recs)-2; i++ {
		ev, _, err := audit.ParseEvent(recs[i].Value)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Data.Kind == audit.KindDecision && bytes.Contains(recs[i].Value, []byte(`"resource":"`)) {
			victim = i
			break
		}
	}
	if victim < 0 {
		t.Fatal("no decision event to tamper with")
	}
	seqOf := func(i int) string {
		_, seq, err := audit.ParseEvent(recs[i].Value)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(seq)
	}
	off := func(i int) string { return fmt.Sprint(recs[i].Offset) }
	vs, vo := seqOf(victim), off(victim)
	ns, no := seqOf(victim+1), off(victim+1)

	write := func(name string, rs []audit.Record) string {
		var b bytes.Buffer
		if err := audit.WriteRecords(&b, rs); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	clone := func() []audit.Record {
		out := make([]audit.Record, len(recs))
		for i, r := range recs {
			r.Value = append([]byte(nil), r.Value...)
			out[i] = r
		}
		return out
	}

	changed := clone()
	i := bytes.Index(changed[victim].Value, []byte(`"resource":"`)) + len(`"resource":"`)
	changed[victim].Value[i] ^= 0x01 // one letter of the topic name, still valid JSON
	deleted := append(clone()[:victim:victim], clone()[victim+1:]...)
	// The last event is the final signed head: no later link covers it,
	// its signature does.
	last := len(recs) - 1
	resigned := clone()
	j := bytes.Index(resigned[last].Value, []byte(`"signature":"`)) + len(`"signature":"`)
	if j < len(`"signature":"`) {
		t.Fatalf("the last event is not a signed head: %s", recs[last].Value)
	}
	if resigned[last].Value[j] == 'A' { // another base64 letter
		resigned[last].Value[j] = 'B'
	} else {
		resigned[last].Value[j] = 'A'
	}
	swapped := clone()
	swapped[victim].Value, swapped[victim+1].Value = swapped[victim+1].Value, swapped[victim].Value

	// Offline verification needs no cluster: neither --upstream nor a
	// config with upstream brokers is given, and the cluster is not
	// dialled (every case below runs the same way).
	verifyArgs := []string{"audit", "verify", "--public-key", e.pubKey}
	t.Run("offline without upstream", func(t *testing.T) {
		r := audSluice(t, "audit", "verify", "--file", export, "--public-key", e.pubKey)
		if !r.OK() || !strings.Contains(r.Stdout, "verify: OK") || strings.Contains(r.Stderr, "upstream") {
			t.Fatalf("offline verify of the export without an upstream: %s", r)
		}
	})

	for _, tc := range []struct {
		name string
		recs []audit.Record
		want []string // in verify's output
	}{
		{"untouched", clone(), nil},
		{"one byte changed", changed, []string{"PROBLEM changed", "offset " + vo + " sequence " + vs + ":"}},
		{"one event deleted", deleted, []string{"PROBLEM gap", "sequences " + vs + ".." + vs + " missing"}},
		{"signed head changed", resigned, []string{"PROBLEM bad_signature", "offset " + off(last) + " sequence " + seqOf(last) + ":"}},
		{"two events swapped", swapped, []string{"PROBLEM reordered", "offset " + no + " sequence " + vs + ":",
			"sequence " + vs + " comes after sequence " + ns + " (offset " + vo + ")"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := write(strings.ReplaceAll(tc.name, " ", "-")+".jsonl", tc.recs)
			r := audSluice(t, append(verifyArgs, "--file", f)...)
			if tc.want == nil {
				if !r.OK() || !strings.Contains(r.Stdout, "verify: OK") {
					t.Fatalf("the untouched export does not verify: %s", r)
				}
				return
			}
			if r.ExitCode != 1 || !strings.Contains(r.Stdout, "verify: FAILED") {
				t.Fatalf("verify of a tampered copy: want exit 1 and FAILED, got %s", r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.Stdout, w) {
					t.Errorf("verify output does not say %q:\n%s", w, r.Stdout)
				}
			}
			t.Logf("%s", r.Stdout)
		})
	}

	// Cutting the final head breaks no link: the chain reads as a run
	// that has not ended. --require-final all (the instance is stopped)
	// names it; the default reports it only as "final false".
	t.Run("final head cut", func(t *testing.T) {
		f := write("final-head-cut.jsonl", clone()[:last])
		r := audSluice(t, append(verifyArgs, "--file", f)...)
		if !r.OK() || !strings.Contains(r.Stdout, "final false") {
			t.Fatalf("without --require-final a cut final head is reported, not failed: %s", r)
		}
		r = audSluice(t, append(verifyArgs, "--file", f, "--require-final", "all")...)
		if r.ExitCode != 1 || !strings.Contains(r.Stdout, "PROBLEM unfinished") ||
			!strings.Contains(r.Stdout, "offset "+off(last-1)+" sequence "+seqOf(last-1)+":") || !strings.Contains(r.Stdout, "verify: FAILED") {
			t.Fatalf("--require-final all with the final head cut: want exit 1 and unfinished at the last event left, got %s", r)
		}
		if r := audSluice(t, append(verifyArgs, "--file", export, "--require-final", "all")...); !r.OK() {
			t.Fatalf("--require-final all on the untouched export: %s", r)
		}
		if r := audSluice(t, append(verifyArgs, "--file", export, "--require-final", "some")...); r.ExitCode == 0 || !strings.Contains(r.Stderr, "require-final \"some\"") {
			t.Fatalf("--require-final some: want an error naming the value, got %s", r)
		}
	})
}
