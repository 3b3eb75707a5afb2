package harness

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.yaml.in/yaml/v3"
)

// Timeouts of the gateway's life cycle.
const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
)

// Gateway is a running sluice subprocess.
type Gateway struct {
	// Bootstrap is the client-facing bootstrap address.
	Bootstrap string
	// Admin is the admin HTTP address (/metrics, /healthz, /readyz).
	Admin string
	// ConfigFile is the YAML file the gateway was started with.
	ConfigFile string
	// Config is what was written to ConfigFile.
	Config map[string]any

	cmd  *exec.Cmd
	logs *SyncBuffer
	done chan struct{}
	err  error // set before done closes
}

// ModuleRoot returns the repository root (where go.mod lives).
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// SluiceBin returns $SLUICE_BIN, or builds ./cmd/sluice once per test binary
// into a temporary directory.
func SluiceBin(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("SLUICE_BIN"); b != "" {
		return b
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "sluice")
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/sluice")
		cmd.Dir = ModuleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/sluice: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("harness: %v", buildErr)
	}
	return builtBin
}

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago.
// The port is chosen below the kernel's ephemeral range, so it cannot be
// taken in the meantime by an outgoing connection or by a listener on port
// 0 (kfake, the gateway's per-broker listeners); it is never handed out
// twice by one test binary.
func FreeAddr(t testing.TB) string {
	t.Helper()
	lo, _ := ephemeralRange()
	for attempt := 0; attempt < 200; attempt++ {
		port := 0 // an unusual ephemeral range: let the kernel choose
		if lo > 11000 {
			port = 10000 + rand.IntN(lo-10000)
		}
		freeMu.Lock()
		used := handedOut[port]
		freeMu.Unlock()
		if used {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		ln.Close()
		_, ps, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(ps)
		freeMu.Lock()
		handedOut[p] = true
		freeMu.Unlock()
		return addr
	}
	t.Fatalf("harness: no free port found")
	return ""
}

var (
	freeMu    sync.Mutex
	handedOut = map[int]bool{}
)

// ephemeralRange reads the kernel's ephemeral port range (default
// 32768-60999).
func ephemeralRange() (int, int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768, 60999
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768, 60999
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return 32768, 60999
	}
	return lo, hi
}

// GatewayConfig returns the base configuration StartGateway writes: the
// gateway in front of c on free loopback ports, per-broker ports ephemeral.
func GatewayConfig(t testing.TB, c *Cluster) map[string]any {
	brokers := make([]any, 0, 3)
	for _, a := range c.Addrs() {
		brokers = append(brokers, a)
	}
	return map[string]any{
		"listen":           FreeAddr(t),
		"advertised_host":  "127.0.0.1",
		"broker_port_base": 0,
		"admin_listen":     FreeAddr(t),
		"max_frame_bytes":  100 << 20,
		"shutdown_timeout": "10s",
		"upstream":         map[string]any{"brokers": brokers},
		"log":              map[string]any{"level": "debug", "format": "json"},
	}
}

// Merge deep-merges src into dst: nested maps merge, anything else replaces.
func Merge(dst, src map[string]any) map[string]any {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = Merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

// StartGateway runs sluice in front of c with GatewayConfig merged with
// extra, waits until /readyz answers 200, and stops it with SIGTERM when the
// test ends, failing the test unless it exits 0 within 15s. Its log goes to
// the test log if the test failed (or SLUICE_E2E_LOGS is set).
func StartGateway(t testing.TB, c *Cluster, extra map[string]any, env ...string) *Gateway {
	t.Helper()
	cfg := Merge(GatewayConfig(t, c), extra)
	g, err := startGateway(t, cfg, env, c)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func startGateway(t testing.TB, cfg map[string]any, env []string, c *Cluster) (*Gateway, error) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sluice.yaml")
	raw, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("harness: marshal gateway config: %v", err)
	}
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		return nil, fmt.Errorf("harness: %v", err)
	}
	bootstrap, _ := cfg["listen"].(string)
	admin, _ := cfg["admin_listen"].(string)
	g, err := startProcess(t, c, bootstrap, admin, env, "--config", file)
	if g != nil {
		g.Config = cfg
	}
	return g, err
}

// StartGatewayArgs runs `sluice run args...` in front of c (args must set
// --listen and --admin-listen, and usually --config or --upstream), waits
// for /readyz and stops it at cleanup like StartGateway.
func StartGatewayArgs(t testing.TB, c *Cluster, args ...string) *Gateway {
	t.Helper()
	var bootstrap, admin string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--listen":
			bootstrap = args[i+1]
		case "--admin-listen":
			admin = args[i+1]
		}
	}
	if bootstrap == "" || admin == "" {
		t.Fatal("harness: StartGatewayArgs needs --listen and --admin-listen")
	}
	g, err := startProcess(t, c, bootstrap, admin, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func startProcess(t testing.TB, c *Cluster, bootstrap, admin string, env []string, args ...string) (*Gateway, error) {
	g := &Gateway{
		Bootstrap: bootstrap,
		Admin:     admin,
		logs:      &SyncBuffer{},
		done:      make(chan struct{}),
	}
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--config" {
			g.ConfigFile = args[i+1]
		}
	}
	g.cmd = exec.Command(SluiceBin(t), append([]string{"run"}, args...)...)
	g.cmd.Stdout = g.logs
	g.cmd.Stderr = g.logs
	g.cmd.Env = append(os.Environ(), env...)
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("harness: start sluice: %v", err)
	}
	if c != nil {
		c.RegisterOwner(g.cmd.Process.Pid, "gateway")
	}
	go func() {
		g.err = g.cmd.Wait()
		close(g.done)
	}()
	t.Cleanup(func() {
		g.stop(t)
		if t.Failed() || os.Getenv("SLUICE_E2E_LOGS") != "" {
			var cfg []byte
			if g.ConfigFile != "" {
				cfg, _ = os.ReadFile(g.ConfigFile)
			}
			t.Logf("sluice run %s\nconfig:\n%s\nsluice log:\n%s", strings.Join(args, " "), cfg, g.logs.String())
		}
	})
	if err := g.waitReady(); err != nil {
		return g, err
	}
	return g, nil
}

// PID is the gateway's process id.
func (g *Gateway) PID() int { return g.cmd.Process.Pid }

// Logs returns what the gateway has logged so far.
func (g *Gateway) Logs() string { return g.logs.String() }

// Exited reports whether the process has exited.
func (g *Gateway) Exited() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

func (g *Gateway) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	client := &http.Client{Timeout: time.Second}
	url := "http://" + g.Admin + "/readyz"
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-g.done:
			return fmt.Errorf("harness: sluice exited before ready: %v\n%s", g.err, g.logs.String())
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("harness: sluice not ready after %v (last /readyz: %s)\n%s", readyTimeout, last, g.logs.String())
}

// Stop sends SIGTERM and waits for the exit; it returns the process error
// (nil for exit status 0). Calling it twice is harmless.
func (g *Gateway) Stop() error {
	if !g.Exited() {
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-g.done:
		return g.err
	case <-time.After(stopTimeout):
		_ = g.cmd.Process.Kill()
		<-g.done
		return fmt.Errorf("harness: sluice did not exit within %v of SIGTERM", stopTimeout)
	}
}

func (g *Gateway) stop(t testing.TB) {
	already := g.Exited()
	start := time.Now()
	if err := g.Stop(); err != nil && !already {
		t.Errorf("sluice shutdown: %v", err)
	}
	t.Logf("sluice stopped in %v", time.Since(start).Round(time.Millisecond))
}

// Brokers asks the gateway for metadata (with franz-go) and returns the
// advertised address of every broker by node id.
func (g *Gateway) Brokers(t testing.TB) map[int32]string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(g.Bootstrap))
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("harness: metadata through the gateway: %v", err)
	}
	out := make(map[int32]string, len(resp.Brokers))
	for _, b := range resp.Brokers {
		out[b.NodeID] = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
	}
	return out
}

// AssertGatewayAddrs fails the test unless every address is the gateway's
// bootstrap or a socket the gateway process listens on, and none is a kfake
// broker.
func (g *Gateway) AssertGatewayAddrs(t testing.TB, c *Cluster, addrs []string) {
	t.Helper()
	if len(addrs) == 0 {
		t.Errorf("client reported no broker address")
	}
	for _, a := range addrs {
		if c != nil && c.IsBrokerAddr(a) {
			t.Errorf("client was given upstream broker address %s", a)
			continue
		}
		if a == g.Bootstrap {
			continue
		}
		ok, err := ListeningPID(g.PID(), a)
		if err != nil {
			t.Errorf("checking %s: %v", a, err)
		} else if !ok {
			t.Errorf("client was given %s, which the gateway does not listen on", a)
		}
	}
}

// Metrics fetches /metrics.
func (g *Gateway) Metrics(t testing.TB) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + g.Admin + "/metrics")
	if err != nil {
		t.Fatalf("harness: /metrics: %v", err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return b.String()
}

// SortedValues returns m's values sorted.
func SortedValues(m map[int32]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// SyncBuffer is a buffer safe to write from one goroutine (a child
// process's output) while another reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ConfigDecodes runs `sluice run --config file --listen not-an-address` from
// the repository root: the binary decodes the whole file with its own strict
// loader, then stops at validating the listen flag. It returns "" when the
// file decoded, or sluice's error otherwise.
func ConfigDecodes(t testing.TB, file string) string {
	t.Helper()
	cmd := exec.Command(SluiceBin(t), "run", "--config", file, "--listen", "not-an-address", "--admin-listen", "")
	cmd.Dir = ModuleRoot()
	out, _ := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if strings.Contains(s, `listen: "not-an-address"`) {
		return ""
	}
	if s == "" {
		s = "sluice accepted an invalid listen address"
	}
	return s
}
