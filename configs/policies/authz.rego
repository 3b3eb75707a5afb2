# Example ABAC policy for Sluice.
#
# Who may do what:
#   - role "admin": everything.
#   - the audit topic: read/describe only with role "auditor"; nobody but an
#     admin writes it through the gateway (Sluice writes it itself).
#   - a partner (principal.org names an active organisation in
#     data.partners) may
#       * consume (read, describe) a topic only with an active grant for it
#         in data.grants: same org, topic or "prefix*" pattern, a purpose
#         the principal (attribute "purpose") or else the partner declares,
#         the topic's classification at most the grant's ceiling and the
#         partner's max_classification, inside [valid_from, valid_until),
#         not revoked. The grant's mask and row_filter become obligations.
#       * produce (write, describe) only to its own inbound topics
#         "inbound.<org>.*", and use idempotent producers;
#       * use consumer groups and transactional ids named "<org>.*";
#       * nothing administrative.
#   - anyone else: nothing.
#
# The decision is an object (see docs/policy.md):
#   {"allow": bool, "reason": string, "obligations": {...}, "expires_at": ns}
package sluice.authz

levels := {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}

audit_topic := "_sluice_audit"

consume_actions := {"read", "describe"}

produce_actions := {"write", "describe"}

group_actions := {"read", "describe", "delete"}

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "role admin"} if {
	is_admin
} else := audit_decision if {
	is_topic
	input.resource.name == audit_topic
} else := {"allow": false, "reason": sprintf("organisation %q is unknown or inactive", [org])} if {
	org != ""
	not active_partner
} else := partner_decision if {
	active_partner
}

# --- principal -------------------------------------------------------------

org := input.principal.org

is_admin if "admin" in input.principal.roles

is_auditor if "auditor" in input.principal.roles

active_partner if data.partners[org].active == true

partner := data.partners[org]

is_topic if input.resource.type == "topic"

# --- audit topic -----------------------------------------------------------

audit_decision := {"allow": true, "reason": "auditor reads the audit trail"} if {
	is_auditor
	input.action in consume_actions
} else := {"allow": false, "reason": "the audit topic is readable only by auditors and never writable"}

# --- partners --------------------------------------------------------------

partner_decision := produce_decision if {
	is_topic
	startswith(input.resource.name, inbound_prefix)
	input.action in produce_actions
} else := consume_decision if {
	is_topic
	input.action in consume_actions
} else := {"allow": false, "reason": sprintf("partners may write only to %s*", [inbound_prefix])} if {
	is_topic
	input.action == "write"
} else := {"allow": true, "reason": "partner uses its own group"} if {
	input.resource.type == "group"
	startswith(input.resource.name, own_prefix)
	input.action in group_actions
} else := {"allow": false, "reason": sprintf("partners may use only groups named %s*", [own_prefix])} if {
	input.resource.type == "group"
} else := {"allow": true, "reason": "partner uses its own transactional id"} if {
	input.resource.type == "transactional_id"
	startswith(input.resource.name, own_prefix)
	input.action in {"write", "describe"}
} else := {"allow": true, "reason": "partners may produce idempotently"} if {
	input.resource.type == "cluster"
	input.action == "idempotent_write"
} else := {"allow": false, "reason": "administrative operations are not available to partners"}

own_prefix := concat("", [org, "."])

inbound_prefix := concat("", ["inbound.", org, "."])

produce_decision := {"allow": true, "reason": "partner writes its own inbound topic"}

# --- grants ----------------------------------------------------------------

# The allow path is written to be cheap (it runs uncached once per
# principal, topic and action): one pass over the grants, no string
# formatting. The reasons for a denial are worked out only on the deny path.

covers(g, topic) if g.topic == topic

covers(g, topic) if {
	endswith(g.pattern, "*")
	startswith(topic, trim_suffix(g.pattern, "*"))
}

# Purposes the principal acts for: its own attribute, else its partner's.
purposes := {input.principal.attributes.purpose} if {
	input.principal.attributes.purpose
} else := {p | some p in partner.purposes}

# An unlabelled topic is treated as restricted: fail closed.
default topic_level := 3

topic_level := levels[input.resource.labels.classification]

now := input.time.ns

usable(g) if {
	not g.revoked
	g.purpose in purposes
	topic_level <= levels[g.classification]
	topic_level <= levels[partner.max_classification]
	in_window(g)
}

in_window(g) if {
	not_before(g)
	not_after(g)
}

not_before(g) if not g.valid_from

not_before(g) if now >= time.parse_rfc3339_ns(g.valid_from)

not_after(g) if not g.valid_until

not_after(g) if now < time.parse_rfc3339_ns(g.valid_until)

# With several usable grants, the one with the smallest id decides, so the
# obligations are deterministic.
usable_ids contains g.id if {
	some g in data.grants
	g.org == org
	covers(g, input.resource.name)
	usable(g)
}

chosen := g if {
	id := min(usable_ids)
	some g in data.grants
	g.id == id
}

consume_decision := {
	"allow": true,
	"reason": concat("", ["grant ", g.id]),
	"obligations": {
		"grant_id": g.id,
		"purpose": g.purpose,
		"mask": object.get(g, "mask", []),
		"row_filter": object.get(g, "row_filter", null),
	},
	# The decision lapses when the grant does (the engine caches it until
	# then at most).
	"expires_at": object.get(g, "valid_until", null),
} if {
	g := chosen
} else := {"allow": false, "reason": concat("", ["no grant for topic ", input.resource.name])} if {
	count(candidate_grants) == 0
} else := {"allow": false, "reason": concat("; ", sort([sprintf("grant %s %s", [g.id, grant_problem(g)]) | some g in candidate_grants]))}

# Grants of this organisation covering the topic (deny path only).
candidate_grants contains g if {
	some g in data.grants
	g.org == org
	covers(g, input.resource.name)
}

grant_problem(g) := "is revoked" if {
	g.revoked == true
} else := sprintf("is for purpose %q", [g.purpose]) if {
	not g.purpose in purposes
} else := sprintf("allows up to %q", [g.classification]) if {
	topic_level > levels[g.classification]
} else := sprintf("exceeds the partner's ceiling %q", [partner.max_classification]) if {
	topic_level > levels[partner.max_classification]
} else := "is not valid yet" if {
	not not_before(g)
} else := "has expired" if {
	not not_after(g)
} else := "is not usable"
