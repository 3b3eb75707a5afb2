package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-gw/sluice/schema"
	"github.com/sluice-gw/sluice/test/harness"
)

// maskErrorHeader is the header of a record the gateway could not mask
// (docs/masking.md, failure policy); its value is "<reason>: <detail>".
const maskErrorHeader = "sluice-mask-error"

// unmaskable is a record on a masked Avro topic that the gateway cannot
// mask, and the clear values it carries.
type unmaskable struct {
	key, reason string
	value       []byte
	secrets     []string
}

// unmaskableRecords returns three records that fail masking for different
// reasons, each carrying a demo payment's SSN and account number in clear:
// JSON text (not wire format), a wire-format value with a schema id the
// registry does not know, and the first half of a valid value (the body
// does not decode). The last is an EU payment, so globex's row filter
// cannot drop it either.
func (e *maskEnv) unmaskableRecords(ctx context.Context, t *testing.T, topic string) []unmaskable {
	t.Helper()
	secretsOf := func(i int) []string {
		r := schema.DemoRecord(i)
		return []string{r.Customer.SSN, r.AccountNumber}
	}
	r1 := schema.DemoRecord(1)
	notWire := fmt.Appendf(nil, `{"ssn": %q, "account_number": %q}`, r1.Customer.SSN, r1.AccountNumber)
	unknownID := schema.AppendWire(nil, 9999, e.encode(ctx, t, topic, 2)[5:])
	eu := 4
	for schema.DemoRecord(eu).Region != "EU" {
		eu++
	}
	full := e.encode(ctx, t, topic, eu)
	corrupt := full[:len(full)/2]
	for _, s := range secretsOf(eu)[:1] {
		if !bytes.Contains(corrupt, []byte(s)) {
			t.Fatalf("test setup: the truncated payment %d does not hold its SSN", eu)
		}
	}
	return []unmaskable{
		{"bad-format", "format", notWire, secretsOf(1)},
		{"bad-schema-id", "schema", unknownID, secretsOf(2)},
		{"bad-body", "decode", corrupt, secretsOf(eu)},
	}
}

// failureCounts reads the masking failure counters from the gateway.
func failureCounts(t *testing.T, gw *harness.Gateway) map[string]float64 {
	t.Helper()
	m := parseMetrics(t, gw.Metrics(t))
	out := map[string]float64{}
	for _, r := range []string{"format", "schema", "decode"} {
		out[r] = m[`sluice_masking_failures_total{reason="`+r+`"}`]
	}
	out["error records"] = m[`sluice_masking_records_total{result="error"}`]
	out["failed fetch partitions"] = m[`sluice_masking_partitions_failed_total{api="fetch"}`]
	return out
}

// checkMarker checks what a client got for an unmaskable record: a null
// value and the sluice-mask-error header naming the reason, and none of
// the record's clear values anywhere.
func checkMarker(t *testing.T, what string, u unmaskable, value []byte, valueNull bool, headers map[string]string) {
	t.Helper()
	if !valueNull {
		t.Errorf("%s: %s delivered with a %d-byte value, want null (the marker)", what, u.key, len(value))
	}
	h, ok := headers[maskErrorHeader]
	if !ok {
		t.Errorf("%s: %s has no %s header (headers %v)", what, u.key, maskErrorHeader, headers)
	} else if !strings.HasPrefix(h, u.reason+": ") || len(h) > 256 {
		t.Errorf("%s: %s header %q, want %q and a detail of at most 256 bytes", what, u.key, h, u.reason+": ")
	}
	for _, s := range u.secrets {
		if bytes.Contains(value, []byte(s)) || strings.Contains(h, s) {
			t.Errorf("%s: %s delivered %q in clear", what, u.key, s)
		}
	}
}

// TestMaskingFailureMarker: records on a masked Avro topic that cannot be
// masked (not wire format, unknown schema id, a body that does not decode)
// sit in one batch between valid payments. Every client, as either
// partner, gets the valid payments masked and each bad record as the
// documented marker: a null value with a sluice-mask-error header
// "<reason>: ...", never the clear value; and every consumption counts the
// failures in sluice_masking_failures_total{reason} and
// sluice_masking_records_total{result="error"}. With on_error
// fail_partition the same batch fails the partition instead: the consumer
// gets UNKNOWN_SERVER_ERROR and no record of it.
func TestMaskingFailureMarker(t *testing.T) {
	t.Parallel()
	const topic, strict = "payments.unmaskable", "payments.strict"
	env := startMaskEnv(t, map[string]int32{topic: 1, strict: 1},
		map[string]any{"topics": map[string]any{strict: map[string]any{"on_error": "fail_partition"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)

	bad := env.unmaskableRecords(ctx, t, topic)
	good := []int{0, 3}
	byKey := map[string]unmaskable{}
	for _, u := range bad {
		byKey[u.key] = u
	}
	produce := func(topic string) {
		recs := []*kgo.Record{
			env.demoRecord(ctx, t, topic, good[0]),
			{Topic: topic, Key: []byte(bad[0].key), Value: bad[0].value},
			{Topic: topic, Key: []byte(bad[1].key), Value: bad[1].value},
			env.demoRecord(ctx, t, topic, good[1]),
			{Topic: topic, Key: []byte(bad[2].key), Value: bad[2].value},
		}
		// Linger so that the five records go in one batch.
		if err := env.direct(t, kgo.ProducerLinger(200*time.Millisecond)).ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce to %s: %v", topic, err)
		}
	}
	produce(topic)
	produce(strict)
	if direct, _ := rawFetch(ctx, t, env.direct(t), topic); len(batchHeaders(t, direct[0])) != 1 {
		t.Fatalf("test setup: %s holds %d batches, want the 5 records in one", topic, len(batchHeaders(t, direct[0])))
	}

	// run consumes as p with one client and checks what it got: the good
	// payments with checkDecoded (decoded: the client printed them
	// decoded; else only their keys and bytes are checked), the bad
	// records here. The failure counters must have grown by every bad
	// record.
	run := func(t *testing.T, p partner, client string, decoded bool, consume func(n int) []avroLine) {
		t.Helper()
		want := len(visible(p, good)) + len(bad)
		before := failureCounts(t, env.gw)
		lines := consume(want)
		after := failureCounts(t, env.gw)
		var goodLines []avroLine
		seen := map[string]bool{}
		for _, l := range lines {
			if l.Key == nil {
				t.Errorf("%s as %s: a record without key at offset %d", client, p.name, l.Offset)
				continue
			}
			u, isBad := byKey[*l.Key]
			if !isBad {
				if h, ok := l.Headers[maskErrorHeader]; ok {
					t.Errorf("%s as %s: payment %s has a %s header %q", client, p.name, *l.Key, maskErrorHeader, h)
				}
				goodLines = append(goodLines, l)
				continue
			}
			if seen[u.key] {
				t.Errorf("%s as %s: %s delivered twice", client, p.name, u.key)
			}
			seen[u.key] = true
			var value []byte
			if l.ValueB64 != nil {
				var err error
				if value, err = base64.StdEncoding.DecodeString(*l.ValueB64); err != nil {
					t.Fatal(err)
				}
			}
			if l.Avro != nil {
				t.Errorf("%s as %s: %s decoded to %v", client, p.name, u.key, l.Avro)
			}
			checkMarker(t, client+" as "+p.name, u, value, l.ValueB64 == nil, l.Headers)
		}
		for _, u := range bad {
			if !seen[u.key] {
				t.Errorf("%s as %s: %s was not delivered (the marker lets the rest of the batch flow)", client, p.name, u.key)
			}
		}
		if decoded {
			checkDecoded(t, client+" as "+p.name, p, good, goodLines, env.ids[topic])
		} else {
			checkUndecoded(t, client+" as "+p.name, p, good, goodLines)
		}
		for _, u := range bad {
			if after[u.reason] <= before[u.reason] {
				t.Errorf("%s as %s: sluice_masking_failures_total{reason=%q} stayed at %v", client, p.name, u.reason, after[u.reason])
			}
		}
		if d := after["error records"] - before["error records"]; d < float64(len(bad)) {
			t.Errorf(`%s as %s: sluice_masking_records_total{result="error"} grew by %v, want >= %d`, client, p.name, d, len(bad))
		}
		t.Logf("%s as %s: counters before %v, after %v", client, p.name, before, after)
	}

	for _, p := range []partner{acme, globex} {
		t.Run("franz-go as "+p.name, func(t *testing.T) {
			run(t, p, "franz-go", true, func(n int) []avroLine {
				cl := env.via(t, p, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
				recs := pollKgo(ctx, t, "franz-go as "+p.name, cl, n)
				assertNoMore(ctx, t, "franz-go as "+p.name, cl, 500*time.Millisecond)
				var out []avroLine
				for _, r := range recs {
					key := string(r.Key)
					l := avroLine{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: &key, Headers: map[string]string{}}
					for _, h := range r.Headers {
						l.Headers[h.Key] = string(h.Value)
					}
					if r.Value != nil {
						v := base64.StdEncoding.EncodeToString(r.Value)
						l.ValueB64 = &v
						if _, isBad := byKey[key]; !isBad {
							// checkDecoded wants the decoded payment
							// in the drivers' JSON form.
							l.Avro, l.SchemaID = decodeDemoJSON(ctx, t, env, r.Value)
						}
					}
					out = append(out, l)
				}
				return out
			})
		})
		for _, d := range []harness.Driver{harness.PythonDriver(), harness.KafkaJSDriver()} {
			t.Run(d.Name+" as "+p.name, func(t *testing.T) {
				requireAvailable(t, driverClient{d})
				group := p.org + ".unmaskable-" + strings.ReplaceAll(d.Name, "-", "")
				run(t, p, d.Name, true, func(n int) []avroLine {
					return env.consumeAvro(ctx, t, d, p, topic, group, n)
				})
			})
		}
		t.Run("kcat as "+p.name, func(t *testing.T) {
			requireAvailable(t, kcatClient{})
			run(t, p, "kcat", false, func(n int) []avroLine {
				r := kcatClient{}.run(ctx, t, "", "-b", env.gw.Bootstrap, "-X", "security.protocol=SASL_PLAINTEXT",
					"-X", "sasl.mechanisms=PLAIN", "-X", "sasl.username="+p.user, "-X", "sasl.password="+p.pass,
					"-C", "-t", topic, "-o", "beginning", "-e", "-c", fmt.Sprint(n), "-J", "-m", "10")
				var out []avroLine
				for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
					var m struct {
						Partition int32    `json:"partition"`
						Offset    int64    `json:"offset"`
						Key       *string  `json:"key"`
						Payload   *string  `json:"payload"`
						Headers   []string `json:"headers"` // name, value, name, value...
					}
					if err := json.Unmarshal([]byte(line), &m); err != nil {
						t.Fatalf("kcat -J line %q: %v", line, err)
					}
					l := avroLine{Topic: topic, Partition: m.Partition, Offset: m.Offset, Key: m.Key, Headers: map[string]string{}}
					for i := 0; i+1 < len(m.Headers); i += 2 {
						l.Headers[m.Headers[i]] = m.Headers[i+1]
					}
					if m.Payload != nil {
						// kcat prints the value as text: its bytes
						// are checked, not a decoding (kcat here has
						// no Avro support).
						v := base64.StdEncoding.EncodeToString([]byte(*m.Payload))
						l.ValueB64 = &v
					}
					out = append(out, l)
				}
				return out
			})
		})
	}

	t.Run("fail_partition", func(t *testing.T) {
		before := failureCounts(t, env.gw)
		cl := env.via(t, acme, kgo.ConsumeTopics(strict), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		recs, errs := pollFor(ctx, cl, 10*time.Second, 1)
		if len(recs) != 0 {
			t.Errorf("%s: %d records delivered from a partition that must fail", strict, len(recs))
		}
		if !hasErr(errs, kerr.UnknownServerError) {
			t.Errorf("%s: errors %v, want UNKNOWN_SERVER_ERROR", strict, errs)
		}
		for _, e := range errs {
			if !errors.Is(e, kerr.UnknownServerError) {
				t.Errorf("%s: unexpected error %v", strict, e)
			}
		}
		after := failureCounts(t, env.gw)
		if after["failed fetch partitions"] <= before["failed fetch partitions"] {
			t.Errorf(`sluice_masking_partitions_failed_total{api="fetch"} stayed at %v`, after["failed fetch partitions"])
		}
		if after["format"] <= before["format"] {
			t.Errorf(`sluice_masking_failures_total{reason="format"} stayed at %v`, after["format"])
		}
	})
	if logs := env.gw.Logs(); !strings.Contains(logs, "records delivered with a masking error marker") {
		t.Errorf("the gateway did not log the marked records")
	}
}

// decodeDemoJSON decodes a wire-format demo payment with the test's own
// registry client into the drivers' JSON form.
func decodeDemoJSON(ctx context.Context, t *testing.T, env *maskEnv, v []byte) (any, int) {
	t.Helper()
	id, body, err := schema.ParseWire(v)
	if err != nil {
		t.Fatalf("a good payment is not wire format: %v", err)
	}
	s, err := env.registry.SchemaByID(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var p schema.DemoPayment
	if err := avro.Unmarshal(s.Avro, body, &p); err != nil {
		t.Fatalf("a good payment does not decode: %v", err)
	}
	return paymentJSON(t, p), id
}

// checkUndecoded checks good payments a client printed undecoded: each
// visible one exactly once, carrying p's masked SSN and none of its
// secrets.
func checkUndecoded(t *testing.T, what string, p partner, idx []int, lines []avroLine) {
	t.Helper()
	byID := map[string]int{}
	for _, i := range idx {
		byID[schema.DemoRecord(i).ID] = i
	}
	seen := map[int]bool{}
	for _, l := range lines {
		i, ok := byID[*l.Key]
		if !ok || seen[i] {
			t.Errorf("%s: unexpected or repeated record key %q", what, *l.Key)
			continue
		}
		seen[i] = true
		exp, vis := masked(p, i)
		if !vis {
			t.Errorf("%s: payment %d passed %s's row filter", what, i, p.name)
		}
		if l.ValueB64 == nil {
			t.Errorf("%s: payment %d has a null value (headers %v)", what, i, l.Headers)
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(*l.ValueB64)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(raw, []byte(exp.Customer.SSN)) {
			t.Errorf("%s: payment %d lacks its masked SSN %q", what, i, exp.Customer.SSN)
		}
		if _, ok := l.Headers[maskErrorHeader]; ok {
			t.Errorf("%s: payment %d has a %s header", what, i, maskErrorHeader)
		}
		assertNoSecrets(t, fmt.Sprintf("%s raw value of payment %d", what, i), p, raw, []int{i})
	}
	for _, i := range visible(p, idx) {
		if !seen[i] {
			t.Errorf("%s: payment %d was not delivered", what, i)
		}
	}
}
