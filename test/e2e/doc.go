// Package e2e runs real Kafka clients (franz-go, kcat, confluent-kafka-python
// and kafkajs) through the sluice binary against a 3-broker kfake cluster and
// checks that they work, that they only ever learn gateway addresses, and that
// the brokers only ever see the gateway.
//
// The tests need the sluice binary ($SLUICE_BIN, or built on the fly) and the
// clients installed by test/install-deps.sh; a client that is missing is
// skipped with a message saying so, except under CI=true where it fails.
package e2e
