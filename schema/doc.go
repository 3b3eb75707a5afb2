// Package schema handles the Confluent wire format and schema registry
// lookups, with a cache by schema id, and provides an embedded registry for
// development.
package schema
