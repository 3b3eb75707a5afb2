package authn

import (
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// Provider holds the loaded credentials, JWKS and certificate mapping and
// hands out an Authenticator per listener. It is safe for concurrent use.
// Close stops its reload goroutines.
type Provider struct {
	cfg   Config
	log   *zap.Logger
	m     *metrics
	now   func() time.Time
	creds atomic.Pointer[credStore]
	oauth *oauthVerifier
	tls   *tlsMapper
	sem   chan struct{}

	credWatch *fileWatch
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New loads the credentials file and JWKS named in cfg, compiles the
// certificate mapping and starts polling the files for changes. A missing or
// invalid credentials or JWKS file is an error here (later, a broken file is
// logged and the previous version keeps serving). A JWKS URL that cannot be
// fetched yet is logged and retried; tokens fail with reason "unavailable"
// until it is. reg may be nil.
func New(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Provider, error) {
	if cfg.OAuthBearer != nil { // applyDefaults must not write to the caller's struct
		o := *cfg.OAuthBearer
		cfg.OAuthBearer = &o
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("authn: metrics: %w", err)
	}
	p := &Provider{
		cfg:  cfg,
		log:  log,
		m:    m,
		now:  time.Now,
		sem:  make(chan struct{}, cfg.MaxConcurrentVerifications),
		stop: make(chan struct{}),
	}
	if cfg.TLS != nil {
		if p.tls, err = compileTLSMapping(*cfg.TLS); err != nil {
			return nil, err
		}
	}
	var watches []*fileWatch
	if cfg.CredentialsFile != "" {
		p.credWatch = &fileWatch{path: cfg.CredentialsFile, source: "credentials", load: func(b []byte) error {
			s, err := parseCredentials(b)
			if err != nil {
				return err
			}
			p.creds.Store(s)
			p.log.Info("authn: credentials loaded", zap.String("path", cfg.CredentialsFile), zap.Int("users", len(s.users)))
			return nil
		}}
		if _, err := p.credWatch.check(); err != nil {
			return nil, fmt.Errorf("authn: credentials_file %s: %w", cfg.CredentialsFile, err)
		}
		watches = append(watches, p.credWatch)
	}
	if o := cfg.OAuthBearer; o != nil {
		p.oauth = newOAuthVerifier(*o, p)
		if o.JWKSFile != "" {
			w := &fileWatch{path: o.JWKSFile, source: "jwks", load: p.oauth.loadJWKS}
			if _, err := w.check(); err != nil {
				return nil, fmt.Errorf("authn: oauthbearer.jwks_file %s: %w", o.JWKSFile, err)
			}
			watches = append(watches, w)
		} else {
			if strings.HasPrefix(o.JWKSURL, "http://") {
				p.log.Warn("authn: JWKS URL is plain http; an attacker on the path can substitute signing keys", zap.String("url", o.JWKSURL))
			}
			if err := p.oauth.fetch(); err != nil {
				p.log.Error("authn: JWKS fetch failed; OAUTHBEARER logins fail until it succeeds",
					zap.String("url", o.JWKSURL), zap.Error(err))
			}
			p.wg.Add(1)
			go p.oauth.refreshLoop(p.stop, &p.wg)
		}
	}
	if len(watches) > 0 {
		p.wg.Add(1)
		go p.pollLoop(watches)
	}
	return p, nil
}

// Close stops the reload goroutines. Authenticators keep working with the
// last loaded credentials.
func (p *Provider) Close() error {
	p.closeOnce.Do(func() {
		close(p.stop)
		p.wg.Wait()
	})
	return nil
}

// ReloadCredentials re-reads the credentials file now (for SIGHUP). On error
// the previous credentials keep serving.
func (p *Provider) ReloadCredentials() error {
	if p.credWatch == nil {
		return errors.New("authn: no credentials_file configured")
	}
	return p.reload(p.credWatch)
}

// reload checks one watched file, counting and logging a changed file's
// load. An unchanged file is not reloaded and returns nil.
func (p *Provider) reload(w *fileWatch) error {
	changed, err := w.check()
	if !changed {
		return nil
	}
	p.m.reload(w.source, err)
	if err != nil {
		p.log.Error("authn: reload failed; keeping the previous version",
			zap.String("source", w.source), zap.String("path", w.path), zap.Error(err))
		return fmt.Errorf("authn: reload %s: %w", w.path, err)
	}
	return nil
}

func (p *Provider) pollLoop(watches []*fileWatch) {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			for _, w := range watches {
				_ = p.reload(w) // logged and counted
			}
		}
	}
}

// fileWatch reloads a file when its content changes.
type fileWatch struct {
	path   string
	source string
	load   func([]byte) error

	mu   sync.Mutex
	last [sha256.Size]byte
	seen bool
}

// check reads the file and loads it if its content changed since the last
// check, whether that load succeeded or not (a broken file is reported once,
// not on every poll).
func (w *fileWatch) check() (changed bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b, err := readBounded(w.path)
	if err != nil {
		// Report a vanished or unreadable file once per state change.
		var zero [sha256.Size]byte
		if w.seen && w.last == zero {
			return false, err
		}
		w.last, w.seen = zero, true
		return true, err
	}
	sum := sha256.Sum256(b)
	if w.seen && sum == w.last {
		return false, nil
	}
	w.last, w.seen = sum, true
	return true, w.load(b)
}

// HasTLSMapping reports whether a tls section is configured, i.e. whether
// "mtls" may be passed to ForListener.
func (p *Provider) HasTLSMapping() bool { return p.tls != nil }

// CountFailure counts an authentication failure the proxy detected itself
// (filter.AuthError.Gateway: SASL state errors, malformed frames, requests
// before authentication), so sluice_authn_failures_total covers every
// failure once.
func (p *Provider) CountFailure(mechanism, reason string) {
	p.m.failure(mechanism, reason)
}

// ForListener returns the Authenticator of a listener enabling mechanisms,
// in preference order: any of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512,
// OAUTHBEARER (matched case-insensitively) and the pseudo-mechanism "mtls",
// which makes TLSPrincipal map client certificates. A mechanism whose config
// section is missing is an error.
func (p *Provider) ForListener(mechanisms []string) (filter.Authenticator, error) {
	a := &authenticator{p: p, enabled: map[string]bool{}}
	for _, raw := range mechanisms {
		mech := strings.ToUpper(strings.TrimSpace(raw))
		if mech == "MTLS" {
			mech = MechMTLS
		}
		if a.enabled[mech] {
			return nil, fmt.Errorf("authn: mechanism %q listed twice", raw)
		}
		switch mech {
		case MechPlain, MechScramSHA256, MechScramSHA512:
			if p.cfg.CredentialsFile == "" {
				return nil, fmt.Errorf("authn: mechanism %s needs credentials_file", mech)
			}
		case MechOAuthBearer:
			if p.oauth == nil {
				return nil, fmt.Errorf("authn: mechanism %s needs an oauthbearer section", mech)
			}
		case MechMTLS:
			if p.tls == nil {
				return nil, fmt.Errorf("authn: mechanism mtls needs a tls section")
			}
			a.mtls = true
			a.enabled[mech] = true
			continue
		default:
			return nil, fmt.Errorf("authn: unknown mechanism %q (use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or mtls)", raw)
		}
		a.enabled[mech] = true
		a.mechs = append(a.mechs, mech)
	}
	return a, nil
}

type authenticator struct {
	p       *Provider
	mechs   []string
	enabled map[string]bool
	mtls    bool
}

// Mechanisms returns the enabled SASL mechanisms; callers must not modify
// the slice.
func (a *authenticator) Mechanisms() []string { return a.mechs }

func (a *authenticator) Start(mech string, c *filter.Conn) (filter.Session, error) {
	if !a.enabled[mech] || mech == MechMTLS {
		a.p.m.failure("unknown", ReasonUnsupportedMechanism)
		a.p.logFailure(c, "unknown", "", ReasonUnsupportedMechanism)
		if len(mech) > 64 {
			mech = mech[:64]
		}
		return nil, authErr(ReasonUnsupportedMechanism, fmt.Sprintf("unsupported SASL mechanism %q; enabled: %s", mech, strings.Join(a.mechs, ", ")))
	}
	var inner stepper
	switch mech {
	case MechPlain:
		inner = &plainSession{p: a.p}
	case MechScramSHA256, MechScramSHA512:
		inner = newSCRAMSession(a.p, mech)
	case MechOAuthBearer:
		inner = &oauthSession{v: a.p.oauth}
	}
	return &session{p: a.p, mech: mech, conn: c, inner: inner}, nil
}

func (a *authenticator) TLSPrincipal(state tls.ConnectionState) (*filter.Principal, error) {
	if !a.mtls || len(state.PeerCertificates) == 0 {
		return nil, nil
	}
	pr, err := a.p.tls.principal(state)
	if err != nil {
		a.p.m.failure(MechMTLS, err.Reason)
		a.p.logFailure(nil, MechMTLS, "", err.Reason)
		return nil, err
	}
	a.p.m.success(MechMTLS)
	return pr, nil
}

// stepper is one mechanism's exchange. user is the claimed user name for
// logs, once known.
type stepper interface {
	step(msg []byte) (reply []byte, done bool, p *filter.Principal, lifetime time.Duration, err *filter.AuthError)
	user() string
}

// session wraps a mechanism's stepper with metrics, logging and the
// one-shot rule: after success or failure every Step is an error.
type session struct {
	p        *Provider
	mech     string
	conn     *filter.Conn
	inner    stepper
	finished bool
}

var reasonSet = func() map[string]bool {
	m := map[string]bool{}
	for _, r := range Reasons {
		m[r] = true
	}
	return m
}()

func (s *session) Step(msg []byte) ([]byte, bool, *filter.Principal, time.Duration, error) {
	if s.finished {
		return nil, false, nil, 0, malformed("the SASL exchange is already finished")
	}
	reply, done, pr, lifetime, aerr := s.inner.step(msg)
	if aerr != nil {
		s.finished = true
		if !reasonSet[aerr.Reason] {
			aerr = &filter.AuthError{Reason: ReasonMalformed, Message: aerr.Message}
		}
		s.p.m.failure(s.mech, aerr.Reason)
		s.p.logFailure(s.conn, s.mech, s.inner.user(), aerr.Reason)
		return nil, false, nil, 0, aerr
	}
	if !done {
		return reply, false, nil, 0, nil
	}
	s.finished = true
	if lim := s.p.cfg.SessionLifetime; lim > 0 && (lifetime == 0 || lifetime > lim) {
		lifetime = lim
	}
	s.p.m.success(s.mech)
	if ce := s.p.log.Check(zap.DebugLevel, "authn: authenticated"); ce != nil {
		ce.Write(connField(s.conn), zap.String("mechanism", s.mech), zap.String("principal", pr.ID),
			zap.String("org", pr.Org), zap.Duration("lifetime", lifetime))
	}
	return reply, true, pr, lifetime, nil
}

func connField(c *filter.Conn) zap.Field {
	if c == nil {
		return zap.Skip()
	}
	return zap.Uint64("conn", c.ID)
}

func (p *Provider) logFailure(c *filter.Conn, mech, user, reason string) {
	if ce := p.log.Check(zap.InfoLevel, "authn: authentication failed"); ce != nil {
		if len(user) > 64 {
			user = user[:64]
		}
		fields := []zap.Field{connField(c), zap.String("mechanism", mech), zap.String("reason", reason)}
		if user != "" {
			fields = append(fields, zap.String("user", user))
		}
		if c != nil && c.ClientAddr.IsValid() {
			fields = append(fields, zap.String("client_addr", c.ClientAddr.String()))
		}
		ce.Write(fields...)
	}
}

// verifyPassword runs a password hash under the concurrency bound.
func (p *Provider) verifyPassword(v passwordVerifier, pw []byte) bool {
	p.sem <- struct{}{}
	defer func() { <-p.sem }()
	return v.verify(pw)
}

func (u *user) principal(mech string) *filter.Principal {
	return &filter.Principal{
		ID:         u.name,
		Org:        u.org,
		Mechanism:  mech,
		Roles:      slices.Clone(u.roles),
		Attributes: cloneAttrs(u.attributes),
	}
}

func cloneAttrs(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
