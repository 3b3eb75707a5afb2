package schema

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Schema is one registered schema, parsed once per schema id.
type Schema struct {
	ID   int
	Type sr.SchemaType
	// Text is the schema as registered.
	Text       string
	References []sr.SchemaReference
	// Avro is the parsed schema for Avro schemas, nil otherwise. It is
	// parsed with a schema cache of its own, so two schemas that define
	// the same full name differently never see each other's definition.
	Avro avro.Schema
}

// SubjectSchema is a schema registered under a subject at a version.
type SubjectSchema struct {
	Subject string
	Version int
	*Schema
}

var (
	// ErrNotFound wraps registry answers that the schema, subject or
	// version does not exist; they are not retried.
	ErrNotFound = errors.New("schema: not found")
	// ErrUnavailable wraps failures to reach the registry after the
	// configured retries. Callers fail closed on it.
	ErrUnavailable = errors.New("schema: registry unavailable")
	// ErrUnauthorized wraps a registry's 401 or 403 answer: the configured
	// basic or bearer credentials are missing or wrong. It is not retried
	// and always comes wrapped with ErrUnavailable, so callers fail closed.
	ErrUnauthorized = errors.New("the registry refused the credentials")
)

// Registry is a caching registry client: schemas by id are cached (ids are
// immutable), lookups of one key are single-flight, and the number of
// concurrent registry requests is bounded. It is safe for concurrent use.
type Registry struct {
	cl  *sr.Client
	cfg Config
	log *zap.Logger
	sem chan struct{}
	sf  singleflight.Group

	mu     sync.RWMutex
	byID   map[int]*Schema
	order  []int // insertion order of byID for FIFO eviction
	latest map[string]timed[*SubjectSchema]
	member map[string]timed[bool] // "<subject>\x00<id>"
}

type timed[T any] struct {
	v  T
	at time.Time
}

// New builds a registry client. It reads the auth secrets and TLS files now;
// it does not contact the registry.
func New(cfg Config, log *zap.Logger) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	opts := []sr.ClientOpt{sr.URLs(cfg.URL), sr.UserAgent("sluice")}
	hc := &http.Client{Timeout: cfg.Timeout}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	var base http.RoundTripper = http.DefaultTransport
	if tc != nil {
		base = &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
	}
	hc.Transport = boundedTransport{base: base, max: cfg.MaxResponseBytes}
	opts = append(opts, sr.HTTPClient(hc))
	if b := cfg.Basic; b != nil {
		pw, err := secret(b.PasswordEnv, b.PasswordFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sr.BasicAuth(b.User, pw))
	}
	if b := cfg.Bearer; b != nil {
		tok, err := secret(b.TokenEnv, b.TokenFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sr.BearerToken(tok))
	}
	cl, err := sr.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("schema: client: %w", err)
	}
	return &Registry{
		cl:     cl,
		cfg:    cfg,
		log:    log,
		sem:    make(chan struct{}, cfg.MaxInflight),
		byID:   make(map[int]*Schema),
		latest: make(map[string]timed[*SubjectSchema]),
		member: make(map[string]timed[bool]),
	}, nil
}

// Client returns the underlying franz-go registry client (for registering
// schemas in tools and demos).
func (r *Registry) Client() *sr.Client { return r.cl }

// Cached returns the schema for id if it is cached, without any I/O.
func (r *Registry) Cached(id int) (*Schema, bool) {
	r.mu.RLock()
	s, ok := r.byID[id]
	r.mu.RUnlock()
	return s, ok
}

// SchemaByID returns the schema registered with id, from the cache or the
// registry.
func (r *Registry) SchemaByID(ctx context.Context, id int) (*Schema, error) {
	if s, ok := r.Cached(id); ok {
		return s, nil
	}
	v, err := r.flight(ctx, "id:"+strconv.Itoa(id), func(ctx context.Context) (any, error) {
		if s, ok := r.Cached(id); ok {
			return s, nil
		}
		var raw sr.Schema
		err := r.call(ctx, func(ctx context.Context) (err error) {
			raw, err = r.cl.SchemaByID(ctx, id)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("schema: id %d: %w", id, err)
		}
		s, err := r.parse(ctx, id, raw)
		if err != nil {
			return nil, err
		}
		r.store(s)
		return s, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Schema), nil
}

// Latest returns the latest version registered under subject, cached for
// LatestTTL.
func (r *Registry) Latest(ctx context.Context, subject string) (*SubjectSchema, error) {
	r.mu.RLock()
	t, ok := r.latest[subject]
	r.mu.RUnlock()
	if ok && time.Since(t.at) < r.cfg.LatestTTL {
		return t.v, nil
	}
	v, err := r.flight(ctx, "latest:"+subject, func(ctx context.Context) (any, error) {
		var ss sr.SubjectSchema
		err := r.call(ctx, func(ctx context.Context) (err error) {
			ss, err = r.cl.SchemaByVersion(ctx, subject, -1)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("schema: latest of subject %q: %w", subject, err)
		}
		s, ok := r.Cached(ss.ID)
		if !ok {
			if s, err = r.parse(ctx, ss.ID, ss.Schema); err != nil {
				return nil, err
			}
			r.store(s)
		}
		out := &SubjectSchema{Subject: subject, Version: ss.Version, Schema: s}
		r.mu.Lock()
		r.latest[subject] = timed[*SubjectSchema]{out, time.Now()}
		r.mu.Unlock()
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*SubjectSchema), nil
}

// IDInSubject reports whether schema id is registered as a version of
// subject. Answers are cached for LatestTTL.
func (r *Registry) IDInSubject(ctx context.Context, subject string, id int) (bool, error) {
	key := subject + "\x00" + strconv.Itoa(id)
	r.mu.RLock()
	t, ok := r.member[key]
	r.mu.RUnlock()
	if ok && time.Since(t.at) < r.cfg.LatestTTL {
		return t.v, nil
	}
	v, err := r.flight(ctx, "member:"+key, func(ctx context.Context) (any, error) {
		var vs []sr.SubjectVersion
		err := r.call(ctx, func(ctx context.Context) (err error) {
			vs, err = r.cl.SchemaVersionsByID(ctx, id)
			return err
		})
		found := false
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return false, fmt.Errorf("schema: versions of id %d: %w", id, err)
		default:
			for _, sv := range vs {
				if sv.Subject == subject {
					found = true
					break
				}
			}
		}
		r.mu.Lock()
		if len(r.member) >= 4*r.cfg.CacheSize {
			clear(r.member)
		}
		r.member[key] = timed[bool]{found, time.Now()}
		r.mu.Unlock()
		return found, nil
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

// flight runs fn once for concurrent callers of the same key. fn runs under
// a context detached from any one caller (so one caller giving up does not
// fail the others) and bounded by the retry budget; each caller still
// returns when its own ctx is done.
func (r *Registry) flight(ctx context.Context, key string, fn func(context.Context) (any, error)) (any, error) {
	ch := r.sf.DoChan(key, func() (any, error) {
		budget := time.Duration(r.cfg.Retries+1)*r.cfg.Timeout + r.cfg.RetryBackoff<<r.cfg.Retries
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
		defer cancel()
		return fn(fctx)
	})
	select {
	case res := <-ch:
		return res.Val, res.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

func (r *Registry) store(s *Schema) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.byID[s.ID]; ok {
		return
	}
	for len(r.order) >= r.cfg.CacheSize {
		delete(r.byID, r.order[0])
		r.order = r.order[1:]
	}
	r.byID[s.ID] = s
	r.order = append(r.order, s.ID)
}

// parse parses an Avro schema with its references into a fresh cache.
func (r *Registry) parse(ctx context.Context, id int, raw sr.Schema) (*Schema, error) {
	s := &Schema{ID: id, Type: raw.Type, Text: raw.Schema, References: raw.References}
	if raw.Type != sr.TypeAvro {
		return s, nil
	}
	cache := &avro.SchemaCache{}
	seen := make(map[string]bool)
	if err := r.parseRefs(ctx, raw.References, cache, seen, 0); err != nil {
		return nil, fmt.Errorf("schema: id %d: %w", id, err)
	}
	a, err := avro.ParseWithCache(raw.Schema, "", cache)
	if err != nil {
		return nil, fmt.Errorf("schema: id %d: parse avro: %w", id, err)
	}
	s.Avro = a
	return s, nil
}

func (r *Registry) parseRefs(ctx context.Context, refs []sr.SchemaReference, cache *avro.SchemaCache, seen map[string]bool, depth int) error {
	if depth > 16 {
		return errors.New("references nested too deeply")
	}
	for _, ref := range refs {
		k := ref.Subject + "\x00" + strconv.Itoa(ref.Version)
		if seen[k] {
			continue
		}
		seen[k] = true
		var ss sr.SubjectSchema
		err := r.call(ctx, func(ctx context.Context) (err error) {
			ss, err = r.cl.SchemaByVersion(ctx, ref.Subject, ref.Version)
			return err
		})
		if err != nil {
			return fmt.Errorf("reference %s (%s v%d): %w", ref.Name, ref.Subject, ref.Version, err)
		}
		if err := r.parseRefs(ctx, ss.References, cache, seen, depth+1); err != nil {
			return err
		}
		if _, err := avro.ParseWithCache(ss.Schema.Schema, "", cache); err != nil {
			return fmt.Errorf("reference %s: parse avro: %w", ref.Name, err)
		}
	}
	return nil
}

// call runs one registry request under the concurrency bound, retrying
// transport failures and 5xx answers with exponential backoff.
func (r *Registry) call(ctx context.Context, fn func(context.Context) error) error {
	backoff := r.cfg.RetryBackoff
	var err error
	for attempt := 0; ; attempt++ {
		select {
		case r.sem <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
		err = fn(ctx)
		<-r.sem
		if err == nil {
			return nil
		}
		var re *sr.ResponseError
		if errors.As(err, &re) && re.StatusCode < 500 {
			switch re.StatusCode {
			case http.StatusNotFound:
				return fmt.Errorf("%w: %w", ErrNotFound, err)
			case http.StatusUnauthorized, http.StatusForbidden:
				return fmt.Errorf("%w: %w: HTTP %d for %s %s: %w (check schema_registry basic or bearer)",
					ErrUnavailable, ErrUnauthorized, re.StatusCode, re.Method, re.URL, err)
			}
			return err
		}
		if attempt >= r.cfg.Retries {
			break
		}
		r.log.Debug("schema registry request failed, retrying", zap.Error(err), zap.Int("attempt", attempt+1))
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
		backoff *= 2
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// errResponseTooLarge fails a registry response over max_response_bytes.
var errResponseTooLarge = errors.New("schema: registry response over max_response_bytes")

// boundedTransport bounds every response body it returns: the registry
// client reads a body whole, so without a bound whatever answers on the
// registry's URL decides how much the gateway reads into memory (and, for
// a schema, keeps in its cache).
type boundedTransport struct {
	base http.RoundTripper
	max  int64
}

func (t boundedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	if resp.ContentLength > t.max {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %d bytes announced", errResponseTooLarge, resp.ContentLength)
	}
	resp.Body = &boundedBody{rc: resp.Body, left: t.max}
	return resp, nil
}

type boundedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if b.left -= int64(n); b.left < 0 {
		return 0, errResponseTooLarge
	}
	return n, err
}

func (b *boundedBody) Close() error { return b.rc.Close() }
