// Package audit records every decision the gateway makes to a Kafka audit
// topic as a tamper-evident hash chain, and verifies it.
//
// One job, four parts:
//
//   - event.go: the event model, CloudEvents 1.0 structured JSON with a
//     versioned payload (Data, schema_version 1) and the chain extension
//     attributes sequence, prevhash and chainid.
//   - auditor.go, sink.go, spool.go: the Auditor. Callers (the audit
//     filter, authentication, policy reload, masking) enqueue items without
//     I/O; one sequencer goroutine folds identical allow decisions, numbers,
//     hashes and encodes events in chain order; one shipper goroutine
//     writes them with franz-go (idempotent, acks=all) to the audit topic,
//     keyed by instance id, or, while the topic cannot be written, to a
//     local fsync'd spool that a replayer goroutine writes back in order.
//     When neither works, Healthy fails and the filter denies new requests
//     (on_spool_full: fail_closed, the default).
//   - sign.go: Ed25519 keys (GenerateKey, LoadPrivateKey, LoadPublicKey)
//     and chain-head signatures.
//   - verify.go, read.go, tail.go: Verify and Tail read the topic (or a
//     copy) back.
//
// Config: Config (DefaultConfig, Validate, DecodeConfig; strict YAML).
//
// Metrics (registered on the Registerer passed to New):
//
//	sluice_audit_decisions_total         decisions received (sum of count over decision events)
//	sluice_audit_events_written_total    written to the topic directly
//	sluice_audit_events_folded_total     allow decisions folded into an earlier event
//	sluice_audit_events_spooled_total    written to the spool
//	sluice_audit_events_replayed_total   written from the spool to the topic
//	sluice_audit_events_dropped_total    lost (fail_open, or at shutdown)
//	sluice_audit_produce_errors_total    failed batch writes to the topic
//	sluice_audit_requests_denied_total   requests denied while failing closed
//	sluice_audit_chain_heads_total       signed chain heads written
//	sluice_audit_queue_depth_events      events in memory (queued, being written, held)
//	sluice_audit_spool_bytes             spool bytes not yet replayed
//	sluice_audit_failing_closed          1 while denying for lack of audit
//
// Errors: the filter's only error is a *filter.Denial with DenyCode
// (KAFKA_STORAGE_ERROR) and reason "audit unavailable: ...".
//
// The event format, the chain and the verification rules are documented in
// docs/audit.md.
package audit
