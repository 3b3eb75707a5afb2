package audit

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestTailTimeRange: Since is inclusive and Until exclusive, at the
// nanosecond of the event time, alone and combined with other filters;
// an event whose time does not parse matches no time range.
func TestTailTimeRange(t *testing.T) {
	cl := newCluster(t)
	cfg := testConfig(t)
	cfg.Signing.Interval = time.Hour // only the final head, at Close
	env := start(t, cl, cfg)
	f := NewFilter(env.a)
	ctx := context.Background()
	c := testConn(1, alice)
	for _, topic := range []string{"a", "b", "c"} {
		f.OnResponse(ctx, exchange(c, 0, denyTopic(topic)))
		time.Sleep(20 * time.Millisecond)
	}
	env.close(t)

	// The events' own times, as the topic holds them.
	_, evs := events(t, cl)
	at := map[string]time.Time{}
	for _, e := range evs {
		tm, err := e.EventTime()
		if err != nil {
			t.Fatal(err)
		}
		if e.Data.Kind == KindDecision {
			at[e.Data.Resource] = tm
		}
	}
	if len(evs) != 4 || len(at) != 3 || !at["a"].Before(at["b"]) || !at["b"].Before(at["c"]) {
		t.Fatalf("event times %v", at)
	}
	tail := func(f Filter) string {
		var out bytes.Buffer
		if err := Tail(ctx, cl.opts, testTopic, f, &out); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			switch {
			case l == "":
			case strings.Contains(l, " chain_head "):
				got = append(got, "head")
			default:
				i := strings.Index(l, " topic=")
				if i < 0 {
					t.Fatalf("unexpected line %q", l)
				}
				got = append(got, strings.Fields(l[i+len(" topic="):])[0])
			}
		}
		return strings.Join(got, " ")
	}
	ns := time.Nanosecond
	for _, tc := range []struct {
		name string
		f    Filter
		want string
	}{
		{"no range", Filter{}, "a b c head"},
		{"since b", Filter{Since: at["b"]}, "b c head"},
		{"since just after b", Filter{Since: at["b"].Add(ns)}, "c head"},
		{"until b", Filter{Until: at["b"]}, "a"},
		{"until just after b", Filter{Until: at["b"].Add(ns)}, "a b"},
		{"since a until c", Filter{Since: at["a"], Until: at["c"]}, "a b"},
		{"since b until b", Filter{Since: at["b"], Until: at["b"]}, ""},
		{"since a, deny only", Filter{Since: at["a"], Decision: "deny"}, "a b c"},
		{"since c, another topic", Filter{Since: at["c"], Topic: "a"}, ""},
		{"until a, topic a", Filter{Until: at["a"].Add(ns), Topic: "a"}, "a"},
		{"future", Filter{Since: time.Now().Add(time.Hour)}, ""},
		{"in another zone", Filter{Since: at["b"].In(time.FixedZone("x", 2*3600)), Until: at["c"].In(time.FixedZone("y", -5*3600))}, "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tail(tc.f); got != tc.want {
				t.Errorf("Tail(%+v) = %q, want %q", tc.f, got, tc.want)
			}
		})
	}

	bad := *evs[0]
	bad.Time = "yesterday"
	for _, f := range []Filter{{Since: at["a"].Add(-time.Hour)}, {Until: at["c"].Add(time.Hour)}} {
		if f.Match(&bad) {
			t.Errorf("an event with time %q matches %+v", bad.Time, f)
		}
	}
	if f := (Filter{}); !f.Match(&bad) {
		t.Error("without a time range, an event with a bad time does not match")
	}
}
