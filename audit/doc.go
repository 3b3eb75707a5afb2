// Package audit records every decision the gateway makes to a Kafka audit
// topic as a tamper-evident hash chain, and verifies it.
package audit
