// Package policy decides, with an embedded OPA, whether a principal may do an
// action on a resource, and enforces those decisions on every Kafka API as a
// filter in the request path.
package policy
