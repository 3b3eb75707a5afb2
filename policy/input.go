package policy

import (
	"net/netip"
	"strconv"
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

// input builds the OPA input document for q, with labels the resource's
// labels from the data.
func (q *Query) input(labels ast.Value) ast.Value {
	p := q.Principal
	if p == nil {
		p = filter.Anonymous
	}
	roles := make([]*ast.Term, len(p.Roles))
	for i, r := range p.Roles {
		roles[i] = str(r)
	}
	attrs := ast.NewObject()
	for k, v := range p.Attributes {
		attrs.Insert(str(k), str(v))
	}
	principal := ast.NewObject(
		ast.Item(str("id"), str(p.ID)),
		ast.Item(str("org"), str(p.Org)),
		ast.Item(str("mechanism"), str(p.Mechanism)),
		ast.Item(str("roles"), ast.ArrayTerm(roles...)),
		ast.Item(str("attributes"), ast.NewTerm(attrs)),
	)
	if !p.Expires.IsZero() {
		principal.Insert(str("expires"), str(p.Expires.UTC().Format(time.RFC3339Nano)))
	}
	if labels == nil {
		labels = ast.NewObject()
	}
	resource := ast.NewObject(
		ast.Item(str("type"), str(q.Resource.String())),
		ast.Item(str("name"), str(q.Name)),
		ast.Item(str("labels"), ast.NewTerm(labels)),
	)
	src := ""
	if q.Source.IsValid() {
		src = q.Source.Addr().String()
	}
	request := ast.NewObject(
		ast.Item(str("api_key"), ast.IntNumberTerm(int(q.APIKey))),
		ast.Item(str("api_name"), str(apiName(q.APIKey))),
		ast.Item(str("api_version"), ast.IntNumberTerm(int(q.APIVersion))),
		ast.Item(str("client_id"), str(q.ClientID)),
		ast.Item(str("source_address"), str(src)),
		ast.Item(str("listener"), str(q.Listener)),
	)
	now := q.Now
	if now.IsZero() {
		now = time.Now()
	}
	tm := ast.NewObject(
		ast.Item(str("rfc3339"), str(now.UTC().Format(time.RFC3339Nano))),
		ast.Item(str("ns"), ast.NewTerm(ast.Number(strconv.FormatInt(now.UnixNano(), 10)))),
	)
	return ast.NewObject(
		ast.Item(str("principal"), ast.NewTerm(principal)),
		ast.Item(str("action"), str(q.Action.String())),
		ast.Item(str("resource"), ast.NewTerm(resource)),
		ast.Item(str("request"), ast.NewTerm(request)),
		ast.Item(str("time"), ast.NewTerm(tm)),
	)
}
