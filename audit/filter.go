package audit

import (
	"context"
	"maps"
	"time"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DenyCode is the Kafka error code of requests refused while audit is
// failing closed: KAFKA_STORAGE_ERROR (56), which clients treat as
// retriable, so they retry until the audit spool drains.
var DenyCode = kerr.KafkaStorageError.Code

type deniedKey struct{}

// NewFilter returns the audit filter. It wants every API key. Put it first
// in the chain (audit -> policy -> mask): its OnRequest then refuses work
// before anything else happens, and its OnResponse, which runs in reverse
// order, runs last and sees every decision (including response-side ones)
// and the records and bytes the mask filter counted.
//
//   - OnRequest refuses the request with DenyCode ("audit unavailable: <why>")
//     while a.Healthy() fails (spool full or unwritable under
//     fail_closed); ApiVersions and SASL are always let through.
//   - OnResponse turns x.Decisions into events, with per-topic records
//     and bytes counted from Produce requests and Fetch responses
//     (falling back to x.Stats for the first allow decision). It never
//     blocks on I/O; it waits only while the in-memory queue is full
//     under fail_closed. Exchanges it refused itself are not recorded.
//
// Metrics: see the package doc. Errors: only the *filter.Denial above.
func NewFilter(a *Auditor) filter.Filter { return &auditFilter{a: a} }

type auditFilter struct{ a *Auditor }

// The proxy finds the optional interfaces by type assertion: a method
// whose signature drifted would silently stop being called.
var (
	_ filter.Filter                = (*auditFilter)(nil)
	_ filter.FetchStreamer         = (*auditFilter)(nil)
	_ filter.FetchCounter          = (*auditFilter)(nil)
	_ filter.ProduceStreamer       = (*auditFilter)(nil)
	_ filter.ProduceCounter        = (*auditFilter)(nil)
	_ filter.ChangeReporter        = (*auditFilter)(nil)
	_ filter.RequestChangeReporter = (*auditFilter)(nil)
)

func (f *auditFilter) Name() string { return "audit" }

func (f *auditFilter) Wants(int16) bool { return true }

// ReportsResponseChanges implements filter.ChangeReporter: the audit
// filter reads responses and never changes them.
func (f *auditFilter) ReportsResponseChanges(int16) bool { return true }

// ReportsRequestChanges implements filter.RequestChangeReporter: the audit
// filter never changes requests.
func (f *auditFilter) ReportsRequestChanges(int16) bool { return true }

func (f *auditFilter) OnRequest(_ context.Context, x *filter.Exchange) error {
	reason := f.a.health.Load()
	if reason == nil {
		return nil
	}
	switch x.Key {
	case 17, 18, 36: // SaslHandshake, ApiVersions, SaslAuthenticate
		return nil
	}
	f.a.m.deniedReqs.Inc()
	x.Set(deniedKey{}, true)
	return filter.Deny(DenyCode, "audit unavailable: "+*reason)
}

func (f *auditFilter) OnResponse(ctx context.Context, x *filter.Exchange) error {
	var counts map[string]filter.Stats
	switch x.Key {
	case 0:
		if x.Relayed != nil { // streamed: the proxy counted (record deletes from counts)
			counts = maps.Clone(x.Relayed)
		} else if req, ok := x.Request.(*kmsg.ProduceRequest); ok {
			counts = produceCounts(req, x.Topics)
		}
	case 1:
		if resp, ok := x.Response.(*kmsg.FetchResponse); ok {
			counts = fetchCounts(resp, x.Topics)
		}
	}
	f.record(ctx, x, counts)
	return nil
}

// StreamProduce implements filter.ProduceStreamer: a streamed Produce
// request is recorded with the records and bytes the proxy counted as it
// relayed them (x.Relayed). While auditing fails closed, OnRequest refuses
// the request instead.
func (f *auditFilter) StreamProduce(context.Context, *filter.Exchange) bool {
	return f.a.health.Load() == nil
}

// ProduceRelayed implements filter.ProduceStreamer; OnResponse records.
func (f *auditFilter) ProduceRelayed(context.Context, *filter.Exchange) {}

// CountsProduce implements filter.ProduceCounter: the events carry the
// partitions and counts of a streamed request.
func (f *auditFilter) CountsProduce() bool { return true }

// StreamFetch implements filter.FetchStreamer: the audit filter needs only
// what a streamed response delivered.
func (f *auditFilter) StreamFetch(*filter.Exchange) bool { return true }

// CountsFetch implements filter.FetchCounter: the events carry what a
// streamed response delivered.
func (f *auditFilter) CountsFetch() bool { return true }

// FetchTopic implements filter.FetchStreamer; it withholds nothing.
func (f *auditFilter) FetchTopic(context.Context, *filter.Exchange, string, [16]byte) int16 { return 0 }

// FetchDone implements filter.FetchStreamer: the exchange's decisions are
// recorded with the records and bytes the stream delivered per topic.
func (f *auditFilter) FetchDone(ctx context.Context, x *filter.Exchange, delivered map[string]filter.Stats) {
	counts := make(map[string]filter.Stats, len(delivered))
	for k, v := range delivered { // record deletes from it
		counts[k] = v
	}
	f.record(ctx, x, counts)
}

// record turns x.Decisions into events, with counts per topic.
func (f *auditFilter) record(ctx context.Context, x *filter.Exchange, counts map[string]filter.Stats) {
	if len(x.Decisions) == 0 {
		return
	}
	if x.Values != nil && x.Get(deniedKey{}) != nil {
		return
	}
	t := time.Now()
	var clientID string
	if x.ClientID != nil {
		clientID = *x.ClientID
	}
	var p *filter.Principal
	if x.Conn != nil {
		p = x.Conn.Principal()
	}
	statsUsed := counts != nil
	for i := range x.Decisions {
		d := &x.Decisions[i]
		it := item{kind: KindDecision, t: t, conn: x.Conn, principal: p, clientID: clientID,
			apiKey: x.Key, apiVer: x.Version, d: *d}
		if d.Obligations == nil && d.Allow && d.ResourceType == "topic" {
			it.d.Obligations = x.Obligations[d.Resource]
		}
		if d.Allow {
			if c, ok := counts[d.Resource]; ok && d.ResourceType == "topic" {
				it.records, it.bytes = c.Records, c.Bytes
				delete(counts, d.Resource) // one decision per topic carries them
			} else if !statsUsed {
				it.records, it.bytes = x.Stats.Records, x.Stats.Bytes
				statsUsed = true
			}
		}
		f.a.enqueue(ctx, it)
	}
	f.a.m.decisions.Add(float64(len(x.Decisions)))
}

// produceCounts counts records and bytes per topic in a Produce request
// (v13+ names topics by id, resolved through names).
func produceCounts(req *kmsg.ProduceRequest, names filter.TopicResolver) map[string]filter.Stats {
	m := make(map[string]filter.Stats, len(req.Topics))
	for i := range req.Topics {
		t := &req.Topics[i]
		name := t.Topic
		if name == "" && names != nil {
			name, _ = names.TopicName(t.TopicID)
		}
		s := m[name]
		for j := range t.Partitions {
			r, b := filter.CountBatches(t.Partitions[j].Records)
			s.Records += r
			s.Bytes += b
		}
		m[name] = s
	}
	return m
}

// fetchCounts counts records and bytes per topic in a Fetch response.
func fetchCounts(resp *kmsg.FetchResponse, names filter.TopicResolver) map[string]filter.Stats {
	m := make(map[string]filter.Stats, len(resp.Topics))
	for i := range resp.Topics {
		t := &resp.Topics[i]
		name := t.Topic
		if name == "" && names != nil {
			name, _ = names.TopicName(t.TopicID)
		}
		s := m[name]
		for j := range t.Partitions {
			r, b := filter.CountBatches(t.Partitions[j].RecordBatches)
			s.Records += r
			s.Bytes += b
		}
		m[name] = s
	}
	return m
}
