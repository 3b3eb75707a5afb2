package masking

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/proxy/bufpool"
	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/schema"
)

// Filter is the mask filter. On Fetch responses it rewrites the record
// batches of partitions whose topic carries mask or row-filter obligations
// (other partitions are not touched) and fills x.Stats. On Produce requests
// it enforces the schema contract of topics configured with one and masks
// records of topics with obligations.
//
// Config: Config (per-topic format, on_error, contract; hash and tokenize
// keys).
//
// Metrics (registered on the Registerer given to NewFilter):
//
//	sluice_masking_records_total{result}        masked, dropped, error
//	sluice_masking_batches_rewritten_total
//	sluice_masking_failures_total{reason}       registry, format, decode, rule, schema
//	sluice_masking_partitions_failed_total{api} fetch, produce
//
// Errors: a Fetch partition that cannot be masked under on_error:
// fail_partition (or whose batches are corrupt, or whose topic id cannot be
// resolved) gets UNKNOWN_SERVER_ERROR (UNKNOWN_TOPIC_ID) and no records; a
// refused Produce partition gets INVALID_RECORD with an error message.
type Filter struct {
	cfg     Config
	planner *Planner
	src     SchemaSource
	log     *zap.Logger

	lastWarn atomic.Int64 // unix nanos of the last failure log line

	onFailure func(c *filter.Conn, topic string, partition int32, reason string)

	records    *prometheus.CounterVec
	rewritten  prometheus.Counter
	failures   *prometheus.CounterVec
	partFailed *prometheus.CounterVec
	prepared   *prometheus.CounterVec
}

// The proxy finds the optional interfaces by type assertion: a method
// whose signature drifted would silently stop being called.
var (
	_ filter.Filter                = (*Filter)(nil)
	_ filter.FetchPreparer         = (*Filter)(nil)
	_ filter.FetchStreamer         = (*Filter)(nil)
	_ filter.ProduceStreamer       = (*Filter)(nil)
	_ filter.ChangeReporter        = (*Filter)(nil)
	_ filter.RequestChangeReporter = (*Filter)(nil)
)

// NewFilter builds the mask filter. reg may be nil if no topic uses Avro;
// metrics may be nil.
func NewFilter(cfg Config, reg *schema.Registry, log *zap.Logger, metrics prometheus.Registerer) (*Filter, error) {
	var src SchemaSource
	if reg != nil {
		src = reg
	}
	return newFilter(cfg, src, log, metrics)
}

func newFilter(cfg Config, src SchemaSource, log *zap.Logger, metrics prometheus.Registerer) (*Filter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	keys, err := cfg.LoadKeys()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	f := &Filter{
		cfg:     cfg,
		planner: NewPlanner(cfg, src, keys),
		src:     src,
		log:     log,
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_masking_records_total", Help: "Records that went through masking, by result.",
		}, []string{"result"}),
		rewritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_masking_batches_rewritten_total", Help: "Record batches re-encoded by masking.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_masking_failures_total", Help: "Records that could not be masked, by reason.",
		}, []string{"reason"}),
		partFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_masking_partitions_failed_total", Help: "Partitions failed or refused by masking, by api.",
		}, []string{"api"}),
		prepared: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_masking_fetch_partitions_total",
			Help: "Fetch partitions masked, by when: as the response arrived (arriving) or once it was read (read).",
		}, []string{"when"}),
	}
	if metrics != nil {
		for _, c := range []prometheus.Collector{f.records, f.rewritten, f.failures, f.partFailed, f.prepared} {
			if err := metrics.Register(c); err != nil {
				return nil, fmt.Errorf("masking: register metrics: %w", err)
			}
		}
	}
	return f, nil
}

// Planner returns the filter's planner, whose Validate checks rules at policy
// load time.
func (f *Filter) Planner() *Planner { return f.planner }

// OnFailure sets a hook told of every masking failure: a partition failed,
// records delivered with the error marker, or a produce partition refused.
// The audit package records them. Set it before the filter serves.
func (f *Filter) OnFailure(fn func(c *filter.Conn, topic string, partition int32, reason string)) {
	f.onFailure = fn
}

func (f *Filter) failed(x *filter.Exchange, topic string, partition int32, reason string) {
	if f.onFailure != nil && x != nil {
		f.onFailure(x.Conn, topic, partition, reason)
	}
}

func (f *Filter) Name() string { return "mask" }

func (f *Filter) Wants(key int16) bool {
	return key == kmsg.Fetch.Int16() || key == kmsg.Produce.Int16()
}

func (f *Filter) OnRequest(ctx context.Context, x *filter.Exchange) error {
	if req, ok := x.Request.(*kmsg.ProduceRequest); ok {
		f.produceRequest(ctx, x, req)
	}
	return nil
}

// StreamProduce implements filter.ProduceStreamer: a Produce request to a
// topic without a schema contract and without masking obligations passes
// the mask filter untouched, so it may be streamed.
func (f *Filter) StreamProduce(_ context.Context, x *filter.Exchange) bool {
	req, ok := x.Request.(*kmsg.ProduceRequest)
	if !ok || len(req.Topics) != 1 {
		return false
	}
	t := &req.Topics[0]
	name := t.Topic
	if name == "" {
		if name, ok = resolveTopic(x, t.TopicID); !ok {
			return false
		}
	}
	return !f.cfg.Topic(name).Contract && x.Obligations[name].Empty()
}

// ProduceRelayed implements filter.ProduceStreamer; there is nothing to do.
func (f *Filter) ProduceRelayed(context.Context, *filter.Exchange) {}

func (f *Filter) OnResponse(ctx context.Context, x *filter.Exchange) error {
	switch resp := x.Response.(type) {
	case *kmsg.FetchResponse:
		f.fetchResponse(ctx, x, resp)
	case *kmsg.ProduceResponse:
		f.produceResponse(x, resp)
	}
	return nil
}

func (f *Filter) fetchResponse(ctx context.Context, x *filter.Exchange, resp *kmsg.FetchResponse) {
	var stats filter.Stats
	var jobs []maskJob
	var outs []*[]byte
	pr, _ := x.Get(prepKey{}).(*prepared) // partitions masked as they arrived
	defer pr.drop()
	for ti := range resp.Topics {
		t := &resp.Topics[ti]
		name := t.Topic
		resolved := true
		if name == "" {
			name, resolved = resolveTopic(x, t.TopicID)
		}
		var obl *filter.Obligations
		if resolved {
			obl = x.Obligations[name]
		}
		for pi := range t.Partitions {
			p := &t.Partitions[pi]
			if !resolved && len(x.Obligations) > 0 {
				// Fail closed: the topic might carry obligations.
				f.failFetch(p, kerr.UnknownTopicID.Code)
				x.MarkResponseChanged()
				continue
			}
			if obl.Empty() || len(p.RecordBatches) == 0 {
				n, _ := countRecords(p.RecordBatches)
				stats.Records += int64(n)
				stats.Bytes += int64(len(p.RecordBatches))
				continue
			}
			if r := pr.take(p.RecordBatches, obl); r != nil {
				// Masked while the response arrived, from these
				// very bytes.
				x.MarkResponseChanged()
				p.ErrorCode, p.RecordBatches = r.p.ErrorCode, r.p.RecordBatches
				stats.Records += r.stats.Records
				stats.Bytes += r.stats.Bytes
				if r.out != nil {
					outs = append(outs, r.out)
				}
				f.prepared.WithLabelValues("arriving").Inc()
				continue
			}
			jobs = append(jobs, maskJob{topic: name, obl: obl, p: p})
		}
	}
	if len(jobs) > 0 {
		// Every partition masked is changed: rewritten or failed.
		x.MarkResponseChanged()
		f.runMaskJobs(ctx, x, jobs)
		f.prepared.WithLabelValues("read").Add(float64(len(jobs)))
		for i := range jobs {
			stats.Records += jobs[i].stats.Records
			stats.Bytes += jobs[i].stats.Bytes
			if jobs[i].out != nil {
				outs = append(outs, jobs[i].out)
			}
		}
	}
	if len(outs) > 0 {
		// The masked batches are the response's until it is written.
		x.OnDone(func() {
			for _, b := range outs {
				bufpool.Put(b)
			}
		})
	}
	x.Stats.Records += stats.Records
	x.Stats.Bytes += stats.Bytes
}

// maskJob is one fetched partition to mask.
type maskJob struct {
	topic string
	obl   *filter.Obligations
	p     *kmsg.FetchResponseTopicPartition
	stats filter.Stats
	out   *[]byte // the pooled buffer p.RecordBatches now points into
}

// runMaskJobs masks the partitions of one response, several at once when
// the machine has cores to spare: a consumer waits for the whole response,
// so its partitions are masked side by side rather than one after another.
// Each job touches only its own partition and counters.
func (f *Filter) runMaskJobs(ctx context.Context, x *filter.Exchange, jobs []maskJob) {
	workers := min(len(jobs), runtime.GOMAXPROCS(0))
	if workers <= 1 {
		for i := range jobs {
			j := &jobs[i]
			j.out = maskPartition(f, ctx, x, j.topic, j.obl, j.p, &j.stats)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	var carried atomic.Pointer[carriedPanic]
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer carry(&carried)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) {
					return
				}
				j := &jobs[i]
				j.out = maskPartition(f, ctx, x, j.topic, j.obl, j.p, &j.stats)
			}
		}()
	}
	wg.Wait()
	carried.Load().raise()
}

// maskPartition is maskFetchPartition, as the masking goroutines call it
// (a variable so that a test can make one panic).
var maskPartition = (*Filter).maskFetchPartition

// carriedPanic takes a panic out of a masking goroutine to the
// connection's goroutine that waits for it, which raises it again there:
// the proxy then closes that one connection, where a panic left in the
// masking goroutine would have ended the process.
type carriedPanic struct {
	v     any
	stack []byte
}

// carry, deferred in a masking goroutine, keeps its panic (the first) in p.
func carry(p *atomic.Pointer[carriedPanic]) {
	if r := recover(); r != nil {
		p.CompareAndSwap(nil, &carriedPanic{v: r, stack: debug.Stack()})
	}
}

// raise panics again with what was carried, if anything.
func (c *carriedPanic) raise() {
	if c != nil {
		panic(fmt.Sprintf("masking goroutine: %v\n%s", c.v, c.stack))
	}
}

// ReportsResponseChanges implements filter.ChangeReporter for Fetch and
// Produce: fetchResponse marks the exchange whenever it fails or masks a
// partition, produceResponse whenever it adds a refused partition, so that
// other responses go out as the broker sent them, not decoded and encoded
// again.
func (f *Filter) ReportsResponseChanges(key int16) bool {
	return key == kmsg.Fetch.Int16() || key == kmsg.Produce.Int16()
}

// StreamFetch implements filter.FetchStreamer: a response whose topics
// carry no obligations may be streamed (nothing to mask or filter).
func (f *Filter) StreamFetch(x *filter.Exchange) bool { return !x.HasObligations() }

// FetchTopic implements filter.FetchStreamer, failing closed: a topic of a
// streamed response that carries obligations (attached after the request
// side, by a policy change) or whose id cannot be resolved while any
// obligations exist is withheld, never relayed in clear.
func (f *Filter) FetchTopic(_ context.Context, x *filter.Exchange, topic string, id [16]byte) int16 {
	name, resolved := topic, true
	if name == "" {
		name, resolved = resolveTopic(x, id)
	}
	switch {
	case !resolved && len(x.Obligations) > 0:
		f.partFailed.WithLabelValues("fetch").Inc()
		return kerr.UnknownTopicID.Code
	case resolved && !x.Obligations[name].Empty():
		f.partFailed.WithLabelValues("fetch").Inc()
		return kerr.UnknownServerError.Code
	}
	return 0
}

// FetchDone implements filter.FetchStreamer; nothing was masked.
func (f *Filter) FetchDone(context.Context, *filter.Exchange, map[string]filter.Stats) {}

// ReportsRequestChanges implements filter.RequestChangeReporter for Produce
// and Fetch: the filter never changes Fetch requests, and marks a Produce
// request whenever a topic of it has a schema contract or obligations, or
// a partition was refused.
func (f *Filter) ReportsRequestChanges(key int16) bool {
	return key == kmsg.Fetch.Int16() || key == kmsg.Produce.Int16()
}

func (f *Filter) failFetch(p *kmsg.FetchResponseTopicPartition, code int16) {
	p.ErrorCode = code
	p.RecordBatches = []byte{} // empty, not null: librdkafka cannot parse null records
	f.partFailed.WithLabelValues("fetch").Inc()
}

// maskFetchPartition masks p in place, and returns the pooled buffer its
// records are now in (nil when it failed the partition instead).
func (f *Filter) maskFetchPartition(ctx context.Context, x *filter.Exchange, topic string, obl *filter.Obligations, p *kmsg.FetchResponseTopicPartition, stats *filter.Stats) *[]byte {
	rs, err := f.planner.RuleSet(obl)
	if err != nil {
		f.log.Error("masking obligations do not compile", zap.String("topic", topic), zap.Error(err))
		f.failures.WithLabelValues(reasonRule).Inc()
		f.failFetch(p, kerr.UnknownServerError.Code)
		f.failed(x, topic, p.Partition, "partition failed: obligations do not compile: "+err.Error())
		return nil
	}
	m := &recordMasker{ctx: ctx, p: f.planner, rs: rs, tc: f.cfg.Topic(topic), row: true}
	buf, st, err := f.maskRecords(p.RecordBatches, m)
	if err != nil {
		if f.warnAllowed() {
			f.log.Warn("masking failed the partition", zap.String("topic", topic), zap.Int32("partition", p.Partition), zap.Error(err))
		}
		f.failFetch(p, kerr.UnknownServerError.Code)
		f.failed(x, topic, p.Partition, "partition failed: "+err.Error())
		return nil
	}
	out := *buf
	if m.failures > 0 {
		if f.warnAllowed() {
			f.log.Warn("records delivered with a masking error marker", zap.String("topic", topic),
				zap.Int32("partition", p.Partition), zap.Int("records", m.failures), zap.Error(m.lastErr))
		}
		f.failed(x, topic, p.Partition, fmt.Sprintf("%d records replaced by the error marker: %v", m.failures, m.lastErr))
	}
	p.RecordBatches = out
	stats.Records += int64(st.Records)
	stats.Bytes += int64(len(out))
	return buf
}

// maskRecords rewrites records (a partition's record batches) through m
// into a pooled buffer and counts what m did. Magic 0/1 message sets cannot
// be masked, so they fail it rather than pass. On error the buffer is
// given back and nil returned.
func (f *Filter) maskRecords(records []byte, m *recordMasker) (*[]byte, RewriteStats, error) {
	buf := bufpool.Get(len(records) + len(records)/8)
	out, st, err := RewriteBatches(*buf, records, m)
	*buf = out
	f.account(m, st)
	if err == nil && st.OldMagic > 0 {
		err = errOldMagic
	}
	if err != nil {
		bufpool.Put(buf)
		return nil, st, err
	}
	return buf, st, nil
}

func (f *Filter) account(m *recordMasker, st RewriteStats) {
	for r, n := range m.reasons {
		f.failures.WithLabelValues(r).Add(float64(n))
	}
	f.records.WithLabelValues("masked").Add(float64(st.Records - st.Errors))
	f.records.WithLabelValues("dropped").Add(float64(st.Dropped))
	f.records.WithLabelValues("error").Add(float64(st.Errors))
	f.rewritten.Add(float64(st.Rewritten))
}

// countRecords sums the record counts of the magic-2 data batches in b
// without decoding them.
func countRecords(b []byte) (int, error) {
	n := 0
	for len(b) >= batchHeaderLen {
		length := int64(int32(binary.BigEndian.Uint32(b[offLength:])))
		if length < 0 || 12+length > int64(len(b)) {
			break
		}
		if b[offMagic] == 2 && binary.BigEndian.Uint16(b[offAttributes:])&attrControl == 0 {
			n += int(int32(binary.BigEndian.Uint32(b[offNumRecords:])))
		}
		b = b[12+length:]
	}
	return n, nil
}

var errOldMagic = errors.New("masking: message sets of magic 0 or 1 cannot be masked or checked")

// refused is a produce partition removed from the request.
type refused struct {
	topic   string
	topicID [16]byte
	part    int32
	msg     string
	code    int16
}

type refusedKey struct{}

func (f *Filter) produceRequest(ctx context.Context, x *filter.Exchange, req *kmsg.ProduceRequest) {
	var out []refused
	var bufs []*[]byte // masked partitions' records, the request's until it is answered
	defer func() {
		if len(bufs) > 0 {
			x.OnDone(func() {
				for _, b := range bufs {
					bufpool.Put(b)
				}
			})
		}
	}()
	keptTopics := req.Topics[:0]
	for _, t := range req.Topics {
		name := t.Topic
		resolved := true
		if name == "" {
			name, resolved = resolveTopic(x, t.TopicID)
		}
		tc := f.cfg.Topic(name)
		var obl *filter.Obligations
		if resolved {
			obl = x.Obligations[name]
		}
		if !resolved && (len(x.Obligations) > 0 || f.cfg.anyContract()) {
			// Fail closed: the topic might carry obligations or a contract.
			x.MarkRequestChanged()
			for _, p := range t.Partitions {
				out = append(out, refused{name, t.TopicID, p.Partition, "sluice: unknown topic id", kerr.UnknownTopicID.Code})
			}
			continue
		}
		if !tc.Contract && obl.Empty() {
			keptTopics = append(keptTopics, t)
			continue
		}
		x.MarkRequestChanged() // checked, maybe masked or refused
		kept := t.Partitions[:0]
		for _, p := range t.Partitions {
			msg, buf := f.producePartition(ctx, name, tc, obl, &p)
			if buf != nil {
				bufs = append(bufs, buf)
			}
			if msg != "" {
				out = append(out, refused{name, t.TopicID, p.Partition, msg, kerr.InvalidRecord.Code})
				f.partFailed.WithLabelValues("produce").Inc()
				f.failed(x, name, p.Partition, "produce refused: "+msg)
				continue
			}
			kept = append(kept, p)
		}
		t.Partitions = kept
		if len(kept) > 0 {
			keptTopics = append(keptTopics, t)
		}
	}
	req.Topics = keptTopics
	if len(out) == 0 {
		return
	}
	x.Set(refusedKey{}, out)
	if len(req.Topics) == 0 && x.Local == nil {
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		resp.Version = req.Version
		x.Local = resp
	}
}

// producePartition checks the contract and masks; it returns a refusal
// message, or "" when the partition may be forwarded, and the pooled
// buffer p.Records now points into when it masked.
func (f *Filter) producePartition(ctx context.Context, topic string, tc TopicConfig, obl *filter.Obligations, p *kmsg.ProduceRequestTopicPartition) (string, *[]byte) {
	if tc.Contract {
		if err := f.checkContract(ctx, topic, p.Records); err != nil {
			return "sluice: schema contract: " + err.Error(), nil
		}
	}
	if obl.Empty() || len(obl.Mask) == 0 {
		return "", nil // row filters apply to reads only
	}
	rs, err := f.planner.RuleSet(obl)
	if err != nil {
		return "sluice: masking rules: " + err.Error(), nil
	}
	m := &recordMasker{ctx: ctx, p: f.planner, rs: rs, tc: tc, strict: true}
	buf, st, err := f.maskRecords(p.Records, m)
	if err == nil && st.Control > 0 {
		bufpool.Put(buf)
		err = errClientControl
	}
	if err != nil {
		return "sluice: masking: " + err.Error(), nil
	}
	p.Records = *buf
	return "", buf
}

// contractChecker is a Transformer that validates values and changes nothing.
type contractChecker struct {
	ctx   context.Context
	f     *Filter
	topic string
	// The last schema id found valid for the subject and its validator,
	// so a batch of one schema costs one lookup.
	lastID int
	last   *Plan
}

func (c *contractChecker) Transform(_, value []byte, _ *RecordEdit) error {
	if value == nil {
		return nil // tombstones carry no schema
	}
	id, body, err := schema.ParseWire(value)
	if err != nil {
		return err
	}
	if c.last != nil && id == c.lastID {
		if err := c.last.Validate(body); err != nil {
			return fmt.Errorf("value does not decode under schema id %d: %w", id, err)
		}
		return nil
	}
	subject := schema.ValueSubject(c.topic)
	ok, err := c.f.src.IDInSubject(c.ctx, subject, id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("schema id %d is not registered under subject %q", id, subject)
	}
	s, err := c.f.src.SchemaByID(c.ctx, id)
	if err != nil {
		return err
	}
	pl, err := c.f.planner.validator(s)
	if err != nil {
		return err
	}
	if err := pl.Validate(body); err != nil {
		return fmt.Errorf("value does not decode under schema id %d: %w", id, err)
	}
	c.lastID, c.last = id, pl
	return nil
}

func (f *Filter) checkContract(ctx context.Context, topic string, records []byte) error {
	if f.src == nil {
		return fmt.Errorf("no schema registry configured")
	}
	st, err := VisitRecords(records, &contractChecker{ctx: ctx, f: f, topic: topic})
	if err == nil && st.OldMagic > 0 {
		err = errOldMagic
	}
	if err == nil && st.Control > 0 {
		err = errClientControl
	}
	return err
}

// errClientControl refuses control batches in a client's Produce: they are
// passed through unread, so a data batch flagged as one would skip the
// contract and masking; only brokers write transaction markers.
var errClientControl = errors.New("masking: control batches are not accepted from clients")

func (f *Filter) produceResponse(x *filter.Exchange, resp *kmsg.ProduceResponse) {
	out, _ := x.Get(refusedKey{}).([]refused)
	if len(out) > 0 {
		x.MarkResponseChanged()
	}
	for _, r := range out {
		var t *kmsg.ProduceResponseTopic
		for i := range resp.Topics {
			if resp.Topics[i].Topic == r.topic && resp.Topics[i].TopicID == r.topicID {
				t = &resp.Topics[i]
				break
			}
		}
		if t == nil {
			nt := kmsg.NewProduceResponseTopic()
			nt.Topic, nt.TopicID = r.topic, r.topicID
			resp.Topics = append(resp.Topics, nt)
			t = &resp.Topics[len(resp.Topics)-1]
		}
		p := kmsg.NewProduceResponseTopicPartition()
		p.Partition = r.part
		p.ErrorCode = r.code
		p.BaseOffset = -1
		msg := r.msg
		p.ErrorMessage = &msg
		t.Partitions = append(t.Partitions, p)
	}
}

func resolveTopic(x *filter.Exchange, id [16]byte) (string, bool) {
	if x.Topics == nil {
		return "", false
	}
	return x.Topics.TopicName(id)
}

// warnAllowed rate-limits failure log lines to one per second: a consumer
// polling a partition that keeps failing would otherwise log on every fetch.
// The metrics count every failure.
func (f *Filter) warnAllowed() bool {
	now := time.Now().UnixNano()
	last := f.lastWarn.Load()
	return now-last >= int64(time.Second) && f.lastWarn.CompareAndSwap(last, now)
}
