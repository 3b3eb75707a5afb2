// Package filter is the contract between the proxy core and the features that
// plug into the request path (authentication, policy, audit, masking).
//
// The proxy reads a request, runs every filter's OnRequest in chain order,
// forwards the (possibly rewritten) request upstream, reads the response and
// runs every filter's OnResponse in reverse chain order before answering the
// client. Responses on one connection are always written in request order.
//
// A filter declares the API keys it needs decoded; for keys no filter wants,
// the proxy forwards the raw frame without decoding it. The package imports
// only kmsg and kerr so that domain packages can depend on it without
// depending on the proxy.
package filter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Filter is one stage of the request path.
//
// OnRequest runs on the connection's read loop, in chain order, before the
// request is forwarded. It may rewrite x.Request, answer locally by setting
// x.Local, or refuse the whole request by returning a *Denial. Any other
// error closes the client connection.
//
// OnResponse runs on the connection's write loop, in reverse chain order,
// with x.Response decoded. It may rewrite x.Response. A *Denial replaces the
// response with the denial's error code; any other error closes the
// connection.
//
// Filters are shared by every connection and must be safe for concurrent use;
// per-request state belongs on the Exchange.
type Filter interface {
	// Name is a short stable name used in logs and metrics.
	Name() string
	// Wants reports whether the filter needs requests and responses of
	// this API key decoded. It is called once per key when the chain is
	// built, never on the hot path.
	Wants(key int16) bool
	OnRequest(ctx context.Context, x *Exchange) error
	OnResponse(ctx context.Context, x *Exchange) error
}

// ChangeReporter is implemented by a filter that reports every change it
// makes to a decoded response of the keys it names, by calling
// Exchange.MarkResponseChanged. When every filter of a chain reports
// changes for a key and none marked the exchange, the proxy sends the
// upstream's response bytes as they came (its own address rewriting is
// tracked apart) instead of encoding the decoded response again. A filter
// that does not implement it is taken to change every response, which is
// always safe.
type ChangeReporter interface {
	ReportsResponseChanges(key int16) bool
}

// RequestChangeReporter is ChangeReporter for requests: a filter that
// reports every change it makes to a decoded request of the keys it names
// by calling Exchange.MarkRequestChanged. When every filter of a chain
// reports and none marked, the proxy forwards the client's request bytes
// as they came instead of encoding the request again.
type RequestChangeReporter interface {
	ReportsRequestChanges(key int16) bool
}

// FetchStreamer is implemented by a filter that can take a Fetch response
// as the proxy streams it, topic by topic, instead of decoded whole. The
// proxy streams only when every filter of the chain implements it and
// each StreamFetch, asked after the request filters ran, says yes; it then
// calls FetchTopic for each topic of the response before relaying it, in
// chain order, and FetchDone, in reverse chain order, instead of
// OnResponse.
//
// FetchTopic returns 0 to let the topic's partitions through, or the error
// code its partitions get instead: they are then sent without records
// (and without aborted transactions), at the size the upstream sent, so a
// streamer can withhold but never change records. A streamer must refuse
// to stream (StreamFetch false) whenever it might need to change them.
type FetchStreamer interface {
	StreamFetch(x *Exchange) bool
	FetchTopic(ctx context.Context, x *Exchange, topic string, id [16]byte) int16
	FetchDone(ctx context.Context, x *Exchange, delivered map[string]Stats)
}

// FetchCounter is implemented by a FetchStreamer that reads the counts
// FetchDone is given (the audit filter). Counting relays a partition batch
// by batch, each batch header peeked; when no filter of a chain counts, a
// streamed response's partitions are relayed whole and FetchDone's
// delivered is empty.
type FetchCounter interface {
	CountsFetch() bool
}

// ProduceCounter is implemented by a ProduceStreamer that reads what
// ProduceRelayed is given: the topic's partitions in x.Request and the
// records and bytes in x.Relayed (the audit filter). Learning them means
// parsing the request's structure as it is relayed, a read and a write of
// its own per partition; when no filter of a chain counts, a streamed
// Produce request's body after its head is spliced upstream whole, as
// without filters, and ProduceRelayed sees the topic without partitions
// and x.Relayed nil.
type ProduceCounter interface {
	CountsProduce() bool
}

// FetchPreparer is implemented by a filter that starts work on a decoded
// Fetch response's partitions while the rest of the response is still
// arriving (masking: a consumer's response is megabytes, and reading it
// whole before masking the first byte leaves the gateway idle while it
// arrives). When PrepareFetch says yes, the proxy reads the response
// partition by partition and calls FetchPartition with each partition's
// record batches as soon as they are in; topic is empty from v13 on (id
// names it). Once the whole response is read, or its read failed,
// FetchRead is called, and what FetchPartition started must be finished
// when it returns: the records alias the proxy's read buffer, which is
// reused after. OnResponse runs after that on the decoded response, as for
// every other; what FetchPartition did is a head start, never a decision.
type FetchPreparer interface {
	PrepareFetch(x *Exchange) bool
	FetchPartition(ctx context.Context, x *Exchange, topic string, id [16]byte, partition int32, records []byte)
	FetchRead(x *Exchange)
}

// ProduceStreamer is implemented by a filter that can let a large Produce
// request's records pass as the proxy relays them, instead of the request
// being read whole and decoded first. The proxy streams a Produce request
// only when it names one topic, every filter of the chain implements
// ProduceStreamer, and each StreamProduce, called in chain order in place
// of OnRequest, says yes. x.Request is then a *kmsg.ProduceRequest that
// holds the transactional id, acks, timeout and the one topic, with no
// partitions yet.
//
// A StreamProduce that returns true has done what OnRequest would have
// (recorded its decisions on x) and promises that OnRequest would have
// neither changed nor refused the request: the records go upstream
// unseen. It returns false whenever OnRequest might change or refuse the
// request, having changed nothing outside x; the proxy then drops x, reads
// the request whole and runs OnRequest on it as usual.
//
// Once the request is relayed, ProduceRelayed is called in chain order with
// the topic's partitions filled in x.Request (without their records) and
// x.Relayed holding the records and bytes they carried. OnResponse runs as
// for any request.
type ProduceStreamer interface {
	StreamProduce(ctx context.Context, x *Exchange) bool
	ProduceRelayed(ctx context.Context, x *Exchange)
}

// Funcs adapts plain functions to a Filter; nil functions are no-ops.
type Funcs struct {
	FilterName string
	Keys       []int16 // nil means no key is wanted
	Req        func(ctx context.Context, x *Exchange) error
	Resp       func(ctx context.Context, x *Exchange) error
}

func (f Funcs) Name() string { return f.FilterName }

func (f Funcs) Wants(key int16) bool {
	for _, k := range f.Keys {
		if k == key {
			return true
		}
	}
	return false
}

func (f Funcs) OnRequest(ctx context.Context, x *Exchange) error {
	if f.Req == nil {
		return nil
	}
	return f.Req(ctx, x)
}

func (f Funcs) OnResponse(ctx context.Context, x *Exchange) error {
	if f.Resp == nil {
		return nil
	}
	return f.Resp(ctx, x)
}

// Principal is an authenticated identity, as policies see it.
type Principal struct {
	// ID is the principal's name, unique within its organisation.
	ID string `json:"id"`
	// Org is the organisation (partner) the principal belongs to.
	Org string `json:"org,omitempty"`
	// Mechanism is how the principal authenticated: "anonymous", "mtls",
	// "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512" or "OAUTHBEARER".
	Mechanism string `json:"mechanism"`
	// Roles are coarse roles such as "partner" or "auditor".
	Roles []string `json:"roles,omitempty"`
	// Attributes are free-form attributes from the credentials file,
	// certificate or token claims.
	Attributes map[string]string `json:"attributes,omitempty"`
	// Expires, if non-zero, is when the credential stops being valid
	// (an OAUTHBEARER token's expiry).
	Expires time.Time `json:"expires,omitempty"`
}

// Anonymous is the principal of a connection on a listener without
// authentication.
var Anonymous = &Principal{ID: "anonymous", Mechanism: "anonymous"}

// Conn describes one client connection. It lives as long as the connection.
type Conn struct {
	ID         uint64
	Listener   string         // listener name, "bootstrap" or "broker-<id>"
	ClientAddr netip.AddrPort // remote address of the client
	NodeID     int32          // upstream node id, -1 for the bootstrap listener
	Opened     time.Time

	principal atomic.Pointer[Principal]
}

// Principal returns the connection's current principal, Anonymous if none
// has authenticated.
func (c *Conn) Principal() *Principal {
	if p := c.principal.Load(); p != nil {
		return p
	}
	return Anonymous
}

// SetPrincipal records the connection's principal after (re)authentication.
func (c *Conn) SetPrincipal(p *Principal) { c.principal.Store(p) }

// Exchange is one request and its response as it travels through the chain.
type Exchange struct {
	Conn          *Conn
	Key           int16
	Version       int16
	CorrelationID int32
	ClientID      *string

	// Request is the decoded request when some filter wants this key, else
	// nil. Filters may modify it in place.
	Request kmsg.Request
	// Response is the decoded response in OnResponse when some filter
	// wants this key.
	Response kmsg.Response
	// Local, when set by OnRequest, is the response sent to the client
	// instead of forwarding the request. Later filters' OnRequest are
	// skipped; every filter's OnResponse still runs.
	Local kmsg.Response

	// Received is when the request was read from the client.
	Received time.Time

	// Topics resolves topic IDs (Fetch v13+, Metadata v10+, ...) to
	// names, from the metadata the gateway has seen. Never nil.
	Topics TopicResolver

	// Decisions are appended by the policy filter, one per resource
	// decided, for audit.
	Decisions []Decision
	// Obligations per topic, attached by the policy filter for later
	// filters (masking). Nil when no topic carries obligations.
	Obligations map[string]*Obligations
	// Stats are filled by filters that count records and bytes.
	Stats Stats
	// Relayed counts the records and bytes per topic of a Produce request
	// the proxy relayed without decoding its records (ProduceStreamer), as
	// CountBatches counts; nil for every other exchange.
	Relayed map[string]Stats

	// Values carries other per-exchange state between filters; keys
	// should be unexported types of the owning package.
	Values map[any]any

	respChanged bool
	reqChanged  bool
	done        []func()
}

// OnDone registers f to run once the proxy is done with the exchange's
// response: written to the client, or dropped. A filter that puts buffers
// of its own into the response (masked record batches) takes them back
// then. Filters call it from OnResponse; it is not safe for concurrent use.
func (x *Exchange) OnDone(f func()) { x.done = append(x.done, f) }

// Done runs what OnDone registered, once. The proxy calls it after the
// response is written; an exchange it never calls Done on leaves the
// buffers to the garbage collector.
func (x *Exchange) Done() {
	fs := x.done
	x.done = nil
	for _, f := range fs {
		f()
	}
}

// MarkRequestChanged records that a filter changed x.Request in place
// (see RequestChangeReporter).
func (x *Exchange) MarkRequestChanged() { x.reqChanged = true }

// RequestChanged reports whether a filter marked x.Request changed.
func (x *Exchange) RequestChanged() bool { return x.reqChanged }

// HasObligations reports whether any topic of x carries obligations that
// require something of later filters (Obligations.Empty is false).
func (x *Exchange) HasObligations() bool {
	for _, o := range x.Obligations {
		if !o.Empty() {
			return true
		}
	}
	return false
}

// MarkResponseChanged records that a filter changed x.Response in place
// (see ChangeReporter).
func (x *Exchange) MarkResponseChanged() { x.respChanged = true }

// ResponseChanged reports whether a filter marked x.Response changed.
func (x *Exchange) ResponseChanged() bool { return x.respChanged }

// TopicResolver maps topic IDs to names and back. TopicKnown reports
// whether a topic of that name exists as far as the gateway knows, with or
// without an id (brokers before Kafka 2.8 give topics none).
type TopicResolver interface {
	TopicName(id [16]byte) (string, bool)
	TopicID(name string) ([16]byte, bool)
	TopicKnown(name string) bool
}

// Set stores a per-exchange value.
func (x *Exchange) Set(k, v any) {
	if x.Values == nil {
		x.Values = make(map[any]any, 2)
	}
	x.Values[k] = v
}

// Get returns a per-exchange value.
func (x *Exchange) Get(k any) any { return x.Values[k] }

// Stats counts what an exchange moved.
type Stats struct {
	Records int64
	Bytes   int64
}

// Decision is one policy decision on one resource.
type Decision struct {
	Action       string       `json:"action"`
	ResourceType string       `json:"resource_type"`
	Resource     string       `json:"resource"`
	Partitions   []int32      `json:"partitions,omitempty"`
	Allow        bool         `json:"allow"`
	Reason       string       `json:"reason,omitempty"`
	GrantID      string       `json:"grant_id,omitempty"`
	Purpose      string       `json:"purpose,omitempty"`
	PolicyRev    string       `json:"policy_revision,omitempty"`
	Obligations  *Obligations `json:"obligations,omitempty"`
}

// Obligations are what an allow decision requires later filters to do.
type Obligations struct {
	GrantID string `json:"grant_id,omitempty"`
	Purpose string `json:"purpose,omitempty"`
	// Mask lists field masking rules for record values (and keys).
	Mask []MaskRule `json:"mask,omitempty"`
	// RowFilter is a predicate records must satisfy to be delivered.
	RowFilter *RowFilter `json:"row_filter,omitempty"`
}

// Empty reports whether the obligations require nothing of later filters.
func (o *Obligations) Empty() bool {
	return o == nil || (len(o.Mask) == 0 && o.RowFilter == nil)
}

// MaskRule masks one field. Field is a dotted path into the record
// ("customer.ssn", "items[].card", "attrs{}"); Strategy is one of redact,
// partial, hash, tokenize, null, default.
type MaskRule struct {
	Field    string            `json:"field"`
	Strategy string            `json:"strategy"`
	Target   string            `json:"target,omitempty"` // "value" (default) or "key"
	Params   map[string]string `json:"params,omitempty"`
}

// RowFilter keeps records whose Field equals one of Values.
type RowFilter struct {
	Field  string   `json:"field"`
	Op     string   `json:"op"` // "eq" or "in"
	Values []string `json:"values"`
}

// Denial refuses a request with a Kafka error code.
type Denial struct {
	Code   int16
	Reason string
}

func (d *Denial) Error() string { return fmt.Sprintf("denied (code %d): %s", d.Code, d.Reason) }

// Deny returns a *Denial error with the given Kafka error code.
func Deny(code int16, reason string) error { return &Denial{Code: code, Reason: reason} }

// AsDenial reports whether err is a denial and returns it.
func AsDenial(err error) (*Denial, bool) {
	var d *Denial
	ok := errors.As(err, &d)
	return d, ok
}

// CountBatches counts the records and bytes of the complete batches in a
// record set, reading only batch headers. Control batches are skipped;
// a legacy message set counts one record per message; a trailing partial
// batch counts nothing. The audit filter counts delivered and produced
// records with it, and the proxy's streamed fetches count the same way.
func CountBatches(b []byte) (records, bytes int64) {
	for len(b) >= 17 {
		size := int64(binary.BigEndian.Uint32(b[8:12])) + 12
		if size < 17 || size > int64(len(b)) {
			return
		}
		switch magic := b[16]; {
		case magic >= 2 && size >= 61:
			if attrs := binary.BigEndian.Uint16(b[21:23]); attrs&0x20 == 0 {
				if n := int32(binary.BigEndian.Uint32(b[57:61])); n > 0 {
					records += int64(n)
				}
			}
		case magic < 2:
			records++
		}
		bytes += size
		b = b[size:]
	}
	return
}
