// Package authn authenticates Kafka clients at the gateway.
//
// Its one job is to turn what a client presents — a SASL exchange (PLAIN,
// SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER) or a verified TLS client
// certificate — into a *filter.Principal, or into a *filter.AuthError with a
// bounded reason. The proxy answers SaslHandshake and SaslAuthenticate itself
// and drives the exchange through the filter.Authenticator and
// filter.Session this package returns from (*Provider).ForListener.
//
// Config: see Config (credentials_file, reload_interval, session_lifetime,
// oauthbearer, tls). Credentials never hold clear-text passwords: PLAIN
// verifies bcrypt or argon2id hashes, SCRAM keeps RFC 5802 stored and server
// keys. The credentials file and a JWKS file are polled and reloaded on
// change; a broken file is logged and the previous version keeps serving.
//
// Metrics (on the Registerer passed to New):
//
//	sluice_authn_attempts_total{mechanism,result}     result: success|failure
//	sluice_authn_failures_total{mechanism,reason}     reason: see Reason* constants
//	sluice_authn_reloads_total{source,result}         source: credentials|jwks
//
// The mechanism label is one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512,
// OAUTHBEARER, mtls or "unknown" (a mechanism name sent by a client is never
// used as a label).
package authn
