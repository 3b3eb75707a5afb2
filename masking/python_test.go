package masking

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hamba/avro/v2"

	"github.com/sluice-gw/sluice/schema"
)

// TestThirdPartyDecoder decodes masked records with Apache Avro's Python
// library (Debian python3-avro, installed by make test-deps).
func TestThirdPartyDecoder(t *testing.T) {
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import avro.io").Run(); err != nil {
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
			for i, line := range lines {
				var py map[string]any
				if err := json.Unmarshal([]byte(line), &py); err != nil {
					t.Fatal(err)
				}
				var gv map[string]any
				if err := avro.Unmarshal(s.Avro, masked[i], &gv); err != nil {
					t.Fatal(err)
				}
				comparePy(t, i, "", py, gv)
			}
		})
	}
}

// comparePy compares the Python decoding with hamba's on strings, numbers,
// booleans and nulls, recursing into records, arrays and maps. Logical types
// are compared by presence (the two libraries format them differently).
func comparePy(t *testing.T, rec int, path string, py, gv any) {
	t.Helper()
	if m, ok := gv.(map[string]any); ok {
		if pm, ok := py.(map[string]any); ok {
			// A hamba union wrapper {"type.Name": v} vs Python's bare v.
			if len(m) == 1 && len(pm) != 1 {
				for _, v := range m {
					comparePy(t, rec, path, py, v)
				}
				return
			}
			for k, v := range m {
				if _, ok := pm[k]; !ok && len(m) == 1 {
					comparePy(t, rec, path, py, v)
					return
				}
				comparePy(t, rec, path+"."+k, pm[k], v)
			}
			return
		}
		if len(m) == 1 {
			for _, v := range m {
				comparePy(t, rec, path, py, v)
			}
			return
		}
	}
	switch g := gv.(type) {
	case []any:
		pa, ok := py.([]any)
		if !ok || len(pa) != len(g) {
			t.Fatalf("record %d %s: python %v, hamba %v", rec, path, py, gv)
		}
		for i := range g {
			comparePy(t, rec, path+"[]", pa[i], g[i])
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
	default: // logical types, fixed
		if py == nil {
			t.Fatalf("record %d %s: python nil, hamba %v", rec, path, gv)
		}
	}
}
