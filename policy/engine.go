package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	opametrics "github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// Options are the engine's collaborators; all are optional.
type Options struct {
	// Logger receives reload results and fail-closed denials. Default nop.
	Logger *zap.Logger
	// Registerer receives the engine's metrics. Default: none registered.
	Registerer prometheus.Registerer
	// Validate is called on load for every grant's obligations in
	// data.grants (topic is the grant's topic or pattern); an error
	// rejects the revision. The masking package supplies it.
	Validate func(topic string, o *filter.Obligations) error
	// OnReload is called after every load attempt, with the revision id
	// and nil, or the rejected revision id (empty if the files could not
	// be read) and the error. For audit.
	OnReload func(rev string, err error)
}

// Engine answers policy queries with the current revision.
type Engine struct {
	cfg  Config
	log  *zap.Logger
	opts Options
	m    *metrics

	rev atomic.Pointer[revision]

	reloadMu    sync.Mutex
	fingerprint string // of the files the last load attempt saw

	lastFailLog    atomic.Int64 // unix ns of the last fail-closed log line
	failSuppressed atomic.Int64 // fail-closed log lines skipped since
}

// New validates cfg, loads and compiles the first revision and returns the
// engine. It fails if the first revision does not load.
func New(ctx context.Context, cfg Config, opts Options) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	e := &Engine{cfg: cfg, log: opts.Logger, opts: opts, m: newMetrics(opts.Registerer)}
	if err := e.Reload(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// Revision returns the id of the revision in service.
func (e *Engine) Revision() string {
	if r := e.rev.Load(); r != nil {
		return r.id
	}
	return ""
}

// Grants returns the grants of the revision in service (read only).
func (e *Engine) Grants() []Grant {
	if r := e.rev.Load(); r != nil {
		return r.grants
	}
	return nil
}

// Reload reads the files now and swaps in the new revision if it differs
// from the one in service and compiles; otherwise the old one keeps
// serving and the error is returned (and logged, counted, reported to
// OnReload).
func (e *Engine) Reload(ctx context.Context) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	if fp, err := e.fingerprintFiles(); err == nil {
		e.fingerprint = fp
	}
	return e.reloadLocked(ctx)
}

func (e *Engine) reloadLocked(ctx context.Context) error {
	start := time.Now()
	src, err := readSources(&e.cfg)
	if err != nil {
		e.rejected("", err)
		return err
	}
	if cur := e.rev.Load(); cur != nil && cur.id == src.rev {
		return nil
	}
	rev, err := compile(ctx, &e.cfg, src, e.opts.Validate, e.cfg.RunTestsOnLoad)
	if err != nil {
		e.rejected(src.rev, err)
		return err
	}
	old := e.rev.Swap(rev)
	e.m.reloads.WithLabelValues("ok").Inc()
	e.m.loadedAt.Set(float64(rev.loaded.Unix()))
	oldID := ""
	if old != nil {
		oldID = old.id
	}
	e.log.Info("policy revision loaded", zap.String("revision", rev.id), zap.String("previous", oldID),
		zap.Int("grants", len(rev.grants)), zap.Duration("took", time.Since(start)))
	if e.opts.OnReload != nil {
		e.opts.OnReload(rev.id, nil)
	}
	return nil
}

func (e *Engine) rejected(rev string, err error) {
	e.m.reloads.WithLabelValues("error").Inc()
	e.log.Error("policy revision rejected; previous revision keeps serving",
		zap.String("revision", rev), zap.String("serving", e.Revision()), zap.Error(err))
	if e.opts.OnReload != nil {
		e.opts.OnReload(rev, err)
	}
}

// fingerprintFiles summarises names, sizes and modification times of the
// watched files, cheaply enough to poll every second.
func (e *Engine) fingerprintFiles() (string, error) {
	files, err := watchedFiles(&e.cfg)
	if err != nil {
		return "", err
	}
	b := make([]byte, 0, 64*len(files))
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		b = append(b, f...)
		b = append(b, 0)
		b = strconv.AppendInt(b, st.Size(), 10)
		b = append(b, 0)
		b = strconv.AppendInt(b, st.ModTime().UnixNano(), 10)
		b = append(b, '\n')
	}
	return string(b), nil
}

// Watch polls the policy and data files every ReloadInterval and reloads
// when they change, until ctx ends. A zero ReloadInterval returns at once.
func (e *Engine) Watch(ctx context.Context) error {
	if e.cfg.ReloadInterval <= 0 {
		return nil
	}
	t := time.NewTicker(e.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		e.poll(ctx)
	}
}

func (e *Engine) poll(ctx context.Context) {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	fp, err := e.fingerprintFiles()
	if err != nil {
		// A file vanished mid-edit; try again next tick, keep serving.
		if fp != e.fingerprint {
			e.log.Warn("policy files unreadable; previous revision keeps serving", zap.Error(err))
		}
		e.fingerprint = ""
		return
	}
	if fp == e.fingerprint {
		return
	}
	e.fingerprint = fp
	_ = e.reloadLocked(ctx) // logged, counted and reported inside
}

// Decide answers q with the revision in service. It never fails: anything
// but a well-formed decision is a deny whose Error says why.
func (e *Engine) Decide(ctx context.Context, q *Query) Decision {
	rev := e.rev.Load()
	if rev == nil {
		return e.fail(q, "", "no_revision", errors.New("no policy revision loaded"))
	}
	now := q.Now
	if now.IsZero() {
		now = time.Now()
	}
	p := q.Principal
	if p == nil {
		p = filter.Anonymous
	}
	if !p.Expires.IsZero() && !now.Before(p.Expires) {
		e.m.deny[0].Inc()
		return Decision{Allow: false, Reason: "credential expired", Revision: rev.id}
	}
	nowNS := now.UnixNano()
	k := cacheKey{id: p.ID, org: p.Org, mech: p.Mechanism, name: q.Name, action: q.Action, rtype: q.Resource}
	var h uint64
	if rev.cache != nil {
		h = rev.cache.keyHash(p, &k)
		if d, ok := rev.cache.get(&k, h, nowNS); ok {
			out := *d
			out.Cached = true
			if !p.Expires.IsZero() && (out.ExpiresAt.IsZero() || p.Expires.Before(out.ExpiresAt)) {
				out.ExpiresAt = p.Expires
			}
			if out.Allow {
				e.m.allow[1].Inc()
			} else {
				e.m.deny[1].Inc()
			}
			return out
		}
	}
	return e.decideMiss(ctx, rev, q, p, now, &k, h)
}

// decideMiss evaluates what the cache did not hold and caches the result
// under k (whose hash is h). It is a function of its own so that the
// cached path's frame stays small: the evaluation's locals are many.
//
//go:noinline
func (e *Engine) decideMiss(ctx context.Context, rev *revision, q *Query, p *filter.Principal, now time.Time, k *cacheKey, h uint64) Decision {
	d, reason, err := e.eval(ctx, rev, q, now)
	if err != nil {
		return e.fail(q, rev.id, reason, err)
	}
	d.Revision = rev.id
	if !p.Expires.IsZero() && (d.ExpiresAt.IsZero() || p.Expires.Before(d.ExpiresAt)) {
		d.ExpiresAt = p.Expires
	}
	if d.Allow {
		e.m.allow[0].Inc()
	} else {
		e.m.deny[0].Inc()
	}
	if rev.cache != nil && !d.NoCache {
		nowNS := now.UnixNano()
		exp := nowNS + int64(e.cfg.CacheTTL)
		if !d.ExpiresAt.IsZero() && d.ExpiresAt.UnixNano() < exp {
			exp = d.ExpiresAt.UnixNano()
		}
		if exp > nowNS {
			cd := d
			rev.cache.put(k, h, &cd, exp)
		}
	}
	return d
}

func (e *Engine) eval(ctx context.Context, rev *revision, q *Query, now time.Time) (Decision, string, error) {
	qq := *q
	qq.Now = now
	en := rev.enrich(q)
	if rev.cache != nil && q.Principal != nil {
		en.principal = rev.cache.principalInput(q.Principal)
	}
	in := qq.input(en)
	// A timer cancelling the evaluation is cheaper than a context with a
	// deadline, for which OPA starts a goroutine per evaluation.
	c := topdown.NewCancel()
	t := time.AfterFunc(e.cfg.EvalTimeout, c.Cancel)
	start := time.Now()
	rs, err := rev.pq.Eval(ctx, rego.EvalParsedInput(in), rego.EvalExternalCancel(c),
		rego.EvalMetrics(noMetrics), rego.EvalGenerateJSON(keepTerm))
	t.Stop()
	e.m.evalDur.Observe(time.Since(start).Seconds())
	if err != nil {
		if topdown.IsCancel(err) || ctx.Err() != nil {
			return Decision{}, "timeout", fmt.Errorf("policy: evaluation timed out after %v: %w", e.cfg.EvalTimeout, err)
		}
		return Decision{}, "eval_error", fmt.Errorf("policy: evaluation: %w", err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return Decision{}, "undefined", fmt.Errorf("policy: %s is undefined", e.cfg.Query)
	}
	d, err := parseResult(rs[0].Expressions[0].Value, rev.obligations)
	if err != nil {
		return Decision{}, "bad_output", err
	}
	return d, "", nil
}

// fail is the fail-closed path: deny, count, log.
func (e *Engine) fail(q *Query, rev, reason string, err error) Decision {
	e.m.errors.WithLabelValues(reason).Inc()
	e.m.deny[0].Inc()
	// Errors are not cached, so a broken policy fails every request: log
	// at most one line a second (the metric counts every failure).
	now := time.Now().UnixNano()
	if last := e.lastFailLog.Load(); now-last >= int64(time.Second) && e.lastFailLog.CompareAndSwap(last, now) {
		id := ""
		if q.Principal != nil {
			id = q.Principal.ID
		}
		e.log.Error("policy failed closed", zap.String("reason", reason), zap.String("principal", id),
			zap.String("action", q.Action.String()), zap.String("resource_type", q.Resource.String()),
			zap.String("resource", q.Name), zap.String("revision", rev),
			zap.Int64("suppressed", e.failSuppressed.Swap(0)), zap.Error(err))
	} else {
		e.failSuppressed.Add(1)
	}
	return Decision{Allow: false, Reason: "policy error: " + reason, Revision: rev, Error: reason}
}

type metrics struct {
	allow, deny [2]prometheus.Counter // [uncached, cached]
	errors      *prometheus.CounterVec
	reloads     *prometheus.CounterVec
	evalDur     prometheus.Histogram
	loadedAt    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	dec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_policy_decisions_total", Help: "Policy decisions by outcome and whether they came from the cache.",
	}, []string{"decision", "cached"})
	m := &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_policy_errors_total", Help: "Evaluations that failed closed (denied), by reason.",
		}, []string{"reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_policy_reloads_total", Help: "Policy revision load attempts by result.",
		}, []string{"result"}),
		evalDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sluice_policy_eval_duration_seconds", Help: "Duration of uncached policy evaluations.",
			Buckets: prometheus.ExponentialBuckets(5e-6, 2, 14),
		}),
		loadedAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_policy_revision_loaded_timestamp_seconds", Help: "When the revision in service was loaded.",
		}),
	}
	m.allow = [2]prometheus.Counter{dec.WithLabelValues("allow", "false"), dec.WithLabelValues("allow", "true")}
	m.deny = [2]prometheus.Counter{dec.WithLabelValues("deny", "false"), dec.WithLabelValues("deny", "true")}
	for _, r := range []string{"eval_error", "undefined", "timeout", "bad_output", "no_revision"} {
		m.errors.WithLabelValues(r)
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")
	if reg != nil {
		for _, c := range []prometheus.Collector{dec, m.errors, m.reloads, m.evalDur, m.loadedAt} {
			reg.MustRegister(c)
		}
	}
	return m
}

// Evaluation options that skip work the engine does not use: OPA's
// per-evaluation metrics, and the conversion of the result to Go values
// (parseOutputTerm reads the AST).
var noMetrics = opametrics.NoOp()

func keepTerm(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }
