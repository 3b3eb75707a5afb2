package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/schema"
	"github.com/sluice-gw/sluice/test/harness"
)

// maskedSchema is a flat 10-field record (as masking's BenchmarkPlan10);
// the bench partner's grant masks 3 of its fields.
const maskedSchema = `{"type":"record","name":"Flat","namespace":"sluice.bench","fields":[
 {"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"ssn","type":"string"},
 {"name":"account","type":"string"},{"name":"amount","type":"double"},{"name":"mcc","type":"string"},
 {"name":"region","type":"string"},{"name":"email","type":["null","string"]},{"name":"ts","type":"long"},
 {"name":"ok","type":"boolean"}]}`

const maskedGrant = `[{"id": "g-bench", "org": "bench", "pattern": "bench.masked*", "purpose": "analytics", "classification": "internal",
 "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2100-01-01T00:00:00Z",
 "mask": [{"field": "ssn", "strategy": "redact"}, {"field": "account", "strategy": "partial"}, {"field": "email", "strategy": "null"}]}]`

const benchSSN = "123-45-6789" // every record's ssn, masked through the gateway

// BenchmarkMaskedConsume compares consuming an Avro topic (flat 10-field
// records in the Confluent wire format) directly from the cluster with
// consuming it through the gateway as a partner whose grant masks 3 of the
// 10 fields (redact, partial, null), uncompressed and lz4; and, as a
// reference, through the same gateway as an admin (authn and policy, no
// masking: the raw path). The records are produced once per codec straight
// to the cluster; every round consumes all of them with the same franz-go
// client settings in each variant, in alternating order.
func BenchmarkMaskedConsume(b *testing.B) {
	if onlyVariant != "" && !strings.Contains(onlyVariant, "masked") {
		b.Skip("SLUICE_BENCH_VARIANTS selects no masked variant")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pinSelf(b)
	kf, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(6))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(kf.Close) // after the gateways' cleanups, as in BenchmarkGateway
	reg, err := schema.StartEmbedded("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()

	dir := b.TempDir()
	creds := filepath.Join(dir, "users.yaml")
	if err := authntest.WriteCredentials(creds,
		authntest.User{Name: "bench-partner", Password: "bench-pw", Org: "bench", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}},
		authntest.User{Name: "bench-admin", Password: "bench-pw", Org: "sluice", Roles: []string{"admin"}},
	); err != nil {
		b.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		b.Fatal(err)
	}
	for name, body := range map[string]string{
		"partners.json": `{"bench": {"name": "Bench", "active": true, "purposes": ["analytics"], "max_classification": "internal"}}`,
		"topics.json":   `{"bench.masked*": {"classification": "internal"}}`,
		"grants.json":   maskedGrant,
	} {
		if err := os.WriteFile(filepath.Join(data, name), []byte(body), 0o600); err != nil {
			b.Fatal(err)
		}
	}

	codecs := []struct {
		name  string
		codec kgo.CompressionCodec
	}{{"none", kgo.NoCompression()}, {"lz4", kgo.Lz4Compression()}}
	mb := map[string]float64{} // topic -> MB of record values
	n := 0
	for _, c := range codecs {
		topic := "bench.masked." + c.name
		ss, err := sr.NewClient(sr.URLs(reg.URL()))
		if err != nil {
			b.Fatal(err)
		}
		sch, err := ss.CreateSchema(ctx, schema.ValueSubject(topic), sr.Schema{Type: sr.TypeAvro, Schema: maskedSchema})
		if err != nil {
			b.Fatal(err)
		}
		n, mb[topic] = produceMasked(b, ctx, kf.ListenAddrs(), topic, sch.ID, c.codec)
	}

	gwConfig := fmt.Sprintf(`listeners: [{sasl: [PLAIN]}]
authn: {credentials_file: %s}
policy: {dir: %s, data_dir: %s}
schema_registry: {url: %s}
masking: {}
`, creds, filepath.Join(harness.ModuleRoot(), "configs", "policies"), data, reg.URL())
	g := startGateway(b, kf.ListenAddrs(), gwConfig)
	gws := map[string]*gateway{g.boot: g}
	var alt *gateway // SLUICE_BENCH_ALT_BIN: masked-<codec>-alt through another build
	if altBin != "" {
		alt = startGatewayBin(b, altBin, kf.ListenAddrs(), gwConfig)
		gws[alt.boot] = alt
	}

	type mvariant struct {
		name, codec string
		boot        string
		opts        []kgo.Opt
		masked      bool
	}
	var vs []mvariant
	for _, c := range codecs {
		vs = append(vs,
			mvariant{"direct-" + c.name, c.name, kf.ListenAddrs()[0], nil, false},
			mvariant{"gateway-" + c.name, c.name, g.boot, []kgo.Opt{kgo.SASL(plain.Auth{User: "bench-admin", Pass: "bench-pw"}.AsMechanism())}, false},
			mvariant{"masked-" + c.name, c.name, g.boot, []kgo.Opt{kgo.SASL(plain.Auth{User: "bench-partner", Pass: "bench-pw"}.AsMechanism())}, true},
		)
		if alt != nil {
			vs = append(vs, mvariant{"masked-" + c.name + "-alt", c.name, alt.boot, []kgo.Opt{kgo.SASL(plain.Auth{User: "bench-partner", Pass: "bench-pw"}.AsMechanism())}, true})
		}
	}
	type series struct{ mbs, cpu, fetchMs []float64 }
	all := map[string]*series{}
	for _, v := range vs {
		all[v.name] = &series{}
	}
	// A warm-up pass (not recorded): connections, metadata, the gateway's
	// policy decisions and masking plans, the cluster's first reads. It
	// runs as the measured phases do, with this process's collector off,
	// so the heap those phases grow into is already mapped: the first
	// phase to grow it (direct-none of round 0) otherwise ran at a tenth
	// of its speed (63-84 MB/s against 800), and its ratio skewed every
	// "x direct" of the run.
	for _, v := range vs {
		quiet(func() float64 {
			_, secs := consumeAll(b, ctx, v.boot, "bench.masked."+v.codec, n, v.masked, v.opts...)
			return secs
		})
	}
	for r := 0; r < rounds; r++ {
		order := append([]mvariant{}, vs...)
		if r%2 == 1 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		for _, v := range order {
			topic := "bench.masked." + v.codec
			wait := func() {}
			vg := gws[v.boot] // nil for direct
			if profileDir != "" && r == 0 && vg != nil {
				wait = vg.profile(b, v.name, envInt("SLUICE_BENCH_PROFILE_SECS", 4))
			}
			cpu0, ft0, fn0 := 0.0, 0.0, 0.0
			if vg != nil {
				cpu0 = vg.cpuSeconds(b)
				ft0, fn0 = vg.fetchTime(b)
			}
			var timed int
			secs := quiet(func() float64 {
				var secs float64
				timed, secs = consumeAll(b, ctx, v.boot, topic, n, v.masked, v.opts...)
				return secs
			})
			wait()
			s := all[v.name]
			mbs := mb[topic] * float64(timed) / float64(n) / secs
			s.mbs = append(s.mbs, mbs)
			cpu, fetchMs := 0.0, 0.0
			if vg != nil {
				cpu = (vg.cpuSeconds(b) - cpu0) * 1000 / mb[topic]
				s.cpu = append(s.cpu, cpu)
				if ft, fn := vg.fetchTime(b); fn > fn0 {
					fetchMs = (ft - ft0) * 1000 / (fn - fn0)
					s.fetchMs = append(s.fetchMs, fetchMs)
				}
			}
			b.Logf("round %d %-12s consume %7.1f MB/s cpu %.3f ms/MB, %.2f ms per fetch in the gateway", r, v.name, mbs, cpu, fetchMs)
		}
	}

	var out strings.Builder
	fmt.Fprintf(&out, "\n%d rounds, %d records (%.1f MB of values) per codec: flat 10-field Avro, 3 fields masked (redact, partial, null), 3-broker kfake, franz-go\n",
		rounds, n, mb["bench.masked.none"])
	fmt.Fprintf(&out, "%-14s %12s %12s %14s %16s\n", "variant", "consume MB/s", "consume x", "cpu ms/MB", "gateway ms/fetch")
	for _, v := range vs {
		s := all[v.name]
		d := all["direct-"+v.codec]
		x := pairedRatio(s.mbs, d.mbs)
		cpu, fetchMs := "-", "-"
		if len(s.cpu) > 0 {
			cpu = fmt.Sprintf("%.3f", median(s.cpu))
		}
		if len(s.fetchMs) > 0 {
			fetchMs = fmt.Sprintf("%.2f", median(s.fetchMs))
		}
		fmt.Fprintf(&out, "%-14s %12.1f %12.3f %14s %16s\n", v.name, median(s.mbs), x, cpu, fetchMs)
		if !strings.HasPrefix(v.name, "direct") {
			b.ReportMetric(x, v.name+"-consume-x")
			b.ReportMetric(median(s.cpu), v.name+"-cpu-ms/MB")
		}
	}
	for _, v := range vs {
		if base, ok := strings.CutSuffix(v.name, "-alt"); ok {
			a, o := all[v.name], all[base]
			fmt.Fprintf(&out, "%s against %s: consume %.3fx, gateway CPU per MB %.3fx, time per fetch in the gateway %.3fx\n", v.name, base,
				pairedRatio(a.mbs, o.mbs), pairedRatio(a.cpu, o.cpu), pairedRatio(a.fetchMs, o.fetchMs))
		}
	}
	if rss := g.peakRSS(); rss > 0 {
		fmt.Fprintf(&out, "gateway peak RSS %.0f MiB (gateway and masked rows)", rss)
		if alt != nil {
			fmt.Fprintf(&out, ", -alt %.0f MiB (masked rows only)", alt.peakRSS())
		}
		out.WriteString("\n")
	}
	fmt.Print(out.String())
}

// produceMasked produces produceMB of flat 10-field Avro records straight to
// the cluster with codec, and returns the record count and the MB of values.
func produceMasked(b *testing.B, ctx context.Context, brokers []string, topic string, id int, codec kgo.CompressionCodec) (int, float64) {
	b.Helper()
	s, err := avro.Parse(maskedSchema)
	if err != nil {
		b.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.AllowAutoTopicCreation(), kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchCompression(codec), kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20),
		kgo.MaxBufferedRecords(1<<16))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	target := produceMB << 20
	total, n := 0, 0
	var firstErr error
	for total < target {
		email := fmt.Sprintf("user%d@example.com", n)
		body, err := avro.Marshal(s, map[string]any{
			"id": int64(n), "name": "Grace Hopper", "ssn": benchSSN, "account": fmt.Sprintf("DE89%018d", n),
			"amount": float64(n) / 100, "mcc": "5411", "region": "EU", "email": &email, "ts": int64(1700000000000 + n), "ok": n%2 == 0,
		})
		if err != nil {
			b.Fatal(err)
		}
		v := schema.AppendWire(nil, id, body)
		total += len(v)
		n++
		cl.Produce(ctx, &kgo.Record{Value: v}, func(_ *kgo.Record, err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return n, float64(total) / 1e6
}

// consumeAll reads all n records of topic from the start and returns the
// seconds it took. When masked, every record's ssn must be redacted.
func consumeAll(b *testing.B, ctx context.Context, boot, topic string, n int, masked bool, opts ...kgo.Opt) (timed int, secs float64) {
	b.Helper()
	cl := newClient(b, boot, append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(8 << 20), kgo.FetchMaxPartitionBytes(4 << 20)}, opts...)...)
	defer cl.Close()
	ssn := []byte(benchSSN)
	got, clear := 0, 0
	poll := func() {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			b.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if bytes.Contains(r.Value, ssn) {
				clear++
			}
		})
		got += fs.NumRecords()
	}
	// As in runOnce, the clock starts once the first fetch is in: the
	// connections' setup (SASL) is not the throughput measured.
	poll()
	untimed := got
	start := time.Now()
	for got < n {
		poll()
	}
	secs = time.Since(start).Seconds()
	switch {
	case masked && clear > 0:
		b.Fatalf("%s: %d of %d records carry the ssn in clear through the masked variant", topic, clear, n)
	case !masked && clear != n:
		b.Fatalf("%s: %d of %d records carry the ssn in clear, want all (unmasked variant)", topic, clear, n)
	}
	return got - untimed, secs
}
