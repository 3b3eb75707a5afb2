package policy

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/proxy/kafkaerr"
)

// fakeDecider answers from a function, recording the queries.
type fakeDecider struct {
	allow   func(q *Query) bool
	queries []Query
}

func (d *fakeDecider) Decide(_ context.Context, q *Query) Decision {
	d.queries = append(d.queries, *q)
	if d.allow(q) {
		return Decision{Allow: true, Reason: "fake allow", Revision: "fake"}
	}
	return Decision{Allow: false, Reason: "fake deny", Revision: "fake"}
}

type topics map[[16]byte]string

func (t topics) TopicName(id [16]byte) (string, bool) { n, ok := t[id]; return n, ok }
func (t topics) TopicKnown(name string) bool          { _, ok := t.TopicID(name); return ok }
func (t topics) TopicID(name string) ([16]byte, bool) {
	for id, n := range t {
		if n == name {
			return id, true
		}
	}
	return [16]byte{}, false
}

var (
	idOrders = [16]byte{1}
	idSecret = [16]byte{2}
	resolver = topics{idOrders: "orders.eu", idSecret: "payments.settled"}
)

func exchange(p *filter.Principal, req kmsg.Request) *filter.Exchange {
	c := &filter.Conn{ID: 1, Listener: "bootstrap"}
	c.SetPrincipal(p)
	cid := "test-client"
	return &filter.Exchange{Conn: c, Key: req.Key(), Version: req.GetVersion(), Request: req, Received: testNow, Topics: resolver, ClientID: &cid}
}

// fill gives every list of v one element and every name a value.
func fill(v reflect.Value, depth int) {
	switch v.Kind() {
	case reflect.Ptr:
		if v.Type().Elem().Kind() == reflect.String && v.IsNil() {
			s := "r"
			v.Set(reflect.ValueOf(&s))
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			n := v.Type().Field(i).Name
			if n == "Version" || n == "UnknownTags" || n == "ReplicaID" || n == "ReplicaState" || n == "CoordinatorType" {
				continue
			}
			fill(v.Field(i), depth+1)
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 || depth > 6 || v.Len() > 0 {
			return
		}
		s := reflect.MakeSlice(v.Type(), 1, 1)
		if d, ok := s.Index(0).Addr().Interface().(interface{ Default() }); ok {
			d.Default()
		}
		fill(s.Index(0), depth+1)
		v.Set(s)
	case reflect.String:
		if v.String() == "" {
			v.SetString("r")
		}
	case reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.Set(reflect.ValueOf(idOrders))
		}
	}
}

func filled(key, version int16) kmsg.Request {
	req := kmsg.RequestForKey(key)
	if d, ok := req.(interface{ Default() }); ok {
		d.Default()
	}
	fill(reflect.ValueOf(req).Elem(), 0)
	req.SetVersion(version)
	return req
}

// listings are the keys whose requests name no resource: their responses
// are filtered instead.
var listings = map[int16]string{
	16: "ListGroups",
	66: "ListTransactions",
}

// TestEveryKeyHasARule walks every API key kmsg knows. Each must be
// enforced by a named rule, refused, or answered by the proxy; and under a
// policy that denies everything, no request of an enforced key may reach
// the broker with a resource still in it.
func TestEveryKeyHasARule(t *testing.T) {
	known := 0
	for key := int16(0); key < keyBound; key++ {
		if kmsg.RequestForKey(key) == nil {
			// kmsg may skip numbers: keep looking up to the bound.
			if _, ok := ruleFor(key); ok {
				t.Errorf("api key %d has a rule but kmsg does not know it", key)
			}
			continue
		}
		known++
		name := kmsg.NameForKey(key)
		r, ok := ruleFor(key)
		if !ok {
			t.Errorf("api key %d (%s) has no policy rule: decide how it is enforced or refuse it", key, name)
			continue
		}
		if r.name == "" {
			t.Errorf("api key %d (%s): rule has no name", key, name)
		}
		if r.kind == enforced && r.req == nil && r.resp == nil {
			t.Errorf("api key %d (%s): enforced rule with no check", key, name)
		}
		t.Run(name, func(t *testing.T) {
			denyAll := newFilter(&fakeDecider{allow: func(*Query) bool { return false }}, nil, nil)
			allowAll := newFilter(&fakeDecider{allow: func(*Query) bool { return true }}, nil, nil)
			if wants := denyAll.Wants(key); wants != (r.kind != proxyHandled) {
				t.Fatalf("Wants = %v for a %v rule", wants, r.kind)
			}
			max := kmsg.RequestForKey(key).MaxVersion()
			for v := int16(0); v <= max; v++ {
				x := exchange(acme, filled(key, v))
				err := denyAll.OnRequest(context.Background(), x)
				if r.kind == proxyHandled {
					if err != nil || x.Local != nil {
						t.Fatalf("v%d: proxy-handled key touched: %v", v, err)
					}
					continue
				}
				if d, isDenial := filter.AsDenial(err); isDenial {
					resp, kerr := kafkaerr.ErrorResponse(x.Request, d.Code)
					if kerr != nil {
						t.Fatalf("v%d: denial cannot be answered: %v", v, kerr)
					}
					if r.kind == refused && d.Code != codeCluster {
						t.Fatalf("v%d: refused with %d", v, d.Code)
					}
					if bad := notDenied(resp); bad != "" {
						t.Fatalf("v%d: denial answered with %s", v, bad)
					}
					continue
				}
				if err != nil {
					t.Fatalf("v%d: %v", v, err)
				}
				if r.kind == refused {
					t.Fatalf("v%d: refused key not refused", v)
				}
				if x.Local != nil {
					if x.Local.Key() != key || x.Local.GetVersion() != v {
						t.Fatalf("v%d: local answer of key %d version %d", v, x.Local.Key(), x.Local.GetVersion())
					}
					if bad := notDenied(x.Local); bad != "" {
						t.Fatalf("v%d: local answer under a deny-all policy with %s", v, bad)
					}
					continue
				}
				// Forwarded under deny-all: only listings and an emptied
				// Metadata request may be.
				switch {
				case listings[key] != "":
				case key == 3 && len(x.Request.(*kmsg.MetadataRequest).Topics) == 0 && x.Request.(*kmsg.MetadataRequest).Topics != nil:
				default:
					t.Fatalf("v%d: forwarded under a deny-all policy: %+v", v, x.Request)
				}
				// The response side must hide everything.
				resp := x.Request.ResponseKind()
				if d, ok := resp.(interface{ Default() }); ok {
					d.Default()
				}
				fill(reflect.ValueOf(resp).Elem(), 0)
				resp.SetVersion(v)
				x.Response = resp
				if err := denyAll.OnResponse(context.Background(), x); err != nil {
					t.Fatalf("v%d: response: %v", v, err)
				}
				if leaked := listed(resp); leaked != "" {
					t.Fatalf("v%d: response still lists %s", v, leaked)
				}
			}
			// Allow-all passes every enforced request untouched, at the
			// highest version a client may send.
			if r.kind == enforced {
				top := max
				if from, ok := refusedFrom[key]; ok {
					top = from - 1
					// From there on, refused even to a principal allowed
					// everything.
					for v := from; v <= max; v++ {
						d, ok := filter.AsDenial(allowAll.OnRequest(context.Background(), exchange(admin, filled(key, v))))
						if !ok || d.Code != codeCluster {
							t.Fatalf("allow-all v%d: not refused with CLUSTER_AUTHORIZATION_FAILED", v)
						}
					}
				}
				x := exchange(admin, filled(key, top))
				if err := allowAll.OnRequest(context.Background(), x); err != nil || x.Local != nil {
					t.Fatalf("allow-all: err %v local %v", err, x.Local)
				}
			}
		})
	}
	if known != len(rules) {
		t.Errorf("kmsg knows %d api keys below %d, the rules cover %d", known, keyBound, len(rules))
	}
}

// refusedFrom are enforced keys whose versions from this one on are not
// for clients and are refused outright (AddPartitionsToTxn v4+: KIP-890,
// broker-to-broker).
var refusedFrom = map[int16]int16{24: 4}

// keyBound is beyond every Kafka API key: TestEveryKeyHasARule looks at
// every key below it, so a key kmsg adds after a gap is not missed.
const keyBound = 1000

// notDenied describes a resource of an answer under a deny-all policy that
// does not carry an authorization-failed code ("" if every one does; an
// answer naming no resource must carry one at the top level).
func notDenied(resp kmsg.Response) string {
	res := resources(resp)
	named := 0
	for k, c := range res {
		if k == "" {
			continue
		}
		named++
		if _, ok := authCodes[c]; !ok {
			return fmt.Sprintf("%s carrying code %d (%v)", k, c, kerr.ErrorForCode(c))
		}
	}
	if _, ok := authCodes[res[""]]; named == 0 && !ok {
		return fmt.Sprintf("no resource and top-level code %d", res[""])
	}
	return ""
}

// listed reports a resource still listed without an error in a filtered
// response.
func listed(resp kmsg.Response) string {
	switch r := resp.(type) {
	case *kmsg.ListGroupsResponse:
		if len(r.Groups) > 0 {
			return "groups"
		}
	case *kmsg.ListTransactionsResponse:
		if len(r.TransactionStates) > 0 {
			return "transactions"
		}
	case *kmsg.MetadataResponse:
		for _, t := range r.Topics {
			if t.ErrorCode == 0 {
				return "topic " + *t.Topic
			}
		}
	}
	return ""
}

func newExampleFilter(t testing.TB) *Filter {
	return newFilter(newExample(t, nil), nil, nil)
}

func produceReqFor(version int16, topics ...string) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks = version, -1
	for _, name := range topics {
		t := kmsg.NewProduceRequestTopic()
		t.Topic = name
		p := kmsg.NewProduceRequestTopicPartition()
		p.Partition = 0
		t.Partitions = append(t.Partitions, p)
		req.Topics = append(req.Topics, t)
	}
	return req
}

func TestProducePartial(t *testing.T) {
	f := newExampleFilter(t)
	req := produceReqFor(9, "inbound.acme.returns", "orders.eu")
	x := exchange(acme, req)
	if err := f.OnRequest(context.Background(), x); err != nil || x.Local != nil {
		t.Fatalf("err %v local %v", err, x.Local)
	}
	if len(req.Topics) != 1 || req.Topics[0].Topic != "inbound.acme.returns" {
		t.Fatalf("forwarded %+v", req.Topics)
	}
	if !x.RequestChanged() {
		t.Fatal("request with a denied topic stripped not marked changed: the proxy would forward it whole")
	}
	// Upstream answers the allowed topic; the denied one is added back.
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	resp.Version = 9
	rt := kmsg.NewProduceResponseTopic()
	rt.Topic = "inbound.acme.returns"
	rt.Partitions = append(rt.Partitions, kmsg.NewProduceResponseTopicPartition())
	resp.Topics = append(resp.Topics, rt)
	x.Response = resp
	if err := f.OnResponse(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	got := map[string]int16{}
	for _, t := range resp.Topics {
		got[t.Topic] = t.Partitions[0].ErrorCode
	}
	if len(got) != 2 || got["inbound.acme.returns"] != 0 || got["orders.eu"] != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("response codes %v", got)
	}
	if !x.ResponseChanged() {
		t.Fatal("response with denied topics merged back not marked changed")
	}
	if len(x.Decisions) != 2 || x.Decisions[1].Allow || x.Decisions[1].Resource != "orders.eu" || len(x.Decisions[1].Partitions) != 1 {
		t.Fatalf("decisions %+v", x.Decisions)
	}
}

func TestProduceAllDeniedAnsweredLocally(t *testing.T) {
	f := newExampleFilter(t)
	x := exchange(acme, produceReqFor(3, "orders.eu", "_sluice_audit"))
	if err := f.OnRequest(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	resp, ok := x.Local.(*kmsg.ProduceResponse)
	if !ok || len(resp.Topics) != 2 || resp.Topics[1].Partitions[0].ErrorCode != kerr.TopicAuthorizationFailed.Code || resp.Version != 3 {
		t.Fatalf("local %+v", x.Local)
	}
	x.Response = x.Local
	if err := f.OnResponse(context.Background(), x); err != nil || len(resp.Topics) != 2 {
		t.Fatalf("response side changed a local answer: %v %+v", err, resp.Topics)
	}
}

func TestProduceTransactionalIDDenied(t *testing.T) {
	f := newExampleFilter(t)
	req := produceReqFor(9, "inbound.acme.returns")
	tx := "globex.tx"
	req.TransactionID = &tx
	err := f.OnRequest(context.Background(), exchange(acme, req))
	if d, ok := filter.AsDenial(err); !ok || d.Code != kerr.TransactionalIDAuthorizationFailed.Code {
		t.Fatalf("err %v", err)
	}
}

func fetchReqFor(version int16, byID bool, names ...string) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.Version = version
	for _, n := range names {
		t := kmsg.NewFetchRequestTopic()
		if byID {
			id, _ := resolver.TopicID(n)
			t.TopicID = id
		} else {
			t.Topic = n
		}
		p := kmsg.NewFetchRequestTopicPartition()
		t.Partitions = append(t.Partitions, p)
		req.Topics = append(req.Topics, t)
	}
	return req
}

func fetchRespTopic(name string, id [16]byte) kmsg.FetchResponseTopic {
	t := kmsg.NewFetchResponseTopic()
	t.Topic, t.TopicID = name, id
	p := kmsg.NewFetchResponseTopicPartition()
	p.RecordBatches = []byte("records")
	p.HighWatermark = 10
	t.Partitions = append(t.Partitions, p)
	return t
}

func TestFetchByTopicIDPartialWithObligations(t *testing.T) {
	f := newExampleFilter(t)
	req := fetchReqFor(13, true, "orders.eu", "payments.settled")
	unknown := kmsg.NewFetchRequestTopic()
	unknown.TopicID = [16]byte{9}
	unknown.Partitions = append(unknown.Partitions, kmsg.NewFetchRequestTopicPartition())
	req.Topics = append(req.Topics, unknown)
	x := exchange(acme, req)
	if err := f.OnRequest(context.Background(), x); err != nil || x.Local != nil {
		t.Fatalf("err %v local %v", err, x.Local)
	}
	if len(req.Topics) != 1 || req.Topics[0].TopicID != idOrders {
		t.Fatalf("forwarded %+v", req.Topics)
	}
	o := x.Obligations["orders.eu"]
	if o == nil || o.GrantID != "g-acme-orders-eu" || len(o.Mask) != 3 || o.RowFilter == nil {
		t.Fatalf("obligations %+v", x.Obligations)
	}
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 13
	resp.Topics = append(resp.Topics, fetchRespTopic("", idOrders))
	x.Response = resp
	if err := f.OnResponse(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	codes := map[[16]byte]int16{}
	for _, t := range resp.Topics {
		codes[t.TopicID] = t.Partitions[0].ErrorCode
	}
	want := map[[16]byte]int16{idOrders: 0, idSecret: kerr.TopicAuthorizationFailed.Code, {9}: kerr.UnknownTopicID.Code}
	if !reflect.DeepEqual(codes, want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
	if string(resp.Topics[0].Partitions[0].RecordBatches) != "records" {
		t.Fatal("allowed records removed")
	}
}

// A partition already in an incremental fetch session comes back without
// being listed: the response side must catch a topic that is not readable.
func TestFetchResponseSideDeniesSessionPartitions(t *testing.T) {
	f := newExampleFilter(t)
	req := fetchReqFor(12, false) // incremental: lists nothing
	req.SessionID, req.SessionEpoch = 7, 3
	x := exchange(acme, req)
	if err := f.OnRequest(context.Background(), x); err != nil || x.Local != nil {
		t.Fatalf("err %v local %v", err, x.Local)
	}
	resp := kmsg.NewPtrFetchResponse()
	resp.Version, resp.SessionID = 12, 7
	resp.Topics = append(resp.Topics, fetchRespTopic("demo", [16]byte{}), fetchRespTopic("orders.eu", [16]byte{}),
		fetchRespTopic("payments.settled", [16]byte{}))
	x.Response = resp
	if err := f.OnResponse(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || string(p.RecordBatches) != "records" {
		t.Fatalf("allowed topic changed: %+v", p)
	}
	// orders.eu is allowed with a mask the request side did not attach
	// (the filter did not know it was in the session): the mask filter,
	// whose response step runs first, saw no obligations, so its records
	// must not go out.
	if p := resp.Topics[1].Partitions[0]; p.ErrorCode != kerr.UnknownServerError.Code || len(p.RecordBatches) != 0 {
		t.Fatalf("topic with unseen obligations delivered: %+v", p)
	}
	p := resp.Topics[2].Partitions[0]
	if p.ErrorCode != kerr.TopicAuthorizationFailed.Code || len(p.RecordBatches) != 0 || p.HighWatermark != -1 {
		t.Fatalf("denied topic still delivered: %+v", p)
	}
	if !x.ResponseChanged() {
		t.Fatal("response with a denied topic not marked changed: the proxy would send the upstream's bytes")
	}
	if len(x.Obligations) != 0 {
		t.Fatalf("obligations %+v", x.Obligations)
	}
	if len(x.Decisions) != 3 || !x.Decisions[0].Allow || !x.Decisions[1].Allow || x.Decisions[2].Allow {
		t.Fatalf("decisions %+v", x.Decisions)
	}
}

func TestFetchAllDeniedLocalResetsSession(t *testing.T) {
	f := newExampleFilter(t)
	req := fetchReqFor(12, false, "payments.settled")
	req.SessionID, req.SessionEpoch = 7, 3
	x := exchange(acme, req)
	if err := f.OnRequest(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	resp, ok := x.Local.(*kmsg.FetchResponse)
	if !ok || resp.SessionID != 0 || resp.Topics[0].Partitions[0].ErrorCode != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("local %+v", x.Local)
	}
}

func TestFetchReplicaRefused(t *testing.T) {
	f := newExampleFilter(t)
	req := fetchReqFor(12, false, "orders.eu")
	req.ReplicaID = 1
	if d, ok := filter.AsDenial(f.OnRequest(context.Background(), exchange(admin, req))); !ok || d.Code != kerr.ClusterAuthorizationFailed.Code {
		t.Fatal("replica fetch not refused")
	}
}

// TestAddPartitionsToTxnV4Refused: AddPartitionsToTxn v4+ is the
// broker-to-broker side of KIP-890; Kafka refuses it from clients with
// CLUSTER_AUTHORIZATION_FAILED, and so does the gateway, even for a
// principal allowed everything it names, without deciding anything. v3 is
// still decided and forwarded.
func TestAddPartitionsToTxnV4Refused(t *testing.T) {
	f := newFilter(&fakeDecider{allow: func(*Query) bool { return true }}, nil, nil)
	max := kmsg.NewPtrAddPartitionsToTxnRequest().MaxVersion()
	for v := int16(4); v <= max; v++ {
		for _, verifyOnly := range []bool{false, true} {
			req := kmsg.NewPtrAddPartitionsToTxnRequest()
			req.Version = v
			req.Transactions = named[kmsg.AddPartitionsToTxnRequestTransaction]("ok.tx")
			req.Transactions[0].VerifyOnly = verifyOnly
			req.Transactions[0].Topics = named[kmsg.AddPartitionsToTxnRequestTransactionTopic]("ok.t")
			x := exchange(admin, req)
			d, ok := filter.AsDenial(f.OnRequest(context.Background(), x))
			if !ok || d.Code != kerr.ClusterAuthorizationFailed.Code {
				t.Fatalf("v%d verify_only=%v: not refused with CLUSTER_AUTHORIZATION_FAILED (local %v)", v, verifyOnly, x.Local)
			}
			if len(x.Decisions) != 0 {
				t.Errorf("v%d: decided %+v before refusing", v, x.Decisions)
			}
			resp, err := kafkaerr.ErrorResponse(req, d.Code)
			if err != nil {
				t.Fatal(err)
			}
			if r := resp.(*kmsg.AddPartitionsToTxnResponse); r.ErrorCode != d.Code || len(r.Transactions) != 0 {
				t.Fatalf("v%d: answer %+v, want the top-level code and no results", v, r)
			}
		}
	}
	req := kmsg.NewPtrAddPartitionsToTxnRequest()
	req.Version, req.TransactionalID = 3, "ok.tx"
	req.Topics = named[kmsg.AddPartitionsToTxnRequestTopic]("ok.t")
	x := exchange(admin, req)
	if err := f.OnRequest(context.Background(), x); err != nil || x.Local != nil {
		t.Fatalf("v3: err %v local %v, want forwarded", err, x.Local)
	}
	if len(x.Decisions) != 2 {
		t.Fatalf("v3: decisions %+v, want the transactional id and the topic", x.Decisions)
	}
}

func metaResp(version int16, names ...string) *kmsg.MetadataResponse {
	resp := kmsg.NewPtrMetadataResponse()
	resp.Version = version
	for _, n := range names {
		t := kmsg.NewMetadataResponseTopic()
		name := n
		t.Topic = &name
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

func TestMetadataListingFiltered(t *testing.T) {
	f := newExampleFilter(t)
	req := kmsg.NewPtrMetadataRequest()
	req.Version = 12 // Topics nil: all topics
	x := exchange(acme, req)
	if err := f.OnRequest(context.Background(), x); err != nil || x.Local != nil {
		t.Fatal(err)
	}
	resp := metaResp(12, "orders.eu", "payments.settled", "_sluice_audit", "inbound.acme.returns", "orders.us")
	x.Response = resp
	if err := f.OnResponse(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, t := range resp.Topics {
		got = append(got, *t.Topic)
	}
	if strings.Join(got, ",") != "orders.eu,inbound.acme.returns" {
		t.Fatalf("listed %v", got)
	}
}

// Naming a topic that is not describable answers TOPIC_AUTHORIZATION_FAILED
// whether it exists or not, so existence does not leak.
func TestMetadataNamedTopicDenied(t *testing.T) {
	f := newExampleFilter(t)
	for _, name := range []string{"payments.settled", "does.not.exist"} {
		req := kmsg.NewPtrMetadataRequest()
		req.Version = 12
		req.AllowAutoTopicCreation = true
		for _, n := range []string{"orders.eu", name} {
			rt := kmsg.NewMetadataRequestTopic()
			nn := n
			rt.Topic = &nn
			req.Topics = append(req.Topics, rt)
		}
		x := exchange(acme, req)
		if err := f.OnRequest(context.Background(), x); err != nil || x.Local != nil {
			t.Fatal(err)
		}
		if len(req.Topics) != 1 || req.AllowAutoTopicCreation {
			t.Fatalf("forwarded %+v auto-create %v", req.Topics, req.AllowAutoTopicCreation)
		}
		resp := metaResp(12, "orders.eu")
		x.Response = resp
		if err := f.OnResponse(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		if len(resp.Topics) != 2 || *resp.Topics[1].Topic != name || resp.Topics[1].ErrorCode != kerr.TopicAuthorizationFailed.Code {
			t.Fatalf("%s: topics %+v", name, resp.Topics)
		}
	}
	// All named topics denied: still asks upstream with an empty (not
	// null) list, for brokers.
	req := kmsg.NewPtrMetadataRequest()
	req.Version = 9
	rt := kmsg.NewMetadataRequestTopic()
	n := "payments.settled"
	rt.Topic = &n
	req.Topics = append(req.Topics, rt)
	x := exchange(acme, req)
	if err := f.OnRequest(context.Background(), x); err != nil || x.Local != nil {
		t.Fatal(err)
	}
	if req.Topics == nil || len(req.Topics) != 0 {
		t.Fatalf("topics %#v", req.Topics)
	}
	resp := metaResp(9)
	x.Response = resp
	if err := f.OnResponse(context.Background(), x); err != nil || len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("err %v topics %+v", err, resp.Topics)
	}
}

func TestGroups(t *testing.T) {
	f := newExampleFilter(t)
	join := kmsg.NewPtrJoinGroupRequest()
	join.Version, join.Group = 9, "globex.consumers"
	if d, ok := filter.AsDenial(f.OnRequest(context.Background(), exchange(acme, join))); !ok || d.Code != kerr.GroupAuthorizationFailed.Code {
		t.Fatal("foreign group join not denied")
	}
	join.Group = "acme.consumers"
	if err := f.OnRequest(context.Background(), exchange(acme, join)); err != nil {
		t.Fatal(err)
	}

	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.Version, fc.CoordinatorKeys = 4, []string{"acme.a", "globex.b"}
	x := exchange(acme, fc)
	if err := f.OnRequest(context.Background(), x); err != nil || !reflect.DeepEqual(fc.CoordinatorKeys, []string{"acme.a"}) {
		t.Fatalf("err %v keys %v", err, fc.CoordinatorKeys)
	}
	resp := kmsg.NewPtrFindCoordinatorResponse()
	resp.Version = 4
	c := kmsg.NewFindCoordinatorResponseCoordinator()
	c.Key = "acme.a"
	resp.Coordinators = append(resp.Coordinators, c)
	x.Response = resp
	if err := f.OnResponse(context.Background(), x); err != nil || len(resp.Coordinators) != 2 || resp.Coordinators[1].ErrorCode != kerr.GroupAuthorizationFailed.Code {
		t.Fatalf("err %v %+v", err, resp.Coordinators)
	}

	fc0 := kmsg.NewPtrFindCoordinatorRequest()
	fc0.Version, fc0.CoordinatorKey, fc0.CoordinatorType = 2, "globex.tx", 1
	if d, ok := filter.AsDenial(f.OnRequest(context.Background(), exchange(acme, fc0))); !ok || d.Code != kerr.TransactionalIDAuthorizationFailed.Code {
		t.Fatal("foreign transactional coordinator not denied")
	}

	oc := kmsg.NewPtrOffsetCommitRequest()
	oc.Version, oc.Group = 8, "acme.consumers"
	for _, n := range []string{"orders.eu", "payments.settled"} {
		ot := kmsg.NewOffsetCommitRequestTopic()
		ot.Topic = n
		ot.Partitions = append(ot.Partitions, kmsg.NewOffsetCommitRequestTopicPartition())
		oc.Topics = append(oc.Topics, ot)
	}
	x = exchange(acme, oc)
	if err := f.OnRequest(context.Background(), x); err != nil || len(oc.Topics) != 1 {
		t.Fatalf("err %v topics %+v", err, oc.Topics)
	}

	lg := kmsg.NewPtrListGroupsRequest()
	lg.Version = 4
	x = exchange(acme, lg)
	if err := f.OnRequest(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	lresp := kmsg.NewPtrListGroupsResponse()
	lresp.Version = 4
	for _, g := range []string{"acme.a", "globex.b", "acme.c"} {
		lgg := kmsg.NewListGroupsResponseGroup()
		lgg.Group = g
		lresp.Groups = append(lresp.Groups, lgg)
	}
	x.Response = lresp
	if err := f.OnResponse(context.Background(), x); err != nil || len(lresp.Groups) != 2 || lresp.Groups[1].Group != "acme.c" {
		t.Fatalf("err %v groups %+v", err, lresp.Groups)
	}
}

func TestAdminDeniedToPartnersAllowedToAdmin(t *testing.T) {
	f := newExampleFilter(t)
	ct := kmsg.NewPtrCreateTopicsRequest()
	ct.Version = 5
	tt := kmsg.NewCreateTopicsRequestTopic()
	tt.Topic = "inbound.acme.new"
	ct.Topics = append(ct.Topics, tt)
	x := exchange(acme, ct)
	if err := f.OnRequest(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if r, ok := x.Local.(*kmsg.CreateTopicsResponse); !ok || r.Topics[0].ErrorCode != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("local %+v", x.Local)
	}
	acl := kmsg.NewPtrCreateACLsRequest()
	acl.Version = 2
	if d, ok := filter.AsDenial(f.OnRequest(context.Background(), exchange(acme, acl))); !ok || d.Code != kerr.ClusterAuthorizationFailed.Code {
		t.Fatal("create acls not denied")
	}
	if err := f.OnRequest(context.Background(), exchange(admin, acl)); err != nil {
		t.Fatalf("admin denied: %v", err)
	}
}

func TestUnknownKeyAndUndecodedRefused(t *testing.T) {
	f := newExampleFilter(t)
	x := exchange(acme, kmsg.NewPtrFetchRequest())
	x.Key = 10001
	if err := f.OnRequest(context.Background(), x); err == nil {
		t.Fatal("unknown key forwarded")
	}
	if f.Wants(10001) {
		t.Fatal("wants unknown key")
	}
	x = exchange(acme, kmsg.NewPtrFetchRequest())
	x.Request = nil
	if err := f.OnRequest(context.Background(), x); err == nil {
		t.Fatal("undecoded fetch forwarded")
	}
}

func BenchmarkFilterFetchCached(b *testing.B) {
	f := newExampleFilter(b)
	ctx := context.Background()
	req := fetchReqFor(16, true, "orders.eu")
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 16
	resp.Topics = append(resp.Topics, fetchRespTopic("", idOrders))
	x := exchange(acme, req)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		x.Decisions, x.Obligations, x.Values, x.Response = x.Decisions[:0], nil, nil, resp
		if err := f.OnRequest(ctx, x); err != nil {
			b.Fatal(err)
		}
		if err := f.OnResponse(ctx, x); err != nil {
			b.Fatal(err)
		}
	}
}

// The enforcement table in docs/policy.md lists every rule.
func TestDocsListEveryRule(t *testing.T) {
	doc, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	for key, r := range rules {
		if !strings.Contains(string(doc), r.name) {
			t.Errorf("docs/policy.md does not list the rule of key %d: %q", key, r.name)
		}
	}
}

// A policy change on disk reaches a connected consumer's next fetch, even
// one in an incremental session that no longer lists the partition.
func TestRevocationReachesSessionFetch(t *testing.T) {
	open := `package sluice.authz
default decision := {"allow": false, "reason": "closed"}
decision := {"allow": true, "reason": "open"} if input.resource.name == "orders.eu"
`
	e, dir, err := tempEngine(t, open, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := newFilter(e, nil, nil)
	fetch := func(listed bool) *kmsg.FetchResponse {
		var req *kmsg.FetchRequest
		if listed {
			req = fetchReqFor(12, false, "orders.eu")
		} else {
			req = fetchReqFor(12, false)
		}
		req.SessionID, req.SessionEpoch = 5, 2
		x := exchange(acme, req)
		if err := f.OnRequest(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		if x.Local != nil {
			return x.Local.(*kmsg.FetchResponse)
		}
		resp := kmsg.NewPtrFetchResponse()
		resp.Version, resp.SessionID = 12, 5
		resp.Topics = append(resp.Topics, fetchRespTopic("orders.eu", [16]byte{}))
		x.Response = resp
		if err := f.OnResponse(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if p := fetch(true).Topics[0].Partitions[0]; p.ErrorCode != 0 || len(p.RecordBatches) == 0 {
		t.Fatalf("before revocation: %+v", p)
	}
	writePolicy(t, dir, "p.rego", "package sluice.authz\ndefault decision := {\"allow\": false, \"reason\": \"revoked\"}\n")
	e.poll(context.Background())
	if p := fetch(false).Topics[0].Partitions[0]; p.ErrorCode != kerr.TopicAuthorizationFailed.Code || len(p.RecordBatches) != 0 {
		t.Fatalf("after revocation: %+v", p)
	}
}

// The masking filter may answer before this filter's response step: the
// obligations of topics in an incremental fetch session must be attached
// on the request, though the request does not list them.
func TestIncrementalSessionObligationsOnRequest(t *testing.T) {
	f := newExampleFilter(t)
	c := &filter.Conn{ID: 42}
	c.SetPrincipal(acme)
	do := func(req *kmsg.FetchRequest) *filter.Exchange {
		x := exchange(acme, req)
		x.Conn = c
		if err := f.OnRequest(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	full := fetchReqFor(12, false, "orders.eu", "shipments")
	full.SessionID, full.SessionEpoch = 0, 0
	if x := do(full); x.Obligations["orders.eu"] == nil || x.Obligations["shipments"] == nil {
		t.Fatalf("full fetch obligations %v", x.Obligations)
	}
	inc := fetchReqFor(12, false)
	inc.SessionID, inc.SessionEpoch = 9, 1
	x := do(inc)
	if x.Obligations["orders.eu"] == nil || x.Obligations["shipments"] == nil {
		t.Fatalf("incremental fetch obligations %v", x.Obligations)
	}
	// A forgotten topic no longer gets them; a new full fetch resets.
	inc2 := fetchReqFor(12, false)
	inc2.SessionID, inc2.SessionEpoch = 9, 2
	ft := kmsg.NewFetchRequestForgottenTopic()
	ft.Topic, ft.Partitions = "shipments", []int32{0} // its only partition
	inc2.ForgottenTopics = append(inc2.ForgottenTopics, ft)
	if x := do(inc2); x.Obligations["orders.eu"] == nil || x.Obligations["shipments"] != nil {
		t.Fatalf("after forgetting %v", x.Obligations)
	}
	full2 := fetchReqFor(12, false, "shipments")
	if x := do(full2); x.Obligations["orders.eu"] != nil || x.Obligations["shipments"] == nil {
		t.Fatalf("after reset %v", x.Obligations)
	}
	// Another connection has its own session.
	other := exchange(acme, func() *kmsg.FetchRequest { r := fetchReqFor(12, false); r.SessionID, r.SessionEpoch = 9, 3; return r }())
	if err := f.OnRequest(context.Background(), other); err != nil || len(other.Obligations) != 0 {
		t.Fatalf("other connection %v %v", err, other.Obligations)
	}
}

// Nothing masks share-fetched records, so a read that carries obligations
// is refused on ShareFetch, on the request and on the response.
func TestShareFetchWithObligationsRefused(t *testing.T) {
	f := newExampleFilter(t)
	group := "acme.share"
	req := kmsg.NewPtrShareFetchRequest()
	req.Version, req.GroupID = 1, &group
	st := kmsg.NewShareFetchRequestTopic()
	st.TopicID = idOrders // orders.eu: allowed with masks
	st.Partitions = append(st.Partitions, kmsg.NewShareFetchRequestTopicPartition())
	req.Topics = append(req.Topics, st)
	x := exchange(acme, req)
	if err := f.OnRequest(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	resp, ok := x.Local.(*kmsg.ShareFetchResponse)
	if !ok || resp.Topics[0].Partitions[0].ErrorCode != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("local %+v", x.Local)
	}
	// In a share session the topic can come back unlisted.
	req2 := kmsg.NewPtrShareFetchRequest()
	req2.Version, req2.GroupID = 1, &group
	x = exchange(acme, req2)
	if err := f.OnRequest(context.Background(), x); err != nil || x.Local != nil {
		t.Fatal(err)
	}
	r2 := kmsg.NewPtrShareFetchResponse()
	r2.Version = 1
	rt := kmsg.NewShareFetchResponseTopic()
	rt.TopicID = idOrders
	rp := kmsg.NewShareFetchResponseTopicPartition()
	rp.Records = []byte("records")
	rt.Partitions = append(rt.Partitions, rp)
	r2.Topics = append(r2.Topics, rt)
	x.Response = r2
	if err := f.OnResponse(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if p := r2.Topics[0].Partitions[0]; p.ErrorCode != kerr.TopicAuthorizationFailed.Code || len(p.Records) != 0 {
		t.Fatalf("share fetch delivered %+v", p)
	}
}

func TestRefuses(t *testing.T) {
	for key, want := range map[int16]bool{0: false, 1: false, 4: true, 18: false, 58: true, 83: true, 10001: true} {
		if got := Refuses(key); got != want {
			t.Errorf("Refuses(%d) = %v, want %v", key, got, want)
		}
	}
}

// With acks=0 there is no response: the denied topics are dropped
// silently, as Kafka drops a refused acks=0 produce, and the connection
// stays open.
func TestProduceAcksZero(t *testing.T) {
	f := newExampleFilter(t)
	req := produceReqFor(9, "inbound.acme.returns", "orders.eu")
	req.Acks = 0
	x := exchange(acme, req)
	if err := f.OnRequest(context.Background(), x); err != nil || len(req.Topics) != 1 {
		t.Fatalf("err %v topics %+v", err, req.Topics)
	}
	if err := f.OnResponse(context.Background(), x); err != nil {
		t.Fatalf("response step without a response: %v", err)
	}
}

func TestStreamsGroupTopology(t *testing.T) {
	f := newFilter(&fakeDecider{allow: func(q *Query) bool {
		return q.Resource == ResourceGroup || (q.Action == ActionDescribe && q.Name == "in") || (q.Action == ActionCreate && q.Name == "app-store-changelog")
	}}, nil, nil)
	mk := func(changelog string) *kmsg.StreamsGroupHeartbeatRequest {
		req := kmsg.NewPtrStreamsGroupHeartbeatRequest()
		req.Group = "app"
		topo := kmsg.NewStreamsGroupHeartbeatRequestTopology()
		st := kmsg.NewStreamsGroupHeartbeatRequestTopologySubtopology()
		st.SourceTopics = []string{"in"}
		ti := kmsg.NewTopicInfo()
		ti.Topic = changelog
		st.StateChangelogTopics = append(st.StateChangelogTopics, ti)
		topo.Subtopologies = append(topo.Subtopologies, st)
		req.Topology = &topo
		return req
	}
	if err := f.OnRequest(context.Background(), exchange(acme, mk("app-store-changelog"))); err != nil {
		t.Fatalf("allowed topology refused: %v", err)
	}
	if d, ok := filter.AsDenial(f.OnRequest(context.Background(), exchange(acme, mk("someone-elses-changelog")))); !ok || d.Code != kerr.TopicAuthorizationFailed.Code {
		t.Fatal("internal topic creation not checked")
	}
}

// TestStreamFetch: a Fetch response may be streamed only when the request
// side denied nothing and no topic carries obligations; a streamed
// response's topics get fetchResp's decision, recorded for audit.
func TestStreamFetch(t *testing.T) {
	f := newExampleFilter(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		topics []string
		stream bool
	}{
		{"allowed, no obligations", []string{"demo"}, true},
		{"obligations to apply", []string{"demo", "orders.eu"}, false},
		{"a topic denied on the request", []string{"demo", "payments.settled"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := exchange(acme, fetchReqFor(12, false, tc.topics...))
			if err := f.OnRequest(ctx, x); err != nil || x.Local != nil {
				t.Fatalf("err %v local %v", err, x.Local)
			}
			if got := f.StreamFetch(x); got != tc.stream {
				t.Fatalf("StreamFetch = %v, want %v", got, tc.stream)
			}
		})
	}
	x := exchange(acme, fetchReqFor(12, false, "demo"))
	if err := f.OnRequest(ctx, x); err != nil {
		t.Fatal(err)
	}
	before := len(x.Decisions)
	if c := f.FetchTopic(ctx, x, "demo", [16]byte{}); c != 0 {
		t.Fatalf("allowed topic withheld with %d", c)
	}
	if len(x.Decisions) != before {
		t.Fatalf("a decision the request side made already was recorded again: %+v", x.Decisions)
	}
	// A session topic not listed and now denied (a revocation mid-session).
	if c := f.FetchTopic(ctx, x, "payments.settled", [16]byte{}); c != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("denied topic code %d", c)
	}
	if d := x.Decisions[len(x.Decisions)-1]; d.Allow || d.Resource != "payments.settled" {
		t.Fatalf("denial not recorded: %+v", d)
	}
	// Allowed now with obligations the request side did not see: a
	// streamed response cannot be masked, so it is withheld.
	if c := f.FetchTopic(ctx, x, "orders.eu", [16]byte{}); c != kerr.UnknownServerError.Code {
		t.Fatalf("topic with obligations code %d", c)
	}
	if c := f.FetchTopic(ctx, x, "", [16]byte{0xee}); c != kerr.UnknownTopicID.Code {
		t.Fatalf("unresolvable topic id code %d", c)
	}
}

// TestStreamProduce: a one-topic Produce request may be streamed only when
// its transactional id and topic are allowed; it then carries the
// decisions OnRequest records for the whole request, partitions included
// once relayed. A request it declines records nothing, so the decoding
// path that follows decides it alone.
func TestStreamProduce(t *testing.T) {
	f := newExampleFilter(t)
	ctx := context.Background()
	skeleton := func(version int16, topic string, txn string) *filter.Exchange {
		req := produceReqFor(version, topic)
		req.Topics[0].Partitions = nil
		if txn != "" {
			req.TransactionID = &txn
		}
		return exchange(acme, req)
	}
	for _, txn := range []string{"", "acme.tx1"} {
		full := produceReqFor(9, "inbound.acme.returns")
		full.Topics[0].Partitions = []kmsg.ProduceRequestTopicPartition{{Partition: 0}, {Partition: 3}}
		if txn != "" {
			full.TransactionID = &txn
		}
		xf := exchange(acme, full)
		if err := f.OnRequest(ctx, xf); err != nil || xf.Local != nil || xf.RequestChanged() {
			t.Fatalf("txn %q: decoding path: err %v local %v", txn, err, xf.Local)
		}
		xs := skeleton(9, "inbound.acme.returns", txn)
		if !f.StreamProduce(ctx, xs) {
			t.Fatalf("txn %q: allowed produce not streamed", txn)
		}
		xs.Request.(*kmsg.ProduceRequest).Topics[0].Partitions = full.Topics[0].Partitions
		f.ProduceRelayed(ctx, xs)
		if !reflect.DeepEqual(xs.Decisions, xf.Decisions) {
			t.Fatalf("txn %q: streamed decisions %+v, decoding path %+v", txn, xs.Decisions, xf.Decisions)
		}
	}
	denied := counterValue(f.denied.WithLabelValues("topic")) + counterValue(f.denied.WithLabelValues("transactional_id"))
	for _, x := range []*filter.Exchange{
		skeleton(9, "orders.eu", ""),                      // not the partner's inbound topic
		skeleton(9, "inbound.acme.returns", "globex.tx1"), // someone else's transactional id
		skeleton(13, "", ""),                              // a topic id the gateway cannot resolve
	} {
		if x.Version == 13 {
			x.Request.(*kmsg.ProduceRequest).Topics[0].TopicID = [16]byte{0xee}
		}
		if f.StreamProduce(ctx, x) {
			t.Fatalf("%+v streamed", x.Request.(*kmsg.ProduceRequest).Topics[0])
		}
		if len(x.Decisions) != 0 {
			t.Fatalf("a declined stream recorded %+v", x.Decisions)
		}
	}
	if got := counterValue(f.denied.WithLabelValues("topic")) + counterValue(f.denied.WithLabelValues("transactional_id")); got != denied {
		t.Fatalf("declined streams counted %v denials", got-denied)
	}
	if f.StreamProduce(ctx, exchange(acme, produceReqFor(9, "inbound.acme.returns", "inbound.acme.other"))) {
		t.Fatal("a two-topic request streamed")
	}
}

// Before v4 a Metadata request cannot ask the broker not to auto-create
// what it names: a topic the gateway does not know, named by a principal
// that may describe but not create it, is refused (as Kafka does) rather
// than forwarded to be created. From v4 on the request is forwarded with
// auto-creation off.
func TestMetadataOldVersionsNeverAutoCreate(t *testing.T) {
	f := newExampleFilter(t)
	for _, v := range []int16{1, 3, 4, 12} {
		req := kmsg.NewPtrMetadataRequest()
		req.Version = v
		req.AllowAutoTopicCreation = true
		for _, n := range []string{"orders.eu", "inbound.acme.new"} {
			rt := kmsg.NewMetadataRequestTopic()
			nn := n
			rt.Topic = &nn
			req.Topics = append(req.Topics, rt)
		}
		x := exchange(acme, req)
		if err := f.OnRequest(context.Background(), x); err != nil || x.Local != nil {
			t.Fatal(err)
		}
		if v < 4 {
			if len(req.Topics) != 1 || *req.Topics[0].Topic != "orders.eu" {
				t.Fatalf("v%d forwarded %d topics: the unknown one would be auto-created", v, len(req.Topics))
			}
			resp := metaResp(v, "orders.eu")
			x.Response = resp
			if err := f.OnResponse(context.Background(), x); err != nil {
				t.Fatal(err)
			}
			if len(resp.Topics) != 2 || resp.Topics[1].ErrorCode != kerr.TopicAuthorizationFailed.Code {
				t.Fatalf("v%d: topics %+v", v, resp.Topics)
			}
			continue
		}
		if len(req.Topics) != 2 || req.AllowAutoTopicCreation {
			t.Fatalf("v%d: forwarded %d topics, auto-create %v", v, len(req.Topics), req.AllowAutoTopicCreation)
		}
	}
}
