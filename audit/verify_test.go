package audit

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// chainCopy writes a chain of decisions with periodic heads and returns a
// copy of the topic.
func chainCopy(t *testing.T) (*testEnv, []Record) {
	t.Helper()
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.Signing.Interval = 20 * time.Millisecond
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	c := testConn(1, alice)
	for i := range 30 {
		f.OnResponse(context.Background(), exchange(c, 0, denyTopic(fmt.Sprintf("t%d", i))))
		if i%10 == 9 {
			waitFor(t, "head", func() bool { return metricValue(env.a.m.heads) >= float64(i/10+1) })
		}
	}
	env.close(t)
	recs, _ := events(t, cl)
	rep := VerifyRecords(recs, env.pub)
	if !rep.OK() || rep.Chains[0].SignedHeads < 3 {
		t.Fatalf("pristine copy does not verify: %+v", rep)
	}
	// Round trip through the offline format.
	var buf bytes.Buffer
	if err := WriteRecords(&buf, recs); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep, err := VerifyReader(&buf, env.pub, &out)
	if err != nil || !rep.OK() {
		t.Fatalf("offline copy: %v\n%s", err, out.String())
	}
	return env, recs
}

func cloneRecords(recs []Record) []Record {
	out := make([]Record, len(recs))
	for i, r := range recs {
		r.Value = slices.Clone(r.Value)
		out[i] = r
	}
	return out
}

func TestVerifyDetectsTampering(t *testing.T) {
	env, recs := chainCopy(t)
	n := len(recs)
	// Index of a chain head in the middle, and of a plain event.
	head := -1
	for i, r := range recs[:n-1] {
		if bytes.Contains(r.Value, []byte(`"kind":"chain_head"`)) {
			head = i
			break
		}
	}
	if head < 0 {
		t.Fatal("no chain head")
	}
	flip := func(i int, what string) func([]Record) []Record {
		return func(rs []Record) []Record {
			j := bytes.Index(rs[i].Value, []byte(what))
			if j < 0 {
				t.Fatalf("%q not in record %d", what, i)
			}
			rs[i].Value[j+len(what)] ^= 0x01 // the byte after what
			return rs
		}
	}
	cases := []struct {
		name   string
		tamper func([]Record) []Record
		kind   string
		offset int64 // place the first problem must name
	}{
		{"change one byte of a decision", flip(5, `"resource":"t`), ProblemChanged, recs[5].Offset},
		{"change the last event (final head)", flip(n-1, `"time":"2`), ProblemBadSignature, recs[n-1].Offset},
		{"change a chain head's signature", flip(head, `"signature":"`), ProblemBadSignature, recs[head].Offset},
		{"unparseable byte", func(rs []Record) []Record { rs[7].Value[0] = 'x'; return rs }, ProblemMalformed, recs[7].Offset},
		{"delete one event", func(rs []Record) []Record { return slices.Delete(rs, 9, 10) }, ProblemGap, recs[10].Offset},
		{"delete the first event", func(rs []Record) []Record { return rs[1:] }, ProblemTruncatedStart, recs[1].Offset},
		{"swap two events", func(rs []Record) []Record {
			rs[3].Value, rs[4].Value = rs[4].Value, rs[3].Value
			return rs
		}, ProblemReordered, recs[4].Offset},
		{"swap distant events", func(rs []Record) []Record {
			rs[2].Value, rs[12].Value = rs[12].Value, rs[2].Value
			return rs
		}, ProblemReordered, recs[3].Offset},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs := tc.tamper(cloneRecords(recs))
			var out bytes.Buffer
			rep, err := VerifyReader(toReader(t, rs), env.pub, &out)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() {
				t.Fatalf("tampered copy verified:\n%s", out.String())
			}
			p := rep.Problems[0]
			if p.Kind != tc.kind || p.Offset != tc.offset {
				t.Fatalf("first problem %s, want %s at offset %d\n%s", p, tc.kind, tc.offset, out.String())
			}
			if !strings.Contains(out.String(), fmt.Sprintf("offset %d", tc.offset)) || !strings.Contains(out.String(), "FAILED") {
				t.Fatalf("report does not name the place:\n%s", out.String())
			}
		})
	}
	t.Run("wrong key", func(t *testing.T) {
		other, err := GenerateKey(t.TempDir() + "/k")
		if err != nil {
			t.Fatal(err)
		}
		if rep := VerifyRecords(recs, other); rep.OK() || rep.Problems[0].Kind != ProblemBadSignature {
			t.Fatalf("verified with another key: %+v", rep.Problems)
		}
	})
	t.Run("no key", func(t *testing.T) {
		rep := VerifyRecords(recs, nil)
		if !rep.OK() || rep.SignaturesChecked {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("identical duplicate is not a problem", func(t *testing.T) {
		rs := cloneRecords(recs)
		dup := rs[6]
		dup.Offset = rs[n-1].Offset + 1
		rs = append(rs, dup)
		rep := VerifyRecords(rs, env.pub)
		if !rep.OK() || rep.Chains[0].Duplicates != 1 {
			t.Fatalf("%+v", rep)
		}
	})
}

func toReader(t *testing.T, rs []Record) *bytes.Buffer {
	var b bytes.Buffer
	if err := WriteRecords(&b, rs); err != nil {
		t.Fatal(err)
	}
	return &b
}

func TestTail(t *testing.T) {
	cl := newCluster(t)
	env := start(t, cl, testConfig(t))
	f := NewFilter(env.a)
	ctx := context.Background()
	ca, cb := testConn(1, alice), testConn(2, bob)
	d := allowTopic("orders", 0)
	d.Obligations = &filter.Obligations{Mask: []filter.MaskRule{{Field: "ssn", Strategy: "hash"}}}
	f.OnResponse(ctx, exchange(ca, 0, d))
	f.OnResponse(ctx, exchange(cb, 1, denyTopic("orders")))
	f.OnResponse(ctx, exchange(cb, 1, denyTopic("payments")))
	env.close(t)

	cases := []struct {
		f    Filter
		want []string
	}{
		{Filter{Principal: "alice@acme"}, []string{"decision ALLOW principal=alice@acme api=Produce/v9 action=write topic=orders partitions=0 grant=g1 purpose=analytics masked=ssn:hash"}},
		{Filter{Topic: "orders", Decision: "deny"}, []string{"decision DENY principal=bob@globex api=Fetch/v9 action=read topic=orders reason=\"no grant\""}},
		{Filter{Principal: "bob"}, []string{"topic=orders", "topic=payments"}},
		{Filter{Until: time.Now().Add(-time.Hour)}, nil},
	}
	t.Run("follow", func(t *testing.T) {
		fctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		var out bytes.Buffer
		if err := Tail(fctx, cl.opts, testTopic, Filter{Decision: "deny", Follow: true}, &out); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(out.String(), "\n"); n != 2 {
			t.Fatalf("follow printed %d lines:\n%s", n, out.String())
		}
	})
	for i, tc := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			var out bytes.Buffer
			if err := Tail(ctx, cl.opts, testTopic, tc.f, &out); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(tc.want) == 0 {
				if out.Len() != 0 {
					t.Fatalf("want nothing, got %s", out.String())
				}
				return
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(tc.want), out.String())
			}
			for j, w := range tc.want {
				if !strings.Contains(lines[j], w) {
					t.Errorf("line %q lacks %q", lines[j], w)
				}
			}
		})
	}
}

// TestRequireFinal runs two gateway runs of one instance on one topic and
// cuts the end of each chain: no link breaks, so only RequireFinal sees it.
// FinalEnded fails a run that a later run followed; FinalAll fails any.
func TestRequireFinal(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.Signing.KeyFile = filepath.Join(t.TempDir(), "audit.key")
	pub, err := GenerateKey(cfg.Signing.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	c := testConn(1, alice)
	for run := range 2 {
		env := start(t, cl, cfg)
		f := NewFilter(env.a)
		for i := range 5 {
			f.OnResponse(context.Background(), exchange(c, 0, denyTopic(fmt.Sprintf("run%d-t%d", run, i))))
		}
		env.close(t)
	}
	recs, envs := events(t, cl)
	// The final head of each run, in topic order.
	var finals []int
	for i, e := range envs {
		if e.Data.Head != nil && e.Data.Head.Final {
			finals = append(finals, i)
		}
	}
	if len(finals) != 2 || finals[1] != len(recs)-1 {
		t.Fatalf("want two runs each ending in a final head, got final heads at %v of %d events", finals, len(recs))
	}
	cut := func(i int) []Record { return slices.Delete(cloneRecords(recs), i, i+1) }
	cases := []struct {
		name string
		recs []Record
		// want[f] is the offset the unfinished problem names under
		// Finality f, or -1 for none.
		want [3]int64
	}{
		{"both runs ended", recs, [3]int64{-1, -1, -1}},
		{"first run's final head cut", cut(finals[0]), [3]int64{-1, recs[finals[0]-1].Offset, recs[finals[0]-1].Offset}},
		{"latest run's final head cut", cut(finals[1]), [3]int64{-1, -1, recs[finals[1]-1].Offset}},
		{"latest run's last three events cut", cloneRecords(recs[:len(recs)-3]), [3]int64{-1, -1, recs[len(recs)-4].Offset}},
	}
	for _, tc := range cases {
		for f := FinalNone; f <= FinalAll; f++ {
			rep := VerifyRecords(tc.recs, pub)
			if !rep.OK() || len(rep.Chains) != 2 {
				t.Fatalf("%s: the cut chain fails without RequireFinal or is not two chains: %+v", tc.name, rep)
			}
			rep.RequireFinal(f)
			want := tc.want[f]
			if want < 0 {
				if !rep.OK() {
					t.Errorf("%s, finality %d: %v", tc.name, f, rep.Problems)
				}
				continue
			}
			if len(rep.Problems) != 1 || rep.Problems[0].Kind != ProblemUnfinished || rep.Problems[0].Offset != want || rep.Problems[0].Instance != "gw-test" {
				t.Errorf("%s, finality %d: want one unfinished problem at offset %d, got %v", tc.name, f, want, rep.Problems)
			}
			var out bytes.Buffer
			if err := rep.WriteText(&out); err != nil || !strings.Contains(out.String(), "PROBLEM unfinished") || !strings.Contains(out.String(), "FAILED") {
				t.Errorf("%s, finality %d: report text does not name the problem:\n%s", tc.name, f, out.String())
			}
		}
	}
	for in, want := range map[string]Finality{"": FinalNone, "none": FinalNone, "ended": FinalEnded, "all": FinalAll} {
		if got, err := ParseFinality(in); err != nil || got != want {
			t.Errorf("ParseFinality(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseFinality("latest"); err == nil {
		t.Error("ParseFinality accepted an unknown value")
	}
}
