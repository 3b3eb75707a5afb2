// Package harness runs the pieces of an end-to-end test: a kfake cluster
// whose listeners record every connection and request they accept, the
// sluice binary as a subprocess in front of it, and the third-party client
// drivers (kcat, confluent-kafka-python, kafkajs) with a timeout.
//
// The cluster's recorder is what lets a test prove isolation: every accepted
// upstream connection is attributed to the process that owns the client end
// of the socket (through /proc), so a test can assert that only the gateway
// ever talked to the brokers; and every request frame is inspected before
// kfake sees it, so an API key or version the gateway should have refused is
// recorded as a leak and the connection closed, instead of crashing the
// fake broker (and with it the test binary).
package harness
