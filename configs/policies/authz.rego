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

# Rules are referenced sparingly on the allow paths below and constants are
# written inline: each rule reference costs an evaluation, and uncached
# decisions should stay in the tens of microseconds.

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "role admin"} if {
	"admin" in input.principal.roles
} else := audit_decision if {
	input.resource.type == "topic"
	input.resource.name == "_sluice_audit" # the audit topic
} else := {
	# A partner consuming with a usable grant: the hot uncached path,
	# decided here rather than through partner_decision, and before the
	# check for an inactive organisation, which it makes itself.
	"allow": true,
	"reason": concat("", ["grant ", g.id]),
	"obligations": {
		"grant_id": g.id,
		"purpose": g.purpose,
		"mask": g.mask,
		"row_filter": g.row_filter,
	},
	# The decision lapses when the grant does; the engine caches it until
	# then at most.
	"expires_at": g.valid_until,
} if {
	input.partner.active == true
	input.resource.type == "topic"
	input.action in {"read", "describe"}
	g := input.grants[min(usable)]
} else := {"allow": false, "reason": concat("", ["organisation ", input.principal.org, " is unknown or inactive"])} if {
	input.principal.org != ""
	not input.partner.active
} else := partner_decision if {
	input.principal.org != ""
}

org := input.principal.org

partner := input.partner

# --- audit topic -----------------------------------------------------------

audit_decision := {"allow": true, "reason": "auditor reads the audit trail"} if {
	"auditor" in input.principal.roles
	input.action in {"read", "describe"}
} else := {"allow": false, "reason": "the audit topic is readable only by auditors and never writable"}

# --- partners --------------------------------------------------------------

partner_decision := consume_decision if {
	input.resource.type == "topic"
	input.action in {"read", "describe"}
	not own_inbound
} else := {"allow": true, "reason": "partner writes its own inbound topic"} if {
	input.resource.type == "topic"
	input.action in {"write", "describe"}
	own_inbound
} else := {"allow": false, "reason": concat("", ["partners may write only to inbound.", input.principal.org, ".*"])} if {
	input.resource.type == "topic"
	input.action == "write"
} else := {"allow": true, "reason": "partner uses its own group"} if {
	input.resource.type == "group"
	startswith(input.resource.name, concat("", [input.principal.org, "."]))
	input.action in {"read", "describe", "delete"}
} else := {"allow": false, "reason": concat("", ["partners may use only groups named ", input.principal.org, ".*"])} if {
	input.resource.type == "group"
} else := {"allow": true, "reason": "partner uses its own transactional id"} if {
	input.resource.type == "transactional_id"
	startswith(input.resource.name, concat("", [input.principal.org, "."]))
	input.action in {"write", "describe"}
} else := {"allow": true, "reason": "partners may produce idempotently"} if {
	input.resource.type == "cluster"
	input.action == "idempotent_write"
} else := {"allow": false, "reason": "administrative operations are not available to partners"}

own_inbound if startswith(input.resource.name, concat("", ["inbound.", input.principal.org, "."]))

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
# now is inside [valid_from, valid_until). The engine gives each grant in
# input.grants revoked, valid_from_ns and valid_until_ns (Unix nanoseconds;
# 0 and "no end" when the grant has no window), so they are read, not
# defaulted.
# Every check is inline (no rule or function lookups): this is the
# uncached allow path and each rule reference costs an evaluation. The
# checks that do not depend on the grant come before the loop over the
# grants, behind input.grants[0] so that a topic without grants skips
# them. The two bodies differ only in where the purpose comes from.
usable contains i if {
	input.grants[0]
	p := input.principal.attributes.purpose
	level := {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}[object.get(input.resource.labels, "classification", "restricted")]
	level <= {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}[object.get(input.partner, "max_classification", "public")]
	t := input.time.ns
	some i, g in input.grants
	g.purpose == p
	g.org == input.principal.org
	g.revoked == false
	level <= {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}[g.classification]
	t >= g.valid_from_ns
	t < g.valid_until_ns
}

usable contains i if {
	input.grants[0]
	not input.principal.attributes.purpose
	ps := input.partner.purposes
	level := {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}[object.get(input.resource.labels, "classification", "restricted")]
	level <= {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}[object.get(input.partner, "max_classification", "public")]
	t := input.time.ns
	some i, g in input.grants
	g.purpose in ps
	g.org == input.principal.org
	g.revoked == false
	level <= {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}[g.classification]
	t >= g.valid_from_ns
	t < g.valid_until_ns
}

# With several usable grants, the first in data.grants order decides (the
# allow in decision takes input.grants[min(usable)]), so the obligations
# are deterministic: input.grants keeps the data's order.

# A consumer without a usable grant (the allow is decided in decision): say
# why.
consume_decision := {"allow": false, "reason": concat("", ["no grant for topic ", input.resource.name])} if {
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
	now < g.valid_from_ns
} else := "has expired" if {
	now >= g.valid_until_ns
} else := "is not usable"
