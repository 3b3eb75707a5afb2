package proxy

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// TestResponseRewriteSeeds checks the committed FuzzResponseRewrite seeds
// that are real kfake responses (testdata/fuzz/FuzzResponseRewrite/kfake_*,
// read off the wire at the version in their name): each decodes at its
// version, so the fuzz target does not return early on it, and is
// rewritten to gateway addresses only; together they carry upstream
// endpoints for every rewritten API.
func TestResponseRewriteSeeds(t *testing.T) {
	files, err := filepath.Glob("testdata/fuzz/FuzzResponseRewrite/kfake_*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no kfake seeds: %v", err)
	}
	withEndpoints := map[int16]bool{}
	for _, file := range files {
		key, version, body := readFuzzSeed(t, file)
		if !rewriteNeeded(key, version) {
			t.Errorf("%s: key %d v%d is not rewritten: the fuzz target skips it", file, key, version)
			continue
		}
		resp := kmsg.ResponseForKey(key)
		resp.SetVersion(version)
		if err := resp.ReadFrom(body); err != nil {
			t.Errorf("%s: does not decode at v%d: %v", file, version, err)
			continue
		}
		for _, e := range endpoints(resp) {
			if e.host == "127.0.0.1" && e.port > 0 {
				withEndpoints[key] = true
			}
		}
		rewriteAddresses(resp, fakeAdv{}, newCluster(zap.NewNop()))
		for _, e := range endpoints(roundTrip(t, resp)) {
			if e.host != "gateway.test" && !(key == 10 && e.host == "" && e.port == 0) {
				t.Errorf("%s: endpoint %+v not rewritten", file, e)
			}
		}
	}
	for _, key := range []int16{0, 1, 3, 10, 60} {
		if !withEndpoints[key] {
			t.Errorf("no kfake seed of %s names an upstream broker", kmsg.NameForKey(key))
		}
	}
}

// readFuzzSeed parses a corpus file of (int16, int16, []byte).
func readFuzzSeed(t *testing.T, file string) (int16, int16, []byte) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 4 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s: not a three-value corpus file", file)
	}
	num := func(l string) int16 {
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(l, "int16("), ")"), 10, 16)
		if err != nil {
			t.Fatalf("%s: %q: %v", file, l, err)
		}
		return int16(n)
	}
	body, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[3], "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: body: %v", file, err)
	}
	return num(lines[1]), num(lines[2]), []byte(body)
}
