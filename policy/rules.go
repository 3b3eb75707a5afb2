package policy

import (
	"context"
	"fmt"
	"reflect"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// ruleKind says how the filter treats an API key.
type ruleKind uint8

const (
	// enforced: every resource the request names is decided by policy
	// with the ACL operation Kafka itself checks for it.
	enforced ruleKind = iota + 1
	// refused: never forwarded (inter-broker and controller-only APIs);
	// answered with CLUSTER_AUTHORIZATION_FAILED.
	refused
	// proxyHandled: answered by the proxy before the chain (ApiVersions,
	// SASL); the filter never sees them decoded.
	proxyHandled
)

type rule struct {
	// name says what the rule checks, for the table test and docs.
	name string
	kind ruleKind
	req  func(ctx context.Context, f *Filter, x *filter.Exchange) error
	resp func(ctx context.Context, f *Filter, x *filter.Exchange) error
}

// rules maps every API key kmsg knows to its rule. TestEveryKeyHasARule
// fails when kmsg gains a key that is not here.
var rules = map[int16]rule{
	// Records.
	0:  {name: "produce: write topic (and write transactional_id); per topic", kind: enforced, req: produceReq},
	1:  {name: "fetch: read topic per topic, on the request and again on the response", kind: enforced, req: fetchReq, resp: fetchResp},
	2:  {name: "list_offsets: describe topic per topic", kind: enforced, req: perTopic(ActionDescribe, "Topics", "Topics")},
	3:  {name: "metadata: describe topic; listings filtered, named topics denied", kind: enforced, req: metadataReq, resp: metadataResp},
	21: {name: "delete_records: delete topic per topic", kind: enforced, req: perTopic(ActionDelete, "Topics", "Topics")},
	23: {name: "offset_for_leader_epoch: describe topic per topic", kind: enforced, req: replicaGuard(func(r kmsg.Request) int32 { return r.(*kmsg.OffsetForLeaderEpochRequest).ReplicaID }, perTopic(ActionDescribe, "Topics", "Topics"))},
	61: {name: "describe_producers: read topic per topic", kind: enforced, req: perTopic(ActionRead, "Topics", "Topics")},
	75: {name: "describe_topic_partitions: describe topic; listings filtered", kind: enforced, req: describeTopicPartitionsReq, resp: describeTopicPartitionsResp},

	// Classic consumer groups.
	8:  {name: "offset_commit: read group; read topic per topic", kind: enforced, req: offsetCommitReq},
	9:  {name: "offset_fetch: describe group (per group v8+); describe topic: named topics denied, listings filtered", kind: enforced, req: offsetFetchReq, resp: offsetFetchResp},
	10: {name: "find_coordinator: describe group or transactional_id per key", kind: enforced, req: findCoordinatorReq},
	11: {name: "join_group: read group", kind: enforced, req: group(ActionRead, func(r kmsg.Request) string { return r.(*kmsg.JoinGroupRequest).Group })},
	12: {name: "heartbeat: read group", kind: enforced, req: group(ActionRead, func(r kmsg.Request) string { return r.(*kmsg.HeartbeatRequest).Group })},
	13: {name: "leave_group: read group", kind: enforced, req: group(ActionRead, func(r kmsg.Request) string { return r.(*kmsg.LeaveGroupRequest).Group })},
	14: {name: "sync_group: read group", kind: enforced, req: group(ActionRead, func(r kmsg.Request) string { return r.(*kmsg.SyncGroupRequest).Group })},
	15: {name: "describe_groups: describe group per group", kind: enforced, req: perName(ActionDescribe, ResourceGroup, codeGroup, "Groups", "Groups")},
	16: {name: "list_groups: listing filtered by describe group", kind: enforced, resp: listGroupsResp},
	42: {name: "delete_groups: delete group per group", kind: enforced, req: perName(ActionDelete, ResourceGroup, codeGroup, "Groups", "Groups")},
	47: {name: "offset_delete: delete group; read topic per topic", kind: enforced, req: offsetDeleteReq},

	// KIP-848, streams and share groups.
	68: {name: "consumer_group_heartbeat: read group; describe subscribed topics", kind: enforced, req: consumerGroupHeartbeatReq},
	69: {name: "consumer_group_describe: describe group per group; a group whose topics are not all describable answers TOPIC_AUTHORIZATION_FAILED", kind: enforced, req: perName(ActionDescribe, ResourceGroup, codeGroup, "Groups", "Groups"), resp: consumerGroupDescribeResp},
	76: {name: "share_group_heartbeat: read group; describe subscribed topics", kind: enforced, req: shareGroupHeartbeatReq},
	77: {name: "share_group_describe: describe group per group; a group whose topics are not all describable answers TOPIC_AUTHORIZATION_FAILED", kind: enforced, req: perName(ActionDescribe, ResourceGroup, codeGroup, "GroupIDs", "Groups"), resp: shareGroupDescribeResp},
	78: {name: "share_fetch: read group; read topic per topic, on the request and the response", kind: enforced, req: shareFetchReq, resp: shareFetchResp},
	79: {name: "share_acknowledge: read group; read topic per topic", kind: enforced, req: shareAckReq},
	88: {name: "streams_group_heartbeat: read group; describe source and repartition sink topics, create internal topics", kind: enforced, req: streamsGroupHeartbeatReq},
	89: {name: "streams_group_describe: describe group per group; a group whose topology names a topic not describable answers TOPIC_AUTHORIZATION_FAILED", kind: enforced, req: perName(ActionDescribe, ResourceGroup, codeGroup, "Groups", "Groups"), resp: streamsGroupDescribeResp},
	90: {name: "describe_share_group_offsets: describe group and topics; all or nothing; topics not describable left out of the answer", kind: enforced, req: describeShareGroupOffsetsReq, resp: describeShareGroupOffsetsResp},
	91: {name: "alter_share_group_offsets: read group; read topic per topic", kind: enforced, req: alterShareGroupOffsetsReq},
	92: {name: "delete_share_group_offsets: delete group; read topic per topic", kind: enforced, req: deleteShareGroupOffsetsReq},
	93: {name: "streams_group_topology_description_update: read group", kind: enforced, req: group(ActionRead, func(r kmsg.Request) string { return r.(*kmsg.StreamsGroupTopologyDescriptionUpdateRequest).Group })},

	// Transactions and idempotence.
	22: {name: "init_producer_id: write transactional_id, or idempotent_write cluster", kind: enforced, req: initProducerIDReq},
	24: {name: "add_partitions_to_txn: write transactional_id; write topics; all or nothing (OPERATION_NOT_ATTEMPTED); v4+ refused (broker-to-broker, KIP-890)", kind: enforced, req: addPartitionsToTxnReq},
	25: {name: "add_offsets_to_txn: write transactional_id; read group", kind: enforced, req: addOffsetsToTxnReq},
	26: {name: "end_txn: write transactional_id", kind: enforced, req: txn(ActionWrite, func(r kmsg.Request) string { return r.(*kmsg.EndTxnRequest).TransactionalID })},
	28: {name: "txn_offset_commit: write transactional_id; read group; read topic per topic", kind: enforced, req: txnOffsetCommitReq},
	65: {name: "describe_transactions: describe transactional_id per id; topics not describable left out of each transaction", kind: enforced, req: perName(ActionDescribe, ResourceTransactionalID, codeTxn, "TransactionalIDs", "TransactionStates"), resp: describeTransactionsResp},
	66: {name: "list_transactions: listing filtered by describe transactional_id", kind: enforced, resp: listTransactionsResp},

	// Topic administration.
	19: {name: "create_topics: create topic per topic", kind: enforced, req: perTopic(ActionCreate, "Topics", "Topics")},
	20: {name: "delete_topics: delete topic per topic", kind: enforced, req: deleteTopicsReq},
	37: {name: "create_partitions: alter topic per topic", kind: enforced, req: perTopic(ActionAlter, "Topics", "Topics")},
	32: {name: "describe_configs: describe_configs on each resource", kind: enforced, req: configs(ActionDescribeConfigs, func(r kmsg.Request) []configRes { return describeConfigsRes(r) })},
	33: {name: "alter_configs: alter_configs on each resource", kind: enforced, req: configs(ActionAlterConfigs, func(r kmsg.Request) []configRes { return alterConfigsRes(r) })},
	44: {name: "incremental_alter_configs: alter_configs on each resource", kind: enforced, req: configs(ActionAlterConfigs, func(r kmsg.Request) []configRes { return incrementalAlterConfigsRes(r) })},

	// Cluster administration: decided on the cluster resource.
	29: {name: "describe_acls: describe cluster", kind: enforced, req: cluster(ActionDescribe)},
	30: {name: "create_acls: alter cluster", kind: enforced, req: cluster(ActionAlter)},
	31: {name: "delete_acls: alter cluster", kind: enforced, req: cluster(ActionAlter)},
	34: {name: "alter_replica_log_dirs: alter cluster", kind: enforced, req: cluster(ActionAlter)},
	35: {name: "describe_log_dirs: describe cluster", kind: enforced, req: cluster(ActionDescribe)},
	43: {name: "elect_leaders: alter cluster", kind: enforced, req: cluster(ActionAlter)},
	45: {name: "alter_partition_assignments: alter cluster", kind: enforced, req: cluster(ActionAlter)},
	46: {name: "list_partition_reassignments: describe cluster", kind: enforced, req: cluster(ActionDescribe)},
	48: {name: "describe_client_quotas: describe_configs cluster", kind: enforced, req: cluster(ActionDescribeConfigs)},
	49: {name: "alter_client_quotas: alter_configs cluster", kind: enforced, req: cluster(ActionAlterConfigs)},
	50: {name: "describe_user_scram_credentials: describe cluster", kind: enforced, req: cluster(ActionDescribe)},
	51: {name: "alter_user_scram_credentials: alter cluster", kind: enforced, req: cluster(ActionAlter)},
	55: {name: "describe_quorum: describe cluster", kind: enforced, req: cluster(ActionDescribe)},
	57: {name: "update_features: alter cluster", kind: enforced, req: cluster(ActionAlter)},
	60: {name: "describe_cluster: describe cluster (stricter than Kafka, which does not check)", kind: enforced, req: cluster(ActionDescribe)},
	74: {name: "list_config_resources: describe_configs cluster", kind: enforced, req: cluster(ActionDescribeConfigs)},
	80: {name: "add_raft_voter: alter cluster", kind: enforced, req: cluster(ActionAlter)},
	81: {name: "remove_raft_voter: alter cluster", kind: enforced, req: cluster(ActionAlter)},
	71: {name: "get_telemetry_subscriptions: describe cluster", kind: enforced, req: cluster(ActionDescribe)},
	72: {name: "push_telemetry: describe cluster", kind: enforced, req: cluster(ActionDescribe)},

	// Delegation tokens.
	38: {name: "create_delegation_token: create_tokens on the owner user", kind: enforced, req: createTokenReq},
	39: {name: "renew_delegation_token: alter delegation_token *", kind: enforced, req: token(ActionAlter)},
	40: {name: "expire_delegation_token: alter delegation_token *", kind: enforced, req: token(ActionAlter)},
	41: {name: "describe_delegation_token: describe_tokens delegation_token *", kind: enforced, req: token(ActionDescribeTokens)},

	// Answered by the proxy before the chain.
	17: {name: "sasl_handshake: answered by the proxy (authentication)", kind: proxyHandled},
	18: {name: "api_versions: answered by the proxy (version clamp)", kind: proxyHandled},
	36: {name: "sasl_authenticate: answered by the proxy (authentication)", kind: proxyHandled},

	// Inter-broker and controller-only: never forwarded for a client.
	4:  {name: "leader_and_isr: inter-broker", kind: refused},
	5:  {name: "stop_replica: inter-broker", kind: refused},
	6:  {name: "update_metadata: inter-broker", kind: refused},
	7:  {name: "controlled_shutdown: inter-broker", kind: refused},
	27: {name: "write_txn_markers: inter-broker", kind: refused},
	52: {name: "vote: raft", kind: refused},
	53: {name: "begin_quorum_epoch: raft", kind: refused},
	54: {name: "end_quorum_epoch: raft", kind: refused},
	56: {name: "alter_partition: controller", kind: refused},
	58: {name: "envelope: controller forwarding", kind: refused},
	59: {name: "fetch_snapshot: raft", kind: refused},
	62: {name: "broker_registration: controller", kind: refused},
	63: {name: "broker_heartbeat: controller", kind: refused},
	64: {name: "unregister_broker: controller", kind: refused},
	67: {name: "allocate_producer_ids: controller", kind: refused},
	70: {name: "controller_registration: controller", kind: refused},
	73: {name: "assign_replicas_to_dirs: controller", kind: refused},
	82: {name: "update_raft_voter: raft", kind: refused},
	83: {name: "initialize_share_group_state: share coordinator", kind: refused},
	84: {name: "read_share_group_state: share coordinator", kind: refused},
	85: {name: "write_share_group_state: share coordinator", kind: refused},
	86: {name: "delete_share_group_state: share coordinator", kind: refused},
	87: {name: "read_share_group_state_summary: share coordinator", kind: refused},
	94: {name: "unregister_controller: controller", kind: refused},
}

func ruleFor(key int16) (rule, bool) {
	r, ok := rules[key]
	return r, ok
}

// --- generic rules ---------------------------------------------------------

func cluster(a Action) func(context.Context, *Filter, *filter.Exchange) error {
	return func(ctx context.Context, f *Filter, x *filter.Exchange) error {
		return f.need(ctx, x, a, ResourceCluster, ClusterName, codeCluster)
	}
}

func group(a Action, name func(kmsg.Request) string) func(context.Context, *Filter, *filter.Exchange) error {
	return func(ctx context.Context, f *Filter, x *filter.Exchange) error {
		return f.need(ctx, x, a, ResourceGroup, name(x.Request), codeGroup)
	}
}

func txn(a Action, name func(kmsg.Request) string) func(context.Context, *Filter, *filter.Exchange) error {
	return func(ctx context.Context, f *Filter, x *filter.Exchange) error {
		return f.need(ctx, x, a, ResourceTransactionalID, name(x.Request), codeTxn)
	}
}

func token(a Action) func(context.Context, *Filter, *filter.Exchange) error {
	return func(ctx context.Context, f *Filter, x *filter.Exchange) error {
		return f.need(ctx, x, a, ResourceDelegationToken, "*", codeToken)
	}
}

// replicaGuard refuses requests sent as a broker replica (replica id >= 0).
func replicaGuard(id func(kmsg.Request) int32, next func(context.Context, *Filter, *filter.Exchange) error) func(context.Context, *Filter, *filter.Exchange) error {
	return func(ctx context.Context, f *Filter, x *filter.Exchange) error {
		if id(x.Request) >= 0 {
			return f.refuse(x, codeCluster, "replica requests are not available through the gateway")
		}
		return next(ctx, f, x)
	}
}

// topicOf reads the Topic (string or *string) and TopicID fields of a list
// element.
func topicOf(e reflect.Value) (string, [16]byte) {
	var name string
	var id [16]byte
	if t := e.FieldByName("Topic"); t.IsValid() {
		switch t.Kind() {
		case reflect.String:
			name = t.String()
		case reflect.Ptr:
			if !t.IsNil() {
				name = t.Elem().String()
			}
		}
	}
	if t := e.FieldByName("TopicID"); t.IsValid() {
		id = t.Interface().([16]byte)
	}
	return name, id
}

// topicCodes decides a on every topic of the list field of req.
func (f *Filter) topicCodes(ctx context.Context, x *filter.Exchange, a Action, list reflect.Value) []int16 {
	codes := make([]int16, list.Len())
	for i := range codes {
		name, id := topicOf(list.Index(i))
		codes[i], _ = f.topicCode(ctx, x, a, name, id, nil)
	}
	return codes
}

// perTopic decides a on each topic of reqField; denied topics are removed
// and answered in respField with TOPIC_AUTHORIZATION_FAILED (or
// UNKNOWN_TOPIC_ID for an id the gateway cannot resolve).
func perTopic(a Action, reqField, respField string) func(context.Context, *Filter, *filter.Exchange) error {
	return func(ctx context.Context, f *Filter, x *filter.Exchange) error {
		list := reflect.ValueOf(x.Request).Elem().FieldByName(reqField)
		return f.strip(x, reqField, respField, f.topicCodes(ctx, x, a, list))
	}
}

// perName decides a on each name of a []string field.
func perName(a Action, rt ResourceType, code int16, reqField, respField string) func(context.Context, *Filter, *filter.Exchange) error {
	return func(ctx context.Context, f *Filter, x *filter.Exchange) error {
		names := reflect.ValueOf(x.Request).Elem().FieldByName(reqField).Interface().([]string)
		codes := make([]int16, len(names))
		for i, n := range names {
			if !f.allowed(ctx, x, a, rt, n) {
				codes[i] = code
			}
		}
		return f.strip(x, reqField, respField, codes)
	}
}

// allTopics decides a on every topic of the list field and refuses the
// whole request with code if any is denied (for APIs whose response cannot
// carry a per-topic error next to the others).
func (f *Filter) allTopics(ctx context.Context, x *filter.Exchange, a Action, list reflect.Value) error {
	for i := 0; i < list.Len(); i++ {
		name, id := topicOf(list.Index(i))
		if c, d := f.topicCode(ctx, x, a, name, id, nil); c != 0 {
			return f.refuse(x, c, fmt.Sprintf("%s topic %q: %s", a, name, d.Reason))
		}
	}
	return nil
}

// Refuses reports whether the filter refuses every request of key outright
// (inter-broker and controller APIs), so the proxy can leave the key out of
// its ApiVersions answer. Keys without a rule are refused too.
func Refuses(key int16) bool {
	r, ok := ruleFor(key)
	return !ok || r.kind == refused
}
