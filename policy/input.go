package policy

import (
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// Action is a Kafka ACL operation.
type Action uint8

// The Kafka ACL operations, as policies see them in input.action.
const (
	ActionRead Action = iota + 1
	ActionWrite
	ActionCreate
	ActionDelete
	ActionAlter
	ActionDescribe
	ActionClusterAction
	ActionDescribeConfigs
	ActionAlterConfigs
	ActionIdempotentWrite
	ActionCreateTokens
	ActionDescribeTokens
	ActionTwoPhaseCommit
	numActions
)

var actionNames = [numActions]string{
	ActionRead:            "read",
	ActionWrite:           "write",
	ActionCreate:          "create",
	ActionDelete:          "delete",
	ActionAlter:           "alter",
	ActionDescribe:        "describe",
	ActionClusterAction:   "cluster_action",
	ActionDescribeConfigs: "describe_configs",
	ActionAlterConfigs:    "alter_configs",
	ActionIdempotentWrite: "idempotent_write",
	ActionCreateTokens:    "create_tokens",
	ActionDescribeTokens:  "describe_tokens",
	ActionTwoPhaseCommit:  "two_phase_commit",
}

func (a Action) String() string {
	if a == 0 || a >= numActions {
		return "unknown"
	}
	return actionNames[a]
}

// ParseAction returns the action named s.
func ParseAction(s string) (Action, bool) {
	for a := ActionRead; a < numActions; a++ {
		if actionNames[a] == s {
			return a, true
		}
	}
	return 0, false
}

// ResourceType is a Kafka ACL resource type.
type ResourceType uint8

// Resource types, as policies see them in input.resource.type.
const (
	ResourceTopic ResourceType = iota + 1
	ResourceGroup
	ResourceCluster
	ResourceTransactionalID
	ResourceDelegationToken
	ResourceUser
	numResourceTypes
)

var resourceNames = [numResourceTypes]string{
	ResourceTopic:           "topic",
	ResourceGroup:           "group",
	ResourceCluster:         "cluster",
	ResourceTransactionalID: "transactional_id",
	ResourceDelegationToken: "delegation_token",
	ResourceUser:            "user",
}

func (r ResourceType) String() string {
	if r == 0 || r >= numResourceTypes {
		return "unknown"
	}
	return resourceNames[r]
}

// ParseResourceType returns the resource type named s.
func ParseResourceType(s string) (ResourceType, bool) {
	for r := ResourceTopic; r < numResourceTypes; r++ {
		if resourceNames[r] == s {
			return r, true
		}
	}
	return 0, false
}

// ClusterName is the resource name of the cluster resource, as in Kafka.
const ClusterName = "kafka-cluster"

// Query is one question to the engine: may Principal do Action on the
// resource (Resource, Name)? The request fields describe the Kafka request
// that asked; Now is the time the decision is made for.
//
// Decisions are cached by principal (ID, Org, Mechanism), action and
// resource only: a policy whose answer depends on the request fields must
// say so with "cache": false in its output.
type Query struct {
	Principal *filter.Principal
	Action    Action
	Resource  ResourceType
	Name      string

	APIKey     int16
	APIVersion int16
	ClientID   string
	Source     netip.AddrPort
	Listener   string

	Now time.Time
}

// apiName returns the Kafka name of an API key.
func apiName(key int16) string {
	if r := kmsg.RequestForKey(key); r != nil {
		return kmsg.NameForKey(key)
	}
	return "Unknown" + strconv.Itoa(int(key))
}

func str(s string) *ast.Term { return ast.StringTerm(s) }

// Keys and enum values of the input document, built once: terms are never
// modified by evaluation, so they can be shared between inputs.
var (
	kPrincipal, kAction, kResource, kRequest, kTime               = str("principal"), str("action"), str("resource"), str("request"), str("time")
	kID, kOrg, kMechanism, kRoles, kAttributes, kExpires          = str("id"), str("org"), str("mechanism"), str("roles"), str("attributes"), str("expires")
	kType, kName, kLabels                                         = str("type"), str("name"), str("labels")
	kAPIKey, kAPIName, kAPIVersion, kClientID, kSource, kListener = str("api_key"), str("api_name"), str("api_version"), str("client_id"), str("source_address"), str("listener")
	kRFC3339, kNS                                                 = str("rfc3339"), str("ns")
	kPartner, kGrants                                             = str("partner"), str("grants")

	actionTerms   [numActions]*ast.Term
	resourceTerms [numResourceTypes]*ast.Term
	apiNameTerms  = map[int16]*ast.Term{}
	emptyObject   = ast.NewTerm(ast.NewObject())
	emptyArray    = ast.ArrayTerm()
)

func init() {
	for a := Action(0); a < numActions; a++ {
		actionTerms[a] = str(a.String())
	}
	for r := ResourceType(0); r < numResourceTypes; r++ {
		resourceTerms[r] = str(r.String())
	}
	for k := int16(0); kmsg.RequestForKey(k) != nil; k++ {
		apiNameTerms[k] = str(apiName(k))
	}
}

func actionTerm(a Action) *ast.Term {
	if a >= numActions {
		a = 0
	}
	return actionTerms[a]
}

func resourceTerm(r ResourceType) *ast.Term {
	if r >= numResourceTypes {
		r = 0
	}
	return resourceTerms[r]
}

// enrichment is what the engine looked up in the data for one query.
type enrichment struct {
	partner ast.Value // data.partners[principal.org], nil if none
	// principal, resource, grants and request are input.principal,
	// input.resource, input.grants and input.request; when nil, input
	// builds them (resource without labels, grants empty).
	principal, resource, grants, request *ast.Term
}

// termMemo is a bounded memo of input terms that stay the same for a
// revision's life (terms are never modified by evaluation, so inputs share
// them). Keys come from what clients send (topic names, client ids), so it
// stops growing at termMemoMax entries; later keys are built every time.
type termMemo[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]V
}

const termMemoMax = 4096

// memoKeyMax bounds the strings of a memoised key (a topic name, a client
// id and listener), so that a memo holds at most a few MiB.
const memoKeyMax = 256

func (m *termMemo[K, V]) lookup(k K) (V, bool) {
	m.mu.RLock()
	v, ok := m.m[k]
	m.mu.RUnlock()
	return v, ok
}

func (m *termMemo[K, V]) add(k K, v V) {
	m.mu.Lock()
	if m.m == nil {
		m.m = make(map[K]V)
	}
	if len(m.m) < termMemoMax {
		m.m[k] = v
	}
	m.mu.Unlock()
}

// resourceKey names what input.resource and input.grants depend on.
type resourceKey struct {
	org   string
	rtype ResourceType
	name  string
}

type resourceParts struct{ resource, grants *ast.Term }

// requestKey names what input.request depends on.
type requestKey struct {
	apiKey, apiVersion int16
	clientID, listener string
	source             netip.Addr
}

func (q *Query) requestKey() requestKey {
	k := requestKey{apiKey: q.APIKey, apiVersion: q.APIVersion, clientID: q.ClientID, listener: q.Listener}
	if q.Source.IsValid() {
		k.source = q.Source.Addr()
	}
	return k
}

// principalTerm builds input.principal.
func principalTerm(p *filter.Principal) *ast.Term {
	roles := emptyArray
	if len(p.Roles) > 0 {
		rs := make([]*ast.Term, len(p.Roles))
		for i, r := range p.Roles {
			rs[i] = str(r)
		}
		roles = ast.ArrayTerm(rs...)
	}
	attrs := emptyObject
	if len(p.Attributes) > 0 {
		o := ast.NewObject()
		for k, v := range p.Attributes {
			o.Insert(str(k), str(v))
		}
		attrs = ast.NewTerm(o)
	}
	principal := ast.NewObject(
		[2]*ast.Term{kID, str(p.ID)},
		[2]*ast.Term{kOrg, str(p.Org)},
		[2]*ast.Term{kMechanism, str(p.Mechanism)},
		[2]*ast.Term{kRoles, roles},
		[2]*ast.Term{kAttributes, attrs},
	)
	if !p.Expires.IsZero() {
		principal.Insert(kExpires, str(p.Expires.UTC().Format(time.RFC3339Nano)))
	}
	return ast.NewTerm(principal)
}

// input builds the OPA input document for q with what the engine looked up
// in the data.
func (q *Query) input(en enrichment) ast.Value {
	p := q.Principal
	if p == nil {
		p = filter.Anonymous
	}
	principal := en.principal
	if principal == nil {
		principal = principalTerm(p)
	}
	resource := en.resource
	if resource == nil {
		resource = q.resourceDoc(nil)
	}
	request := en.request
	if request == nil {
		request = q.requestDoc()
	}
	grants := en.grants
	if grants == nil {
		grants = emptyArray
	}
	now := q.Now
	if now.IsZero() {
		now = time.Now()
	}
	tm := ast.NewObject(
		[2]*ast.Term{kRFC3339, str(now.UTC().Format(time.RFC3339Nano))},
		[2]*ast.Term{kNS, ast.NewTerm(ast.Number(strconv.FormatInt(now.UnixNano(), 10)))},
	)
	kv := [7][2]*ast.Term{
		{kPrincipal, principal},
		{kAction, actionTerm(q.Action)},
		{kResource, resource},
		{kRequest, request},
		{kTime, ast.NewTerm(tm)},
		{kGrants, grants},
	}
	n := 6
	if en.partner != nil {
		kv[n] = [2]*ast.Term{kPartner, ast.NewTerm(en.partner)}
		n++
	}
	return ast.NewObject(kv[:n]...)
}

// resourceDoc builds input.resource.
func (q *Query) resourceDoc(labels ast.Value) *ast.Term {
	lt := emptyObject
	if labels != nil {
		lt = ast.NewTerm(labels)
	}
	return ast.ObjectTerm(
		[2]*ast.Term{kType, resourceTerm(q.Resource)},
		[2]*ast.Term{kName, str(q.Name)},
		[2]*ast.Term{kLabels, lt},
	)
}

// requestDoc builds input.request.
func (q *Query) requestDoc() *ast.Term {
	src := ""
	if q.Source.IsValid() {
		src = q.Source.Addr().String()
	}
	name, ok := apiNameTerms[q.APIKey]
	if !ok {
		name = str(apiName(q.APIKey))
	}
	return ast.ObjectTerm(
		[2]*ast.Term{kAPIKey, ast.InternedTerm(int(q.APIKey))},
		[2]*ast.Term{kAPIName, name},
		[2]*ast.Term{kAPIVersion, ast.InternedTerm(int(q.APIVersion))},
		[2]*ast.Term{kClientID, str(q.ClientID)},
		[2]*ast.Term{kSource, str(src)},
		[2]*ast.Term{kListener, str(q.Listener)},
	)
}
