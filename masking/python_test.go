package masking

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"

	"github.com/sluice-gw/sluice/schema"
)

// TestThirdPartyDecoder decodes masked records with Apache Avro's Python
// library (Debian python3-avro, installed by make test-deps).
func TestThirdPartyDecoder(t *testing.T) {
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import avro.io").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s lacks the avro module: %v (test/install-deps.sh installs python3-avro)", py, err)
		}
		t.Skipf("%s lacks the avro module (apt-get install python3-avro): %v", py, err)
	}
	for _, tc := range []struct {
		name   string
		schema string
		bodies func(s *schema.Schema) [][]byte
	}{
		{"demo", schema.DemoPaymentsSchema, func(s *schema.Schema) [][]byte {
			var out [][]byte
			for i := range 40 {
				b, err := avro.Marshal(s.Avro, schema.DemoRecord(i))
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, b)
			}
			return out
		}},
		{"kitchen", kitchenSchema, func(s *schema.Schema) [][]byte { return goldenRecords(t, s) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := parseSchema(t, 1, tc.schema)
			sf := filepath.Join(t.TempDir(), "schema.avsc")
			if err := os.WriteFile(sf, []byte(tc.schema), 0o644); err != nil {
				t.Fatal(err)
			}
			var plans []*Plan
			if tc.name == "demo" {
				plans = append(plans, mustPlan(t, s, demoRules))
			} else {
				for _, rs := range kitchenRules {
					plans = append(plans, mustPlan(t, s, rs))
				}
			}
			var in bytes.Buffer
			var masked [][]byte
			for _, p := range plans {
				for _, body := range tc.bodies(s) {
					out, err := p.AppendMasked(nil, body)
					if err != nil {
						t.Fatal(err)
					}
					masked = append(masked, out)
					in.WriteString(hex.EncodeToString(out) + "\n")
				}
			}
			cmd := exec.Command(py, "testdata/decode.py", sf)
			cmd.Stdin = &in
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("python decoder: %v\n%s", err, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != len(masked) {
				t.Fatalf("python decoded %d records, want %d", len(lines), len(masked))
			}
			kinds := map[string]int{}
			for i, line := range lines {
				var py map[string]any
				if err := json.Unmarshal([]byte(line), &py); err != nil {
					t.Fatal(err)
				}
				var gv map[string]any
				if err := avro.Unmarshal(s.Avro, masked[i], &gv); err != nil {
					t.Fatal(err)
				}
				comparePy(t, i, "", py, gv, kinds)
			}
			// Every logical type of the schema was compared by value (a
			// uuid is a string to both libraries).
			want := []string{"decimal", "time"}
			if tc.name == "kitchen" {
				want = append(want, "fixed")
			}
			for _, k := range want {
				if kinds[k] == 0 {
					t.Errorf("no %s value was compared", k)
				}
			}
			t.Logf("compared logical values: %v", kinds)
		})
	}
}

// comparePy compares the Python decoding with hamba's, by value, recursing
// into records, arrays, maps and unions: strings (and uuids), numbers,
// booleans, nulls, bytes and fixed (hex), decimals (hamba's *big.Rat against
// Python's decimal.Decimal text, exactly), dates and timestamps (hamba's
// time.Time against Python's ISO 8601 text, to the microsecond). kinds
// counts the logical values compared.
func comparePy(t *testing.T, rec int, path string, py, gv any, kinds map[string]int) {
	t.Helper()
	if m, ok := gv.(map[string]any); ok {
		if pm, ok := py.(map[string]any); ok {
			// A hamba union wrapper {"type.Name": v} vs Python's bare v.
			if len(m) == 1 && len(pm) != 1 {
				for _, v := range m {
					comparePy(t, rec, path, py, v, kinds)
				}
				return
			}
			for k, v := range m {
				if _, ok := pm[k]; !ok && len(m) == 1 {
					comparePy(t, rec, path, py, v, kinds)
					return
				}
				comparePy(t, rec, path+"."+k, pm[k], v, kinds)
			}
			if len(pm) != len(m) {
				t.Fatalf("record %d %s: python has %d keys, hamba %d: %v vs %v", rec, path, len(pm), len(m), py, gv)
			}
			return
		}
		if len(m) == 1 {
			for _, v := range m {
				comparePy(t, rec, path, py, v, kinds)
			}
			return
		}
		t.Fatalf("record %d %s: python %v, hamba %v", rec, path, py, gv)
	}
	switch g := gv.(type) {
	case []any:
		pa, ok := py.([]any)
		if !ok || len(pa) != len(g) {
			t.Fatalf("record %d %s: python %v, hamba %v", rec, path, py, gv)
		}
		for i := range g {
			comparePy(t, rec, path+"[]", pa[i], g[i], kinds)
		}
	case string:
		if py != g {
			t.Fatalf("record %d %s: python %q, hamba %q", rec, path, py, g)
		}
	case []byte:
		if py != hex.EncodeToString(g) {
			t.Fatalf("record %d %s: python %v, hamba %x", rec, path, py, g)
		}
	case int, int64, float32, float64:
		var f float64
		switch g := g.(type) {
		case int:
			f = float64(g)
		case int64:
			f = float64(g)
		case float32:
			f = float64(g)
		case float64:
			f = g
		}
		if py != f {
			t.Fatalf("record %d %s: python %v, hamba %v", rec, path, py, g)
		}
	case bool:
		if py != g {
			t.Fatalf("record %d %s: python %v, hamba %v", rec, path, py, g)
		}
	case nil:
		if py != nil {
			t.Fatalf("record %d %s: python %v, hamba nil", rec, path, py)
		}
	case *big.Rat:
		ps, _ := py.(string)
		pr, ok := new(big.Rat).SetString(ps)
		if !ok || pr.Cmp(g) != 0 {
			t.Fatalf("record %d %s: python decimal %v, hamba %s", rec, path, py, g.FloatString(6))
		}
		kinds["decimal"]++
	case time.Time:
		ps, _ := py.(string)
		pt, err := time.Parse(time.RFC3339Nano, ps)
		if err != nil {
			pt, err = time.Parse(time.DateOnly, ps)
		}
		if err != nil || !pt.Equal(g) {
			t.Fatalf("record %d %s: python time %v, hamba %s", rec, path, py, g.Format(time.RFC3339Nano))
		}
		kinds["time"]++
	default:
		v := reflect.ValueOf(gv)
		if v.Kind() != reflect.Array || v.Type().Elem().Kind() != reflect.Uint8 {
			t.Fatalf("record %d %s: hamba value of type %T is not compared (python %v)", rec, path, gv, py)
		}
		b := make([]byte, v.Len())
		reflect.Copy(reflect.ValueOf(b), v)
		if py != hex.EncodeToString(b) {
			t.Fatalf("record %d %s: python fixed %v, hamba %x", rec, path, py, b)
		}
		kinds["fixed"]++
	}
}
