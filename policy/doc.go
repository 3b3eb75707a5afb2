// Package policy decides, with an embedded OPA, whether a principal may do an
// action on a resource, and enforces those decisions on every Kafka API as a
// filter in the request path.
//
// The Engine compiles the Rego modules of a directory and the JSON/YAML data
// documents beside them into one prepared query per revision (a revision is
// the SHA-256 of every policy and data file). Decide evaluates the query for
// one (principal, action, resource) and caches the answer per revision, so a
// cached decision costs a map lookup. Anything that is not a well-formed
// allow — an evaluation error, an undefined result, a timeout — is a deny.
//
// Watch polls the files and swaps in a new revision atomically once it has
// compiled (and, if configured, its Rego tests pass); a broken revision is
// logged, counted and dropped while the old one keeps serving.
//
// NewFilter returns the filter.Filter that maps every Kafka API key to the
// resources and ACL operations Kafka itself would check (see rules.go), strips
// or errors denied resources with Kafka's error codes (built by
// proxy/kafkaerr), and attaches obligations and decisions to the exchange
// for the masking and audit filters.
//
// Metrics (all on the registerer passed in):
//
//	sluice_policy_decisions_total{decision="allow|deny",cached="true|false"}
//	sluice_policy_errors_total{reason="eval_error|undefined|timeout|bad_output|no_revision"}
//	sluice_policy_eval_duration_seconds           uncached evaluations
//	sluice_policy_reloads_total{result="ok|error"}
//	sluice_policy_refused_requests_total{api}     whole requests refused by the filter
package policy
