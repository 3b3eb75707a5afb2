package sluice.authz_test

import data.sluice.authz

# Fixtures: the tests bring their own data so they do not depend on the
# files in configs/data.

partners := {
	"acme": {"active": true, "purposes": ["fulfilment"], "max_classification": "confidential"},
	"globex": {"active": true, "purposes": ["analytics"], "max_classification": "internal"},
	"initech": {"active": false, "purposes": ["analytics"], "max_classification": "public"},
}

grants := [
	{
		"id": "g1", "org": "acme", "topic": "orders.eu", "purpose": "fulfilment",
		"classification": "confidential",
		"valid_from": "2025-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z",
		"mask": [{"field": "customer.email", "strategy": "hash"}],
		"row_filter": {"field": "region", "op": "eq", "values": ["eu"]},
	},
	{
		"id": "g2", "org": "acme", "topic": "orders.us", "purpose": "fulfilment",
		"classification": "confidential", "revoked": true,
		"valid_from": "2025-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z",
	},
	{
		"id": "g3", "org": "acme", "topic": "future", "purpose": "fulfilment",
		"classification": "confidential",
		"valid_from": "2030-01-01T00:00:00Z", "valid_until": "2031-01-01T00:00:00Z",
	},
	{
		"id": "g4", "org": "acme", "topic": "old", "purpose": "fulfilment",
		"classification": "confidential",
		"valid_from": "2020-01-01T00:00:00Z", "valid_until": "2021-01-01T00:00:00Z",
	},
	{
		"id": "g5", "org": "globex", "pattern": "catalog.*", "purpose": "analytics",
		"classification": "public",
	},
	{
		"id": "g6", "org": "globex", "topic": "orders.eu", "purpose": "analytics",
		"classification": "internal",
	},
	{
		"id": "g7", "org": "acme", "topic": "shipments", "purpose": "marketing",
		"classification": "internal",
	},
]

# 2026-06-01T00:00:00Z
now_ns := 1780272000000000000

acme := {"id": "svc-acme", "org": "acme", "roles": ["partner"], "attributes": {}}

globex := {"id": "svc-globex", "org": "globex", "roles": ["partner"], "attributes": {}}

initech := {"id": "svc-initech", "org": "initech", "roles": ["partner"], "attributes": {}}

auditor := {"id": "alice", "org": "", "roles": ["auditor"], "attributes": {}}

admin := {"id": "root", "org": "", "roles": ["admin"], "attributes": {}}

nobody := {"id": "anonymous", "org": "", "roles": [], "attributes": {}}

topic(name, class) := {"type": "topic", "name": name, "labels": {"classification": class}}

# req builds the input as the engine does: input.partner from the
# partners, input.grants the organisation's grants covering the topic.
req(p, action, resource) := object.union(
	{
		"principal": p, "action": action, "resource": resource,
		"request": {"api_key": 1, "api_name": "Fetch", "api_version": 16, "client_id": "t", "source_address": "10.0.0.1", "listener": "bootstrap"},
		"time": {"rfc3339": "2026-06-01T00:00:00Z", "ns": now_ns},
		"grants": [with_ns(g) | some g in grants; g.org == p.org; covers(g, resource)],
	},
	partner_of(p),
)

partner_of(p) := {"partner": partners[p.org]} if {
	partners[p.org]
} else := {}

covers(g, resource) if {
	resource.type == "topic"
	g.topic == resource.name
}

# with_ns completes a grant as the engine does: the window in nanoseconds
# (a grant without valid_from starts at 0, one without valid_until never
# ends: 2200-01-01T00:00:00Z), and the optional fields with their
# defaults.
with_ns(g) := object.union(
	{
		"revoked": false, "valid_from": null, "valid_until": null, "mask": [], "row_filter": null,
		"valid_from_ns": 0, "valid_until_ns": 7258118400000000000,
	},
	object.union(g, {k: time.parse_rfc3339_ns(g[f]) |
		some f in ["valid_from", "valid_until"]
		g[f]
		k := concat("", [f, "_ns"])
	}),
)

covers(g, resource) if {
	resource.type == "topic"
	startswith(resource.name, trim_suffix(g.pattern, "*"))
}

decide(input_doc) := d if {
	d := authz.decision with input as input_doc
}

test_partner_reads_granted_topic if {
	d := decide(req(acme, "read", topic("orders.eu", "confidential")))
	d.allow
	d.reason == "grant g1"
	d.obligations.grant_id == "g1"
	d.obligations.purpose == "fulfilment"
	d.obligations.mask == [{"field": "customer.email", "strategy": "hash"}]
	d.obligations.row_filter.field == "region"
	d.expires_at == "2027-01-01T00:00:00Z"
}

test_partner_describes_granted_topic if {
	decide(req(acme, "describe", topic("orders.eu", "confidential"))).allow
}

test_partner_without_grant_denied if {
	d := decide(req(acme, "read", topic("payments.settled", "restricted")))
	not d.allow
	d.reason == "no grant for topic payments.settled"
}

test_revoked_grant_denied if {
	d := decide(req(acme, "read", topic("orders.us", "confidential")))
	not d.allow
	contains(d.reason, "g2 is revoked")
}

test_grant_not_yet_valid_denied if {
	d := decide(req(acme, "read", topic("future", "internal")))
	not d.allow
	contains(d.reason, "not valid yet")
}

test_expired_grant_denied if {
	d := decide(req(acme, "read", topic("old", "internal")))
	not d.allow
	contains(d.reason, "has expired")
}

test_grant_window_is_half_open if {
	r := req(acme, "read", topic("old", "internal"))
	at_end := json.patch(r, [{"op": "replace", "path": "/time/ns", "value": time.parse_rfc3339_ns("2021-01-01T00:00:00Z")}])
	not decide(at_end).allow
	just_before := json.patch(r, [{"op": "replace", "path": "/time/ns", "value": time.parse_rfc3339_ns("2020-12-31T23:59:59Z")}])
	decide(just_before).allow
}

test_classification_above_grant_ceiling_denied if {
	d := decide(req(globex, "read", topic("orders.eu", "confidential")))
	not d.allow
	contains(d.reason, "allows up to \"internal\"")
}

test_unlabelled_topic_is_restricted if {
	r := req(globex, "read", {"type": "topic", "name": "catalog.secret", "labels": {}})
	not decide(r).allow
}

test_pattern_grant_allows if {
	d := decide(req(globex, "read", topic("catalog.products", "public")))
	d.allow
	d.obligations.grant_id == "g5"
	d.expires_at == null
}

test_purpose_mismatch_denied if {
	d := decide(req(acme, "read", topic("shipments", "internal")))
	not d.allow
	contains(d.reason, "is for purpose \"marketing\"")
}

test_principal_purpose_attribute_overrides_partner if {
	p := json.patch(acme, [{"op": "replace", "path": "/attributes", "value": {"purpose": "marketing"}}])
	decide(req(p, "read", topic("shipments", "internal"))).allow
	not decide(req(p, "read", topic("orders.eu", "confidential"))).allow
}

test_partner_produces_own_inbound if {
	decide(req(acme, "write", topic("inbound.acme.orders", "internal"))).allow
	decide(req(acme, "describe", topic("inbound.acme.orders", "internal"))).allow
}

test_partner_cannot_produce_elsewhere if {
	not decide(req(acme, "write", topic("inbound.globex.orders", "internal"))).allow
	not decide(req(acme, "write", topic("orders.eu", "confidential"))).allow
}

test_partner_cannot_read_own_inbound_without_grant if {
	not decide(req(acme, "read", topic("inbound.acme.orders", "internal"))).allow
}

test_partner_groups if {
	decide(req(acme, "read", {"type": "group", "name": "acme.consumers"})).allow
	decide(req(acme, "describe", {"type": "group", "name": "acme.consumers"})).allow
	d := decide(req(acme, "read", {"type": "group", "name": "globex.consumers"}))
	not d.allow
	d.reason == "partners may use only groups named acme.*"
}

test_partner_transactional_ids if {
	decide(req(acme, "write", {"type": "transactional_id", "name": "acme.tx1"})).allow
	not decide(req(acme, "write", {"type": "transactional_id", "name": "globex.tx1"})).allow
}

test_partner_idempotent_write if {
	decide(req(acme, "idempotent_write", {"type": "cluster", "name": "kafka-cluster"})).allow
}

test_partner_admin_denied if {
	every a in ["create", "delete", "alter", "alter_configs", "describe_configs", "cluster_action", "describe"] {
		not decide(req(acme, a, {"type": "cluster", "name": "kafka-cluster"})).allow
	}
	not decide(req(acme, "create", topic("inbound.acme.new", "internal"))).allow
	not decide(req(acme, "delete", topic("orders.eu", "confidential"))).allow
	not decide(req(acme, "alter_configs", topic("inbound.acme.x", "internal"))).allow
}

test_inactive_partner_denied if {
	d := decide(req(initech, "read", topic("catalog.products", "public")))
	not d.allow
	contains(d.reason, "unknown or inactive")
}

test_audit_topic_auditor_only if {
	decide(req(auditor, "read", topic("_sluice_audit", "restricted"))).allow
	decide(req(auditor, "describe", topic("_sluice_audit", "restricted"))).allow
	not decide(req(auditor, "write", topic("_sluice_audit", "restricted"))).allow
	not decide(req(acme, "read", topic("_sluice_audit", "restricted"))).allow
	not decide(req(acme, "write", topic("_sluice_audit", "restricted"))).allow
}

test_audit_topic_grant_does_not_help if {
	r := req(acme, "read", topic("_sluice_audit", "restricted"))
	g := {"id": "g9", "org": "acme", "topic": "_sluice_audit", "purpose": "fulfilment", "classification": "restricted"}
	not decide(json.patch(r, [{"op": "add", "path": "/grants/-", "value": g}])).allow
}

test_admin_allowed_everything if {
	decide(req(admin, "alter", {"type": "cluster", "name": "kafka-cluster"})).allow
	decide(req(admin, "write", topic("_sluice_audit", "restricted"))).allow
}

test_unknown_principal_denied if {
	d := decide(req(nobody, "read", topic("catalog.products", "public")))
	not d.allow
	d.reason == "no rule allows this request"
}

test_decision_always_defined if {
	d := authz.decision with input as {}
	d.allow == false
}
