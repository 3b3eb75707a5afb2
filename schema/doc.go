// Package schema handles the Confluent wire format (magic byte 0, 4-byte
// big-endian schema id, body) and schema registry lookups.
//
// Registry wraps franz-go's pkg/sr client with a bounded cache by schema id,
// single-flight lookups, a bound on concurrent requests and retries with
// exponential backoff (not-found answers are not retried; an exhausted retry
// budget returns an error wrapping ErrUnavailable, on which callers fail
// closed). Every Avro schema is parsed with its own hamba/avro SchemaCache,
// so schemas that reuse a full name never collide.
//
// StartEmbedded serves franz-go's in-memory registry (srfake) for
// `sluice dev`, and SeedDemo registers and produces the demo payments topic.
package schema
