package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// maxFoldPartitions caps the partitions listed on a folded event.
const maxFoldPartitions = 1024

// Auditor turns decisions into a hash-chained stream of events and writes
// them to the audit topic through a bounded queue, falling back to a local
// spool. It is safe for concurrent use.
//
// Pipeline: callers enqueue items (never blocking on I/O) -> one sequencer
// goroutine folds, numbers, hashes and encodes them in chain order -> one
// shipper goroutine writes the encoded records in that order to the topic
// or, while the topic cannot be written or older records are still
// spooled, to the spool, and replays the spool in order.
type Auditor struct {
	cfg      Config
	log      *zap.Logger
	m        *metrics
	instance string
	chainID  string
	source   string
	key      []byte
	priv     ed25519.PrivateKey

	client  *kgo.Client
	spoolMu sync.Mutex // guards spool between shipper and replayer
	spool   *spool
	kick    chan struct{} // wakes the replayer

	mu          sync.RWMutex // guards closed against enqueuers
	closed      bool
	closing     chan struct{}
	once        sync.Once
	closeClient sync.Once
	stopCtx     atomic.Pointer[context.Context]

	in       chan item
	out      chan []byte
	seqDone  chan struct{}
	shipDone chan struct{}

	spoolBytes atomic.Int64
	shipping   atomic.Int64           // records the shipper has taken: being written or held
	health     atomic.Pointer[string] // non-nil while failing closed
	lastErr    atomic.Pointer[string] // last write error, for Healthy's text

	// sequencer state
	seq       uint64
	prev      string
	folds     map[foldKey]*fold
	sinceHead uint64
}

type item struct {
	kind      string
	t         time.Time
	conn      *filter.Conn
	principal *filter.Principal
	clientID  string
	apiKey    int16
	apiVer    int16
	d         filter.Decision
	records   int64
	bytes     int64
	mech      string
	err       string
}

type foldKey struct {
	conn      uint64
	principal *filter.Principal
	clientID  string
	apiKey    int16
	apiVer    int16
	action    string
	rtype     string
	resource  string
	grant     string
	purpose   string
	rev       string
	reason    string
	obl       string
}

type fold struct {
	it      item
	obl     *AppliedObligations
	last    time.Time
	count   int64
	records int64
	bytes   int64
	parts   []int32 // sorted, deduplicated
}

// New starts an auditor writing to cfg.Topic through a franz-go client
// built from opts (seed brokers, TLS, SASL of the upstream cluster) plus
// the producer settings audit needs. Close must be called to flush.
func New(cfg Config, opts []kgo.Opt, reg prometheus.Registerer, log *zap.Logger) (*Auditor, error) {
	if !cfg.Enabled {
		return nil, errors.New("audit: not enabled")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = defaultInstanceID()
	}
	a := &Auditor{
		cfg:      cfg,
		log:      log.Named("audit"),
		instance: cfg.InstanceID,
		source:   "sluice/" + cfg.InstanceID,
		key:      []byte(cfg.InstanceID),
		closing:  make(chan struct{}),
		in:       make(chan item, cfg.QueueSize),
		out:      make(chan []byte, cfg.QueueSize),
		seqDone:  make(chan struct{}),
		shipDone: make(chan struct{}),
		kick:     make(chan struct{}, 1),
		prev:     zeroHash,
		folds:    make(map[foldKey]*fold),
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	a.chainID = hex.EncodeToString(b[:])
	if cfg.Signing.KeyFile != "" {
		k, err := LoadPrivateKey(cfg.Signing.KeyFile)
		if err != nil {
			return nil, err
		}
		a.priv = k
	}
	m, err := newMetrics(reg, a)
	if err != nil {
		return nil, err
	}
	a.m = m
	sp, err := openSpool(cfg.Spool.Dir, cfg.Spool.MaxBytes)
	if err != nil {
		m.unregister()
		return nil, err
	}
	a.spool = sp
	a.spoolBytes.Store(sp.pending())
	all := append(slices.Clip(opts),
		kgo.DefaultProduceTopic(cfg.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordDeliveryTimeout(cfg.ProduceTimeout),
		kgo.ProduceRequestTimeout(cfg.ProduceTimeout),
		kgo.RequestTimeoutOverhead(min(cfg.ProduceTimeout, 10*time.Second)),
		kgo.MaxBufferedRecords(max(cfg.QueueSize, 2*maxBatch)),
		kgo.ProducerLinger(0),
	)
	a.client, err = kgo.NewClient(all...)
	if err != nil {
		sp.close()
		m.unregister()
		return nil, fmt.Errorf("audit: client: %w", err)
	}
	if !sp.empty() {
		a.log.Info("replaying audit spool from a previous run", zap.Int64("bytes", sp.pending()))
	}
	go a.sequence()
	go a.ship()
	return a, nil
}

// Instance is the gateway instance id in events.
func (a *Auditor) Instance() string { return a.instance }

// ChainID is the id of this run's hash chain.
func (a *Auditor) ChainID() string { return a.chainID }

// QueueDepth is the number of events and records in memory that are
// neither in the topic nor in the spool: queued for the sequencer or the
// shipper, being written, or held while the spool cannot take them
// (fail_closed).
func (a *Auditor) QueueDepth() int { return len(a.in) + len(a.out) + int(a.shipping.Load()) }

// Healthy returns nil while events can be recorded (written to the topic
// or spooled), and an error while they cannot and the policy is
// fail_closed. It is cheap: an atomic load.
func (a *Auditor) Healthy() error {
	if s := a.health.Load(); s != nil {
		return errors.New("audit: unavailable: " + *s)
	}
	return nil
}

// Close stops accepting events, flushes folds, writes a final signed chain
// head and waits until every record is written to the topic or, failing
// that by ctx's deadline (without one: twice produce_timeout), durably
// spooled (replayed on next start). It returns an error if records remain
// in the spool or ctx expired.
func (a *Auditor) Close(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*a.cfg.ProduceTimeout)
		defer cancel()
	}
	first := false
	a.once.Do(func() {
		first = true
		a.stopCtx.Store(&ctx)
		close(a.closing)
		a.mu.Lock()
		a.closed = true
		close(a.in)
		a.mu.Unlock()
	})
	if !first {
		<-a.shipDone
		return nil
	}
	select {
	case <-a.shipDone:
	case <-ctx.Done():
		// Closing the client fails what it still holds, which unblocks
		// the shipper; its records are in the spool or counted dropped.
		a.closeClient.Do(a.client.Close)
		<-a.shipDone
	}
	a.closeClient.Do(a.client.Close)
	var errs []error
	if err := a.spool.close(); err != nil {
		errs = append(errs, err)
	}
	a.spoolMu.Lock()
	n := a.spool.pending()
	a.spoolMu.Unlock()
	if n > 0 {
		errs = append(errs, fmt.Errorf("audit: close: %d bytes left in spool %s for the next start", n, a.cfg.Spool.Dir))
	}
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("audit: close: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

// enqueue hands an item to the sequencer. It only waits while the queue
// is full and the policy is fail_closed (never losing an event), and stops
// waiting when ctx is done or the auditor closes.
func (a *Auditor) enqueue(ctx context.Context, it item) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		a.m.dropped.Inc()
		return
	}
	select {
	case a.in <- it:
		return
	default:
	}
	if a.cfg.OnSpoolFull == FailOpen {
		a.m.dropped.Inc()
		return
	}
	select {
	case a.in <- it:
	case <-ctx.Done():
		a.m.dropped.Inc()
	case <-a.closing:
		a.m.dropped.Inc()
	}
}

// Auth records an authentication attempt: success when err is nil (p is
// the principal), failure otherwise (p may be nil).
func (a *Auditor) Auth(c *filter.Conn, mechanism string, p *filter.Principal, err error) {
	it := item{kind: KindAuthn, t: time.Now(), conn: c, principal: p, mech: mechanism}
	if err != nil {
		it.err = err.Error()
	}
	a.enqueue(context.Background(), it)
}

// Refused records a request the gateway refused before any filter decided
// it (an unknown API key, or a key or version it does not serve): a deny
// decision on the cluster, never folded.
func (a *Auditor) Refused(c *filter.Conn, key, version int16, reason string) {
	it := item{kind: KindDecision, t: time.Now(), conn: c, apiKey: key, apiVer: version,
		d: filter.Decision{Action: "cluster_action", ResourceType: "cluster", Resource: "kafka-cluster", Reason: reason}}
	if c != nil {
		it.principal = c.Principal()
	}
	a.enqueue(context.Background(), it)
	a.m.decisions.Inc()
}

// PolicyReload records a policy (re)load: rev is the new revision on
// success; err is the failure.
func (a *Auditor) PolicyReload(rev string, err error) {
	it := item{kind: KindPolicyReload, t: time.Now(), d: filter.Decision{PolicyRev: rev}}
	if err != nil {
		it.err = err.Error()
	}
	a.enqueue(context.Background(), it)
}

// MaskFailure records that records of topic/partition could not be masked
// (and so were not delivered) on connection c.
func (a *Auditor) MaskFailure(c *filter.Conn, topic string, partition int32, reason string) {
	it := item{kind: KindMaskFailure, t: time.Now(), conn: c,
		d: filter.Decision{ResourceType: "topic", Resource: topic, Partitions: []int32{partition}}, err: reason}
	if c != nil {
		it.principal = c.Principal()
	}
	a.enqueue(context.Background(), it)
}

// sequence is the only goroutine touching the chain state.
func (a *Auditor) sequence() {
	defer close(a.seqDone)
	defer close(a.out)
	var tickC, headC <-chan time.Time
	if a.cfg.FoldWindow > 0 {
		t := time.NewTicker(max(a.cfg.FoldWindow/4, 5*time.Millisecond))
		defer t.Stop()
		tickC = t.C
	}
	if a.priv != nil {
		t := time.NewTicker(a.cfg.Signing.Interval)
		defer t.Stop()
		headC = t.C
	}
	for {
		select {
		case it, ok := <-a.in:
			if !ok {
				a.flushFolds(time.Time{})
				a.emitHead(true)
				return
			}
			a.handle(it)
		case now := <-tickC:
			a.flushFolds(now)
		case <-headC:
			a.emitHead(false)
		}
	}
}

func (a *Auditor) handle(it item) {
	if it.kind != KindDecision || !it.d.Allow || a.cfg.FoldWindow <= 0 {
		a.emit(a.data(it, nil), it.t)
		return
	}
	obl := applied(it.d.Obligations)
	k := foldKey{principal: it.principal, clientID: it.clientID, apiKey: it.apiKey, apiVer: it.apiVer,
		action: it.d.Action, rtype: it.d.ResourceType, resource: it.d.Resource, grant: it.d.GrantID,
		purpose: it.d.Purpose, rev: it.d.PolicyRev, reason: it.d.Reason, obl: obl.key()}
	if it.conn != nil {
		k.conn = it.conn.ID
	}
	f := a.folds[k]
	if f != nil && it.t.Sub(f.it.t) >= a.cfg.FoldWindow {
		a.emitFold(f)
		delete(a.folds, k)
		f = nil
	}
	if f == nil {
		f = &fold{it: it, obl: obl, last: it.t, count: 1, records: it.records, bytes: it.bytes}
		f.parts = addParts(nil, it.d.Partitions)
		a.folds[k] = f
		return
	}
	a.m.folded.Inc()
	f.count++
	f.records += it.records
	f.bytes += it.bytes
	if it.t.After(f.last) {
		f.last = it.t
	}
	f.parts = addParts(f.parts, it.d.Partitions)
}

func addParts(dst, src []int32) []int32 {
	for _, p := range src {
		i, found := slices.BinarySearch(dst, p)
		if !found && len(dst) < maxFoldPartitions {
			dst = slices.Insert(dst, i, p)
		}
	}
	return dst
}

// flushFolds emits folds whose window has closed by now (all when now is
// zero), oldest first.
func (a *Auditor) flushFolds(now time.Time) {
	var due []*fold
	for k, f := range a.folds {
		if now.IsZero() || now.Sub(f.it.t) >= a.cfg.FoldWindow {
			due = append(due, f)
			delete(a.folds, k)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if !due[i].it.t.Equal(due[j].it.t) {
			return due[i].it.t.Before(due[j].it.t)
		}
		return due[i].it.d.Resource < due[j].it.d.Resource
	})
	for _, f := range due {
		a.emitFold(f)
	}
}

func (a *Auditor) emitFold(f *fold) {
	it := f.it
	it.records, it.bytes = f.records, f.bytes
	it.d.Partitions = f.parts
	d := a.data(it, f.obl)
	d.Count = f.count
	if f.count > 1 {
		d.FirstTime, d.LastTime = fmtTime(f.it.t), fmtTime(f.last)
	}
	a.emit(d, f.it.t)
}

// data builds the event payload of an item.
func (a *Auditor) data(it item, obl *AppliedObligations) Data {
	d := Data{SchemaVersion: SchemaVersion, Kind: it.kind, Instance: a.instance}
	if p := it.principal; p != nil {
		d.Principal = &PrincipalRef{ID: clip(p.ID), Org: clip(p.Org), Mechanism: clip(p.Mechanism)}
	}
	if c := it.conn; c != nil {
		d.Client = &ClientRef{ConnID: c.ID, Listener: clip(c.Listener), ClientID: clip(it.clientID)}
		if c.ClientAddr.IsValid() {
			d.Client.Address = c.ClientAddr.String()
		}
	}
	switch it.kind {
	case KindDecision:
		d.API = &APIRef{Key: it.apiKey, Name: kmsg.NameForKey(it.apiKey), Version: it.apiVer}
		d.Action, d.ResourceType, d.Resource = clip(it.d.Action), clip(it.d.ResourceType), clip(it.d.Resource)
		d.Partitions, d.PartitionCount = capParts(it.d.Partitions)
		d.Decision = Deny
		if it.d.Allow {
			d.Decision = Allow
		}
		d.Reason, d.GrantID, d.Purpose, d.PolicyRevision = clip(it.d.Reason), clip(it.d.GrantID), clip(it.d.Purpose), clip(it.d.PolicyRev)
		if obl == nil {
			obl = applied(it.d.Obligations)
		}
		d.Obligations = obl
		if o := it.d.Obligations; o != nil {
			if d.GrantID == "" {
				d.GrantID = o.GrantID
			}
			if d.Purpose == "" {
				d.Purpose = o.Purpose
			}
		}
		d.Count = 1
		d.Records, d.Bytes = it.records, it.bytes
	case KindAuthn:
		d.Mechanism = clip(it.mech)
		d.Decision = Success
		if it.err != "" {
			d.Decision, d.Error = Failure, clip(it.err)
		}
	case KindPolicyReload:
		d.PolicyRevision = it.d.PolicyRev
		d.Decision = Success
		if it.err != "" {
			d.Decision, d.Error = Failure, clip(it.err)
		}
	case KindMaskFailure:
		d.ResourceType, d.Resource = clip(it.d.ResourceType), clip(it.d.Resource)
		d.Partitions, d.PartitionCount = capParts(it.d.Partitions)
		d.Error = clip(it.err)
	}
	return d
}

// maxText bounds free-text fields, so an event stays far below the
// smallest spool (an event is at most about 32 KiB).
const maxText = 1024

// clip cuts s to maxText bytes at a rune boundary, marking the cut.
func clip(s string) string {
	if len(s) <= maxText {
		return s
	}
	cut := maxText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "...(truncated)"
}

// capParts keeps at most maxFoldPartitions partitions; when it cuts, the
// count is the full number.
func capParts(p []int32) ([]int32, int) {
	if len(p) <= maxFoldPartitions {
		return p, 0
	}
	return p[:maxFoldPartitions], len(p)
}

// maxMaskRules bounds the masked fields listed on one event.
const maxMaskRules = 64

// applied summarises obligations for the event; nil when empty.
func applied(o *filter.Obligations) *AppliedObligations {
	if o.Empty() {
		return nil
	}
	ao := &AppliedObligations{}
	for i, r := range o.Mask {
		if i == maxMaskRules {
			ao.MaskedFields = append(ao.MaskedFields, fmt.Sprintf("...(%d more)", len(o.Mask)-i))
			break
		}
		f := clip(r.Field)
		if r.Target == "key" {
			f = "key." + f
		}
		ao.MaskedFields = append(ao.MaskedFields, f+":"+clip(r.Strategy))
	}
	if rf := o.RowFilter; rf != nil {
		ao.RowFilter = clip(rf.Field + " " + rf.Op + " [" + strings.Join(rf.Values, ",") + "]")
	}
	return ao
}

func (o *AppliedObligations) key() string {
	if o == nil {
		return ""
	}
	return strings.Join(o.MaskedFields, ",") + "|" + o.RowFilter
}

// emit appends an event to the chain and hands its encoding to the
// shipper.
func (a *Auditor) emit(d Data, t time.Time) {
	e := Envelope{
		SpecVersion:     SpecVersion,
		ID:              a.chainID + "-" + strconv.FormatUint(a.seq, 10),
		Source:          a.source,
		Type:            EventType(d.Kind),
		Time:            fmtTime(t),
		DataContentType: "application/json",
		DataSchema:      DataSchema,
		Sequence:        strconv.FormatUint(a.seq, 10),
		PrevHash:        a.prev,
		ChainID:         a.chainID,
		Data:            d,
	}
	var b []byte
	var err error
	if d.Head != nil {
		b, err = signEvent(&e, a.priv)
	} else {
		b, err = json.Marshal(&e)
	}
	if err != nil { // only unencodable values; never expected
		a.log.Error("audit event not encodable", zap.Error(err), zap.String("kind", d.Kind))
		a.m.dropped.Inc()
		return
	}
	a.prev = HashRecord(b)
	a.seq++
	a.sinceHead++
	select {
	case a.out <- b:
	case <-a.shipDone:
		a.m.dropped.Inc()
	}
}

// emitHead signs the chain up to now, if anything happened since the last
// head (always on the final one if the chain is not empty).
func (a *Auditor) emitHead(final bool) {
	if a.priv == nil || a.seq == 0 || (a.sinceHead == 0 && !final) {
		return
	}
	h := &ChainHead{SignedSequence: a.seq - 1, SignedHash: a.prev, Events: a.seq, Final: final,
		KeyID: KeyID(a.priv.Public().(ed25519.PublicKey))}
	a.emit(Data{SchemaVersion: SchemaVersion, Kind: KindChainHead, Instance: a.instance, Head: h}, time.Now())
	a.sinceHead = 0
	a.m.heads.Inc()
}
