// Package bench measures the gateway against the cluster it fronts, in one
// run with alternating rounds, so that the noisy 2-core machines compare
// like with like. Run it with `make bench`; docs/benchmarks.md holds the
// figures and the command.
package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-gw/sluice/test/harness"
)

const (
	recordSize = 1024
)

var (
	rounds      = envInt("SLUICE_BENCH_ROUNDS", 7)
	produceMB   = envInt("SLUICE_BENCH_MB", 1024)
	rttSamples  = envInt("SLUICE_BENCH_RTT", 2000)
	fetchMB     = envInt("SLUICE_BENCH_FETCH_MB", 8) // consumer fetch size (half per partition)
	onlyVariant = os.Getenv("SLUICE_BENCH_VARIANTS") // comma list; default all
	// profileDir, if set, receives a CPU profile of every gateway process
	// over the whole run (<variant>.pprof), for `go tool pprof`.
	profileDir = os.Getenv("SLUICE_BENCH_PROFILE")
	// altBin, if set, adds "<variant>-alt" for every gateway variant:
	// the same variant run by another sluice binary, to compare two builds
	// in one run (the machines are too noisy to compare runs).
	altBin = os.Getenv("SLUICE_BENCH_ALT_BIN")
)

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

// variant is one way of reaching the cluster.
type variant struct {
	name  string
	extra string // YAML appended to the gateway config; "-" means direct
	// setup, if set, runs once before the gateway starts and returns more
	// YAML and the options every bench client of the variant needs (SASL).
	setup func(b *testing.B) (extra string, clientOpts []kgo.Opt)
	bin   string // the sluice binary; SLUICE_BIN if empty
}

// variants are what `make bench` compares. Rows for later features are
// added next to "gateway" as they land (policy, policy+audit:
// audit_bench_test.go).
var variants = []variant{
	{name: "direct", extra: "-"},
	{name: "gateway"},
}

type gateway struct {
	cmd   *exec.Cmd
	boot  string
	admin string
}

func startGateway(b *testing.B, upstream []string, extra string) *gateway {
	return startGatewayBin(b, harness.SluiceBin(b), upstream, extra)
}

func startGatewayBin(b *testing.B, bin string, upstream []string, extra string) *gateway {
	b.Helper()
	dir := b.TempDir()
	g := &gateway{boot: harness.FreeAddr(b), admin: harness.FreeAddr(b)}
	cfg := fmt.Sprintf(`listen: %s
advertised_host: 127.0.0.1
broker_port_base: 0
admin_listen: %s
upstream:
  brokers: [%s]
log: {level: warn, format: json}
%s`, g.boot, g.admin, strings.Join(upstream, ", "), extra)
	file := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	argv := pinnedCommand(b, []string{bin, "run", "--config", file})
	g.cmd = exec.Command(argv[0], argv[1:]...)
	g.cmd.Stdout, g.cmd.Stderr = os.Stderr, os.Stderr
	if profileDir != "" {
		g.cmd.Env = append(os.Environ(), "SLUICE_PPROF=1")
	}
	if err := g.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = g.cmd.Process.Signal(os.Interrupt)
		_ = g.cmd.Wait()
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + g.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return g
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatal("gateway not ready")
	return nil
}

// profile collects a CPU profile of the gateway for secs seconds into
// profileDir/name.pprof; the returned func waits for it.
func (g *gateway) profile(b *testing.B, name string, secs int) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", g.admin, secs))
		if err != nil {
			b.Logf("profile %s: %v", name, err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(profileDir, strings.ReplaceAll(name, "+", "-")+".pprof"))
		if err != nil {
			b.Logf("profile %s: %v", name, err)
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}()
	return func() { <-done }
}

// fetchTime reads the gateway's sluice_proxy_gateway_duration_seconds
// histogram for Fetch: the seconds Fetch exchanges spent in the gateway
// itself (from the response's first byte to its last written, masking
// included) and how many there were.
func (g *gateway) fetchTime(b *testing.B) (secs, count float64) {
	resp, err := http.Get("http://" + g.admin + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	const h = "sluice_proxy_gateway_duration_seconds"
	v, _ := lineAfter(string(raw), h+`_sum{api="Fetch"} `)
	secs, _ = strconv.ParseFloat(v, 64)
	v, _ = lineAfter(string(raw), h+`_count{api="Fetch"} `)
	count, _ = strconv.ParseFloat(v, 64)
	return secs, count
}

// lineAfter returns the rest of text's first line that starts with prefix.
func lineAfter(text, prefix string) (string, bool) {
	for line := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return strings.TrimSuffix(rest, "\n"), true
		}
	}
	return "", false
}

// cpuSeconds is the gateway process's user+system CPU time, to the
// nanosecond where the platform's process CPU clock can be read
// (processCPU), else in the 10 ms ticks of /proc/<pid>/stat: a phase of the
// 512 MiB bench moves about 1 GB, so a tick is 0.01 ms/MB, a fifth of what
// the policy filter costs.
func (g *gateway) cpuSeconds(b *testing.B) float64 {
	if s, ok := processCPU(g.cmd.Process.Pid); ok {
		return s
	}
	return procTicks(b, g.cmd.Process.Pid)
}

// peakRSS is the gateway process's peak resident set in MiB (VmHWM of
// /proc/<pid>/status), or 0 where there is no such file.
func (g *gateway) peakRSS() float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", g.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	v, ok := lineAfter(string(raw), "VmHWM:")
	if !ok {
		return 0
	}
	kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
	return kb / 1024
}

// procTicks is a process's user and system time from /proc/<pid>/stat, in
// its 10 ms ticks.
func procTicks(tb testing.TB, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 (1-based) of the whole line.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

type result struct {
	produceMBs, consumeMBs float64
	rtt                    []time.Duration
	cpuPerMB               float64 // ms of gateway CPU per MB moved
}

func newClient(b *testing.B, boot string, opts ...kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(boot), kgo.AllowAutoTopicCreation()}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	return cl
}

// runOnce produces produceMB of 1 KiB records with acks=all, consumes them
// back, and measures sequential produce round trips.
func runOnce(b *testing.B, boot, topic string, cpu func() float64, clientOpts ...kgo.Opt) result {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n := produceMB << 10
	// Random bytes and no compression: every byte of a record crosses
	// the gateway as it was produced (franz-go's default, snappy, shrank
	// a patterned value twentyfold on the wire, which hid the gateway's
	// per-byte cost and kept produce requests below the cut-through size).
	value := make([]byte, recordSize)
	rand.New(rand.NewSource(int64(len(topic)))).Read(value)

	prod := newClient(b, boot, append(clientOpts[:len(clientOpts):len(clientOpts)], kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(1<<16),
		kgo.ProducerBatchCompression(kgo.NoCompression()))...)
	defer prod.Close()
	// Warm up metadata and a connection to every broker before the clock
	// starts: a connection's setup is not what the phases measure (under
	// SASL SCRAM the client's key derivation alone is about 2 ms, 1-2% of
	// a 256 MiB phase). The sticky partitioner picks a partition per
	// batch and each synchronous record is a batch, so warmRecords of them
	// reach all three brokers but for a chance of 3*(2/3)^24.
	const warmRecords = 24
	for range warmRecords {
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr(); err != nil {
			b.Fatal(err)
		}
	}
	var failed atomic.Int64
	cpu0 := cpu()
	start := time.Now()
	for i := 0; i < n; i++ {
		prod.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	produceSecs := time.Since(start).Seconds()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d produce failures", f)
	}

	cons := newClient(b, boot, append(clientOpts[:len(clientOpts):len(clientOpts)], kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(int32(fetchMB)<<20), kgo.FetchMaxPartitionBytes(int32(fetchMB)<<19))...)
	defer cons.Close()
	// The consume clock starts once the first fetch is in (metadata and
	// the first connections made), and times what comes after it.
	got := 0
	poll := func() {
		fs := cons.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			b.Fatal(err)
		}
		got += fs.NumRecords()
	}
	poll()
	untimed := got
	start = time.Now()
	for got < n+warmRecords {
		poll()
	}
	consumeSecs := time.Since(start).Seconds()
	// Gateway CPU per MB covers the produce and consume phases only, not
	// the round-trip samples below, which move almost no bytes.
	cpuMS := (cpu() - cpu0) * 1000

	rtt := make([]time.Duration, 0, rttSamples)
	small := []byte("ping")
	for i := 0; i < rttSamples; i++ {
		t0 := time.Now()
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: small}).FirstErr(); err != nil {
			b.Fatal(err)
		}
		rtt = append(rtt, time.Since(t0))
	}
	// Free the cluster's memory so later rounds run on the same heap.
	if _, err := kadm.NewClient(prod).DeleteTopics(ctx, topic); err != nil {
		b.Logf("delete %s: %v", topic, err)
	}
	mb := float64(n) * recordSize / 1e6
	consumedMB := float64(got-untimed) * recordSize / 1e6
	return result{produceMBs: mb / produceSecs, consumeMBs: consumedMB / consumeSecs, rtt: rtt, cpuPerMB: cpuMS / (2 * mb)}
}

// pairedRatio is the median over rounds of v[r]/base[r]: each round runs
// every variant back to back, so a round's ratio is taken while the machine
// is in one state, and the median drops the rounds it was not.
func pairedRatio(v, base []float64) float64 {
	rs := make([]float64, 0, len(v))
	for i := range v {
		if i < len(base) && base[i] > 0 {
			rs = append(rs, v[i]/base[i])
		}
	}
	return median(rs)
}

// quiet runs one measured phase with this process's garbage collector
// off, after a collection: the cluster and the load generator share this
// heap, and a collection landing in one variant's phase and not another's
// moved single rounds by 10% and more. The heap grows by a few GiB during
// a phase at most (the machines have 24 GiB) and is collected after it.
func quiet[T any](run func() T) T {
	runtime.GC()
	old := debug.SetGCPercent(-1)
	defer func() {
		debug.SetGCPercent(old)
		runtime.GC()
	}()
	return run()
}

func median(xs []float64) float64 {
	s := append([]float64{}, xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration{}, ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p)]
}

// BenchmarkGateway runs every variant in alternating rounds against one
// 3-broker kfake cluster and reports medians and ratios to direct.
func BenchmarkGateway(b *testing.B) {
	// The cluster and the load generator share this process's heap; fewer
	// GC cycles make rounds comparable (the gateway keeps its defaults).
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	pinSelf(b)
	kf, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(6))
	if err != nil {
		b.Fatal(err)
	}
	// A cleanup, not a defer: the gateways' cleanups, registered later, run first,
	// so they shut down (the audit sink flushing) while the cluster is up.
	b.Cleanup(kf.Close)

	active := variants
	if onlyVariant != "" {
		active = nil
		for _, v := range variants {
			if strings.Contains(","+onlyVariant+",", ","+v.name+",") {
				active = append(active, v)
			}
		}
	}
	if altBin != "" {
		for _, v := range active[:len(active):len(active)] {
			if v.extra != "-" {
				v.name, v.bin = v.name+"-alt", altBin
				active = append(active, v)
			}
		}
	}
	boots := map[string]string{}
	gws := map[string]*gateway{}
	opts := map[string][]kgo.Opt{}
	for _, v := range active {
		if v.extra == "-" {
			boots[v.name] = kf.ListenAddrs()[0]
			continue
		}
		extra := v.extra
		if v.setup != nil {
			more, o := v.setup(b)
			extra, opts[v.name] = extra+"\n"+more, o
		}
		bin := v.bin
		if bin == "" {
			bin = harness.SluiceBin(b)
		}
		g := startGatewayBin(b, bin, kf.ListenAddrs(), extra)
		boots[v.name], gws[v.name] = g.boot, g
	}

	type series struct {
		prod, cons, cpu []float64
		rtt             []time.Duration
	}
	all := map[string]*series{}
	for _, v := range active {
		all[v.name] = &series{}
	}
	// Round -1 warms every path up (connections, pools, the cluster's
	// heap) and is not counted.
	for r := -1; r < rounds; r++ {
		order := append([]variant{}, active...)
		if r%2 != 0 { // alternate the order each round
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		for _, v := range order {
			topic := fmt.Sprintf("bench-%s-%d", strings.ReplaceAll(v.name, "+", "-"), r+1)
			g := gws[v.name]
			cpu := func() float64 { return 0 }
			if g != nil {
				cpu = func() float64 { return g.cpuSeconds(b) }
			}
			wait := func() {}
			if g != nil && profileDir != "" && r == 0 {
				wait = g.profile(b, v.name, envInt("SLUICE_BENCH_PROFILE_SECS", 4))
			}
			res := quiet(func() result { return runOnce(b, boots[v.name], topic, cpu, opts[v.name]...) })
			wait()
			if r < 0 {
				continue
			}
			s := all[v.name]
			s.prod = append(s.prod, res.produceMBs)
			s.cons = append(s.cons, res.consumeMBs)
			s.rtt = append(s.rtt, res.rtt...)
			if g != nil {
				s.cpu = append(s.cpu, res.cpuPerMB)
			}
			b.Logf("round %d %-12s produce %7.1f MB/s consume %7.1f MB/s rtt p50 %v cpu %.3f ms/MB", r, v.name, res.produceMBs, res.consumeMBs, percentile(res.rtt, 0.5), res.cpuPerMB)
		}
	}

	d := all["direct"]
	var out strings.Builder
	fmt.Fprintf(&out, "\n%d rounds, %d MiB of %d-byte records per round, acks=all, 3-broker kfake, franz-go\n", rounds, produceMB, recordSize)
	fmt.Fprintf(&out, "%-13s %12s %12s %12s %12s %10s %10s %14s\n", "variant", "produce MB/s", "consume MB/s", "produce x", "consume x", "rtt p50", "rtt p99", "cpu ms/MB")
	for _, v := range active {
		s := all[v.name]
		px, cx := 1.0, 1.0
		if d != nil && v.name != "direct" {
			px, cx = pairedRatio(s.prod, d.prod), pairedRatio(s.cons, d.cons)
		}
		cpu := "-"
		if len(s.cpu) > 0 {
			cpu = fmt.Sprintf("%.3f", median(s.cpu))
		}
		fmt.Fprintf(&out, "%-13s %12.1f %12.1f %12.3f %12.3f %10v %10v %14s\n", v.name, median(s.prod), median(s.cons), px, cx,
			percentile(s.rtt, 0.5).Round(time.Microsecond), percentile(s.rtt, 0.99).Round(time.Microsecond), cpu)
		if v.name != "direct" && d != nil {
			b.ReportMetric(px, v.name+"-produce-x")
			b.ReportMetric(cx, v.name+"-consume-x")
			b.ReportMetric(float64(percentile(s.rtt, 0.5)-percentile(d.rtt, 0.5))/1e3, v.name+"-rtt-p50-added-us")
			if len(s.cpu) > 0 {
				b.ReportMetric(median(s.cpu), v.name+"-cpu-ms/MB")
			}
		}
	}
	// The issues' relative targets: policy against the bare gateway
	// (issue 3), audit against policy only (issue 4).
	pairs := [][2]string{{"policy", "gateway"}, {"policy+audit", "policy"}}
	for _, v := range active {
		if base, ok := strings.CutSuffix(v.name, "-alt"); ok {
			pairs = append(pairs, [2]string{v.name, base})
		}
	}
	for _, pair := range pairs {
		v, base := all[pair[0]], all[pair[1]]
		if v == nil || base == nil {
			continue
		}
		px, cx := pairedRatio(v.prod, base.prod), pairedRatio(v.cons, base.cons)
		cpu := ""
		if len(v.cpu) > 0 && len(base.cpu) > 0 {
			cpu = fmt.Sprintf(", gateway CPU per MB %.3fx", pairedRatio(v.cpu, base.cpu))
		}
		fmt.Fprintf(&out, "%s against %s: produce %.3fx, consume %.3fx, rtt p50 %+v%s\n", pair[0], pair[1], px, cx,
			(percentile(v.rtt, 0.5) - percentile(base.rtt, 0.5)).Round(time.Microsecond), cpu)
	}
	var rss []string
	for _, v := range active {
		if g := gws[v.name]; g != nil {
			if mib := g.peakRSS(); mib > 0 {
				rss = append(rss, fmt.Sprintf("%s %.0f MiB", v.name, mib))
			}
		}
	}
	if len(rss) > 0 {
		fmt.Fprintf(&out, "gateway peak RSS: %s\n", strings.Join(rss, ", "))
	}
	fmt.Print(out.String())
	_ = net.JoinHostPort
}
