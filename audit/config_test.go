package audit

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
)

func TestDecodeConfig(t *testing.T) {
	cases := []struct {
		name, yaml, err string
		check           func(Config) bool
	}{
		{"defaults", "", "", func(c Config) bool {
			return c.Enabled && c.Topic == "_sluice_audit" && c.FoldWindow == time.Second && c.OnSpoolFull == FailClosed
		}},
		{"full", `
enabled: true
topic: audit
instance_id: gw-1
fold_window: 250ms
queue_size: 100
spool: {dir: /tmp/x, max_bytes: 1048576}
on_spool_full: fail_open
signing: {key_file: /etc/k.pem, interval: 30s}
`, "", func(c Config) bool {
			return c.Topic == "audit" && c.FoldWindow == 250*time.Millisecond && c.Spool.MaxBytes == 1<<20 &&
				c.OnSpoolFull == FailOpen && c.Signing.Interval == 30*time.Second && c.Spool.Dir == "/tmp/x"
		}},
		{"unknown key", "topik: x\n", "field topik not found", nil},
		{"unknown nested key", "spool: {dirr: x}\n", "field dirr not found", nil},
		{"bad policy", "on_spool_full: maybe\n", "on_spool_full", nil},
		{"tiny spool", "spool: {max_bytes: 10}\n", "max_bytes", nil},
		{"bad window", "fold_window: -1s\n", "fold_window", nil},
		{"bad instance", "instance_id: \"gw 1\"\n", "instance_id", nil},
		{"disabled skips checks", "enabled: false\nqueue_size: 0\n", "", func(c Config) bool { return !c.Enabled }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DecodeConfig(strings.NewReader(tc.yaml))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("config %+v", c)
			}
		})
	}
}

func batchBytes(t testing.TB, n int, control bool) []byte {
	t.Helper()
	b := kmsg.RecordBatch{Magic: 2, NumRecords: int32(n), LastOffsetDelta: int32(n - 1), Records: make([]byte, 10*n)}
	if control {
		b.Attributes = 0x20
	}
	b.Length = int32(len(b.AppendTo(nil)) - 12)
	return b.AppendTo(nil)
}

func TestCountBatches(t *testing.T) {
	a, c, d := batchBytes(t, 3, false), batchBytes(t, 1, true), batchBytes(t, 5, false)
	all := append(append(append([]byte(nil), a...), c...), d...)
	cases := []struct {
		name         string
		in           []byte
		recs, nbytes int64
	}{
		{"empty", nil, 0, 0},
		{"one", a, 3, int64(len(a))},
		{"control skipped", append(append([]byte(nil), a...), c...), 3, int64(len(a) + len(c))},
		{"three", all, 8, int64(len(all))},
		{"truncated last batch", all[:len(all)-3], 3, int64(len(a) + len(c))},
		{"garbage", []byte{1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 2, 9}, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, b := filter.CountBatches(tc.in)
			if r != tc.recs || b != tc.nbytes {
				t.Fatalf("got %d records %d bytes, want %d %d", r, b, tc.recs, tc.nbytes)
			}
		})
	}
}

func TestDefaultInstanceID(t *testing.T) {
	id := defaultInstanceID()
	if !validInstance(id) {
		t.Fatalf("default instance id %q is not valid", id)
	}
	if id == defaultInstanceID() {
		t.Fatal("default instance ids are not unique")
	}
}
