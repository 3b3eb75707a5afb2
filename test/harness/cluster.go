package harness

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
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// maxInspectFrame bounds what the recorder buffers for one request frame.
const maxInspectFrame = 256 << 20

// Conn is one connection a kfake broker accepted.
type Conn struct {
	Listener string // the broker's listen address
	Peer     string // the client end, host:port
	Owner    string // "gateway", "test", or "unknown"
	PID      int    // owning process, 0 if unknown
	At       time.Time
}

// Request is one request header a kfake broker received.
type Request struct {
	Listener string
	Key      int16
	Version  int16
}

// Leak is a request the recorder stopped before kfake could see it, because
// kmsg (and so kfake) does not know the key or the version.
type Leak struct {
	Request
	Reason string
}

// Cluster is a kfake cluster whose listeners record connections and requests.
type Cluster struct {
	*kfake.Cluster
	t testing.TB

	mu     sync.Mutex
	owners map[int]string // pid -> label; this process is "test"
	conns  []Conn
	reqs   []Request
	leaks  []Leak

	maxVersions map[int16]int16 // what the brokers advertise in ApiVersions
}

// ClusterConfig configures StartClusterWith.
type ClusterConfig struct {
	// Brokers is the number of brokers, default 3.
	Brokers int
	// TLS, if set, terminates TLS on every broker listener (inside the
	// recorder, so requests are still inspected in clear).
	TLS *tls.Config
	// Opts are passed to kfake (SeedTopics, EnableSASL, Superuser, ...).
	// Do not pass kfake.TLS or kfake.ListenFn.
	Opts []kfake.Opt
}

// StartCluster starts a kfake cluster with the given number of brokers and
// options and closes it when the test ends.
func StartCluster(t testing.TB, brokers int, opts ...kfake.Opt) *Cluster {
	return StartClusterWith(t, ClusterConfig{Brokers: brokers, Opts: opts})
}

// StartClusterWith starts a kfake cluster described by cfg.
func StartClusterWith(t testing.TB, cfg ClusterConfig) *Cluster {
	t.Helper()
	if cfg.Brokers <= 0 {
		cfg.Brokers = 3
	}
	c := &Cluster{t: t, owners: map[int]string{os.Getpid(): "test"}}
	opts := append([]kfake.Opt{
		kfake.NumBrokers(cfg.Brokers),
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err != nil {
				return nil, err
			}
			return &recordingListener{Listener: ln, c: c, tls: cfg.TLS}, nil
		}),
	}, cfg.Opts...)
	kc, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("harness: start kfake: %v", err)
	}
	c.Cluster = kc
	t.Cleanup(kc.Close)
	if err := c.loadMaxVersions(cfg.TLS != nil); err != nil {
		t.Fatalf("harness: %v", err)
	}
	return c
}

// loadMaxVersions asks the first broker for its ApiVersions, then forgets the
// connection and request, so the recording starts clean.
func (c *Cluster) loadMaxVersions(withTLS bool) error {
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()[0])}
	if withTLS {
		// Only the versions are wanted here; the certificate is the
		// test's own.
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{InsecureSkipVerify: true})) //nolint:gosec // test harness
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	cl.Close()
	if err != nil {
		return fmt.Errorf("kfake ApiVersions: %v", err)
	}
	mv := make(map[int16]int16, len(resp.ApiKeys))
	for _, k := range resp.ApiKeys {
		mv[k.ApiKey] = k.MaxVersion
	}
	c.mu.Lock()
	c.maxVersions = mv
	c.conns, c.reqs, c.leaks = nil, nil, nil
	c.mu.Unlock()
	return nil
}

// MaxVersions returns the brokers' advertised max version per API key.
func (c *Cluster) MaxVersions() map[int16]int16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxVersions
}

// Addrs returns the brokers' listen addresses, in node id order.
func (c *Cluster) Addrs() []string { return c.ListenAddrs() }

// IsBrokerAddr reports whether addr is one of the kfake listeners.
func (c *Cluster) IsBrokerAddr(addr string) bool {
	for _, a := range c.ListenAddrs() {
		if a == addr {
			return true
		}
	}
	return false
}

// RegisterOwner labels process pid, so connections from it are attributed
// to label. StartGateway registers the gateway as "gateway".
func (c *Cluster) RegisterOwner(pid int, label string) {
	c.mu.Lock()
	c.owners[pid] = label
	c.mu.Unlock()
}

// Conns returns every accepted connection so far.
func (c *Cluster) Conns() []Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Conn(nil), c.conns...)
}

// Requests returns every request header received so far.
func (c *Cluster) Requests() []Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Request(nil), c.reqs...)
}

// Leaks returns the requests the recorder had to stop.
func (c *Cluster) Leaks() []Leak {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Leak(nil), c.leaks...)
}

// AssertOnlyGateway fails the test unless at least one connection reached
// the brokers and every one of them came from a process labelled "gateway",
// and no request leaked.
func (c *Cluster) AssertOnlyGateway(t testing.TB) {
	t.Helper()
	conns := c.Conns()
	if len(conns) == 0 {
		t.Errorf("upstream brokers saw no connection at all")
	}
	for _, cn := range conns {
		if cn.Owner != "gateway" {
			t.Errorf("upstream broker %s accepted a connection from %s owned by %s (pid %d), not the gateway", cn.Listener, cn.Peer, cn.Owner, cn.PID)
		}
	}
	c.AssertNoLeaks(t)
}

// AssertNoLeaks fails the test if any request kfake cannot handle reached a
// broker, or a request used a key or version the brokers do not advertise
// (ApiVersions excepted: its version negotiation starts above the broker's).
func (c *Cluster) AssertNoLeaks(t testing.TB) {
	t.Helper()
	for _, l := range c.Leaks() {
		t.Errorf("request reached upstream broker %s: key %d version %d (%s)", l.Listener, l.Key, l.Version, l.Reason)
	}
	mv := c.MaxVersions()
	if mv == nil {
		return
	}
	bad := map[Request]bool{}
	for _, r := range c.Requests() {
		max, ok := mv[r.Key]
		r.Listener = ""
		switch {
		case bad[r]:
		case !ok:
			bad[r] = true
			t.Errorf("upstream received API key %d, which the brokers do not advertise", r.Key)
		case r.Version > max && r.Key != int16(kmsg.ApiVersions):
			// ApiVersions is the one request a client may send at a
			// version the broker does not know: the broker answers
			// UNSUPPORTED_VERSION with its ranges and the client
			// retries lower.
			bad[r] = true
			t.Errorf("upstream received API key %d v%d, above the brokers' max v%d", r.Key, r.Version, max)
		}
	}
}

// owner attributes the client end of an accepted connection to a registered
// process. The client is still waiting for its first response, so its socket
// exists; a registration racing with the dial gets one retry.
func (c *Cluster) owner(peer, listener netip.AddrPort) (string, int) {
	ino, err := socketInode(peer, listener, "")
	if err != nil || ino == 0 {
		return "unknown", 0
	}
	for attempt := 0; attempt < 2; attempt++ {
		c.mu.Lock()
		owners := make(map[int]string, len(c.owners))
		for p, l := range c.owners {
			owners[p] = l
		}
		c.mu.Unlock()
		for pid, label := range owners {
			if pidOwnsInode(pid, ino) {
				return label, pid
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "unknown", 0
}

type recordingListener struct {
	net.Listener
	c   *Cluster
	tls *tls.Config
}

func (l *recordingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	laddr := l.Listener.Addr().String()
	peer, perr := netip.ParseAddrPort(conn.RemoteAddr().String())
	lap, lerr := netip.ParseAddrPort(laddr)
	owner, pid := "unknown", 0
	if perr == nil && lerr == nil {
		owner, pid = l.c.owner(peer, lap)
	}
	l.c.mu.Lock()
	l.c.conns = append(l.c.conns, Conn{Listener: laddr, Peer: conn.RemoteAddr().String(), Owner: owner, PID: pid, At: time.Now()})
	l.c.mu.Unlock()
	var inner net.Conn = conn
	if l.tls != nil {
		inner = tls.Server(conn, l.tls)
	}
	return &inspectConn{Conn: inner, br: bufio.NewReaderSize(inner, 64<<10), c: l.c, listener: laddr}, nil
}

// inspectConn hands kfake one whole request frame at a time, after reading
// its header. A frame kfake could not decode is recorded as a leak and the
// connection is closed instead.
type inspectConn struct {
	net.Conn
	br       *bufio.Reader
	c        *Cluster
	listener string
	pending  []byte
}

var errLeak = errors.New("harness: request stopped before the broker")

func (ic *inspectConn) Read(p []byte) (int, error) {
	if len(ic.pending) == 0 {
		frame, err := ic.readFrame()
		if err != nil {
			return 0, err
		}
		ic.pending = frame
	}
	n := copy(p, ic.pending)
	ic.pending = ic.pending[n:]
	return n, nil
}

func (ic *inspectConn) readFrame() ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(ic.br, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n < 8 || n > maxInspectFrame {
		ic.leak(Request{Listener: ic.listener, Key: -1, Version: -1}, fmt.Sprintf("frame size %d", n))
		return nil, errLeak
	}
	frame := make([]byte, 4+n)
	copy(frame, size[:])
	if _, err := io.ReadFull(ic.br, frame[4:]); err != nil {
		return nil, err
	}
	r := Request{
		Listener: ic.listener,
		Key:      int16(binary.BigEndian.Uint16(frame[4:])),
		Version:  int16(binary.BigEndian.Uint16(frame[6:])),
	}
	ic.c.mu.Lock()
	ic.c.reqs = append(ic.c.reqs, r)
	ic.c.mu.Unlock()
	req := kmsg.RequestForKey(r.Key)
	switch {
	case req == nil:
		ic.leak(r, "unknown api key")
		return nil, errLeak
	case r.Version < 0 || r.Version > req.MaxVersion():
		ic.leak(r, fmt.Sprintf("version above kmsg max %d", req.MaxVersion()))
		return nil, errLeak
	}
	return frame, nil
}

func (ic *inspectConn) leak(r Request, reason string) {
	ic.c.mu.Lock()
	ic.c.leaks = append(ic.c.leaks, Leak{Request: r, Reason: reason})
	ic.c.mu.Unlock()
	ic.Conn.Close()
}
