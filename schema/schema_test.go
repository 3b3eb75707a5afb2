package schema

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

func TestWire(t *testing.T) {
	b := AppendWire(nil, 258, []byte("body"))
	if string(b) != "\x00\x00\x00\x01\x02body" {
		t.Fatalf("AppendWire = %q", b)
	}
	id, body, err := ParseWire(b)
	if err != nil || id != 258 || string(body) != "body" {
		t.Fatalf("ParseWire = %d %q %v", id, body, err)
	}
	for _, bad := range [][]byte{nil, {0, 0, 0}, {1, 0, 0, 0, 1}, {0, 0xff, 0xff, 0xff, 0xff}} {
		if _, _, err := ParseWire(bad); !errors.Is(err, ErrNotWireFormat) {
			t.Errorf("ParseWire(%x) err = %v", bad, err)
		}
	}
	if ValueSubject("t") != "t-value" || KeySubject("t") != "t-key" {
		t.Fatal("subjects")
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, err string
	}{
		{"ok", "url: http://localhost:8081\n", ""},
		{"missing url", "cache_size: 3\n", "url is required"},
		{"bad scheme", "url: ftp://x\n", "must be http"},
		{"unknown key", "url: http://x\nbogus: 1\n", "bogus"},
		{"both auth", "url: http://x\nbasic: {user: u, password_env: P}\nbearer: {token_env: T}\n", "mutually exclusive"},
		{"basic no secret", "url: http://x\nbasic: {user: u}\n", "exactly one"},
		{"bearer two secrets", "url: http://x\nbearer: {token_env: T, token_file: f}\n", "exactly one"},
		{"cert without key", "url: https://x\ntls: {cert_file: c}\n", "go together"},
		{"bad cache", "url: http://x\ncache_size: 0\n", "cache_size"},
		{"bad retries", "url: http://x\nretries: 99\n", "retries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

func newTestRegistry(t *testing.T, opts ...srfake.Option) (*srfake.Registry, *Registry) {
	t.Helper()
	fake := srfake.New(opts...)
	t.Cleanup(fake.Close)
	cfg := DefaultConfig()
	cfg.URL = fake.URL()
	cfg.RetryBackoff = time.Millisecond
	reg, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fake, reg
}

func TestRegistryCacheAndSingleFlight(t *testing.T) {
	fake, reg := newTestRegistry(t)
	id, _, err := fake.RegisterSchema("a-value", sr.Schema{Schema: `{"type":"record","name":"R","fields":[{"name":"x","type":"long"}]}`})
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/schemas/ids/") {
			hits.Add(1)
			time.Sleep(20 * time.Millisecond) // let concurrent lookups pile up
		}
		return false
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := reg.SchemaByID(context.Background(), id)
			if err != nil || s.Avro == nil || s.Avro.Type() != avro.Record {
				t.Errorf("SchemaByID = %v, %v", s, err)
			}
		}()
	}
	wg.Wait()
	if _, err := reg.SchemaByID(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("registry hit %d times, want 1", n)
	}
}

func TestRegistrySameNameDifferentIDs(t *testing.T) {
	fake, reg := newTestRegistry(t)
	id1, _, _ := fake.RegisterSchema("a-value", sr.Schema{Schema: `{"type":"record","name":"Same","fields":[{"name":"x","type":"long"}]}`})
	id2, _, _ := fake.RegisterSchema("b-value", sr.Schema{Schema: `{"type":"record","name":"Same","fields":[{"name":"y","type":"string"},{"name":"z","type":"int"}]}`})
	ctx := context.Background()
	s1, err1 := reg.SchemaByID(ctx, id1)
	s2, err2 := reg.SchemaByID(ctx, id2)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if n := len(s1.Avro.(*avro.RecordSchema).Fields()); n != 1 {
		t.Fatalf("schema %d has %d fields", id1, n)
	}
	if n := len(s2.Avro.(*avro.RecordSchema).Fields()); n != 2 {
		t.Fatalf("schema %d has %d fields", id2, n)
	}
}

func TestRegistryReferences(t *testing.T) {
	fake, reg := newTestRegistry(t)
	if _, _, err := fake.RegisterSchema("addr", sr.Schema{Schema: `{"type":"record","name":"Addr","namespace":"x","fields":[{"name":"city","type":"string"}]}`}); err != nil {
		t.Fatal(err)
	}
	id, _, err := fake.RegisterSchema("p-value", sr.Schema{
		Schema:     `{"type":"record","name":"P","namespace":"x","fields":[{"name":"a","type":"x.Addr"}]}`,
		References: []sr.SchemaReference{{Name: "x.Addr", Subject: "addr", Version: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := reg.SchemaByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	f := s.Avro.(*avro.RecordSchema).Fields()[0]
	if f.Type().(*avro.RecordSchema).FullName() != "x.Addr" {
		t.Fatalf("reference not resolved: %s", f.Type())
	}
}

func TestRegistryRetriesAndNotFound(t *testing.T) {
	fake, reg := newTestRegistry(t)
	id, _, _ := fake.RegisterSchema("a-value", sr.Schema{Schema: `"string"`})
	var fails atomic.Int32
	fails.Store(2)
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if fails.Add(-1) >= 0 {
			http.Error(w, `{"error_code":50001,"message":"boom"}`, http.StatusInternalServerError)
			return true
		}
		return false
	})
	if _, err := reg.SchemaByID(context.Background(), id); err != nil {
		t.Fatalf("after 2 failures and 3 retries: %v", err)
	}
	if _, err := reg.SchemaByID(context.Background(), 999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing id: %v", err)
	}
	fails.Store(100)
	if _, err := reg.Latest(context.Background(), "a-value"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("outage: %v", err)
	}
}

func TestLatestAndIDInSubject(t *testing.T) {
	fake, reg := newTestRegistry(t)
	id1, _, _ := fake.RegisterSchema("a-value", sr.Schema{Schema: `{"type":"record","name":"R","fields":[{"name":"x","type":"long"}]}`})
	id2, _, _ := fake.RegisterSchema("b-value", sr.Schema{Schema: `"string"`})
	ctx := context.Background()
	ss, err := reg.Latest(ctx, "a-value")
	if err != nil || ss.ID != id1 || ss.Version != 1 {
		t.Fatalf("Latest = %+v, %v", ss, err)
	}
	for _, tc := range []struct {
		subject string
		id      int
		want    bool
	}{{"a-value", id1, true}, {"a-value", id2, false}, {"b-value", id2, true}, {"a-value", 999, false}} {
		got, err := reg.IDInSubject(ctx, tc.subject, tc.id)
		if err != nil || got != tc.want {
			t.Errorf("IDInSubject(%s, %d) = %v, %v", tc.subject, tc.id, got, err)
		}
	}
}

func TestEmbeddedSeedDemo(t *testing.T) {
	emb, err := StartEmbedded("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "payments"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("payments"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cfg := DefaultConfig()
	cfg.URL = emb.URL()
	reg, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := SeedDemo(ctx, reg, cl, "payments", 20); err != nil {
		t.Fatal(err)
	}
	var got int
	for got < 20 {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			id, body, err := ParseWire(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			s, err := reg.SchemaByID(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			var p DemoPayment
			if err := avro.Unmarshal(s.Avro, body, &p); err != nil {
				t.Fatal(err)
			}
			if want := DemoRecord(got); p.ID != want.ID || p.Customer.SSN != want.Customer.SSN || p.Amount.Cmp(want.Amount) != 0 {
				t.Fatalf("record %d = %+v, want %+v", got, p, want)
			}
			got++
		})
	}
}

func TestRegistryCallerCancel(t *testing.T) {
	fake, reg := newTestRegistry(t)
	id, _, _ := fake.RegisterSchema("a-value", sr.Schema{Schema: `"string"`})
	release := make(chan struct{})
	fake.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		<-release
		return false
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := reg.SchemaByID(ctx, id)
		done <- err
	}()
	// A second caller shares the flight and outlives the first.
	second := make(chan error, 1)
	go func() {
		_, err := reg.SchemaByID(context.Background(), id)
		second <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-done; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("canceled caller: %v", err)
	}
	close(release)
	if err := <-second; err != nil {
		t.Fatalf("second caller failed with the first: %v", err)
	}
}
