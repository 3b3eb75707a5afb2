// Package masking compiles per-grant field masking rules into plans that
// rewrite Avro and JSON record values in place, and applies them to record
// batches in Fetch responses.
package masking
