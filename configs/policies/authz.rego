# Example ABAC policy for Sluice.
#
# Who may do what:
#   - role "admin": everything.
#   - the audit topic: read/describe only with role "auditor"; nobody but an
#     admin writes it through the gateway (Sluice writes it itself).
#   - a partner (principal.org names an active organisation in
#     data.partners) may
#       * consume (read, describe) a topic only with an active grant for it
#         in data.grants: a purpose the principal (attribute "purpose") or
#         else the partner declares, the topic's classification at most the
#         grant's ceiling and the partner's max_classification, inside
#         [valid_from, valid_until), not revoked. The grant's mask and
#         row_filter become obligations; the decision expires with it.
#       * produce (write, describe) only to its own inbound topics
#         "inbound.<org>.*", and use idempotent producers;
#       * use consumer groups and transactional ids named "<org>.*";
#       * nothing administrative.
#   - anyone else: nothing.
#
# The engine puts the data this policy needs into the input (see
# docs/policy.md): input.partner is data.partners[principal.org],
# input.grants the grants of data.grants for the principal's organisation
# whose topic or pattern covers resource.name, and resource.labels the
# topic's entry in data.topics. Reading input is much cheaper than walking
# data on every uncached decision.
#
# The decision is an object:
#   {"allow": bool, "reason": string, "obligations": {...}, "expires_at": time}
package sluice.authz

# Classification levels. Written out where used (a literal lookup) rather
# than read from a rule, which costs a rule evaluation per decision.
levels := {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}

audit_topic := "_sluice_audit"

consume_actions := {"read", "describe"}

produce_actions := {"write", "describe"}

group_actions := {"read", "describe", "delete"}

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "role admin"} if {
	"admin" in input.principal.roles
} else := audit_decision if {
	input.resource.type == "topic"
	input.resource.name == audit_topic
} else := {"allow": false, "reason": concat("", ["organisation ", org, " is unknown or inactive"])} if {
	org != ""
	not input.partner.active
} else := partner_decision if {
	org != ""
}

org := input.principal.org

partner := input.partner

# --- audit topic -----------------------------------------------------------

audit_decision := {"allow": true, "reason": "auditor reads the audit trail"} if {
	"auditor" in input.principal.roles
	input.action in consume_actions
} else := {"allow": false, "reason": "the audit topic is readable only by auditors and never writable"}

# --- partners --------------------------------------------------------------

partner_decision := consume_decision if {
	input.resource.type == "topic"
	input.action in consume_actions
	not own_inbound
} else := {"allow": true, "reason": "partner writes its own inbound topic"} if {
	input.resource.type == "topic"
	input.action in produce_actions
	own_inbound
} else := {"allow": false, "reason": concat("", ["partners may write only to inbound.", org, ".*"])} if {
	input.resource.type == "topic"
	input.action == "write"
} else := {"allow": true, "reason": "partner uses its own group"} if {
	input.resource.type == "group"
	startswith(input.resource.name, concat("", [org, "."]))
	input.action in group_actions
} else := {"allow": false, "reason": concat("", ["partners may use only groups named ", org, ".*"])} if {
	input.resource.type == "group"
} else := {"allow": true, "reason": "partner uses its own transactional id"} if {
	input.resource.type == "transactional_id"
	startswith(input.resource.name, concat("", [org, "."]))
	input.action in {"write", "describe"}
} else := {"allow": true, "reason": "partners may produce idempotently"} if {
	input.resource.type == "cluster"
	input.action == "idempotent_write"
} else := {"allow": false, "reason": "administrative operations are not available to partners"}

own_inbound if startswith(input.resource.name, concat("", ["inbound.", org, "."]))

# --- grants ----------------------------------------------------------------

# The allow path is written to be cheap (it runs uncached once per
# principal, topic and action): one pass over the few candidate grants, no
# function calls, no string formatting. The reasons for a denial are worked
# out only on the deny path.

# Purposes the principal acts for: its own attribute, else its partner's.
purposes := {input.principal.attributes.purpose} if {
	input.principal.attributes.purpose
} else := {p | some p in partner.purposes}

# An unlabelled topic is treated as restricted: fail closed.
default topic_level := 3

topic_level := {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}[input.resource.labels.classification]

# A partner without a ceiling gets public data only.
default partner_level := 0

partner_level := {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}[partner.max_classification]

now := input.time.ns

# A grant is usable when it is not revoked, is for one of the principal's
# purposes, allows the topic's classification (as does the partner), and
# now is inside [valid_from, valid_until). The engine adds valid_from_ns and
# valid_until_ns (Unix nanoseconds) to each grant in input.grants.
usable contains i if {
	some i, g in input.grants
	g.org == org
	object.get(g, "revoked", false) == false
	g.purpose in purposes
	topic_level <= {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}[g.classification]
	topic_level <= partner_level
	now >= object.get(g, "valid_from_ns", 0)
	now < object.get(g, "valid_until_ns", forever)
}

# 2200-01-01T00:00:00Z in Unix nanoseconds: "no end".
forever := 7258118400000000000

# With several usable grants, the one with the smallest id decides, so the
# obligations are deterministic. (usable holds indexes into input.grants:
# cheaper to collect than the grant objects.)
chosen := input.grants[i] if {
	count(usable) == 1
	some i in usable
} else := g if {
	id := min({input.grants[i].id | some i in usable})
	some g in input.grants
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
	# The decision lapses when the grant does; the engine caches it until
	# then at most.
	"expires_at": object.get(g, "valid_until", null),
} if {
	g := chosen
} else := {"allow": false, "reason": concat("", ["no grant for topic ", input.resource.name])} if {
	count(candidates) == 0
} else := {"allow": false, "reason": concat("; ", sort([sprintf("grant %s %s", [g.id, grant_problem(g)]) | some g in candidates]))}

candidates := [g | some g in input.grants; g.org == org]

grant_problem(g) := "is revoked" if {
	g.revoked == true
} else := sprintf("is for purpose %q", [g.purpose]) if {
	not g.purpose in purposes
} else := sprintf("allows up to %q", [g.classification]) if {
	topic_level > levels[g.classification]
} else := sprintf("exceeds the partner's ceiling %q", [object.get(partner, "max_classification", "public")]) if {
	topic_level > partner_level
} else := "is not valid yet" if {
	now < object.get(g, "valid_from_ns", 0)
} else := "has expired" if {
	now >= object.get(g, "valid_until_ns", forever)
} else := "is not usable"
