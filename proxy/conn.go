package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/proxy/bufpool"
	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/proxy/kafkaerr"
)

// clientConn is one client connection and its upstream connection.
//
// Two goroutines serve it: the read loop reads requests, runs the request
// filters and forwards them; the write loop takes pending exchanges in
// request order, reads each upstream response (or takes the local one),
// runs the response filters and writes the answer. Kafka answers in order on
// a connection, so the queue between the two is the whole ordering story.
type clientConn struct {
	s  *Server
	g  *group
	nc net.Conn
	// raw is the accepted connection, never reassigned (nc becomes the
	// TLS connection after the handshake, on serve's goroutine): drain
	// and close, which other goroutines call, use it.
	raw net.Conn
	cr  capReader     // reads from nc
	br  *bufio.Reader // reads from cr
	fc  *filter.Conn
	log *zap.Logger

	ctx    context.Context
	cancel context.CancelFunc

	up       *upConn
	upRaw    net.Conn // the upstream net.Conn, read directly for raw responses
	versions versionTable
	upVers   *kmsg.ApiVersionsResponse

	inflight chan *pending
	closed   chan struct{}
	once     sync.Once
	// upMu orders close against connectUpstream setting up: a close
	// that runs while the upstream is being dialled either sees the new
	// connection or makes connectUpstream close it.
	upMu     sync.Mutex
	draining chan struct{}
	drainMu  sync.Once

	// SASL state, owned by the read loop.
	authRequired  bool
	authenticated bool
	saslMech      string
	saslSession   filter.Session
	saslRaw       bool // after SaslHandshake v0: raw tokens follow
	sessionExpiry time.Time

	// upRenew, if set, is when the upstream SASL session is close to its
	// end: the connection closes at the next request boundary after it,
	// with nothing owed, and the client reconnects (owned by the read loop).
	upRenew time.Time

	// outstanding counts exchanges queued for the write loop and not yet
	// answered: a connection owed answers is not idle.
	outstanding atomic.Int32

	// answerThenClose is set by the read loop when it queued a final
	// answer (a refused SASL exchange): the connection closes once the
	// write loop has written it, not before.
	answerThenClose bool
}

// pending is one request on its way through the connection.
type pending struct {
	x          filter.Exchange
	chain      []filter.Filter
	decodeResp bool
	stream     bool   // a Fetch response relayed as it arrives (fetchstream.go)
	local      []byte // a complete frame to send as is (ApiVersions, SASL)
	closeAfter bool   // close the connection once local is written
	filtered   bool   // the response filters have run
	buf        *[]byte
	tRead      time.Time
	tSent      time.Time
}

// newClientConn sets up a connection accepted from ap (its remote address).
func newClientConn(s *Server, g *group, nc net.Conn, ap netip.AddrPort, nodeID int32) *clientConn {
	id := s.nextID.Add(1)
	fc := &filter.Conn{ID: id, Listener: g.cfg.Name, ClientAddr: ap, NodeID: nodeID, Opened: time.Now()}
	ctx, cancel := context.WithCancel(s.ctx)
	c := &clientConn{
		s:        s,
		g:        g,
		nc:       nc,
		raw:      nc,
		fc:       fc,
		ctx:      ctx,
		cancel:   cancel,
		inflight: make(chan *pending, s.cfg.MaxInFlight),
		closed:   make(chan struct{}),
		draining: make(chan struct{}),
		log: s.log.With(zap.Uint64("conn_id", id), zap.String("client_addr", ap.String()),
			zap.String("listener", g.cfg.Name), zap.Int32("node_id", nodeID)),
		authRequired: g.auth != nil && len(g.cfg.SASL) > 0,
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return c
}

// close tears the connection down at once; safe to call more than once.
func (c *clientConn) close() {
	c.once.Do(func() {
		c.upMu.Lock()
		close(c.closed)
		up := c.up
		c.upMu.Unlock()
		c.cancel()
		c.raw.Close()
		if up != nil {
			up.Close()
		}
	})
}

// lingerClose sends FIN after a final answer and discards what the client
// still sends for a moment, so that the kernel does not reset the
// connection (dropping the answer) because unread bytes were pending.
func (c *clientConn) lingerClose() {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := c.nc.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.nc, 1<<20))
}

// isDraining reports whether drain has been called.
func (c *clientConn) isDraining() bool {
	select {
	case <-c.draining:
		return true
	default:
		return false
	}
}

// drain stops reading new requests; in-flight ones are answered.
func (c *clientConn) drain() {
	c.drainMu.Do(func() {
		close(c.draining)
		_ = c.raw.SetReadDeadline(time.Now())
	})
}

func (c *clientConn) serve() {
	c.s.m.connsOpen.WithLabelValues(c.g.cfg.Name).Inc()
	c.s.m.connsTotal.WithLabelValues(c.g.cfg.Name).Inc()
	defer c.s.m.connsOpen.WithLabelValues(c.g.cfg.Name).Dec()
	defer c.close()

	if c.g.tls != nil {
		tc := tls.Server(c.nc, c.g.tls)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.HandshakeContext(c.ctx); err != nil {
			c.log.Info("client tls handshake failed", zap.Error(err))
			return
		}
		_ = tc.SetDeadline(time.Time{})
		c.nc = tc
		if c.g.auth != nil {
			p, err := c.g.auth.TLSPrincipal(tc.ConnectionState())
			if err != nil {
				c.log.Info("client certificate refused", zap.Error(err))
				c.authEvent("mtls", nil, err)
				return
			}
			if p != nil {
				c.fc.SetPrincipal(p)
				c.authEvent("mtls", p, nil)
				if !c.authRequired {
					c.authenticated = true
				}
			}
		}
	}
	c.cr.r = c.nc
	c.br = bufio.NewReaderSize(&c.cr, 64<<10)
	c.log.Debug("client connected")

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		defer c.recoverPanic("write")
		c.writeLoop()
	}()
	drained := c.safeReadLoop()
	if !drained {
		c.close()
	}
	close(c.inflight)
	<-writerDone
	c.log.Debug("client disconnected")
}

// refusedEvent reports a request refused before any filter (audit).
func (c *clientConn) refusedEvent(h requestHeader, reason string) {
	if c.s.onRefused != nil {
		c.s.onRefused(c.fc, h.Key, h.Version, reason)
	}
}

// authEvent reports an authentication attempt to metrics consumers (audit).
func (c *clientConn) authEvent(mech string, p *filter.Principal, err error) {
	if c.s.onAuth != nil {
		c.s.onAuth(c.fc, mech, p, err)
	}
}

// Frames at least cutThroughMin bytes long are read cut-through: only the
// first headPeek bytes are read before the header is parsed; on the raw path
// (no filter wants the key) the rest is copied to the upstream as it
// arrives, instead of being stored whole first.
const (
	cutThroughMin = 256 << 10
	headPeek      = 4 << 10
	copyChunk     = 256 << 10
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyChunk); return &b }}

// splicedBytes counts what copyN handed socket to socket
// (sluice_proxy_spliced_bytes_total).
var splicedBytes atomic.Int64

// vectoredFrames counts the changed Fetch responses written with their
// large record batches in place (fetchvec.go), for tests.
var vectoredFrames atomic.Int64

// readRequest reads one frame, or for a large frame its first headPeek
// bytes, into a pooled buffer holding the size prefix and what was read. It
// returns the buffer, the frame bytes read (without the prefix) and how many
// bytes of the frame are still unread.
func (c *clientConn) readRequest() (*[]byte, []byte, int, error) {
	if err := c.await(); err != nil {
		return nil, nil, 0, err
	}
	var sz [4]byte
	if _, err := io.ReadFull(c.br, sz[:]); err != nil {
		return nil, nil, 0, err
	}
	n := int32(binary.BigEndian.Uint32(sz[:]))
	if n < 0 || n > c.s.cfg.MaxFrameBytes {
		return nil, nil, 0, fmt.Errorf("%w: %d bytes (max_frame_bytes %d)", errFrameTooLarge, n, c.s.cfg.MaxFrameBytes)
	}
	if c.authRequired && !c.authenticated && n > c.saslFrameLimit() {
		return nil, nil, 0, fmt.Errorf("%w: %d bytes before authentication (max_sasl_frame_bytes %d)", errSASLFrameTooLarge, n, c.saslFrameLimit())
	}
	read := int(n)
	if read >= cutThroughMin {
		read = headPeek
		// The rest of this frame is copied from nc, most of it socket
		// to socket; reading ahead of the next frame's head would send
		// the next large one's first 64 KiB through memory instead.
		// Small frames read whole lift the bound again, so pipelined
		// small requests are still read many to a call.
		c.cr.n = 4 + headPeek
	} else {
		c.cr.n = 0
	}
	buf := bufpool.Get(read + 4)
	b := append(*buf, sz[:]...)
	b = b[:4+read]
	if _, err := io.ReadFull(c.br, b[4:]); err != nil {
		bufpool.Put(buf)
		return nil, nil, 0, err
	}
	*buf = b
	c.s.m.bytesIn.Add(float64(len(b)))
	return buf, b[4:], int(n) - read, nil
}

// Connections closed for lack of activity (await).
var (
	errIdle        = errors.New("proxy: connection idle for connections_max_idle")
	errAuthTimeout = errors.New("proxy: not authenticated within authentication_timeout")
	// errUpstreamSession: the gateway's SASL session with the upstream
	// broker is ending (KIP-368); the client reconnects and gets a fresh
	// one, with nothing lost: no request is read after it, none is owed.
	errUpstreamSession = errors.New("proxy: the upstream SASL session ends")
)

// await waits for the first byte of the next request under the
// connection's deadlines: authentication_timeout from the accept while a
// SASL listener's connection has not authenticated, else
// connections_max_idle, which a connection owed answers does not count
// against (a long poll, a rebalance), and the upstream session's end
// (upRenew). Then the frame itself gets connections_max_idle to arrive.
// The first byte is peeked, not read, so a wait that times out consumes
// nothing and can be resumed.
func (c *clientConn) await() error {
	idle, auth := c.s.cfg.ConnectionsMaxIdle, c.s.cfg.AuthenticationTimeout
	authWait := c.authRequired && !c.authenticated && auth > 0
	renew := c.upRenew
	if authWait {
		renew = time.Time{}
	}
	if idle <= 0 && !authWait && renew.IsZero() {
		return nil
	}
	since := time.Now()
	for c.br.Buffered() == 0 && (renew.IsZero() || time.Now().Before(renew)) {
		var dl time.Time
		switch {
		case authWait:
			dl = c.fc.Opened.Add(auth)
		case idle > 0:
			dl = since.Add(idle)
		}
		if !renew.IsZero() && (dl.IsZero() || renew.Before(dl)) {
			dl = renew
		}
		_ = c.nc.SetReadDeadline(dl)
		// drain sets a deadline in the past after closing draining:
		// checked after setting ours, one of the two is seen.
		select {
		case <-c.draining:
			return os.ErrDeadlineExceeded
		default:
		}
		_, err := c.br.Peek(1)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		select {
		case <-c.draining:
			return err
		default:
		}
		if authWait {
			return errAuthTimeout
		}
		if idle > 0 && !time.Now().Before(since.Add(idle)) {
			if c.outstanding.Load() == 0 {
				return errIdle
			}
			since = time.Now()
		}
	}
	if !renew.IsZero() && !time.Now().Before(renew) {
		// Close at this boundary once every answer owed is written;
		// a request the client sent meanwhile is not read, so it was
		// never forwarded and the client's retry is safe.
		for c.outstanding.Load() > 0 {
			select {
			case <-c.closed:
				return net.ErrClosed
			case <-time.After(10 * time.Millisecond):
			}
		}
		return errUpstreamSession
	}
	switch {
	case authWait:
		_ = c.nc.SetReadDeadline(c.fc.Opened.Add(auth))
	case idle > 0:
		_ = c.nc.SetReadDeadline(time.Now().Add(idle))
	default:
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	return nil
}

// errSASLFrameTooLarge: a frame before authentication, or an ApiVersions or
// SASL frame at any time, longer than max_sasl_frame_bytes.
var errSASLFrameTooLarge = errors.New("proxy: frame larger than max_sasl_frame_bytes")

// saslFrameLimit is the size bound of frames before authentication and of
// ApiVersions and SASL frames.
func (c *clientConn) saslFrameLimit() int32 {
	return min(c.s.cfg.MaxSASLFrameBytes, c.s.cfg.MaxFrameBytes)
}

// readRest completes a frame readRequest left partly unread.
func (c *clientConn) readRest(buf *[]byte, frame []byte, rest int) (*[]byte, []byte, error) {
	have := 4 + len(frame)
	nb := bufpool.Get(have + rest)
	b := append(*nb, (*buf)[:have]...)
	b = b[:have+rest]
	bufpool.Put(buf)
	if _, err := io.ReadFull(c.br, b[have:]); err != nil {
		bufpool.Put(nb)
		return nil, nil, err
	}
	*nb = b
	c.s.m.bytesIn.Add(float64(rest))
	return nb, b[4:], nil
}

// copyRest relays the unread rest of a cut-through frame to the upstream:
// what the client reader has buffered, then socket to socket (copyN).
func (c *clientConn) copyRest(rest int) error {
	if b := min(c.br.Buffered(), rest); b > 0 {
		p, _ := c.br.Peek(b)
		if _, err := c.up.Write(p); err != nil {
			return err
		}
		_, _ = c.br.Discard(b)
		c.s.m.bytesIn.Add(float64(b))
		rest -= b
	}
	if rest == 0 {
		return nil
	}
	n, err := copyN(c.up, c.nc, int64(rest))
	c.s.m.bytesIn.Add(float64(n))
	return err
}

// copyN copies n bytes from src to dst: with splice(2) when both are
// plain TCP connections (the bytes go socket to socket without a copy
// through user space), else through a pooled 256 KiB buffer (TLS). Measured
// with incompressible records (make bench, one run, alternating rounds):
// splice cut the gateway's CPU per MB from 0.51 to 0.35 ms and moved
// consume 1.11x and produce 1.06x against the buffered copy. (Against
// compressed records, a twentieth of the bytes on the wire, it had measured
// slower: more, smaller system calls per megabyte.)
func copyN(dst io.Writer, src io.Reader, n int64) (int64, error) {
	if u, ok := dst.(*upConn); ok {
		dst = u.Conn
	}
	if d, ok := dst.(*net.TCPConn); ok {
		if s, ok := src.(*net.TCPConn); ok {
			w, err := d.ReadFrom(io.LimitReader(s, n))
			splicedBytes.Add(w)
			if err == nil && w < n {
				err = io.ErrUnexpectedEOF
			}
			return w, err
		}
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	// The wrappers hide ReadFrom and WriteTo, so that io.CopyBuffer uses
	// the large buffer (TLS connections would copy through 32 KiB).
	w, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{io.LimitReader(src, n)}, *bp)
	if err == nil && w < n {
		err = io.ErrUnexpectedEOF
	}
	return w, err
}

// safeReadLoop is readLoop with a panic in it contained to this
// connection (see recoverPanic).
func (c *clientConn) safeReadLoop() (drained bool) {
	defer c.recoverPanic("read")
	return c.readLoop()
}

// recoverPanic, deferred at the top of a connection's goroutines, turns a
// panic (a bug: no input should cause one) into a closed connection with
// an error log and a count, instead of the end of the process and of every
// other client's connection.
func (c *clientConn) recoverPanic(loop string) {
	r := recover()
	if r == nil {
		return
	}
	c.s.m.panics.Inc()
	c.log.Error("connection closed after a panic in the gateway; this is a bug, please report it",
		zap.String("loop", loop), zap.Any("panic", r), zap.Stack("stack"))
	c.close()
	if loop == "write" {
		// The exchange it was answering is lost with the panic; the
		// ones queued behind it are abandoned as on a write error
		// (their response filters run, for audit) until the read loop,
		// which the close ends, closes the queue.
		for p := range c.inflight {
			c.abandon(p)
		}
	}
}

// readLoop reads requests until the client goes away, a request is refused
// by closing, or the connection drains. It reports whether it stopped for a
// drain, in which case in-flight requests are still answered.
func (c *clientConn) readLoop() (drained bool) {
	for {
		buf, frame, rest, err := c.readRequest()
		if err != nil {
			select {
			case <-c.draining:
				return true
			default:
			}
			switch {
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, os.ErrDeadlineExceeded):
			case errors.Is(err, errFrameTooLarge):
				c.log.Warn("closing connection: request frame too large", zap.Error(err))
				c.s.m.request(-1, outcomeError)
			case errors.Is(err, errSASLFrameTooLarge):
				c.saslFrameTooLarge(err)
			case errors.Is(err, errIdle):
				c.log.Debug("closing idle connection", zap.Duration("connections_max_idle", c.s.cfg.ConnectionsMaxIdle))
				c.s.m.connsIdle.WithLabelValues(c.g.cfg.Name).Inc()
			case errors.Is(err, errUpstreamSession):
				c.log.Info("closing connection at a request boundary: the gateway's upstream SASL session ends (KIP-368); the client reconnects",
					zap.Time("upstream_session_renew_at", c.upRenew))
			case errors.Is(err, errAuthTimeout):
				c.log.Info("closing connection: not authenticated in time", zap.Duration("authentication_timeout", c.s.cfg.AuthenticationTimeout))
				c.authEvent("none", nil, &filter.AuthError{Reason: "timeout", Message: err.Error(), Gateway: true})
			default:
				c.log.Debug("client read failed", zap.Error(err))
			}
			return false
		}
		tRead := time.Now()
		if c.saslRaw {
			if rest > 0 {
				if buf, frame, err = c.readRest(buf, frame, rest); err != nil {
					return c.isDraining()
				}
			}
			if !c.saslRawToken(buf, frame, tRead) {
				return false
			}
			continue
		}
		h, err := parseRequestHeader(frame)
		if err == nil && gatewayLocal(h.Key) && len(frame)+rest > int(c.saslFrameLimit()) {
			// Before authentication readRequest bounds every frame;
			// after it, ApiVersions and SASL frames are bounded here,
			// whole or read in part.
			bufpool.Put(buf)
			c.saslFrameTooLarge(fmt.Errorf("%w: %s of %d bytes (max_sasl_frame_bytes %d)", errSASLFrameTooLarge, apiName(h.Key), len(frame)+rest, c.saslFrameLimit()))
			return false
		}
		if rest > 0 && (err != nil || !c.cutThrough(h, frame[min(h.BodyOffset, len(frame)):])) {
			// Not for the raw path (or a header longer than the
			// peek): read the whole frame.
			if buf, frame, err = c.readRest(buf, frame, rest); err != nil {
				// A drain's deadline in the middle of a large frame:
				// nothing of it went upstream, so it is dropped and the
				// answers owed before it are still written.
				return c.isDraining()
			}
			rest = 0
			h, err = parseRequestHeader(frame)
		}
		if err != nil {
			bufpool.Put(buf)
			if errors.Is(err, errUnknownKey) {
				c.log.Warn("closing connection: unknown api key; not forwarded",
					zap.Int16("api_key", h.Key), zap.Int16("api_version", h.Version), zap.Int32("correlation_id", h.CorrelationID))
				c.refusedEvent(h, "unknown api key; not forwarded")
			} else {
				c.log.Warn("closing connection: malformed request header", zap.Error(err))
			}
			c.s.m.request(h.Key, outcomeError)
			return false
		}
		if !c.dispatch(h, buf, frame, rest, tRead) {
			return c.answerThenClose
		}
	}
}

// saslFrameTooLarge logs and counts a connection closed for a frame over
// max_sasl_frame_bytes (an authentication failure, as Kafka counts it).
func (c *clientConn) saslFrameTooLarge(err error) {
	c.log.Warn("closing connection: frame too large for authentication", zap.Error(err))
	c.s.m.request(-1, outcomeError)
	c.authEvent("none", nil, &filter.AuthError{Reason: "frame_too_large", Message: err.Error(), Gateway: true})
}

// cutThrough reports whether a large request may be relayed before it is
// read whole: nothing needs it decoded, and for Produce the acks can be
// seen in what was read; or, for a Produce request under filters, it names
// one topic and every filter can take it streamed (producestream.go).
func (c *clientConn) cutThrough(h requestHeader, body []byte) bool {
	if gatewayLocal(h.Key) || apiFor(h.Key) == nil {
		return false
	}
	chain := c.s.chains[h.Key]
	if h.Key == 0 {
		if len(chain) > 0 { // producestream.go
			_, ok := parseProduceHead(body, h.Version, h.Flexible)
			return ok && streamsProduce(chain)
		}
		_, ok := produceAcks(body, h.Version, h.Flexible)
		return ok
	}
	return len(chain) == 0
}

// dispatch handles one parsed request; false closes the connection. rest
// is the unread tail of a cut-through frame.
func (c *clientConn) dispatch(h requestHeader, buf *[]byte, frame []byte, rest int, tRead time.Time) bool {
	if c.authRequired && !c.authenticated && !gatewayLocal(h.Key) {
		bufpool.Put(buf)
		c.log.Warn("closing connection: request before SASL authentication", zap.String("api", apiName(h.Key)))
		c.s.m.request(h.Key, outcomeError)
		c.authEvent("none", nil, &filter.AuthError{Reason: "unauthenticated_request", Message: "request before authentication", Gateway: true})
		return false
	}
	switch h.Key {
	case keyApiVersions:
		defer bufpool.Put(buf)
		return c.apiVersions(h, frame, tRead)
	case keySaslHandshake:
		defer bufpool.Put(buf)
		return c.saslHandshake(h, frame, tRead)
	case keySaslAuthenticate:
		defer bufpool.Put(buf)
		return c.saslAuthenticate(h, frame, tRead)
	}
	if !c.sessionExpiry.IsZero() && tRead.After(c.sessionExpiry) {
		bufpool.Put(buf)
		c.log.Info("closing connection: SASL session expired without re-authentication", zap.String("principal", c.fc.Principal().ID))
		c.s.m.request(h.Key, outcomeError)
		return false
	}
	if c.up == nil {
		if err := c.connectUpstream(); err != nil {
			bufpool.Put(buf)
			c.log.Warn("closing connection: upstream unavailable", zap.Error(err))
			c.s.m.request(h.Key, outcomeError)
			return false
		}
	}
	if !c.versions.supports(h.Key, h.Version) {
		bufpool.Put(buf)
		reason := "api version not supported by the gateway and upstream; not forwarded"
		if c.s.refuses != nil && c.s.refuses(h.Key) {
			reason = "api refused by policy (inter-broker or controller); not forwarded"
		}
		c.log.Warn("closing connection: "+reason,
			zap.String("api", apiName(h.Key)), zap.Int16("api_key", h.Key), zap.Int16("api_version", h.Version))
		c.refusedEvent(h, reason)
		c.s.m.request(h.Key, outcomeError)
		return false
	}
	return c.forward(h, buf, frame, rest, tRead)
}

// forward runs the request filters and forwards the request upstream. A
// cut-through frame (rest > 0) takes the raw path, or with filters
// streamProduce.
func (c *clientConn) forward(h requestHeader, buf *[]byte, frame []byte, rest int, tRead time.Time) bool {
	p := &pending{buf: buf, tRead: tRead, chain: c.s.chains[h.Key]}
	x := &p.x
	x.Conn, x.Key, x.Version, x.CorrelationID = c.fc, h.Key, h.Version, h.CorrelationID
	x.Received, x.Topics = tRead, c.s.cluster
	p.decodeResp = len(p.chain) > 0 || rewriteNeeded(h.Key, h.Version)
	// A flexible Fetch response of a layout fetchstream.go knows can be
	// relayed as it arrives: always without filters, with them when every
	// one takes it so (decided once the request filters ran).
	streamable := h.Key == 1 && h.Version >= apis[1].flexibleFrom && h.Version <= fetchStreamMaxVersion
	p.stream = streamable && len(p.chain) == 0

	body := frame[h.BodyOffset:]
	acks0 := false
	if h.Key == 0 {
		if a, ok := produceAcks(body, h.Version, h.Flexible); ok && a == 0 {
			acks0 = true
		}
	}

	// Buffer ownership: the read loop keeps whatever it writes upstream
	// (the raw frame, or the re-encoded request) and frees it after the
	// write; the write loop frees p.buf, which a decoded request aliases,
	// when the exchange completes. Nothing the read loop still writes is
	// visible to the write loop.
	out, wbuf := *buf, buf
	p.buf = nil
	if rest > 0 && len(p.chain) > 0 {
		if done, ok := c.streamProduce(p, h, buf, frame, rest, acks0); done {
			return ok
		}
		// Decided on its head and nobody counts: cut through below, as
		// without filters.
	} else if len(p.chain) > 0 {
		req := kmsg.RequestForKey(h.Key)
		req.SetVersion(h.Version)
		if err := req.ReadFrom(body); err != nil {
			bufpool.Put(buf)
			c.log.Warn("closing connection: malformed request body", zap.String("api", apiName(h.Key)),
				zap.Int16("api_version", h.Version), zap.Error(err))
			c.s.m.request(h.Key, outcomeError)
			return false
		}
		x.Request = req
		x.ClientID = h.ClientID()
		p.buf = buf
		for _, f := range p.chain {
			err := f.OnRequest(c.ctx, x)
			if err == nil {
				if x.Local != nil {
					break
				}
				continue
			}
			if d, ok := filter.AsDenial(err); ok {
				resp, rerr := kafkaerr.ErrorResponse(x.Request, d.Code)
				if rerr != nil {
					bufpool.Put(buf)
					c.log.Warn("closing connection: request denied and no error response exists for it",
						zap.String("filter", f.Name()), zap.String("api", apiName(h.Key)), zap.String("reason", d.Reason), zap.Error(rerr))
					c.s.m.request(h.Key, outcomeDenied)
					return false
				}
				x.Local = resp
				x.Set(deniedKey{}, d)
				break
			}
			bufpool.Put(buf)
			c.log.Warn("closing connection: filter failed", zap.String("filter", f.Name()), zap.String("api", apiName(h.Key)), zap.Error(err))
			c.s.m.request(h.Key, outcomeError)
			return false
		}
		if x.Local != nil {
			if acks0 {
				// acks=0 never gets a response, even an error one.
				c.runResponseFilters(p)
				bufpool.Put(buf)
				c.s.m.request(h.Key, outcomeDenied)
				return true
			}
			return c.enqueue(p)
		}
		p.stream = streamable && streamsFetch(p.chain, x)
		// A filter may edit the request or replace it: either way what
		// goes upstream is x.Request, and a replacement is a change.
		if x.Request == req && !x.RequestChanged() && reportsRequestChanges(p.chain, h.Key) {
			return c.forwardAsRead(p, h, out, acks0)
		}
		wbuf = bufpool.Get(len(frame) + 64)
		out = append(*wbuf, 0, 0, 0, 0)
		out = append(out, frame[:h.BodyOffset]...)
		out = x.Request.AppendTo(out)
		binary.BigEndian.PutUint32(out, uint32(len(out)-4))
		*wbuf = out
	}

	// tSent is set before the hand-off: the write loop reads it.
	p.tSent = time.Now()
	if !acks0 && !c.enqueue(p) {
		bufpool.Put(wbuf)
		return false
	}
	_, err := c.up.Write(out)
	bufpool.Put(wbuf)
	if err == nil && rest > 0 {
		c.s.m.stream(h.Key)
		err = c.copyRest(rest)
	}
	if err != nil {
		c.log.Info("upstream write failed", zap.Error(err))
		c.s.m.upstreamErrors.WithLabelValues("io").Inc()
		if acks0 {
			c.abandon(p)
		}
		return false
	}
	if acks0 {
		c.forwardedUnanswered(p)
	}
	return true
}

// forwardedUnanswered completes an exchange forwarded with acks=0, which
// gets no response: it is counted, its response filters run (for audit)
// and its buffer is freed.
func (c *clientConn) forwardedUnanswered(p *pending) {
	c.s.m.request(p.x.Key, outcomeForwarded)
	c.s.m.gateway(p.x.Key, time.Since(p.tRead).Seconds())
	c.runResponseFilters(p)
	c.release(p)
}

// forwardAsRead forwards a decoded request that no filter changed as the
// client's bytes (out, the frame in p.buf). The decoded request aliases
// p.buf, which the write loop frees when the exchange completes, so the
// frame is written upstream before the hand-off, not after as on the other
// paths: the buffer is the read loop's until then.
func (c *clientConn) forwardAsRead(p *pending, h requestHeader, out []byte, acks0 bool) bool {
	p.tSent = time.Now()
	if _, err := c.up.Write(out); err != nil {
		c.log.Info("upstream write failed", zap.Error(err))
		c.s.m.upstreamErrors.WithLabelValues("io").Inc()
		c.abandon(p)
		return false
	}
	if acks0 {
		c.forwardedUnanswered(p)
		return true
	}
	return c.enqueue(p)
}

// reportsRequestChanges reports whether every filter of chain reports its
// changes to requests of key (filter.RequestChangeReporter).
func reportsRequestChanges(chain []filter.Filter, key int16) bool {
	for _, f := range chain {
		if cr, ok := f.(filter.RequestChangeReporter); !ok || !cr.ReportsRequestChanges(key) {
			return false
		}
	}
	return true
}

type deniedKey struct{}

// streamsFetch reports whether every filter of chain takes this Fetch
// exchange's response streamed (filter.FetchStreamer).
func streamsFetch(chain []filter.Filter, x *filter.Exchange) bool {
	for _, f := range chain {
		if fs, ok := f.(filter.FetchStreamer); !ok || !fs.StreamFetch(x) {
			return false
		}
	}
	return true
}

// fetchHooks asks the chain's streamers about each topic of a streamed
// response: the first non-zero code withholds it, and every streamer is
// asked (the policy records its decisions there).
func (c *clientConn) fetchHooks(p *pending) *fetchHooks {
	x := &p.x
	return &fetchHooks{
		delivered: make(map[string]filter.Stats, 2),
		count:     countsFetch(p.chain),
		topic: func(name string, id [16]byte) (int16, string) {
			key := topicKey(x, name, id)
			var code int16
			for _, f := range p.chain {
				if cd := f.(filter.FetchStreamer).FetchTopic(c.ctx, x, name, id); cd != 0 && code == 0 {
					code = cd
				}
			}
			return code, key
		},
	}
}

// countsProduce reports whether a filter of chain reads a streamed
// Produce request's partitions and counts (filter.ProduceCounter).
func countsProduce(chain []filter.Filter) bool {
	for _, f := range chain {
		if pc, ok := f.(filter.ProduceCounter); ok && pc.CountsProduce() {
			return true
		}
	}
	return false
}

// countsFetch reports whether a filter of chain reads a streamed Fetch
// response's counts (filter.FetchCounter).
func countsFetch(chain []filter.Filter) bool {
	for _, f := range chain {
		if fc, ok := f.(filter.FetchCounter); ok && fc.CountsFetch() {
			return true
		}
	}
	return false
}

// topicKey names a topic for counts: by name, or by its id resolved
// (Fetch v13+, Produce v13+); "" when neither is known.
func topicKey(x *filter.Exchange, name string, id [16]byte) string {
	if name == "" && x.Topics != nil {
		name, _ = x.Topics.TopicName(id)
	}
	return name
}

// localOutcome is the outcome of a request a filter answered locally:
// denied when a filter refused it (a filter.Denial), or when the filters
// decided resources and allowed none of them (the policy answers a request
// whose every resource it denied itself, e.g. a Produce to denied topics);
// else local.
func localOutcome(x *filter.Exchange) int {
	if x.Get(deniedKey{}) != nil {
		return outcomeDenied
	}
	if len(x.Decisions) == 0 {
		return outcomeLocal
	}
	for i := range x.Decisions {
		if x.Decisions[i].Allow {
			return outcomeLocal
		}
	}
	return outcomeDenied
}

// reportsChanges reports whether every filter of chain reports its changes
// to responses of key (filter.ChangeReporter).
func reportsChanges(chain []filter.Filter, key int16) bool {
	for _, f := range chain {
		if cr, ok := f.(filter.ChangeReporter); !ok || !cr.ReportsResponseChanges(key) {
			return false
		}
	}
	return true
}

func (c *clientConn) enqueue(p *pending) bool {
	c.outstanding.Add(1)
	select {
	case c.inflight <- p:
		return true
	case <-c.closed:
		c.abandon(p)
		return false
	}
}

// abandon frees an exchange whose answer will never be written (the client
// went away, or the connection failed first). Its response filters still
// run, once, without a response if none was read, so that what the request
// filters decided is recorded (audit): a Produce that reached the broker is
// never left unaudited because its client did not wait for the answer.
func (c *clientConn) abandon(p *pending) {
	if len(p.chain) > 0 && !p.filtered && p.local == nil {
		x := &p.x
		x.Response = x.Local // nil for a forwarded request: not read
		// The connection's context is cancelled by now; the filters
		// get one that is not, bounded.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 5*time.Second)
		c.runResponseFiltersCtx(ctx, p, true)
		cancel()
	}
	c.release(p)
}

func (c *clientConn) release(p *pending) {
	bufpool.Put(p.buf)
	p.buf = nil
}

// connectUpstream dials the upstream broker this connection fronts.
func (c *clientConn) connectUpstream() error {
	var addrs []string
	if c.fc.NodeID >= 0 {
		a, ok := c.s.cluster.brokerAddr(c.fc.NodeID)
		if !ok {
			return fmt.Errorf("proxy: upstream node %d is not known", c.fc.NodeID)
		}
		addrs = []string{a}
	} else {
		addrs = c.s.cluster.bootstrapOrder(c.s.cfg.Upstream.Brokers)
	}
	var errs []error
	for i, a := range addrs {
		if i == 3 {
			break
		}
		up, err := c.s.up.dial(c.ctx, a)
		if err != nil {
			errs = append(errs, err)
			kind := "dial"
			if up == nil && isAuthErr(err) {
				kind = "auth"
			}
			c.s.m.upstreamErrors.WithLabelValues(kind).Inc()
			continue
		}
		c.upMu.Lock()
		select {
		case <-c.closed:
			c.upMu.Unlock()
			up.Close()
			return errors.New("proxy: connection closed")
		default:
		}
		c.up = up
		c.upMu.Unlock()
		c.upRaw = up.Conn
		if up.lifetime > 0 {
			// A margin of a tenth (at least 100ms, at most half) for
			// the answers owed then to arrive.
			margin := min(max(up.lifetime/10, 100*time.Millisecond), up.lifetime/2)
			c.upRenew = up.authStart.Add(up.lifetime - margin)
		}
		c.upVers = up.versions
		c.versions = intersectVersions(up.versions, c.authRequired, c.s.refuses)
		c.s.cacheVersions(up.versions)
		return nil
	}
	return errors.Join(errs...)
}

func isAuthErr(err error) bool {
	var ke *kerr.Error
	return errors.As(err, &ke) && (ke.Code == kerr.SaslAuthenticationFailed.Code || ke.Code == kerr.UnsupportedSaslMechanism.Code || ke.Code == kerr.IllegalSaslState.Code)
}

// apiVersions answers ApiVersions locally from the intersection of the
// upstream's versions and the gateway's.
func (c *clientConn) apiVersions(h requestHeader, frame []byte, tRead time.Time) bool {
	if c.versions == nil {
		if c.authRequired && !c.authenticated {
			// Do not dial upstream for an unauthenticated stranger: answer
			// from the versions the gateway itself read.
			ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
			v := c.s.loadVersions(ctx)
			cancel()
			if v == nil {
				c.log.Warn("closing connection: upstream api versions unknown (upstream unavailable)")
				c.s.m.request(h.Key, outcomeError)
				return false
			}
			c.upVers = v
			c.versions = intersectVersions(v, c.authRequired, c.s.refuses)
		} else if err := c.connectUpstream(); err != nil {
			c.log.Warn("closing connection: upstream unavailable", zap.Error(err))
			c.s.m.request(h.Key, outcomeError)
			return false
		}
	}
	if h.Version >= 0 && h.Version <= apis[keyApiVersions].maxVersion {
		req := kmsg.NewPtrApiVersionsRequest()
		req.SetVersion(h.Version)
		if err := req.ReadFrom(frame[h.BodyOffset:]); err == nil && req.ClientSoftwareName != "" {
			c.log.Debug("client software", zap.String("name", req.ClientSoftwareName), zap.String("version", req.ClientSoftwareVersion))
		}
	}
	resp := c.versions.apiVersionsResponse(h.Version, c.upVers)
	return c.answerLocal(h, resp, tRead, false)
}

// answerLocal queues a gateway-made response in request order.
func (c *clientConn) answerLocal(h requestHeader, resp kmsg.Response, tRead time.Time, closeAfter bool) bool {
	// ApiVersions answers with header v0 at the version it chose, which
	// may be lower than the request's (v0 for an unknown version).
	frame := appendResponseFrame(nil, h.CorrelationID, h.Key, resp.GetVersion(), resp)
	p := &pending{local: frame, closeAfter: closeAfter, tRead: tRead}
	p.x.Key, p.x.Version, p.x.CorrelationID = h.Key, h.Version, h.CorrelationID
	c.s.m.request(h.Key, outcomeLocal)
	if !c.enqueue(p) {
		return false
	}
	if closeAfter {
		c.answerThenClose = true
		return false
	}
	return true
}

// writeLoop answers pending exchanges in order.
func (c *clientConn) writeLoop() {
	for p := range c.inflight {
		err := c.respond(p)
		c.outstanding.Add(-1)
		if err != nil {
			if errors.Is(err, errCloseAfter) {
				c.lingerClose()
			} else {
				select {
				case <-c.closed:
				default:
					c.log.Info("closing connection", zap.Error(err))
				}
			}
			c.close()
			c.abandon(p)
			for p := range c.inflight {
				c.abandon(p)
			}
			return
		}
		c.release(p)
	}
}

var errCloseAfter = errors.New("proxy: close after response")

// writeDeadline gives the answer about to be written connections_max_idle
// to go out: a client that takes none for that long is gone.
func (c *clientConn) writeDeadline() {
	if idle := c.s.cfg.ConnectionsMaxIdle; idle > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(idle))
	}
}

// respond answers one exchange; the write loop frees it after.
func (c *clientConn) respond(p *pending) error {
	x := &p.x
	// After the write, whichever path writes: the request or the
	// response may hold filters' buffers (masked records).
	defer x.Done()
	if p.local != nil || x.Local != nil {
		c.writeDeadline()
	}
	if p.local != nil {
		if _, err := c.nc.Write(p.local); err != nil {
			return err
		}
		c.s.m.bytesOut.Add(float64(len(p.local)))
		c.s.m.gateway(x.Key, time.Since(p.tRead).Seconds())
		if p.closeAfter {
			return errCloseAfter
		}
		return nil
	}
	if x.Local != nil {
		x.Response = x.Local
		c.runResponseFilters(p)
		out := bufpool.Get(4096)
		*out = appendResponseFrame(*out, x.CorrelationID, x.Key, x.Version, x.Response)
		_, err := c.nc.Write(*out)
		c.s.m.bytesOut.Add(float64(len(*out)))
		bufpool.Put(out)
		c.s.m.request(x.Key, localOutcome(x))
		c.s.m.gateway(x.Key, time.Since(p.tRead).Seconds())
		return err
	}

	// Forwarded: read the upstream's response header.
	var hdr [8]byte
	if _, err := io.ReadFull(c.upRaw, hdr[:]); err != nil {
		c.s.m.upstreamErrors.WithLabelValues("io").Inc()
		return fmt.Errorf("proxy: upstream read: %w", err)
	}
	tFirst := time.Now()
	c.writeDeadline() // the upstream may have taken long (a rebalance)
	n := int32(binary.BigEndian.Uint32(hdr[:4]))
	corr := int32(binary.BigEndian.Uint32(hdr[4:]))
	if corr != x.CorrelationID {
		c.s.m.upstreamErrors.WithLabelValues("protocol").Inc()
		return fmt.Errorf("proxy: upstream answered correlation id %d, expected %d", corr, x.CorrelationID)
	}
	if n < 4 || n > 1<<30 {
		c.s.m.upstreamErrors.WithLabelValues("protocol").Inc()
		return fmt.Errorf("proxy: upstream response size %d", n)
	}
	c.s.m.upstream(x.Key, tFirst.Sub(p.tSent).Seconds())

	if p.stream {
		c.s.m.stream(x.Key)
		var hooks *fetchHooks
		if len(p.chain) > 0 {
			hooks = c.fetchHooks(p)
		}
		err := relayFetchResponse(c.nc, c.upRaw, hdr[:], n, x.Version, func(r *kmsg.FetchResponse) bool {
			return rewriteAddresses(r, c.g, c.s.cluster)
		}, hooks)
		if hooks != nil && err == nil {
			p.filtered = true
			for i := len(p.chain) - 1; i >= 0; i-- {
				p.chain[i].(filter.FetchStreamer).FetchDone(c.ctx, x, hooks.delivered)
			}
		}
		if err != nil {
			kind := "io"
			if errors.Is(err, errFetchStream) {
				kind = "protocol"
			}
			c.s.m.upstreamErrors.WithLabelValues(kind).Inc()
			return fmt.Errorf("proxy: relaying fetch response: %w", err)
		}
		c.s.m.bytesOut.Add(float64(n + 4))
		c.s.m.request(x.Key, outcomeForwarded)
		c.s.m.gateway(x.Key, (p.tSent.Sub(p.tRead) + time.Since(tFirst)).Seconds())
		return nil
	}
	if !p.decodeResp {
		// Raw path: header, then the body straight from socket to
		// socket.
		if _, err := c.nc.Write(hdr[:]); err != nil {
			return err
		}
		if _, err := copyN(c.nc, c.upRaw, int64(n-4)); err != nil {
			return fmt.Errorf("proxy: relaying response: %w", err)
		}
		c.s.m.bytesOut.Add(float64(n + 4))
		c.s.m.request(x.Key, outcomeForwarded)
		c.s.m.gateway(x.Key, (p.tSent.Sub(p.tRead) + time.Since(tFirst)).Seconds())
		return nil
	}

	rbuf := bufpool.Get(int(n) + 4)
	defer bufpool.Put(rbuf)
	b := append(*rbuf, hdr[:]...)
	b = b[:4+int(n)]
	*rbuf = b
	var rerr error
	if preps := fetchPreparers(p); len(preps) > 0 {
		rerr = readFetchPrepared(c.ctx, c.upRaw, b, x, preps)
		for _, fp := range preps {
			fp.FetchRead(x) // before b can go back to its pool
		}
	} else {
		_, rerr = io.ReadFull(c.upRaw, b[8:])
	}
	if rerr != nil {
		c.s.m.upstreamErrors.WithLabelValues("io").Inc()
		return fmt.Errorf("proxy: upstream read: %w", rerr)
	}
	frame := b[4:]
	off, err := responseBodyOffset(frame, x.Key, x.Version)
	if err != nil {
		return fmt.Errorf("proxy: upstream response header: %w", err)
	}
	resp := kmsg.ResponseForKey(x.Key)
	resp.SetVersion(x.Version)
	if err := resp.ReadFrom(frame[off:]); err != nil {
		c.s.m.upstreamErrors.WithLabelValues("protocol").Inc()
		return fmt.Errorf("proxy: decoding upstream %s v%d response: %w", apiName(x.Key), x.Version, err)
	}
	x.Response = resp
	denied := c.runResponseFilters(p)
	changed := rewriteAddresses(x.Response, c.g, c.s.cluster)
	out := b
	var vec net.Buffers
	if changed || denied || x.Response != resp || x.ResponseChanged() || !reportsChanges(p.chain, x.Key) {
		// A TLS connection writes buffer by buffer, each a record of its
		// own: it takes the frame whole.
		fr, fetch := x.Response.(*kmsg.FetchResponse)
		_, tcp := c.nc.(*net.TCPConn)
		size := len(b) + 256
		if fetch && tcp {
			size = vecEncodeSize(fr, size)
		}
		enc := bufpool.Get(size)
		defer bufpool.Put(enc)
		vectored := false
		if fetch && tcp {
			*enc, vec, vectored = fetchFrameVec(*enc, x.CorrelationID, x.Version, fr)
		}
		if !vectored {
			*enc = appendResponseFrame(*enc, x.CorrelationID, x.Key, x.Version, x.Response)
		}
		out = *enc
	}
	written := int64(len(out))
	if vec != nil {
		// A changed Fetch response: its large record batches are written
		// from where the filters left them (fetchvec.go).
		var err error
		if written, err = vec.WriteTo(c.nc); err != nil {
			return err
		}
		vectoredFrames.Add(1)
	} else if _, err := c.nc.Write(out); err != nil {
		return err
	}
	c.s.m.bytesOut.Add(float64(written))
	outcome := outcomeForwarded
	if denied {
		outcome = outcomeDenied
	}
	c.s.m.request(x.Key, outcome)
	c.s.m.gateway(x.Key, (p.tSent.Sub(p.tRead) + time.Since(tFirst)).Seconds())
	return nil
}

// runResponseFilters runs OnResponse in reverse chain order. A denial
// replaces the response with an error response; it reports whether one did.
// Other filter errors are logged and the response is replaced the same way
// with UNKNOWN_SERVER_ERROR, so that nothing a failing filter should have
// removed reaches the client.
func (c *clientConn) runResponseFilters(p *pending) (denied bool) {
	return c.runResponseFiltersCtx(c.ctx, p, false)
}

// runResponseFiltersCtx is runResponseFilters with ctx; for an abandoned
// exchange (no response, nobody to answer) filter errors are only debug.
func (c *clientConn) runResponseFiltersCtx(ctx context.Context, p *pending, abandoned bool) (denied bool) {
	x := &p.x
	p.filtered = true
	for i := len(p.chain) - 1; i >= 0; i-- {
		f := p.chain[i]
		err := f.OnResponse(ctx, x)
		if err == nil {
			continue
		}
		code := kerr.UnknownServerError.Code
		if d, ok := filter.AsDenial(err); ok {
			code = d.Code
		} else if abandoned {
			c.log.Debug("response filter of an abandoned exchange failed", zap.String("filter", f.Name()),
				zap.String("api", apiName(x.Key)), zap.Error(err))
		} else {
			c.log.Warn("response filter failed; answering with an error", zap.String("filter", f.Name()),
				zap.String("api", apiName(x.Key)), zap.Error(err))
		}
		if x.Request == nil || x.Response == nil {
			continue
		}
		resp, rerr := kafkaerr.ErrorResponse(x.Request, code)
		if rerr != nil {
			c.log.Warn("no error response for api; closing", zap.String("api", apiName(x.Key)), zap.Error(rerr))
			c.close()
			return true
		}
		x.Response = resp
		denied = true
	}
	return denied
}
