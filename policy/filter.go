package policy

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/proxy/kafkaerr"
)

// Error codes the filter answers with.
var (
	codeTopic   = kerr.TopicAuthorizationFailed.Code
	codeGroup   = kerr.GroupAuthorizationFailed.Code
	codeCluster = kerr.ClusterAuthorizationFailed.Code
	codeTxn     = kerr.TransactionalIDAuthorizationFailed.Code
	codeToken   = kerr.DelegationTokenAuthorizationFailed.Code
	codeTopicID = kerr.UnknownTopicID.Code
)

// Filter enforces policy decisions on every Kafka API. Build it with
// NewFilter; when policy is disabled, do not install it.
//
// Config: none of its own (the Engine's). Metrics:
//
//	sluice_policy_refused_requests_total{api}        whole requests refused
//	sluice_policy_denied_resources_total{resource_type}  resources denied
//
// Errors: denials of whole requests are *filter.Denial (answered through
// kafkaerr by the proxy); partial denials are answered in the response with
// Kafka's error code per resource. A request of a key the filter has no
// rule for, or that was not decoded, is an error that closes the
// connection: never forward what was not decided.
type Filter struct {
	eng     decider
	log     *zap.Logger
	refused *prometheus.CounterVec
	denied  *prometheus.CounterVec

	sessions fetchSessions
}

// The proxy finds the optional interfaces by type assertion: a method
// whose signature drifted would silently stop being called.
var (
	_ filter.Filter                = (*Filter)(nil)
	_ filter.FetchStreamer         = (*Filter)(nil)
	_ filter.ProduceStreamer       = (*Filter)(nil)
	_ filter.ChangeReporter        = (*Filter)(nil)
	_ filter.RequestChangeReporter = (*Filter)(nil)
)

// decider is what the filter needs of the engine.
type decider interface {
	Decide(ctx context.Context, q *Query) Decision
}

// NewFilter returns the policy filter deciding with e. reg may be nil.
func NewFilter(e *Engine, log *zap.Logger, reg prometheus.Registerer) filter.Filter {
	return newFilter(e, log, reg)
}

func newFilter(e decider, log *zap.Logger, reg prometheus.Registerer) *Filter {
	if log == nil {
		log = zap.NewNop()
	}
	f := &Filter{
		eng: e,
		log: log,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_policy_refused_requests_total", Help: "Whole requests refused by the policy filter, by API.",
		}, []string{"api"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_policy_denied_resources_total", Help: "Resources denied inside requests by the policy filter, by resource type.",
		}, []string{"resource_type"}),
	}
	if reg != nil {
		reg.MustRegister(f.refused, f.denied)
	}
	return f
}

// Name implements filter.Filter.
func (f *Filter) Name() string { return "policy" }

// Wants implements filter.Filter: every key with a rule, except those the
// proxy answers itself.
func (f *Filter) Wants(key int16) bool {
	r, ok := ruleFor(key)
	return ok && r.kind != proxyHandled
}

// OnRequest implements filter.Filter.
func (f *Filter) OnRequest(ctx context.Context, x *filter.Exchange) error {
	r, ok := ruleFor(x.Key)
	if !ok {
		return fmt.Errorf("policy: no rule for api key %d; refusing to forward", x.Key)
	}
	switch r.kind {
	case proxyHandled:
		return nil
	case refused:
		return f.refuse(x, codeCluster, r.name+": not available through the gateway")
	}
	if x.Request == nil {
		return fmt.Errorf("policy: %s request not decoded; refusing to forward", kmsg.NameForKey(x.Key))
	}
	if r.req == nil {
		return nil
	}
	return r.req(ctx, f, x)
}

// OnResponse implements filter.Filter.
func (f *Filter) OnResponse(ctx context.Context, x *filter.Exchange) error {
	r, ok := ruleFor(x.Key)
	if !ok || r.kind != enforced {
		return nil
	}
	st, _ := x.Get(stashKey{}).(*stash)
	if st != nil && st.local {
		return nil // answered locally, complete already
	}
	if x.Response == nil {
		if pr, ok := x.Request.(*kmsg.ProduceRequest); ok && pr.Acks == 0 {
			return nil // no response to carry the denied topics' errors
		}
		if r.resp != nil || st != nil {
			return fmt.Errorf("policy: %s response not decoded; cannot enforce", kmsg.NameForKey(x.Key))
		}
		return nil
	}
	if r.resp != nil {
		if err := r.resp(ctx, f, x); err != nil {
			return err
		}
	}
	if st != nil {
		if len(st.subs) > 0 {
			x.MarkResponseChanged()
		}
		return st.merge(x.Response)
	}
	return nil
}

// ReportsResponseChanges implements filter.ChangeReporter for Produce and
// Fetch, the keys whose responses are large: the filter marks the
// exchange whenever it changes one (fetchResp, stash.merge).
func (f *Filter) ReportsResponseChanges(key int16) bool { return key == 0 || key == 1 }

// ReportsRequestChanges implements filter.RequestChangeReporter for
// Produce and Fetch: their rules change a request only through strip,
// which marks the exchange.
func (f *Filter) ReportsRequestChanges(key int16) bool { return key == 0 || key == 1 }

// refuse denies the whole request.
func (f *Filter) refuse(x *filter.Exchange, code int16, reason string) error {
	f.refused.WithLabelValues(apiName(x.Key)).Inc()
	if ce := f.log.Check(zap.DebugLevel, "policy refused request"); ce != nil {
		ce.Write(zap.String("api", apiName(x.Key)), zap.String("principal", x.Conn.Principal().ID),
			zap.Int16("code", code), zap.String("reason", reason))
	}
	return filter.Deny(code, reason)
}

// decide asks the engine about one resource and records the decision on
// the exchange for audit.
func (f *Filter) decide(ctx context.Context, x *filter.Exchange, a Action, rt ResourceType, name string, parts []int32) Decision {
	d := f.query(ctx, x, a, rt, name)
	f.record(x, a, rt, name, parts, d)
	return d
}

// record appends d, taken on (rt, name), to x's decisions for audit.
func (f *Filter) record(x *filter.Exchange, a Action, rt ResourceType, name string, parts []int32, d Decision) {
	fd := filter.Decision{
		Action: a.String(), ResourceType: rt.String(), Resource: name, Partitions: parts,
		Allow: d.Allow, Reason: d.Reason, PolicyRev: d.Revision, Obligations: d.Obligations,
	}
	if d.Obligations != nil {
		fd.GrantID, fd.Purpose = d.Obligations.GrantID, d.Obligations.Purpose
	}
	x.Decisions = append(x.Decisions, fd)
	if !d.Allow {
		f.denied.WithLabelValues(rt.String()).Inc()
	}
}

// query asks the engine without recording (listing filters), at the time
// the request was read.
func (f *Filter) query(ctx context.Context, x *filter.Exchange, a Action, rt ResourceType, name string) Decision {
	return f.queryAt(ctx, x, a, rt, name, x.Received)
}

// queryAt is query at now (the current time when zero). The response side
// of a long poll decides at the time the response came: a grant or a
// credential that lapsed while the request waited upstream no longer
// reads.
func (f *Filter) queryAt(ctx context.Context, x *filter.Exchange, a Action, rt ResourceType, name string, now time.Time) Decision {
	q := Query{
		Principal: x.Conn.Principal(), Action: a, Resource: rt, Name: name,
		APIKey: x.Key, APIVersion: x.Version,
		Source: x.Conn.ClientAddr, Listener: x.Conn.Listener, Now: now,
	}
	if x.ClientID != nil {
		q.ClientID = *x.ClientID
	}
	if q.Now.IsZero() {
		q.Now = time.Now()
	}
	return f.eng.Decide(ctx, &q)
}

// allowed is decide reduced to a bool.
func (f *Filter) allowed(ctx context.Context, x *filter.Exchange, a Action, rt ResourceType, name string) bool {
	return f.decide(ctx, x, a, rt, name, nil).Allow
}

// need refuses the whole request with code unless a on (rt, name) is
// allowed.
func (f *Filter) need(ctx context.Context, x *filter.Exchange, a Action, rt ResourceType, name string, code int16) error {
	if d := f.decide(ctx, x, a, rt, name, nil); !d.Allow {
		return f.refuse(x, code, fmt.Sprintf("%s %s %q: %s", a, rt, name, d.Reason))
	}
	return nil
}

type stashKey struct{}

// stash is the part of a request the filter took out, to be answered with
// errors in the response.
type stash struct {
	respField string
	subs      []deniedPart
	local     bool
}

type deniedPart struct {
	req  kmsg.Request
	code int16
}

// merge appends the error answer of every denied part to resp.
func (st *stash) merge(resp kmsg.Response) error {
	for _, s := range st.subs {
		er, err := kafkaerr.ErrorResponse(s.req, s.code)
		if err != nil {
			return err
		}
		if err := appendField(resp, er, st.respField); err != nil {
			return err
		}
	}
	return nil
}

// strip removes from the list field reqField of x.Request every element i
// with codes[i] != 0. The removed elements are answered in the response's
// respField with their code (through kafkaerr); if nothing is left the
// whole request is answered locally.
func (f *Filter) strip(x *filter.Exchange, reqField, respField string, codes []int16) error {
	someDenied := false
	for _, c := range codes {
		if c != 0 {
			someDenied = true
			break
		}
	}
	if !someDenied {
		return nil
	}
	req := x.Request
	rv := reflect.ValueOf(req).Elem()
	list := rv.FieldByName(reqField)
	if !list.IsValid() || list.Kind() != reflect.Slice || list.Len() != len(codes) {
		return fmt.Errorf("policy: internal: %T has no list %s of %d", req, reqField, len(codes))
	}
	kept := reflect.MakeSlice(list.Type(), 0, list.Len())
	byCode := map[int16]reflect.Value{}
	var order []int16
	for i, c := range codes {
		if c == 0 {
			kept = reflect.Append(kept, list.Index(i))
			continue
		}
		s, ok := byCode[c]
		if !ok {
			s = reflect.MakeSlice(list.Type(), 0, 1)
			order = append(order, c)
		}
		byCode[c] = reflect.Append(s, list.Index(i))
	}
	st := &stash{respField: respField}
	for _, c := range order {
		sub := reflect.New(rv.Type())
		sub.Elem().Set(rv)
		sub.Elem().FieldByName(reqField).Set(byCode[c])
		st.subs = append(st.subs, deniedPart{req: sub.Interface().(kmsg.Request), code: c})
	}
	list.Set(kept)
	x.MarkRequestChanged()
	if kept.Len() == 0 {
		resp, err := kafkaerr.ErrorResponse(st.subs[0].req, st.subs[0].code)
		if err != nil {
			return err
		}
		for _, s := range st.subs[1:] {
			er, err := kafkaerr.ErrorResponse(s.req, s.code)
			if err != nil {
				return err
			}
			if err := appendField(resp, er, respField); err != nil {
				return err
			}
		}
		x.Local = resp
		st.local = true
	}
	x.Set(stashKey{}, st)
	return nil
}

// appendField appends src's list field to dst's.
func appendField(dst, src kmsg.Response, field string) error {
	d := reflect.ValueOf(dst).Elem().FieldByName(field)
	s := reflect.ValueOf(src).Elem().FieldByName(field)
	if !d.IsValid() || !s.IsValid() || d.Type() != s.Type() {
		return fmt.Errorf("policy: internal: cannot merge %s of %T", field, dst)
	}
	d.Set(reflect.AppendSlice(d, s))
	return nil
}

// topicName returns a topic's name, resolving a topic id if the name is
// empty. ok is false for an id the gateway cannot resolve.
func topicName(x *filter.Exchange, name string, id [16]byte) (string, bool) {
	if name != "" || id == ([16]byte{}) {
		return name, true
	}
	if x.Topics == nil {
		return "", false
	}
	return x.Topics.TopicName(id)
}

// topicCode decides a on a topic and returns the error code for it, 0 if
// allowed.
func (f *Filter) topicCode(ctx context.Context, x *filter.Exchange, a Action, name string, id [16]byte, parts []int32) (int16, Decision) {
	n, ok := topicName(x, name, id)
	if !ok {
		return codeTopicID, Decision{}
	}
	d := f.decide(ctx, x, a, ResourceTopic, n, parts)
	if !d.Allow {
		return codeTopic, d
	}
	return 0, d
}

// attach records an allowed read's obligations for the masking filter.
func attach(x *filter.Exchange, topic string, d Decision) {
	if d.Obligations.Empty() {
		return
	}
	if x.Obligations == nil {
		x.Obligations = make(map[string]*filter.Obligations, 2)
	}
	x.Obligations[topic] = d.Obligations
}
