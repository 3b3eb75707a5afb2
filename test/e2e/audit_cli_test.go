package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.yaml.in/yaml/v3"
)

// TestAuditTailTimeRange runs `sluice audit tail` with --since and --until
// given as RFC 3339 times (the exact nanosecond of an event, in UTC and in
// another zone) and as durations ago, against the events of a session:
// --since is inclusive, --until exclusive, every printed line is inside
// the range and every event inside it is printed; a value that is neither
// a time nor a duration is refused, naming the flag.
func TestAuditTailTimeRange(t *testing.T) {
	t.Parallel()
	e := startAuditEnv(t, map[string]any{"fold_window": "0s"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := e.client(t, audAcme, kgo.DefaultProduceTopic(audInbound))
	for i := 0; i < 4; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
	}
	cl.Close()
	e.settle(t)
	e.stop(t)

	evs := e.events(t)
	if len(evs) < 6 {
		t.Fatalf("only %d events", len(evs))
	}
	times := make([]time.Time, len(evs))
	for i, x := range evs {
		tm, err := x.ev.EventTime()
		if err != nil {
			t.Fatal(err)
		}
		times[i] = tm
	}
	mid := evs[len(evs)/2].ev.Time // RFC 3339 with nanoseconds, UTC
	tm := times[len(evs)/2]
	count := func(in func(time.Time) bool) int {
		n := 0
		for _, x := range times {
			if in(x) {
				n++
			}
		}
		return n
	}
	since := func(x time.Time) bool { return !x.Before(tm) }
	until := func(x time.Time) bool { return x.Before(tm) }
	all := func(time.Time) bool { return true }
	none := func(time.Time) bool { return false }
	east := tm.In(time.FixedZone("UTC+2", 2*3600)).Format(time.RFC3339Nano)
	west := tm.In(time.FixedZone("UTC-7", -7*3600)).Format(time.RFC3339Nano)
	if !strings.HasSuffix(east, "+02:00") || !strings.HasSuffix(west, "-07:00") {
		t.Fatalf("zone formats %s %s", east, west)
	}

	for _, tc := range []struct {
		name string
		args []string
		in   func(time.Time) bool
	}{
		{"since an event", []string{"--since", mid}, since},
		{"until an event", []string{"--until", mid}, until},
		{"since and until the same event", []string{"--since", mid, "--until", mid}, none},
		{"since in another zone", []string{"--since", east}, since},
		{"until in another zone", []string{"--until", west}, until},
		{"since an hour ago", []string{"--since", "1h"}, all},
		{"until an hour ago", []string{"--until", "1h"}, none},
		{"since 1h until 0s ago", []string{"--since", "1h", "--until", "0s"}, all},
		{"since a time to come", []string{"--since", "2100-01-01T00:00:00Z"}, none},
		{"until a time to come, from an event", []string{"--since", mid, "--until", "2100-01-01T00:00:00Z"}, since},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := audSluice(t, append([]string{"audit", "tail", "--upstream", e.upstream(), "--topic", audTopic}, tc.args...)...)
			if !r.OK() {
				t.Fatalf("sluice audit tail: %s", r)
			}
			lines := r.Lines()
			if want := count(tc.in); len(lines) != want {
				t.Fatalf("%d lines, want %d of %d events:\n%s", len(lines), want, len(evs), r.Stdout)
			}
			for _, l := range lines {
				ts, err := time.Parse(time.RFC3339Nano, strings.Fields(l)[0])
				if err != nil {
					t.Fatalf("line without a time: %q", l)
				}
				if !tc.in(ts) {
					t.Errorf("line outside the range: %s", l)
				}
			}
		})
	}
	for _, tc := range []struct{ flag, value string }{
		{"--since", "yesterday"},
		{"--until", "5 minutes"},
		{"--since", "2026-13-01T00:00:00Z"},
		{"--until", "2026-01-01 00:00:00"},
	} {
		r := audSluice(t, "audit", "tail", "--upstream", e.upstream(), "--topic", audTopic, tc.flag, tc.value)
		if r.ExitCode != 1 || !strings.Contains(r.Stderr, "audit tail "+tc.flag+":") || len(r.Lines()) != 0 {
			t.Errorf("tail %s %q: want exit 1 naming the flag and no output, got %s", tc.flag, tc.value, r)
		}
	}
}

// TestAuditVerifyConfig runs `sluice audit verify --config` with the
// gateway's own configuration file: the upstream, the topic and the public
// key (derived from audit.signing.key_file) all come from it. With another
// signing key in the config the signed heads fail; --public-key overrides
// the config's key; `export --config` and an offline `verify --file
// --config` take the same settings.
func TestAuditVerifyConfig(t *testing.T) {
	t.Parallel()
	e := startAuditEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := e.client(t, audAcme, kgo.DefaultProduceTopic(audInbound))
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	e.settle(t)
	e.stop(t)
	cfg := e.gw.ConfigFile

	r := audSluice(t, "audit", "verify", "--config", cfg)
	if !r.OK() || !strings.Contains(r.Stdout, "audit verify: topic "+audTopic+":") || !strings.Contains(r.Stdout, "instance gw-e2e ") ||
		!strings.Contains(r.Stdout, "final true") || !strings.Contains(r.Stdout, "verify: OK") {
		t.Fatalf("verify --config with the gateway's configuration: %s", r)
	}
	if strings.Contains(r.Stdout+r.Stderr, "no public key") {
		t.Errorf("verify --config did not take the public key from audit.signing.key_file: %s", r)
	}

	// The same configuration with another signing key: the heads were
	// not signed with it.
	other := filepath.Join(t.TempDir(), "other.key")
	if k := audSluice(t, "audit", "keygen", "--out", other); !k.OK() {
		t.Fatalf("keygen: %s", k)
	}
	otherCfg := writeConfigVariant(t, e.gw.Config, func(c map[string]any) {
		c["audit"].(map[string]any)["signing"].(map[string]any)["key_file"] = other
	})
	r = audSluice(t, "audit", "verify", "--config", otherCfg)
	if r.ExitCode != 1 || !strings.Contains(r.Stdout, "PROBLEM bad_signature") || !strings.Contains(r.Stdout, "verify: FAILED") {
		t.Errorf("verify --config with another signing key: want exit 1 and bad_signature, got %s", r)
	}
	r = audSluice(t, "audit", "verify", "--config", otherCfg, "--public-key", e.pubKey)
	if !r.OK() || !strings.Contains(r.Stdout, "verify: OK") {
		t.Errorf("--public-key does not override the config's key: %s", r)
	}
	// A config naming another topic, which holds records that are not
	// audit events: verify reads that topic.
	e.seed(t, audLedger, "not-an-event-1", "not-an-event-2")
	elsewhere := writeConfigVariant(t, e.gw.Config, func(c map[string]any) {
		c["audit"].(map[string]any)["topic"] = audLedger
	})
	r = audSluice(t, "audit", "verify", "--config", elsewhere)
	if r.ExitCode != 1 || !strings.Contains(r.Stdout, "audit verify: topic "+audLedger+": 2 records") || !strings.Contains(r.Stdout, "PROBLEM malformed") {
		t.Errorf("verify --config naming topic %s, which holds 2 records that are not audit events: %s", audLedger, r)
	}

	// Export with the config; verify the copy offline with a config that
	// has the key and no upstream at all.
	export := filepath.Join(t.TempDir(), "audit.jsonl")
	if r := audSluice(t, "audit", "export", "--config", cfg, "--out", export); !r.OK() {
		t.Fatalf("export --config: %s", r)
	}
	offline := writeConfigVariant(t, map[string]any{"audit": e.gw.Config["audit"]}, nil)
	r = audSluice(t, "audit", "verify", "--config", offline, "--file", export)
	if !r.OK() || !strings.Contains(r.Stdout, "verify: OK") || strings.Contains(r.Stdout+r.Stderr, "no public key") {
		t.Errorf("offline verify --file with a config holding only the audit section: %s", r)
	}
	if n := len(e.events(t)); !strings.Contains(r.Stdout, "(copy): "+strconv.Itoa(n)+" records") {
		t.Errorf("offline verify did not check the %d exported records: %s", n, r.Stdout)
	}
}

// writeConfigVariant writes a copy of a gateway configuration, changed by
// edit (if not nil), and returns its path.
func writeConfigVariant(t *testing.T, cfg map[string]any, edit func(map[string]any)) string {
	t.Helper()
	raw, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any // a deep copy
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(c)
	}
	if raw, err = yaml.Marshal(c); err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "sluice-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}
