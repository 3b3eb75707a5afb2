package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluice-gw/sluice/test/harness"
)

func dialRawErr(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, time.Second)
}

// TestRunWithFlagsOnly runs `sluice run --upstream ...` without a file.
func TestRunWithFlagsOnly(t *testing.T) {
	t.Parallel()
	requireAvailable(t, kcatClient{})
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(3, "e2e-flags"))
	gw := harness.StartGatewayArgs(t, cluster,
		"--upstream", strings.Join(cluster.Addrs(), ","),
		"--listen", harness.FreeAddr(t),
		"--advertised-host", "127.0.0.1",
		"--admin-listen", harness.FreeAddr(t),
	)
	ctx := context.Background()
	addrs := kcatClient{}.metadata(ctx, t, gw.Bootstrap)
	if len(addrs) != 3 {
		t.Errorf("kcat saw %v, want 3 brokers", addrs)
	}
	gw.AssertGatewayAddrs(t, cluster, addrs)
	cluster.AssertOnlyGateway(t)
}

// TestInvalidConfig checks that a bad configuration stops sluice at start
// with a message naming the key at fault.
func TestInvalidConfig(t *testing.T) {
	t.Parallel()
	bin := harness.SluiceBin(t)
	base := "listen: 127.0.0.1:0\nadmin_listen: \"\"\nupstream:\n  brokers: [\"127.0.0.1:1\"]\n"
	for _, tc := range []struct {
		name, yaml, wantKey string
		args                []string
	}{
		{"unknown key", base + "colour: red\n", "colour", nil},
		{"inline password", base[:len(base)-1] + "\n  sasl: {mechanism: PLAIN, username: u, password: hunter2}\n", "password", nil},
		{"no upstream", "listen: 127.0.0.1:0\nadmin_listen: \"\"\n", "upstream.brokers", nil},
		{"bad upstream", "listen: 127.0.0.1:0\nadmin_listen: \"\"\nupstream:\n  brokers: [\"kafka\"]\n", "upstream.brokers", nil},
		{"bad sasl mechanism", base + "  sasl: {mechanism: GSSAPI, username: u, password_env: X}\n", "upstream.sasl.mechanism", nil},
		{"missing password env", base + "  sasl: {mechanism: PLAIN, username: u, password_env: SLUICE_E2E_UNSET_VARIABLE}\n", "password_env", nil},
		{"bad frame size", base + "max_frame_bytes: -1\n", "max_frame_bytes", nil},
		{"bad sasl frame size", base + "max_sasl_frame_bytes: 0\n", "max_sasl_frame_bytes", nil},
		{"bad log level", base + "log: {level: loud}\n", "log.level", nil},
		{"bad listen flag", base, "listen", []string{"--listen", "nonsense"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "sluice.yaml")
			if err := os.WriteFile(file, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"run", "--config", file}, tc.args...)
			r := harness.Run(context.Background(), 15*time.Second, bin, args...)
			if r.ExitCode <= 0 {
				t.Fatalf("sluice accepted the config (or hung): %s", r)
			}
			if !strings.Contains(r.Stderr+r.Stdout, tc.wantKey) {
				t.Errorf("error does not name %q: %s", tc.wantKey, r)
			}
		})
	}
}

// freeRun returns a loopback port p such that p..p+n are all free.
func freeRun(t *testing.T, n int) int {
	t.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		_, ps, _ := net.SplitHostPort(harness.FreeAddr(t))
		p, _ := strconv.Atoi(ps)
		if p+n > 65535 {
			continue
		}
		ok := true
		for i := 0; i <= n && ok; i++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+i))
			if err != nil {
				ok = false
				continue
			}
			ln.Close()
		}
		if ok {
			return p
		}
	}
	t.Skip("no run of free ports found")
	return 0
}

// TestDev runs `sluice dev` (on free ports instead of 9092), uses it with
// kcat, and stops it with Ctrl-C.
func TestDev(t *testing.T) {
	t.Parallel()
	requireAvailable(t, kcatClient{})
	port := freeRun(t, 3)
	boot := "127.0.0.1:" + strconv.Itoa(port)
	admin := harness.FreeAddr(t)
	cmd := exec.Command(harness.SluiceBin(t), "dev", "--listen", boot, "--advertised-host", "127.0.0.1", "--admin-listen", admin,
		"--registry-listen", harness.FreeAddr(t))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("sluice dev output:\n%s", out.String())
		}
	}()

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("sluice dev exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluice dev not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	ctx := context.Background()
	k := kcatClient{}
	// The dev gateway requires SASL; the demo principals are printed at
	// start. acme may read "demo", globex may not, and both read the
	// Avro "payments" topic masked by their own grant.
	as := func(user string) []string {
		return []string{"-b", boot, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-512",
			"-X", "sasl.username=" + user, "-X", "sasl.password=" + user + "-demo", "-m", "10"}
	}
	for _, user := range []string{"acme-analyst", "globex-analyst"} {
		if !strings.Contains(out.String(), user) {
			t.Errorf("sluice dev does not print the demo principal %s", user)
		}
	}
	r := k.run(ctx, t, "", append(as("acme-analyst"), "-L", "-J")...)
	var md struct {
		Brokers []struct {
			Name string `json:"name"`
		} `json:"brokers"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &md); err != nil {
		t.Fatalf("kcat -L -J: %v\n%s", err, r.Stdout)
	}
	if len(md.Brokers) != 3 {
		t.Errorf("dev cluster has %v, want 3 brokers", md.Brokers)
	}
	for _, b := range md.Brokers {
		_, ps, _ := net.SplitHostPort(b.Name)
		p, _ := strconv.Atoi(ps)
		if p <= port || p > port+3 {
			t.Errorf("dev broker %s is not on a port next to the bootstrap %d", b.Name, port)
		}
	}
	r = k.run(ctx, t, "", append(as("acme-analyst"), "-C", "-t", "demo", "-o", "beginning", "-e", "-J")...)
	if got := kcatValues(t, r.Stdout); len(got) != 5 || !strings.Contains(got[0], "hello") {
		t.Errorf("acme consumed %q from the dev demo topic, want its 5 greetings", got)
	}
	denied := harness.Run(ctx, harness.DefaultClientTimeout, "kcat", append(as("globex-analyst"), "-C", "-t", "demo", "-o", "beginning", "-e")...)
	if denied.OK() || !strings.Contains(denied.Stderr, "authorization failed") {
		t.Errorf("globex was not denied the demo topic:\n%s", denied)
	}
	for _, user := range []string{"acme-analyst", "globex-analyst"} {
		r = k.run(ctx, t, "", append(as(user), "-C", "-t", "payments", "-o", "beginning", "-e", "-c", "20")...)
		if strings.Contains(r.Stdout, "-52-") || !strings.Contains(r.Stdout, "EUR") {
			t.Errorf("%s: payments not delivered, or an SSN in clear:\n%q", user, r.Stdout)
		}
	}
	if !strings.Contains(out.String(), "kcat -b") {
		t.Errorf("sluice dev does not print how to connect")
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("sluice dev exit after Ctrl-C: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("sluice dev did not stop within 15s of Ctrl-C")
	}
}

// TestCommands runs the binary's offline subcommands: version, policy test
// (the example policy passes; a failing test and a directory without tests
// exit non-zero), policy eval on the example inputs (acme allowed, globex
// denied with its reason), and `sluice run` with a policy whose Rego tests
// fail (run_tests_on_load is on by default: it does not start).
func TestCommands(t *testing.T) {
	t.Parallel()
	bin := harness.SluiceBin(t)
	root := harness.ModuleRoot()
	failing := t.TempDir()
	for name, text := range map[string]string{
		"p.rego":      "package sluice.authz\ndefault decision := {\"allow\": true, \"reason\": \"open\"}\n",
		"p_test.rego": "package sluice.authz_test\nimport data.sluice.authz\ntest_closed if { not authz.decision.allow }\n",
	} {
		if err := os.WriteFile(filepath.Join(failing, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	untested := t.TempDir()
	if err := os.WriteFile(filepath.Join(untested, "p.rego"), []byte("package sluice.authz\ndefault decision := {\"allow\": false}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runCfg := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(runCfg, []byte("listen: 127.0.0.1:0\nadmin_listen: \"\"\nupstream:\n  brokers: [\"127.0.0.1:1\"]\npolicy:\n  dir: "+failing+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eval := func(input string) []string {
		return []string{"policy", "eval", "--policy-dir", filepath.Join(root, "configs", "policies"),
			"--data-dir", filepath.Join(root, "configs", "data"), "--input", filepath.Join(root, "configs", "policies", "inputs", input)}
	}
	versionLine := regexp.MustCompile(`^sluice \S+\n$`)
	for _, tc := range []struct {
		name   string
		args   []string
		ok     bool
		want   []string // in stdout (stderr for failures)
		stdout *regexp.Regexp
	}{
		{"version", []string{"version"}, true, nil, versionLine},
		{"--version", []string{"--version"}, true, nil, versionLine},
		{"policy test example", []string{"policy", "test", filepath.Join(root, "configs", "policies")}, true, []string{"PASS: "}, nil},
		{"policy test failing", []string{"policy", "test", failing}, false, []string{"test_closed", "FAIL"}, nil},
		{"policy test without tests", []string{"policy", "test", untested}, false, []string{"no Rego test found"}, nil},
		{"policy test missing dir", []string{"policy", "test", filepath.Join(untested, "nope")}, false, []string{"nope"}, nil},
		{"policy eval acme", eval("acme-reads-demo.json"), true, []string{`"allow": true`, `"reason": "grant g-acme-demo"`, `"grant_id": "g-acme-demo"`}, nil},
		{"policy eval globex", eval("globex-reads-demo.json"), true, []string{`"allow": false`, `"reason": "no grant for topic demo"`}, nil},
		{"run with failing rego tests", []string{"run", "--config", runCfg}, false, []string{"rego tests failed", "test_closed"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := harness.Run(context.Background(), 30*time.Second, bin, tc.args...)
			if r.OK() != tc.ok || r.ExitCode < 0 {
				t.Fatalf("exit %d, want success %v:\n%s", r.ExitCode, tc.ok, r)
			}
			out := r.Stdout
			if !tc.ok {
				out += r.Stderr
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, r)
				}
			}
			if tc.stdout != nil && !tc.stdout.MatchString(r.Stdout) {
				t.Errorf("stdout %q does not match %s", r.Stdout, tc.stdout)
			}
		})
	}
}
