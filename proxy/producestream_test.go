package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// randProduceRequest builds a one-topic Produce request of version v with
// every field the relay walks.
func randProduceRequest(rng *rand.Rand, v int16) *kmsg.ProduceRequest {
	r := kmsg.NewPtrProduceRequest()
	r.SetVersion(v)
	if rng.Intn(2) == 0 {
		txn := fmt.Sprintf("txn-%d", rng.Intn(1000))
		r.TransactionID = &txn
	}
	r.Acks = int16(rng.Intn(3) - 1)
	r.TimeoutMillis = rng.Int31()
	t := kmsg.NewProduceRequestTopic()
	t.Topic = fmt.Sprintf("topic-%d", rng.Intn(1000))
	rng.Read(t.TopicID[:])
	flex := v >= 9
	for pi := rng.Intn(5); pi > 0; pi-- {
		p := kmsg.NewProduceRequestTopicPartition()
		p.Partition = rng.Int31n(64)
		switch rng.Intn(5) {
		case 0:
			p.Records = nil
		case 1:
			p.Records = make([]byte, rng.Intn(100))
			rng.Read(p.Records)
		case 2: // larger than the relay's small-copy threshold
			p.Records = make([]byte, 4<<10+rng.Intn(200<<10))
			rng.Read(p.Records)
		default:
			p.Records = realBatches(rng)
		}
		if flex && rng.Intn(3) == 0 {
			p.UnknownTags.Set(uint32(rng.Intn(5)), []byte("partition-tag"))
		}
		t.Partitions = append(t.Partitions, p)
	}
	if flex && rng.Intn(3) == 0 {
		t.UnknownTags.Set(2, make([]byte, rng.Intn(6<<10)))
	}
	r.Topics = append(r.Topics, t)
	if flex && rng.Intn(3) == 0 {
		r.UnknownTags.Set(1, []byte("request-tag"))
	}
	return r
}

// relayProduce relays frame (a whole request frame, size prefix included)
// as the read loop would after reading its first `read` bytes of body,
// with trailer after it on the connection.
func relayProduce(t testing.TB, frame, trailer []byte, read int) (produceHead, []int32, filter.Stats, []byte, []byte, error) {
	t.Helper()
	h, err := parseRequestHeader(frame[4:])
	if err != nil {
		t.Fatal(err)
	}
	body := frame[4+h.BodyOffset:]
	read = min(read, len(body))
	head, ok := parseProduceHead(body[:read], h.Version, h.Flexible)
	if !ok {
		return head, nil, filter.Stats{}, nil, nil, errors.New("head does not parse")
	}
	src := bufio.NewReader(bytes.NewReader(append(append([]byte{}, body[read:]...), trailer...)))
	var dst bytes.Buffer
	parts, st, err := relayProduceRequest(&dst, src, nil, frame[:4+h.BodyOffset], body[:read], int64(len(body)-read), h.Version)
	rest, _ := io.ReadAll(src)
	return head, parts, st, dst.Bytes(), rest, err
}

// TestRelayProduce relays random one-topic requests of every version,
// split at random points after the head: the broker gets the client's
// bytes exactly, nothing past the frame is read, the head is what kmsg
// decodes, and the partitions and counts are what the decoding path (the
// audit filter's filter.CountBatches) finds.
func TestRelayProduce(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	fm := kmsg.NewRequestFormatter(kmsg.FormatterClientID("relay-test"))
	max := kmsg.NewPtrProduceRequest().MaxVersion()
	for v := int16(0); v <= max; v++ {
		for i := 0; i < 60; i++ {
			req := randProduceRequest(rng, v)
			frame := fm.AppendRequest(nil, req, int32(i))
			trailer := []byte("next request")
			read := 64 + rng.Intn(8<<10)
			head, parts, st, out, rest, err := relayProduce(t, frame, trailer, read)
			if err != nil {
				t.Fatalf("v%d #%d: %v", v, i, err)
			}
			if !bytes.Equal(out, frame) {
				t.Fatalf("v%d #%d: relayed %d bytes differ from the client's %d", v, i, len(out), len(frame))
			}
			if !bytes.Equal(rest, trailer) {
				t.Fatalf("v%d #%d: left %q unread, want %q", v, i, rest, trailer)
			}
			var dec kmsg.ProduceRequest
			dec.SetVersion(v)
			h, _ := parseRequestHeader(frame[4:])
			if err := dec.ReadFrom(frame[4+h.BodyOffset:]); err != nil {
				t.Fatal(err)
			}
			dt := dec.Topics[0]
			wantHead := produceHead{txn: dec.TransactionID, acks: dec.Acks, timeout: dec.TimeoutMillis}
			if v >= 13 {
				wantHead.id = dt.TopicID
			} else {
				wantHead.topic = dt.Topic
			}
			if v < 3 {
				wantHead.txn = nil
			}
			if !reflect.DeepEqual(head, wantHead) {
				t.Fatalf("v%d #%d: head %+v, want %+v", v, i, head, wantHead)
			}
			var wantParts []int32
			var want filter.Stats
			for _, p := range dt.Partitions {
				wantParts = append(wantParts, p.Partition)
				r, b := filter.CountBatches(p.Records)
				want.Records += r
				want.Bytes += b
			}
			if len(parts) != len(wantParts) || (len(parts) > 0 && !reflect.DeepEqual(parts, wantParts)) {
				t.Fatalf("v%d #%d: partitions %v, want %v", v, i, parts, wantParts)
			}
			if st != want {
				t.Fatalf("v%d #%d: counted %+v, want %+v", v, i, st, want)
			}
		}
	}
}

// TestParseProduceHeadRefuses: only a request naming exactly one topic,
// whose head lies in the bytes read, may be streamed.
func TestParseProduceHeadRefuses(t *testing.T) {
	fm := kmsg.NewRequestFormatter()
	for _, v := range []int16{3, 8, 9, 12, 13} {
		body := func(r *kmsg.ProduceRequest) []byte {
			frame := fm.AppendRequest(nil, r, 1)
			h, err := parseRequestHeader(frame[4:])
			if err != nil {
				t.Fatal(err)
			}
			return frame[4+h.BodyOffset:]
		}
		r := kmsg.NewPtrProduceRequest()
		r.SetVersion(v)
		if _, ok := parseProduceHead(body(r), v, v >= 9); ok {
			t.Fatalf("v%d: a request without topics parsed as streamable", v)
		}
		r.Topics = []kmsg.ProduceRequestTopic{{Topic: "a"}, {Topic: "b"}}
		if _, ok := parseProduceHead(body(r), v, v >= 9); ok {
			t.Fatalf("v%d: a two-topic request parsed as streamable", v)
		}
		txn := "a-transactional-id"
		r.TransactionID = &txn
		r.Topics = []kmsg.ProduceRequestTopic{{Topic: "the-only-topic"}}
		b := body(r)
		if _, ok := parseProduceHead(b, v, v >= 9); !ok {
			t.Fatalf("v%d: a one-topic request does not parse", v)
		}
		headEnd := len(b) - 4 // the partition count follows the head
		if v >= 9 {
			headEnd = len(b) - 3 // compact count, topic and request tags
		}
		if _, ok := parseProduceHead(b[:headEnd], v, v >= 9); !ok {
			t.Fatalf("v%d: the head alone does not parse", v)
		}
		for cut := 0; cut < headEnd; cut++ {
			if h, ok := parseProduceHead(b[:cut], v, v >= 9); ok {
				t.Fatalf("v%d: head parsed from %d of %d bytes: %+v", v, cut, len(b), h)
			}
		}
	}
}

// TestRelayProduceMalformed: a request whose partitions do not parse fails
// with errProduceStream, having read no byte past its frame; one that still
// parses is relayed whole.
func TestRelayProduceMalformed(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	fm := kmsg.NewRequestFormatter()
	bad := 0
	for i := 0; i < 2000; i++ {
		v := int16(rng.Intn(int(kmsg.NewPtrProduceRequest().MaxVersion()) + 1))
		frame := fm.AppendRequest(nil, randProduceRequest(rng, v), 1)
		h, _ := parseRequestHeader(frame[4:])
		headEnd := 4 + h.BodyOffset + 40
		if len(frame) <= headEnd {
			continue
		}
		// Corrupt one byte after the head; keep the size prefix.
		frame[headEnd+rng.Intn(len(frame)-headEnd)] ^= byte(1 + rng.Intn(255))
		_, _, _, out, rest, err := relayProduce(t, frame, []byte("next"), 40)
		switch {
		case err == nil:
			if !bytes.Equal(out, frame) {
				t.Fatalf("#%d: relayed bytes differ from the client's", i)
			}
		case errors.Is(err, errProduceStream):
			bad++
		case err.Error() == "head does not parse":
			continue
		default:
			t.Fatalf("#%d: %v", i, err)
		}
		if !bytes.HasSuffix(rest, []byte("next")) || err == nil && len(rest) != 4 {
			t.Fatalf("#%d: read past the frame or stopped short (%v): %d bytes left", i, err, len(rest))
		}
	}
	if bad == 0 {
		t.Fatal("no corruption was detected")
	}
}

// FuzzProduceStream relays arbitrary request bodies: no panic, never a
// byte read past the frame, and a relay that succeeds reads the whole frame
// and sends the client's bytes unchanged.
func FuzzProduceStream(f *testing.F) {
	rng := rand.New(rand.NewSource(3))
	fm := kmsg.NewRequestFormatter()
	for _, v := range []int16{3, 8, 9, 12, 13} {
		req := randProduceRequest(rng, v)
		for i := range req.Topics[0].Partitions {
			req.Topics[0].Partitions[i].Records = realBatches(rng)[:min(300, len(req.Topics[0].Partitions[i].Records))]
		}
		f.Add(fm.AppendRequest(nil, req, 1)[4:])
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, err := parseRequestHeader(raw)
		if err != nil || h.Key != 0 {
			return
		}
		frame := append([]byte{0, 0, 0, 0}, raw...)
		frame[0], frame[1], frame[2], frame[3] = byte(len(raw)>>24), byte(len(raw)>>16), byte(len(raw)>>8), byte(len(raw))
		_, _, _, out, rest, err := relayProduce(t, frame, []byte("next"), len(raw)/2)
		if err != nil && err.Error() == "head does not parse" {
			return
		}
		// A relay that fails stops reading: the connection closes.
		if !bytes.HasSuffix(rest, []byte("next")) || err == nil && len(rest) != 4 {
			t.Fatalf("read %d bytes of a %d-byte frame (%v)", len(frame)-4-(len(rest)-4), len(raw), err)
		}
		if err == nil && !bytes.Equal(out, frame) {
			t.Fatal("relayed bytes differ from the client's")
		}
	})
}

// topicOf names t, which Produce v13+ names by id.
func topicOf(x *filter.Exchange, t *kmsg.ProduceRequestTopic) string {
	if t.Topic != "" {
		return t.Topic
	}
	name, _ := x.Topics.TopicName(t.TopicID)
	return name
}

// produceStreamer takes Produce requests streamed except to one topic,
// and reads their partitions and counts when counts is set.
type produceStreamer struct {
	filter.Funcs
	decline          string
	counts           bool
	streamed, relays atomic.Int64
	mu               sync.Mutex
	relayed          map[string]filter.Stats
	parts            map[int32]bool
}

func (s *produceStreamer) StreamProduce(_ context.Context, x *filter.Exchange) bool {
	req := x.Request.(*kmsg.ProduceRequest)
	if len(req.Topics) != 1 || len(req.Topics[0].Partitions) != 0 {
		panic(fmt.Sprintf("StreamProduce got %d topics", len(req.Topics)))
	}
	if topicOf(x, &req.Topics[0]) == s.decline {
		return false
	}
	s.streamed.Add(1)
	return true
}

func (s *produceStreamer) CountsProduce() bool { return s.counts }

func (s *produceStreamer) ProduceRelayed(_ context.Context, x *filter.Exchange) {
	s.relays.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range x.Relayed {
		c := s.relayed[k]
		c.Records += v.Records
		c.Bytes += v.Bytes
		s.relayed[k] = c
	}
	for _, p := range x.Request.(*kmsg.ProduceRequest).Topics[0].Partitions {
		s.parts[p.Partition] = true
	}
}

// TestStreamedProduceThroughFilters: large one-topic Produce requests
// through a chain of ProduceStreamers go upstream without OnRequest (the
// streamer decided on the head) and arrive whole; counted per topic with
// their partitions when a filter counts (filter.ProduceCounter), cut
// through unparsed when none does. A topic the streamer declines takes the
// decoding path, and a denial there still answers
// TOPIC_AUTHORIZATION_FAILED.
func TestStreamedProduceThroughFilters(t *testing.T) {
	for _, counts := range []bool{true, false} {
		t.Run(fmt.Sprintf("counts=%v", counts), func(t *testing.T) { testStreamedProduce(t, counts) })
	}
}

func testStreamedProduce(t *testing.T, counts bool) {
	s := &produceStreamer{decline: "declined", counts: counts, relayed: map[string]filter.Stats{}, parts: map[int32]bool{}}
	var decoded atomic.Int64
	s.Funcs = filter.Funcs{FilterName: "streamer", Keys: []int16{0}, Req: func(_ context.Context, x *filter.Exchange) error {
		req := x.Request.(*kmsg.ProduceRequest)
		decoded.Add(1)
		if topicOf(x, &req.Topics[0]) == "declined" && len(req.Topics[0].Partitions) > 0 &&
			len(req.Topics[0].Partitions[0].Records) > 0 && bytes.Contains(req.Topics[0].Partitions[0].Records, []byte("deny-me")) {
			return filter.Deny(kerr.TopicAuthorizationFailed.Code, "test denial")
		}
		return nil
	}}
	e := newTestEnv(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Record.Partition is used only with the manual partitioner (the
	// default, sticky one, spread the records over two partitions at
	// times, and the test then saw two).
	opts := []kgo.Opt{kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerBatchMaxBytes(1 << 20),
		kgo.MaxBufferedBytes(64 << 20), kgo.ProducerLinger(20 * time.Millisecond), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordPartitioner(kgo.ManualPartitioner())}
	prod := e.client(t, opts...)
	want := map[string]bool{}
	const n = 12
	for i := 0; i < n; i++ {
		for _, topic := range []string{"streamed", "declined"} {
			v := make([]byte, 400<<10)
			rand.Read(v)
			copy(v, fmt.Sprintf("%s-%02d", topic, i))
			want[string(v)] = true
			if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: v, Partition: int32(i % 3)}).FirstErr(); err != nil {
				t.Fatalf("produce to %s: %v", topic, err)
			}
		}
	}
	v := make([]byte, 400<<10)
	copy(v, "deny-me")
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: "declined", Value: v}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("denied produce: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	if got := s.streamed.Load(); got != n || s.relays.Load() != n {
		t.Fatalf("%d requests streamed and %d relayed, want %d", got, s.relays.Load(), n)
	}
	if got := decoded.Load(); got != n+1 {
		t.Fatalf("OnRequest ran %d times, want %d (the declined topic's requests only)", got, n+1)
	}
	s.mu.Lock()
	st, parts := s.relayed["streamed"], len(s.parts)
	s.mu.Unlock()
	switch {
	case counts && (st.Records != n || st.Bytes < n*400<<10):
		t.Fatalf("relayed counts %+v, want %d records", st, n)
	case counts && parts != 3:
		t.Fatalf("partitions seen %v, want 3", parts)
	case !counts && (st != filter.Stats{} || parts != 0):
		t.Fatalf("no filter counts, yet the relay parsed the requests: counts %+v, %d partitions", st, parts)
	}
	cons := e.client(t, kgo.ConsumeTopics("streamed", "declined"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(32<<20))
	for len(want) > 0 {
		fs := cons.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("poll with %d records missing: %v", len(want), err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if bytes.HasPrefix(r.Value, []byte("deny-me")) {
				t.Fatal("the denied record was written")
			}
			if !want[string(r.Value)] {
				t.Fatalf("record %q... not produced or corrupted", r.Value[:11])
			}
			delete(want, string(r.Value))
		})
	}
}

// TestRelayProduceFromConn relays requests read from a TCP connection
// whose reader has buffered part of the body (and, with small requests,
// the next request): the part buffered is taken from the reader, the rest
// straight from the connection, and the reader resumes at the next request.
func TestRelayProduceFromConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rng := rand.New(rand.NewSource(4))
	fm := kmsg.NewRequestFormatter()
	var frames [][]byte
	for i := 0; i < 40; i++ {
		frames = append(frames, fm.AppendRequest(nil, randProduceRequest(rng, int16(3+rng.Intn(11))), int32(i)))
	}
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		for _, f := range frames {
			_, _ = c.Write(f)
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReaderSize(c, 16<<10)
	for i, f := range frames {
		h, _ := parseRequestHeader(f[4:])
		read := min(len(f)-4-h.BodyOffset, 64+rng.Intn(4<<10))
		head := make([]byte, 4+h.BodyOffset+read)
		if _, err := io.ReadFull(br, head); err != nil {
			t.Fatal(err)
		}
		if _, ok := parseProduceHead(head[4+h.BodyOffset:], h.Version, h.Flexible); !ok {
			t.Fatalf("#%d: head does not parse", i)
		}
		var dst bytes.Buffer
		rest := int64(len(f) - len(head))
		if _, _, err := relayProduceRequest(&dst, br, c, head[:4+h.BodyOffset], head[4+h.BodyOffset:], rest, h.Version); err != nil {
			t.Fatalf("#%d: %v", i, err)
		}
		if !bytes.Equal(dst.Bytes(), f) {
			t.Fatalf("#%d: relayed %d bytes differ from the client's %d", i, dst.Len(), len(f))
		}
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed := make(chan net.Conn, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Error(err)
		}
		dialed <- c
	}()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	b := <-dialed
	if b == nil {
		t.FailNow()
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// readAsync reads n bytes from c on a goroutine; the channel gets them.
func readAsync(t *testing.T, c net.Conn, n int) <-chan []byte {
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, n)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Error(err)
		}
		got <- b
	}()
	return got
}

// relayFetchTCP sends the Fetch v16 response frame from a broker's side of
// a TCP connection, relays it through hooks to a client's side of another
// (the gateway's two connections, plain TCP as they are in production),
// checks the client received it unchanged, and returns how many bytes
// copyN spliced. With preload the whole frame is written before the relay
// starts reading, else while it reads.
func relayFetchTCP(t *testing.T, frame []byte, hooks *fetchHooks, preload bool) int64 {
	t.Helper()
	brokerSide, gwIn := tcpPair(t)
	gwOut, clientSide := tcpPair(t)
	if preload {
		if _, err := brokerSide.Write(frame); err != nil {
			t.Fatal(err)
		}
	} else {
		go func() { _, _ = brokerSide.Write(frame) }()
	}
	got := readAsync(t, clientSide, len(frame))
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(gwIn, hdr); err != nil {
		t.Fatal(err)
	}
	before := splicedBytes.Load()
	size := int32(binary.BigEndian.Uint32(hdr))
	if err := relayFetchResponse(gwOut, gwIn, hdr, size, 16, func(*kmsg.FetchResponse) bool { return false }, hooks); err != nil {
		t.Fatal(err)
	}
	spliced := splicedBytes.Load() - before
	if b := <-got; !bytes.Equal(b, frame) {
		t.Fatal("the client did not receive the broker's bytes")
	}
	return spliced
}

// TestRelayProduceSplices relays a Produce request of two 1 MiB batches
// between plain TCP connections, the client's read ahead into its buffered
// reader as the gateway's is: everything but what was read ahead of the
// relay must go socket to socket (splice), the first batch included, and
// arrive unchanged.
func TestRelayProduceSplices(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(9)
	req.Acks, req.TimeoutMillis = -1, 30000
	topic := kmsg.NewProduceRequestTopic()
	topic.Topic = "big"
	for i := range 2 {
		p := kmsg.NewProduceRequestTopicPartition()
		p.Partition = int32(i)
		// One v2 batch as far as the relay's count looks (size, magic,
		// attributes, record count); its records are random bytes.
		b := make([]byte, 1<<20)
		rng.Read(b)
		binary.BigEndian.PutUint32(b[8:12], uint32(len(b)-12))
		b[16] = 2
		binary.BigEndian.PutUint16(b[21:23], 0)
		binary.BigEndian.PutUint32(b[57:61], 1000)
		p.Records = b
		topic.Partitions = append(topic.Partitions, p)
	}
	req.Topics = append(req.Topics, topic)
	frame := kmsg.NewRequestFormatter().AppendRequest(nil, req, 1)

	clientSide, gwIn := tcpPair(t)
	gwOut, brokerSide := tcpPair(t)
	go func() { _, _ = clientSide.Write(frame) }()
	got := readAsync(t, brokerSide, len(frame))

	const ahead = 64 << 10 // the client reader's size in the gateway
	br := bufio.NewReaderSize(gwIn, ahead)
	h, _ := parseRequestHeader(frame[4:])
	head := make([]byte, 4+h.BodyOffset+headPeek)
	if _, err := io.ReadFull(br, head); err != nil {
		t.Fatal(err)
	}
	before := splicedBytes.Load()
	rest := int64(len(frame) - len(head))
	parts, st, err := relayProduceRequest(gwOut, br, gwIn, head[:4+h.BodyOffset], head[4+h.BodyOffset:], rest, 9)
	if err != nil {
		t.Fatal(err)
	}
	spliced := splicedBytes.Load() - before
	if b := <-got; !bytes.Equal(b, frame) {
		t.Fatal("the broker did not receive the client's bytes")
	}
	if len(parts) != 2 || st.Bytes != 2<<20 || st.Records != 2000 {
		t.Fatalf("partitions %v, %d bytes counted", parts, st.Bytes)
	}
	// Through memory go at most the head, what the client reader held,
	// and per batch what the relay's own reader reads ahead of it while
	// it parses the structure and peeks the batch header (structAhead;
	// it was 32 KiB, its buffer).
	memory := len(head) + ahead + 2*structAhead
	if spliced < int64(len(frame)-memory) {
		t.Fatalf("%d of %d bytes spliced; all but at most %d should be", spliced, len(frame), memory)
	}
}

// bulkBatch is a v2 record batch of size bytes as far as the relay's count
// looks (size, magic, attributes, record count) around random bytes.
func bulkBatch(rng *rand.Rand, size int, records uint32) []byte {
	b := make([]byte, size)
	rng.Read(b)
	binary.BigEndian.PutUint32(b[8:12], uint32(len(b)-12))
	b[16] = 2
	binary.BigEndian.PutUint16(b[21:23], 0)
	binary.BigEndian.PutUint32(b[57:61], records)
	return b
}

// bulkFetchFrame is a Fetch v16 response frame of one topic with parts
// partitions, each of batches bulkBatch record batches of size bytes and
// records records, from a generator seeded with seed.
func bulkFetchFrame(seed int64, parts, batches, size int, records uint32) []byte {
	rng := rand.New(rand.NewSource(seed))
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(16)
	topic := kmsg.NewFetchResponseTopic()
	topic.TopicID = [16]byte{byte(seed)}
	for i := range parts {
		p := kmsg.NewFetchResponseTopicPartition()
		p.Partition = int32(i)
		for range batches {
			p.RecordBatches = append(p.RecordBatches, bulkBatch(rng, size, records)...)
		}
		topic.Partitions = append(topic.Partitions, p)
	}
	resp.Topics = append(resp.Topics, topic)
	return fetchFrame(resp)
}

// TestRelayFetchSplices relays a Fetch response of two partitions of two
// 1 MiB batches each between plain TCP connections, counted per batch (as
// under the audit filter) and not: everything but the response's
// structure and the few bytes read ahead of each bulk copy must go socket
// to socket, and the bytes must arrive unchanged.
func TestRelayFetchSplices(t *testing.T) {
	frame := bulkFetchFrame(8, 2, 2, 1<<20, 1000)

	for _, tc := range []struct{ hooks, counted bool }{{false, false}, {true, false}, {true, true}} {
		counted := tc.counted
		t.Run(fmt.Sprintf("hooks=%v,counted=%v", tc.hooks, counted), func(t *testing.T) {
			var hooks *fetchHooks
			if tc.hooks {
				hooks = &fetchHooks{delivered: map[string]filter.Stats{}, count: counted, topic: func(string, [16]byte) (int16, string) { return 0, "t" }}
			}
			spliced := relayFetchTCP(t, frame, hooks, false)
			if counted {
				if st := hooks.delivered["t"]; st.Bytes != 4<<20 || st.Records != 4000 {
					t.Fatalf("counted %+v", st)
				}
			} else if tc.hooks && len(hooks.delivered) != 0 {
				t.Fatalf("counted %v with no filter counting", hooks.delivered)
			}
			// Per bulk copy at most structAhead read ahead, beside the
			// structure (which is under 200 bytes here).
			memory := 200 + 4*structAhead
			if spliced < int64(len(frame)-memory) {
				t.Fatalf("%d of %d bytes spliced; all but at most %d should be", spliced, len(frame), memory)
			}
		})
	}
}

type counter struct {
	filter.Funcs
	counts bool
}

func (c counter) CountsFetch() bool { return c.counts }

// TestCountsFetch: a streamed response is counted batch by batch only when
// a filter of the chain reads the counts.
func TestCountsFetch(t *testing.T) {
	for _, tc := range []struct {
		chain []filter.Filter
		want  bool
	}{
		{nil, false},
		{[]filter.Filter{filter.Funcs{FilterName: "policy"}}, false},
		{[]filter.Filter{filter.Funcs{FilterName: "policy"}, counter{counts: false}}, false},
		{[]filter.Filter{filter.Funcs{FilterName: "policy"}, counter{counts: true}}, true},
	} {
		if got := countsFetch(tc.chain); got != tc.want {
			t.Errorf("countsFetch(%d filters) = %v, want %v", len(tc.chain), got, tc.want)
		}
	}
}

// TestRelayFetchSmallBatches: a partition of 8 KiB record batches, counted
// batch by batch, is read in buffer-sized reads and mostly written from
// memory, not spliced a batch at a time after a read of each header (the
// read-ahead bound applies after regions of a buffer or more only).
func TestRelayFetchSmallBatches(t *testing.T) {
	frame := bulkFetchFrame(9, 1, 64, 8<<10, 10)

	hooks := &fetchHooks{delivered: map[string]filter.Stats{}, count: true, topic: func(string, [16]byte) (int16, string) { return 0, "t" }}
	spliced := relayFetchTCP(t, frame, hooks, true) // all of it waits in the socket
	if st := hooks.delivered["t"]; st.Bytes != 64*8<<10 || st.Records != 640 {
		t.Fatalf("counted %+v", st)
	}
	if spliced > int64(len(frame)/2) {
		t.Fatalf("%d of %d bytes spliced: small batches were spliced one by one", spliced, len(frame))
	}
}
