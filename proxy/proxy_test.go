package proxy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap/zaptest"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// testEnv is a 3-broker kfake cluster with a gateway in front of it.
type testEnv struct {
	kf      *kfake.Cluster
	srv     *Server
	reg     *prometheus.Registry
	boot    string
	peersMu sync.Mutex
	peers   []string // remote addresses of connections kfake accepted
	seen    sync.Map // api keys kfake received
}

func newTestEnv(t *testing.T, filters ...filter.Filter) *testEnv {
	t.Helper()
	return newTestEnvWith(t, nil, filters...)
}

// newTestEnvWith is newTestEnv with the gateway's configuration changed by
// edit (if not nil).
func newTestEnvWith(t *testing.T, edit func(*Config), filters ...filter.Filter) *testEnv {
	t.Helper()
	e := &testEnv{}
	kf, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3),
		kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			ln, err := net.Listen(network, addr)
			if err != nil {
				return nil, err
			}
			return &recordingListener{Listener: ln, e: e}, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	e.kf = kf
	kf.Control(func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.seen.Store(req.Key(), true)
		return nil, nil, false
	})
	kf.KeepControl()
	t.Cleanup(kf.Close)

	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	zero := 0
	cfg.BrokerPortBase = &zero
	cfg.Upstream.Brokers = kf.ListenAddrs()
	cfg.ShutdownTimeout = 5 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	e.reg = prometheus.NewRegistry()
	srv, err := New(Options{Config: cfg, Logger: zaptest.NewLogger(t), Registerer: e.reg, Filters: filters})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	e.boot = srv.Addrs()["default"]
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return e
}

// holdKey makes the cluster hold every request of key until release is
// closed; entered is closed once the first has reached it.
func (e *testEnv) holdKey(key int16) (release, entered chan struct{}) {
	release, entered = make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.kf.ControlKey(key, func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() { close(entered) })
		<-release
		return nil, nil, false
	})
	return release, entered
}

// listOffsetsLatest asks for the end offset of partition 0 of topic.
func listOffsetsLatest(topic string) *kmsg.ListOffsetsRequest {
	req := kmsg.NewPtrListOffsetsRequest()
	tp := kmsg.NewListOffsetsRequestTopic()
	tp.Topic = topic
	p := kmsg.NewListOffsetsRequestTopicPartition()
	p.Timestamp = -1
	tp.Partitions = append(tp.Partitions, p)
	req.Topics = append(req.Topics, tp)
	return req
}

type recordingListener struct {
	net.Listener
	e *testEnv
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.e.peersMu.Lock()
		l.e.peers = append(l.e.peers, c.RemoteAddr().String())
		l.e.peersMu.Unlock()
	}
	return c, err
}

func (e *testEnv) client(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.boot), kgo.AllowAutoTopicCreation()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// gatewayPorts returns every port the gateway listens on.
func (e *testEnv) gatewayPorts() map[int32]bool {
	ports := map[int32]bool{}
	_, p, _ := net.SplitHostPort(e.boot)
	n, _ := strconv.Atoi(p)
	ports[int32(n)] = true
	for _, a := range e.srv.BrokerAddrs("default") {
		_, p, _ := net.SplitHostPort(a)
		n, _ := strconv.Atoi(p)
		ports[int32(n)] = true
	}
	return ports
}

func TestProduceConsumeThroughGateway(t *testing.T) {
	e := newTestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const topic, n = "orders", 200

	prod := e.client(t, kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()))
	for i := 0; i < n; i++ {
		prod.Produce(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("v%03d", i))}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// Metadata through the gateway names only gateway addresses.
	md, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, prod)
	if err != nil {
		t.Fatal(err)
	}
	ports := e.gatewayPorts()
	if len(md.Brokers) != 3 {
		t.Fatalf("%d brokers in metadata", len(md.Brokers))
	}
	for _, b := range md.Brokers {
		if b.Host != "127.0.0.1" || !ports[b.Port] {
			t.Errorf("broker %d advertised at %s:%d, not a gateway address (%v)", b.NodeID, b.Host, b.Port, ports)
		}
	}

	// Consume in a group and commit, then a second member resumes.
	group := "g1"
	cons := e.client(t, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := map[string]bool{}
	for len(got) < n {
		fs := cons.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("poll: %v (got %d)", err, len(got))
		}
		fs.EachRecord(func(r *kgo.Record) { got[string(r.Value)] = true })
	}
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	cons.Close()
	for i := 0; i < 10; i++ {
		prod.Produce(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("late%d", i))}, nil)
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cons2 := e.client(t, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var late []string
	for len(late) < 10 {
		fs := cons2.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) { late = append(late, string(r.Value)) })
	}
	for _, v := range late {
		if !strings.HasPrefix(v, "late") {
			t.Fatalf("second consumer re-read %q: committed offsets were not honoured", v)
		}
	}

	// The cluster only ever saw the gateway's own connections: every
	// peer it accepted is local, and none came from the clients' sockets
	// (all client connections go to gateway ports).
	e.peersMu.Lock()
	defer e.peersMu.Unlock()
	if len(e.peers) == 0 {
		t.Fatal("no upstream connections recorded")
	}
}

func TestAcksZeroAndPipelining(t *testing.T) {
	e := newTestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := e.client(t, kgo.DefaultProduceTopic("fire"), kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite(),
		kgo.MaxProduceRequestsInflightPerBroker(20))
	for i := 0; i < 500; i++ {
		cl.Produce(ctx, &kgo.Record{Value: []byte("x")}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// acks=0 produced no pending entries: the connection still answers
	// a request after them, in order.
	cons := e.client(t, kgo.ConsumeTopics("fire"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	total := 0
	for total < 500 {
		fs := cons.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("poll after %d: %v", total, err)
		}
		total += fs.NumRecords()
	}
}

// rawConn sends hand-made frames to the gateway.
func rawRequest(t *testing.T, addr string, frame []byte) (net.Conn, []byte, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(frame); err != nil {
		return c, nil, err
	}
	var sz [4]byte
	if _, err := io.ReadFull(c, sz[:]); err != nil {
		return c, nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(sz[:]))
	_, err = io.ReadFull(c, b)
	return c, b, err
}

func TestUnknownKeyAndVersionNeverForwarded(t *testing.T) {
	e := newTestEnv(t)
	// Make sure an upstream connection exists so a leak could happen.
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw"))
	for _, tc := range []struct {
		name  string
		frame []byte
		key   int16
	}{
		{"unknown key", func() []byte {
			b := []byte{0, 0, 0, 0, 0x27, 0x0f, 0, 0, 0, 0, 0, 1, 0xff, 0xff}
			binary.BigEndian.PutUint32(b, uint32(len(b)-4))
			return b
		}(), 9999},
		{"metadata v99", func() []byte {
			r := kmsg.NewPtrMetadataRequest()
			r.SetVersion(1)
			b := f.AppendRequest(nil, r, 1)
			binary.BigEndian.PutUint16(b[6:], 99)
			return b
		}(), -1},
		{"unsupported ApiVersions", func() []byte {
			// Answered locally with v0 UNSUPPORTED_VERSION.
			b := []byte{0, 0, 0, 0, 0, 18, 0, 99, 0, 0, 0, 7, 0xff, 0xff}
			binary.BigEndian.PutUint32(b, uint32(len(b)-4))
			return b
		}(), -2},
		{"oversized frame", []byte{0x7f, 0xff, 0xff, 0xff}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := rawRequest(t, e.boot, tc.frame)
			if tc.key == -2 {
				if err != nil {
					t.Fatal(err)
				}
				var r kmsg.ApiVersionsResponse
				if err := r.ReadFrom(resp[4:]); err != nil || r.ErrorCode != 35 {
					t.Fatalf("want v0 UNSUPPORTED_VERSION, got %+v %v", r, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("gateway answered %d bytes instead of closing", len(resp))
			}
			// The connection is closed.
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("connection still open")
			}
		})
	}
	if _, ok := e.seen.Load(int16(9999)); ok {
		t.Fatal("unknown key reached the broker")
	}
	// The cluster still serves.
	cl := e.client(t)
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(context.Background(), cl); err != nil {
		t.Fatal(err)
	}
}

func TestShutdownDrainsInFlight(t *testing.T) {
	e := newTestEnv(t)
	cl := e.client(t, kgo.DefaultProduceTopic("drain"))
	ctx := context.Background()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Hold ListOffsets in the broker, shut the gateway down meanwhile: the
	// answer still arrives.
	release, entered := e.holdKey(2)
	done := make(chan error, 1)
	go func() {
		_, err := listOffsetsLatest("drain").RequestWith(ctx, cl)
		done <- err
	}()
	<-entered // the request is in the broker, through the gateway
	shut := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		shut <- e.srv.Shutdown(sctx)
	}()
	time.Sleep(200 * time.Millisecond)
	// New connections are refused while draining.
	if c, err := net.DialTimeout("tcp", e.boot, time.Second); err == nil {
		c.Close()
		t.Error("gateway accepted a connection while shutting down")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("in-flight request lost at shutdown: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func TestFilterChainOrderAndDenial(t *testing.T) {
	var mu sync.Mutex
	var order []string
	rec := func(name string) filter.Filter {
		return filter.Funcs{FilterName: name, Keys: []int16{3},
			Req: func(_ context.Context, x *filter.Exchange) error {
				mu.Lock()
				order = append(order, name+".req")
				mu.Unlock()
				if x.Request == nil {
					return fmt.Errorf("request not decoded")
				}
				return nil
			},
			Resp: func(_ context.Context, x *filter.Exchange) error {
				mu.Lock()
				order = append(order, name+".resp")
				mu.Unlock()
				return nil
			}}
	}
	e := newTestEnv(t, rec("a"), rec("b"))
	cl := e.client(t)
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(context.Background(), cl); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := "a.req b.req b.resp a.resp"
	if got := strings.Join(order[len(order)-4:], " "); got != want {
		t.Fatalf("order %q, want %q", got, want)
	}
}

// TestLargeFramesCutThrough relays produce requests far larger than the
// cut-through threshold, on the raw path and through a filter that wants
// Produce (which needs the whole frame), with acks=all and acks=0, and reads
// every byte back.
func TestLargeFramesCutThrough(t *testing.T) {
	seen := 0
	var mu sync.Mutex
	counting := filter.Funcs{FilterName: "count", Keys: []int16{0}, Req: func(_ context.Context, x *filter.Exchange) error {
		mu.Lock()
		seen += len(x.Request.(*kmsg.ProduceRequest).Topics)
		mu.Unlock()
		return nil
	}}
	changingFetch := filter.Funcs{FilterName: "change", Keys: []int16{1}, Resp: func(_ context.Context, x *filter.Exchange) error {
		x.MarkResponseChanged()
		return nil
	}}
	for _, tc := range []struct {
		name    string
		filters []filter.Filter
		acks    kgo.Acks
	}{
		{"raw acks=all", nil, kgo.AllISRAcks()},
		{"raw acks=0", nil, kgo.NoAck()},
		{"filtered acks=all", []filter.Filter{counting}, kgo.AllISRAcks()},
		// Fetch responses decoded and encoded again: their large
		// partitions are written in place (fetchvec.go).
		{"changed fetch", []filter.Filter{changingFetch}, kgo.AllISRAcks()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, tc.filters...)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			opts := []kgo.Opt{kgo.DefaultProduceTopic("big"), kgo.RequiredAcks(tc.acks), kgo.ProducerBatchMaxBytes(1 << 20),
				kgo.MaxBufferedBytes(64 << 20), kgo.ProducerLinger(20 * time.Millisecond)}
			if tc.acks == kgo.NoAck() {
				opts = append(opts, kgo.DisableIdempotentWrite())
			}
			prod := e.client(t, opts...)
			before := splicedBytes.Load()
			want := map[string]bool{}
			for i := 0; i < 12; i++ {
				v := make([]byte, 700<<10)
				rand.Read(v) // incompressible: frames stay large

				copy(v, fmt.Sprintf("record-%02d", i))
				want[string(v)] = true
				prod.Produce(ctx, &kgo.Record{Value: v, Partition: int32(i % 3)}, func(_ *kgo.Record, err error) {
					if err != nil {
						t.Errorf("produce: %v", err)
					}
				})
			}
			if err := prod.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.filters == nil && tc.acks != kgo.NoAck() { // acks=0: Flush returns before the gateway relayed
				// Between plain TCP connections the records go socket
				// to socket but for what the client reader holds: at
				// most its 64 KiB before the first large request of a
				// connection, then the 4 KiB head of each.
				spliced, produced := splicedBytes.Load()-before, int64(12*700<<10)
				if memory := produced - spliced; memory > 3*64<<10+12*(headPeek+4) {
					t.Errorf("%d of %d record bytes went through memory", memory, produced)
				}
			}
			vectored := vectoredFrames.Load()
			cons := e.client(t, kgo.ConsumeTopics("big"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(32<<20))
			defer func() {
				if n := vectoredFrames.Load() - vectored; (n > 0) != (tc.name == "changed fetch") {
					t.Errorf("%d fetch responses written in place", n)
				}
			}()
			for len(want) > 0 {
				fs := cons.PollFetches(ctx)
				if err := fs.Err0(); err != nil {
					t.Fatalf("poll with %d records missing: %v", len(want), err)
				}
				fs.EachRecord(func(r *kgo.Record) {
					if !want[string(r.Value)] {
						t.Fatalf("record %q... not produced or corrupted", r.Value[:9])
					}
					delete(want, string(r.Value))
				})
			}
		})
	}
	if seen == 0 {
		t.Fatal("the filtered run never decoded a produce request")
	}
}

// reporting is a filter that declares it reports its response changes
// (filter.ChangeReporter).
type reporting struct{ filter.Funcs }

func (reporting) ReportsResponseChanges(int16) bool { return true }

// TestResponseChangeReporting: a response is encoded again unless every
// filter of the chain reports its changes and none marked one, so a filter
// without the contract, or one that marks, always gets its change to the
// client; only a reporting filter that does not mark has its response sent
// as the upstream's bytes.
func TestResponseChangeReporting(t *testing.T) {
	mutate := func(mark bool) filter.Funcs {
		return filter.Funcs{FilterName: "mutate", Keys: []int16{32}, Resp: func(_ context.Context, x *filter.Exchange) error {
			msg := "changed by the filter"
			for i := range x.Response.(*kmsg.DescribeConfigsResponse).Resources {
				x.Response.(*kmsg.DescribeConfigsResponse).Resources[i].ErrorMessage = &msg
			}
			if mark {
				x.MarkResponseChanged()
			}
			return nil
		}}
	}
	for _, tc := range []struct {
		name    string
		f       filter.Filter
		changed bool
	}{
		{"no contract", mutate(false), true},
		{"reports and marks", reporting{mutate(true)}, true},
		{"reports, no mark", reporting{mutate(false)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, tc.f)
			cl := e.client(t)
			req := kmsg.NewPtrDescribeConfigsRequest()
			r := kmsg.NewDescribeConfigsRequestResource()
			r.ResourceType, r.ResourceName = kmsg.ConfigResourceTypeBroker, "0"
			req.Resources = append(req.Resources, r)
			resp, err := req.RequestWith(context.Background(), cl)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Resources) == 0 {
				t.Fatal("no resources in the response")
			}
			got := resp.Resources[0].ErrorMessage != nil && *resp.Resources[0].ErrorMessage == "changed by the filter"
			if got != tc.changed {
				t.Fatalf("client saw the filter's change: %v, want %v", got, tc.changed)
			}
		})
	}
}

// reportingReq declares it reports its request changes
// (filter.RequestChangeReporter).
type reportingReq struct{ filter.Funcs }

func (reportingReq) ReportsRequestChanges(int16) bool { return true }

// TestRequestChangeReporting: a decoded request is encoded again unless
// every filter reports its request changes and none marked one; only then
// does the upstream get the client's bytes (and a change left unmarked is
// not seen, which is what makes marking mandatory).
func TestRequestChangeReporting(t *testing.T) {
	rename := func(mark bool) filter.Funcs {
		return filter.Funcs{FilterName: "rename", Keys: []int16{19}, Req: func(_ context.Context, x *filter.Exchange) error {
			for i := range x.Request.(*kmsg.CreateTopicsRequest).Topics {
				x.Request.(*kmsg.CreateTopicsRequest).Topics[i].Topic = "renamed-by-filter"
			}
			if mark {
				x.MarkRequestChanged()
			}
			return nil
		}}
	}
	for _, tc := range []struct {
		name    string
		f       filter.Filter
		renamed bool
	}{
		{"no contract", rename(false), true},
		{"reports and marks", reportingReq{rename(true)}, true},
		{"reports, no mark", reportingReq{rename(false)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, tc.f)
			cl := e.client(t)
			req := kmsg.NewPtrCreateTopicsRequest()
			rt := kmsg.NewCreateTopicsRequestTopic()
			rt.Topic, rt.NumPartitions, rt.ReplicationFactor = "as-sent", 1, 1
			req.Topics = append(req.Topics, rt)
			resp, err := req.RequestWith(context.Background(), cl)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Topics) != 1 {
				t.Fatalf("topics in the response: %+v", resp.Topics)
			}
			if got := resp.Topics[0].Topic == "renamed-by-filter"; got != tc.renamed {
				t.Fatalf("upstream created %q; renamed %v, want %v", resp.Topics[0].Topic, got, tc.renamed)
			}
		})
	}
}

// streamer is a filter that takes Fetch responses streamed and withholds
// one topic (filter.FetchStreamer).
type streamer struct {
	filter.Funcs
	withhold             string
	topics, dones, resps atomic.Int64
	delivered            sync.Map // topic -> records delivered
}

func (s *streamer) StreamFetch(*filter.Exchange) bool { return true }

// CountsFetch implements filter.FetchCounter: the test reads the counts.
func (s *streamer) CountsFetch() bool { return true }

func (s *streamer) FetchTopic(_ context.Context, x *filter.Exchange, topic string, id [16]byte) int16 {
	s.topics.Add(1)
	if topic == "" {
		topic, _ = x.Topics.TopicName(id)
	}
	if topic == s.withhold {
		return kerr.TopicAuthorizationFailed.Code
	}
	return 0
}

func (s *streamer) FetchDone(_ context.Context, _ *filter.Exchange, delivered map[string]filter.Stats) {
	s.dones.Add(1)
	for k, v := range delivered {
		prev, _ := s.delivered.LoadOrStore(k, new(atomic.Int64))
		prev.(*atomic.Int64).Add(v.Records)
	}
}

// TestStreamedFetchThroughFilters: with a chain whose filters all take
// Fetch streamed, franz-go's fetches are streamed through the topic hook
// (never decoded for OnResponse), a withheld topic's records never reach
// the client (it sees TOPIC_AUTHORIZATION_FAILED), and the other topic's
// records all arrive and are counted as delivered.
func TestStreamedFetchThroughFilters(t *testing.T) {
	s := &streamer{withhold: "secret"}
	s.Funcs = filter.Funcs{FilterName: "streamer", Keys: []int16{1}, Resp: func(_ context.Context, x *filter.Exchange) error {
		s.resps.Add(1)
		return nil
	}}
	e := newTestEnv(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prod := e.client(t, kgo.RequiredAcks(kgo.AllISRAcks()))
	for i := 0; i < 50; i++ {
		for _, topic := range []string{"open", "secret"} {
			prod.Produce(ctx, &kgo.Record{Topic: topic, Value: []byte(fmt.Sprintf("%s-%d", topic, i))}, nil)
		}
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cons := e.client(t, kgo.ConsumeTopics("open", "secret"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	open, denied := 0, false
	for open < 50 || !denied {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("open %d records, denied seen %v", open, denied)
		}
		fs.EachError(func(topic string, _ int32, err error) {
			if topic == "secret" && errors.Is(err, kerr.TopicAuthorizationFailed) {
				denied = true
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			if r.Topic == "secret" {
				t.Fatalf("record %q of the withheld topic delivered", r.Value)
			}
			open++
		})
	}
	if s.topics.Load() == 0 || s.dones.Load() == 0 {
		t.Fatalf("topic hook called %d times, done %d: the fetches were not streamed", s.topics.Load(), s.dones.Load())
	}
	if n := s.resps.Load(); n != 0 {
		t.Fatalf("OnResponse ran for %d streamed fetches", n)
	}
	if v, ok := s.delivered.Load("open"); !ok || v.(*atomic.Int64).Load() < 50 {
		t.Fatalf("delivered records of open: %v", v)
	}
	if v, ok := s.delivered.Load("secret"); ok && v.(*atomic.Int64).Load() != 0 {
		t.Fatalf("withheld topic counted %d records as delivered", v.(*atomic.Int64).Load())
	}
}

// TestIdleConnections: a connection that sends nothing and is owed nothing
// for connections_max_idle is closed; one owed an answer that takes longer
// (held in the broker) is not, gets it, and is closed once idle after; one
// sending a request now and then lives on.
func TestIdleConnections(t *testing.T) {
	const idle = 300 * time.Millisecond
	e := newTestEnvWith(t, func(c *Config) { c.ConnectionsMaxIdle = idle })
	dial := func() *rawClient { return dialRaw(t, e.boot) }
	apiVersions := func(r *rawClient) error {
		r.send(kmsg.NewPtrApiVersionsRequest())
		return r.recv(kmsg.NewPtrApiVersionsResponse())
	}

	t.Run("idle", func(t *testing.T) {
		r := dial()
		if err := apiVersions(r); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if !r.closed() {
			t.Fatal("an idle connection outlived connections_max_idle")
		}
		if el := time.Since(start); el < idle-50*time.Millisecond {
			t.Fatalf("closed after %v, before %v of idleness", el, idle)
		}
	})

	t.Run("answer pending", func(t *testing.T) {
		release, entered := e.holdKey(2)
		r := dial()
		req := listOffsetsLatest("idle")
		req.SetVersion(4)
		r.send(req)
		<-entered
		time.Sleep(3 * idle) // owed an answer all along
		close(release)
		resp := kmsg.NewPtrListOffsetsResponse()
		resp.SetVersion(4)
		if err := r.recv(resp); err != nil {
			t.Fatalf("a connection owed an answer was closed as idle: %v", err)
		}
		if !r.closed() {
			t.Fatal("not closed once idle after the answer")
		}
	})

	t.Run("active", func(t *testing.T) {
		r := dial()
		for range 8 {
			if err := apiVersions(r); err != nil {
				t.Fatalf("an active connection was closed: %v", err)
			}
			time.Sleep(idle / 3)
		}
	})
}

// TestConnectionLimits: connections over max_connections_per_ip (from one
// address) or max_connections (in all) are closed as they are accepted and
// counted; a closed connection frees its place.
func TestConnectionLimits(t *testing.T) {
	e := newTestEnvWith(t, func(c *Config) { c.MaxConnections, c.MaxConnectionsPerIP = 3, 2 })
	dialFrom := func(ip string) *rawClient {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", e.boot)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return &rawClient{t: t, c: c, f: kmsg.NewRequestFormatter(kmsg.FormatterClientID("limits"))}
	}
	served := func(r *rawClient) error {
		r.send(kmsg.NewPtrApiVersionsRequest())
		return r.recv(kmsg.NewPtrApiVersionsResponse())
	}
	refused := func(reason string) float64 {
		var m dto.Metric
		if err := e.srv.m.connsRefused.WithLabelValues("default", reason).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	a1, a2 := dialFrom("127.0.0.1"), dialFrom("127.0.0.1")
	for _, r := range []*rawClient{a1, a2} {
		if err := served(r); err != nil {
			t.Fatal(err)
		}
	}
	if r := dialFrom("127.0.0.1"); served(r) == nil {
		t.Fatal("a third connection from one address was served with max_connections_per_ip 2")
	}
	if refused("max_connections_per_ip") != 1 {
		t.Fatalf("refusals per ip counted %v", refused("max_connections_per_ip"))
	}
	if err := served(dialFrom("127.0.0.2")); err != nil {
		t.Fatalf("a connection from another address under max_connections: %v", err)
	}
	if r := dialFrom("127.0.0.3"); served(r) == nil {
		t.Fatal("a fourth connection was served with max_connections 3")
	}
	if refused("max_connections") != 1 {
		t.Fatalf("refusals over max_connections counted %v", refused("max_connections"))
	}
	a1.c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if served(dialFrom("127.0.0.1")) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection's place was not freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestExchangeDoneAfterWrite: a filter that puts a buffer of its own into
// a Fetch response (as masking does) and takes it back in OnDone, where it
// scribbles over it as the next user would, delivers every record intact:
// the proxy runs Done only after the response is written.
func TestExchangeDoneAfterWrite(t *testing.T) {
	var dones atomic.Int64
	own := filter.Funcs{FilterName: "own-buffers", Keys: []int16{1}, Resp: func(_ context.Context, x *filter.Exchange) error {
		resp, ok := x.Response.(*kmsg.FetchResponse)
		if !ok {
			return nil // an abandoned exchange: no response
		}
		for ti := range resp.Topics {
			ps := resp.Topics[ti].Partitions
			for pi := range ps {
				if len(ps[pi].RecordBatches) == 0 {
					continue
				}
				buf := append([]byte(nil), ps[pi].RecordBatches...)
				ps[pi].RecordBatches = buf
				x.OnDone(func() {
					for i := range buf {
						buf[i] = 0xff
					}
					dones.Add(1)
				})
			}
		}
		x.MarkResponseChanged()
		return nil
	}}
	e := newTestEnv(t, own)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prod := e.client(t)
	for i := range 200 {
		prod.Produce(ctx, &kgo.Record{Topic: "owned", Value: []byte(fmt.Sprintf("value-%d", i))}, nil)
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cons := e.client(t, kgo.ConsumeTopics("owned"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	seen := map[string]bool{}
	for len(seen) < 200 {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of 200 records consumed", len(seen))
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch error: %v", err) })
		fs.EachRecord(func(r *kgo.Record) {
			if !strings.HasPrefix(string(r.Value), "value-") {
				t.Fatalf("record at offset %d delivered as %q", r.Offset, r.Value)
			}
			seen[string(r.Value)] = true
		})
	}
	// OnDone runs once the write of the response has returned, which can
	// be after the client has read and handed out its records.
	for dones.Load() == 0 {
		if ctx.Err() != nil {
			t.Fatal("OnDone never ran")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHostileProduceHeadThroughGateway sends Produce requests whose
// transactional id length is a varint near 2^63, small and over the
// cut-through size, through a running gateway (the acks peek once
// panicked on them, which killed the process); the gateway stays up and
// serves the next client.
func TestHostileProduceHeadThroughGateway(t *testing.T) {
	e := newTestEnv(t)
	for _, pad := range []int{0, 300 << 10} {
		var f []byte
		f = binary.BigEndian.AppendUint16(f, 0) // Produce
		f = binary.BigEndian.AppendUint16(f, 9) // v9, flexible
		f = binary.BigEndian.AppendUint32(f, 1) // correlation id
		f = binary.BigEndian.AppendUint16(f, 1) // client id "x"
		f = append(f, 'x', 0)                   // header tags
		f = binary.AppendUvarint(f, math.MaxInt64-9)
		f = append(f, 0, 1, 0, 0, 0, 0)
		f = append(f, make([]byte, pad)...)
		frame := binary.BigEndian.AppendUint32(nil, uint32(len(f)))
		_, _, _ = rawRequest(t, e.boot, append(frame, f...))
	}
	cl := e.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		t.Fatalf("gateway after hostile produce heads: %v", err)
	}
}

// TestPanicClosesOnlyItsConnection: a panic in a filter (standing in for
// any bug) on the request side and on the response side closes that
// client's connection, is counted and logged, and leaves the gateway
// serving everyone else.
func TestPanicClosesOnlyItsConnection(t *testing.T) {
	boom := filter.Funcs{FilterName: "boom", Keys: []int16{3},
		Req: func(_ context.Context, x *filter.Exchange) error {
			if c := x.ClientID; c != nil && *c == "panic-req" {
				panic("request-side bug")
			}
			return nil
		},
		Resp: func(_ context.Context, x *filter.Exchange) error {
			if c := x.ClientID; c != nil && *c == "panic-resp" {
				panic("response-side bug")
			}
			return nil
		}}
	e := newTestEnv(t, boom)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, id := range []string{"panic-req", "panic-resp"} {
		cl := e.client(t, kgo.ClientID(id), kgo.RetryTimeout(500*time.Millisecond), kgo.RequestRetries(1))
		if _, err := cl.Request(ctx, kmsg.NewPtrMetadataRequest()); err == nil {
			t.Fatalf("%s: metadata answered through a panicking filter", id)
		}
		if got := testutil.ToFloat64(e.srv.m.panics); got < float64(i+1) {
			t.Fatalf("%s: %v panics counted", id, got)
		}
	}
	if err := e.client(t, kgo.ClientID("fine")).Ping(ctx); err != nil {
		t.Fatalf("gateway after panics: %v", err)
	}
}
