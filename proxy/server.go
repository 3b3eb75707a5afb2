// Package proxy is Sluice's Kafka wire-protocol core: listeners, the
// per-connection frame loop, address rewriting, version negotiation and the
// upstream connections. Features plug in through proxy/filter.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// Options are what a Server is built from.
type Options struct {
	Config Config
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// Registerer receives the proxy's metrics; defaults to a private
	// registry.
	Registerer prometheus.Registerer
	// Filters run in this order on requests and in reverse on responses.
	Filters []filter.Filter
	// Authenticator returns the authenticator for a listener group that
	// lists SASL mechanisms or client certificates. Required when any
	// listener does.
	Authenticator func(l ListenerConfig) (filter.Authenticator, error)
	// OnAuth, if set, is told of every authentication attempt (audit).
	OnAuth func(c *filter.Conn, mechanism string, p *filter.Principal, err error)
	// Refuses, if set, names API keys that are refused outright (the
	// policy's inter-broker and controller keys): they are left out of
	// ApiVersions answers so clients never try them.
	Refuses func(key int16) bool
	// OnRefused, if set, is told of every request the gateway refuses by
	// closing the connection before any filter sees it (an unknown API
	// key, or a key or version it does not serve), so that audit records
	// the denial.
	OnRefused func(c *filter.Conn, key, version int16, reason string)
}

// Server is a running gateway.
type Server struct {
	cfg       Config
	log       *zap.Logger
	m         *metrics
	up        *upstream
	cluster   *cluster
	chains    [][]filter.Filter // by API key
	onAuth    func(c *filter.Conn, mechanism string, p *filter.Principal, err error)
	refuses   func(key int16) bool
	onRefused func(c *filter.Conn, key, version int16, reason string)
	groups    []*group

	ctx    context.Context
	cancel context.CancelFunc
	meta   *kgo.Client

	mu    sync.Mutex
	conns map[*clientConn]struct{}
	perIP map[netip.Addr]int // open connections by client address
	// refusedLog is when a refused connection was last logged (unix
	// nanoseconds): at most one line a second under a flood.
	refusedLog atomic.Int64
	closing    bool
	wg         sync.WaitGroup // connections
	acceptWG   sync.WaitGroup
	nextID     atomic.Uint64

	lastVersions atomic.Pointer[kmsg.ApiVersionsResponse]
	versionsMu   sync.Mutex // one loadVersions at a time
}

// group is one listener group: a bootstrap listener and a listener per
// upstream broker.
type group struct {
	s    *Server
	cfg  ListenerConfig
	tls  *tls.Config
	auth filter.Authenticator
	boot net.Listener

	mu      sync.Mutex
	brokers map[int32]*brokerListener
}

// maxBrokerListeners bounds the listeners one group opens, whatever the
// upstream metadata says.
const maxBrokerListeners = 4096

type brokerListener struct {
	ln   net.Listener
	port int
}

// New validates the configuration and builds a server; Start binds it.
func New(opts Options) (*Server, error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	up, err := newUpstream(cfg.Upstream)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		log:       log,
		m:         newMetrics(reg),
		up:        up,
		cluster:   newCluster(log),
		onAuth:    opts.OnAuth,
		onRefused: opts.OnRefused,
		refuses:   opts.Refuses,
		conns:     map[*clientConn]struct{}{},
		perIP:     map[netip.Addr]int{},
	}
	s.chains = make([][]filter.Filter, maxKey)
	for k := int16(0); k < maxKey; k++ {
		for _, f := range opts.Filters {
			if f.Wants(k) {
				s.chains[k] = append(s.chains[k], f)
			}
		}
	}
	for _, lc := range cfg.listenerGroups() {
		g := &group{s: s, cfg: lc, brokers: map[int32]*brokerListener{}}
		if lc.TLS.Enabled {
			t, err := lc.TLS.build()
			if err != nil {
				return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
			}
			g.tls = t
		}
		if len(lc.SASL) > 0 || (lc.TLS.Enabled && lc.TLS.ClientCAFile != "") {
			if opts.Authenticator == nil {
				return nil, fmt.Errorf("listener %s: client authentication is configured but no authenticator is available", lc.Name)
			}
			a, err := opts.Authenticator(lc)
			if err != nil {
				return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
			}
			g.auth = a
		}
		s.groups = append(s.groups, g)
	}
	s.cluster.onBroker = func(id int32) {
		for _, g := range s.groups {
			g.ensure(id)
		}
		s.m.brokers.Set(float64(len(s.cluster.nodeIDs())))
	}
	return s, nil
}

// Start binds the bootstrap listeners, starts upstream metadata discovery
// and begins accepting clients. Per-broker listeners open as brokers are
// discovered.
func (s *Server) Start(ctx context.Context) error {
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, g := range s.groups {
		ln, err := net.Listen("tcp", g.cfg.Listen)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("listener %s: %w", g.cfg.Name, err)
		}
		g.boot = ln
		s.log.Info("listening", zap.String("listener", g.cfg.Name), zap.String("addr", ln.Addr().String()),
			zap.String("advertised_host", g.cfg.AdvertisedHost), zap.Int("broker_port_base", *g.cfg.BrokerPortBase),
			zap.Bool("tls", g.tls != nil), zap.Strings("sasl", g.cfg.SASL))
		s.acceptWG.Add(1)
		go s.accept(g, ln, -1)
	}
	opts, err := s.cfg.Upstream.KgoOpts()
	if err != nil {
		return err
	}
	s.meta, err = kgo.NewClient(append(opts, kgo.ClientID("sluice-metadata"), kgo.MetadataMinAge(time.Second))...)
	if err != nil {
		return fmt.Errorf("proxy: upstream metadata client: %w", err)
	}
	// First load synchronously (bounded), so a healthy start is ready at
	// once; then keep refreshing in the background.
	first, cancel := context.WithTimeout(ctx, 15*time.Second)
	if err := s.cluster.refresh(first, s.meta); err != nil {
		s.m.upstreamErrors.WithLabelValues("metadata").Inc()
		s.log.Warn("upstream metadata not loaded yet; will retry", zap.Error(err))
	}
	if s.cluster.ready.Load() {
		s.loadVersions(first)
	}
	cancel()
	s.m.ready.Set(boolFloat(s.cluster.ready.Load()))
	go s.cluster.run(s.ctx, s.meta, s.cfg.MetadataRefresh, func(error) { s.m.upstreamErrors.WithLabelValues("metadata").Inc() })
	go func() { // ready gauge
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-t.C:
				s.m.ready.Set(boolFloat(s.cluster.ready.Load()))
			}
		}
	}()
	return nil
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Ready reports whether upstream metadata has been loaded.
func (s *Server) Ready() bool { return s.cluster.ready.Load() }

// Topics resolves topic ids from the gateway's metadata.
func (s *Server) Topics() filter.TopicResolver { return s.cluster }

// Addrs returns each listener group's bootstrap address.
func (s *Server) Addrs() map[string]string {
	out := map[string]string{}
	for _, g := range s.groups {
		if g.boot != nil {
			out[g.cfg.Name] = g.boot.Addr().String()
		}
	}
	return out
}

// BrokerAddrs returns the advertised address of each broker listener of a
// group.
func (s *Server) BrokerAddrs(groupName string) map[int32]string {
	out := map[int32]string{}
	for _, g := range s.groups {
		if g.cfg.Name != groupName {
			continue
		}
		g.mu.Lock()
		for id, bl := range g.brokers {
			out[id] = net.JoinHostPort(g.cfg.AdvertisedHost, strconv.Itoa(bl.port))
		}
		g.mu.Unlock()
	}
	return out
}

// advertise implements advertiser for a group.
func (g *group) advertise(id int32) (string, int32) {
	g.mu.Lock()
	bl := g.brokers[id]
	g.mu.Unlock()
	if bl == nil {
		bl = g.ensure(id)
	}
	return g.cfg.AdvertisedHost, int32(bl.port)
}

// ensure opens the listener for node id if it is not open yet. A listener
// that cannot be opened is logged; the configured port is still advertised.
func (g *group) ensure(id int32) *brokerListener {
	g.mu.Lock()
	defer g.mu.Unlock()
	if bl := g.brokers[id]; bl != nil {
		return bl
	}
	if id < 0 || len(g.brokers) >= maxBrokerListeners {
		// Not a broker (or an absurd cluster): nothing to listen for.
		g.s.log.Error("not opening a broker listener", zap.String("listener", g.cfg.Name), zap.Int32("node_id", id),
			zap.Int("open", len(g.brokers)))
		return &brokerListener{}
	}
	base := *g.cfg.BrokerPortBase
	port := 0
	if base != 0 {
		port = base + int(id)
	}
	bl := &brokerListener{port: port}
	g.s.mu.Lock()
	closing := g.s.closing
	g.s.mu.Unlock()
	if base != 0 && (id < 0 || port > 65535) {
		g.s.log.Error("broker node id does not fit the port range; clients cannot reach it",
			zap.String("listener", g.cfg.Name), zap.Int32("node_id", id), zap.Int("broker_port_base", base))
		g.brokers[id] = bl
		return bl
	}
	if !closing {
		addr := net.JoinHostPort(g.cfg.BrokerListenHost, strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			g.s.log.Error("cannot open broker listener", zap.String("listener", g.cfg.Name),
				zap.Int32("node_id", id), zap.String("addr", addr), zap.Error(err))
		} else {
			bl.ln = ln
			bl.port = ln.Addr().(*net.TCPAddr).Port
			g.s.log.Info("broker listener open", zap.String("listener", g.cfg.Name), zap.Int32("node_id", id),
				zap.String("addr", ln.Addr().String()),
				zap.String("advertised", net.JoinHostPort(g.cfg.AdvertisedHost, strconv.Itoa(bl.port))))
			g.s.acceptWG.Add(1)
			go g.s.accept(g, ln, id)
		}
	}
	g.brokers[id] = bl
	return bl
}

func (s *Server) accept(g *group, ln net.Listener, nodeID int32) {
	defer s.acceptWG.Done()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay < time.Second {
				delay *= 2
			}
			s.log.Warn("accept failed", zap.String("listener", g.cfg.Name), zap.Error(err), zap.Duration("retry_in", delay))
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			nc.Close()
			return
		}
		ap, _ := netip.ParseAddrPort(nc.RemoteAddr().String())
		// Unmapped, so that an IPv4 client counts the same on a
		// dual-stack listener.
		ip := ap.Addr().Unmap()
		if reason := s.overLimit(ip); reason != "" {
			s.mu.Unlock()
			s.refused(g, ip, reason) // counted before the client can see the close
			nc.Close()
			continue
		}
		c := newClientConn(s, g, nc, ap, nodeID)
		s.conns[c] = struct{}{}
		s.perIP[ip]++
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			if s.perIP[ip]--; s.perIP[ip] <= 0 {
				delete(s.perIP, ip)
			}
			s.mu.Unlock()
		}()
	}
}

// overLimit names the bound a new connection from ip would be over, or
// returns "". Called with s.mu held.
func (s *Server) overLimit(ip netip.Addr) string {
	if m := s.cfg.MaxConnections; m > 0 && len(s.conns) >= m {
		return "max_connections"
	}
	if m := s.cfg.MaxConnectionsPerIP; m > 0 && s.perIP[ip] >= m {
		return "max_connections_per_ip"
	}
	return ""
}

// refused counts a connection closed as it was accepted, and logs it at
// most once a second.
func (s *Server) refused(g *group, ip netip.Addr, reason string) {
	s.m.connsRefused.WithLabelValues(g.cfg.Name, reason).Inc()
	now := time.Now().UnixNano()
	if last := s.refusedLog.Load(); now-last >= int64(time.Second) && s.refusedLog.CompareAndSwap(last, now) {
		s.log.Warn("refusing client connections over a connection bound", zap.String("listener", g.cfg.Name),
			zap.String("client_ip", ip.String()), zap.String("bound", reason),
			zap.Int("max_connections", s.cfg.MaxConnections), zap.Int("max_connections_per_ip", s.cfg.MaxConnectionsPerIP))
	}
}

func (s *Server) closeListeners() {
	for _, g := range s.groups {
		if g.boot != nil {
			g.boot.Close()
		}
		g.mu.Lock()
		for _, bl := range g.brokers {
			if bl.ln != nil {
				bl.ln.Close()
			}
		}
		g.mu.Unlock()
	}
}

// Shutdown stops accepting, lets in-flight requests finish until ctx is
// done, then closes every connection.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	conns := make([]*clientConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.closeListeners()
	s.acceptWG.Wait()
	for _, c := range conns {
		c.drain()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		n := len(s.conns)
		for c := range s.conns {
			c.close()
		}
		s.mu.Unlock()
		s.log.Warn("shutdown deadline passed; closed connections with requests in flight", zap.Int("connections", n))
		<-done
		err = ctx.Err()
	}
	if s.cancel != nil {
		s.cancel()
	}
	if s.meta != nil {
		s.meta.Close()
	}
	return err
}
