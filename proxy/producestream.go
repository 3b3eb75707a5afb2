package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/proxy/bufpool"
	"github.com/sluice-gw/sluice/proxy/filter"
)

// Streaming Produce requests through filters.
//
// A large Produce request that no filter wants is cut through (conn.go):
// its records go upstream as they arrive. Under policy and audit a Produce
// request is decided per topic, which needs only the topic, not the
// records, so a request that names one topic (what producers send when they
// write one topic) is streamed too when every filter is a
// filter.ProduceStreamer: the head of the request (transactional id, acks,
// the topic) is parsed from the first bytes read, the filters decide on it
// before anything is forwarded, and the rest is relayed while its structure
// is parsed on the side to learn the partitions and count records for
// audit. A request with several topics, or one a filter declines (a denied
// topic, a schema contract, masking on produce), is read whole and decoded
// as before, so denials keep Kafka's per-partition answers.
//
// The topic the broker writes is the one the filters decided on: the
// broker parses the same bytes, and the head was parsed up to the one topic
// it names before a byte was forwarded. Nothing after the head can add a
// topic: the topic count was read as 1.

// errProduceStream marks a client Produce request that does not parse as
// it is relayed; part of it has gone upstream, so the connection closes.
var errProduceStream = errors.New("proxy: malformed produce request")

// produceHead is what precedes the partitions of a one-topic Produce
// request.
type produceHead struct {
	txn     *string
	acks    int16
	timeout int32
	topic   string   // v0-12
	id      [16]byte // v13+
}

// parseProduceHead parses the head of a Produce request body from the
// bytes read so far. ok is false unless the request names exactly one
// topic and the head lies within body.
func parseProduceHead(body []byte, version int16, flexible bool) (h produceHead, ok bool) {
	off := 0
	str := func(nullable bool) (*string, bool) {
		var n int
		if flexible {
			u, next, err := uvarint(body, off)
			if err != nil || u > uint64(len(body)) {
				return nil, false
			}
			off, n = next, int(u)-1
		} else {
			if len(body)-off < 2 {
				return nil, false
			}
			n = int(int16(binary.BigEndian.Uint16(body[off:])))
			off += 2
		}
		if n < 0 {
			return nil, nullable && n == -1
		}
		if n > len(body)-off {
			return nil, false
		}
		s := string(body[off : off+n])
		off += n
		return &s, true
	}
	if version >= 3 {
		var good bool
		if h.txn, good = str(true); !good {
			return h, false
		}
	}
	if len(body)-off < 6 {
		return h, false
	}
	h.acks = int16(binary.BigEndian.Uint16(body[off:]))
	h.timeout = int32(binary.BigEndian.Uint32(body[off+2:]))
	off += 6
	var topics int64
	if flexible {
		u, next, err := uvarint(body, off)
		if err != nil {
			return h, false
		}
		off, topics = next, int64(u)-1
	} else {
		if len(body)-off < 4 {
			return h, false
		}
		topics = int64(int32(binary.BigEndian.Uint32(body[off:])))
		off += 4
	}
	if topics != 1 {
		return h, false
	}
	if version >= 13 {
		if len(body)-off < 16 {
			return h, false
		}
		copy(h.id[:], body[off:])
		return h, true
	}
	name, good := str(false)
	if !good {
		return h, false
	}
	h.topic = *name
	return h, true
}

// streamsProduce reports whether every filter of chain is a
// filter.ProduceStreamer.
func streamsProduce(chain []filter.Filter) bool {
	for _, f := range chain {
		if _, ok := f.(filter.ProduceStreamer); !ok {
			return false
		}
	}
	return len(chain) > 0
}

// relayProduceRequest relays a one-topic Produce request to dst as it
// arrives and returns its partitions and the records and bytes they carry
// (as filter.CountBatches counts them). hdr is the frame's size prefix and
// request header, body the part of the body already read, and rest how many
// bytes of the body src still holds; exactly those are read. src is
// buffered ahead of conn, or is conn itself when conn is nil; after the
// bytes src has buffered, record bytes are copied from conn directly.
func relayProduceRequest(dst io.Writer, src *bufio.Reader, conn net.Conn, hdr, body []byte, rest int64, version int16) ([]int32, filter.Stats, error) {
	var in io.Reader
	var pre int64
	if conn == nil {
		in = io.MultiReader(bytes.NewReader(body), src)
	} else {
		// What the client reader holds is read from its buffer, the rest
		// from conn; the reader is not read during the relay and drops
		// those bytes after it.
		buffered := int(min(int64(src.Buffered()), rest))
		ahead, _ := src.Peek(buffered)
		defer src.Discard(buffered) //nolint:errcheck // they are buffered
		in = io.MultiReader(bytes.NewReader(body), bytes.NewReader(ahead), conn)
		pre = int64(len(body) + buffered)
	}
	r := newRelay(dst, in, int64(len(body))+rest, hdr, version >= 9)
	defer r.close()
	r.bad, r.conn, r.pre = errProduceStream, conn, pre
	r.hooks = &fetchHooks{delivered: make(map[string]filter.Stats, 1), count: true}
	parts, err := r.produceBody(version)
	if err != nil {
		return nil, filter.Stats{}, err
	}
	// Anything after the request's tagged fields goes on as it came; the
	// broker parses the same bytes.
	if err := r.relay(r.remaining()); err != nil {
		return nil, filter.Stats{}, err
	}
	return parts, r.hooks.delivered[""], r.flush()
}

// produceBody relays a Produce request body up to its trailing bytes.
func (r *fetchRelay) produceBody(version int16) ([]int32, error) {
	if version >= 3 { // transactional id
		n, err := r.bytesLen(true)
		if err != nil {
			return nil, err
		}
		if err := r.relay(n); err != nil {
			return nil, err
		}
	}
	if _, err := r.take(6); err != nil { // acks, timeout
		return nil, err
	}
	topics, err := r.arrayLen()
	if err != nil {
		return nil, err
	}
	if topics != 1 {
		return nil, fmt.Errorf("%w: %d topics where the head had one", r.malformed(), topics)
	}
	if version >= 13 {
		_, err = r.take(16)
	} else {
		var n int64
		if n, err = r.bytesLen(true); err == nil {
			err = r.relay(n)
		}
	}
	if err != nil {
		return nil, err
	}
	n, err := r.arrayLen()
	if err != nil {
		return nil, err
	}
	if n*5 > r.remaining() { // a partition is at least its index and a length
		return nil, fmt.Errorf("%w: %d partitions past the end", r.malformed(), n)
	}
	parts := make([]int32, 0, min(n, 1024))
	for ; n > 0; n-- {
		p, err := r.int32()
		if err != nil {
			return nil, err
		}
		parts = append(parts, p)
		size, err := r.bytesLen(false)
		if err != nil {
			return nil, err
		}
		if err := r.relayCounted(size, ""); err != nil {
			return nil, err
		}
		if r.flex {
			if err := r.skipTags(); err != nil {
				return nil, err
			}
		}
	}
	if r.flex {
		if err := r.skipTags(); err != nil { // the topic's
			return nil, err
		}
		if err := r.skipTags(); err != nil { // the request's
			return nil, err
		}
	}
	return parts, nil
}

// streamProduce forwards a large one-topic Produce request through a chain
// of filter.ProduceStreamers as it arrives (see the top of this file), or,
// when one declines, reads it whole and forwards it decoded. buf holds the
// part read (frame), rest bytes are unread. done is false when the filters
// let the request through and none counts (filter.ProduceCounter):
// ProduceRelayed has run, with no partitions, and the caller forwards the
// request as it forwards one without filters, ok unused.
func (c *clientConn) streamProduce(p *pending, h requestHeader, buf *[]byte, frame []byte, rest int, acks0 bool) (done, ok bool) {
	x := &p.x
	body := frame[h.BodyOffset:]
	head, ok := parseProduceHead(body, h.Version, h.Flexible)
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.TransactionID, req.Acks, req.TimeoutMillis = h.Version, head.txn, head.acks, head.timeout
	req.Topics = []kmsg.ProduceRequestTopic{{Topic: head.topic, TopicID: head.id}}
	x.Request = req
	x.ClientID = h.ClientID()
	for _, f := range p.chain {
		if ok && !f.(filter.ProduceStreamer).StreamProduce(c.ctx, x) {
			ok = false
		}
	}
	if !ok {
		buf, frame, err := c.readRest(buf, frame, rest)
		if err != nil {
			return true, false
		}
		h, err := parseRequestHeader(frame)
		if err != nil { // it parsed from the same bytes before
			bufpool.Put(buf)
			return true, false
		}
		return true, c.forward(h, buf, frame, 0, p.tRead)
	}
	if !countsProduce(p.chain) {
		// Nothing after the head is read: the topic the filters decided
		// is the request's only one (parseProduceHead), and no filter
		// wants the partitions or counts.
		for _, f := range p.chain {
			f.(filter.ProduceStreamer).ProduceRelayed(c.ctx, x)
		}
		return false, false
	}

	p.tSent = time.Now()
	c.s.m.stream(h.Key)
	// c.up itself, not a wrapper, so that the records can be spliced.
	parts, st, err := relayProduceRequest(c.up, c.br, c.nc, (*buf)[:4+h.BodyOffset], body, int64(rest), h.Version)
	bufpool.Put(buf)
	c.s.m.bytesIn.Add(float64(rest))
	if err != nil {
		if errors.Is(err, errProduceStream) {
			c.log.Warn("closing connection: malformed produce request", zap.Error(err))
			c.s.m.request(h.Key, outcomeError)
		} else {
			// The client's read or the upstream's write (one splice
			// does both).
			c.log.Info("produce relay failed", zap.Error(err))
		}
		// What the filters decided is recorded; the broker did not get
		// a whole request.
		c.abandon(p)
		return true, false
	}
	t := &req.Topics[0]
	t.Partitions = make([]kmsg.ProduceRequestTopicPartition, len(parts))
	for i, id := range parts {
		t.Partitions[i].Partition = id
	}
	x.Relayed = map[string]filter.Stats{topicKey(x, t.Topic, t.TopicID): st}
	for _, f := range p.chain {
		f.(filter.ProduceStreamer).ProduceRelayed(c.ctx, x)
	}
	if acks0 {
		c.forwardedUnanswered(p)
		return true, true
	}
	return true, c.enqueue(p)
}
