package authn

import "github.com/sluice-gw/sluice/proxy/filter"

// Failure reasons: the bounded values of the reason metric label and of
// filter.AuthError.Reason.
const (
	ReasonUnknownUser          = "unknown_user"
	ReasonBadPassword          = "bad_password"
	ReasonBadProof             = "bad_proof"
	ReasonBadAuthzid           = "bad_authzid"
	ReasonChannelBinding       = "channel_binding"
	ReasonExpired              = "expired"
	ReasonNotYetValid          = "not_yet_valid"
	ReasonBadSignature         = "bad_signature"
	ReasonBadAlgorithm         = "bad_algorithm"
	ReasonBadIssuer            = "bad_issuer"
	ReasonBadAudience          = "bad_audience"
	ReasonBadClaims            = "bad_claims"
	ReasonBadCertificate       = "bad_certificate"
	ReasonMalformed            = "malformed"
	ReasonUnsupportedMechanism = "unsupported_mechanism"
	ReasonUnavailable          = "unavailable"

	// Reasons the proxy detects itself and reports through CountFailure.
	ReasonIllegalState           = "illegal_state"
	ReasonUnauthenticatedRequest = "unauthenticated_request"
	ReasonPrincipalChanged       = "principal_changed"
)

// Reasons lists every failure reason, for docs and tests.
var Reasons = []string{
	ReasonUnknownUser, ReasonBadPassword, ReasonBadProof, ReasonBadAuthzid,
	ReasonChannelBinding, ReasonExpired, ReasonNotYetValid, ReasonBadSignature,
	ReasonBadAlgorithm, ReasonBadIssuer, ReasonBadAudience, ReasonBadClaims,
	ReasonBadCertificate, ReasonMalformed, ReasonUnsupportedMechanism, ReasonUnavailable,
	ReasonIllegalState, ReasonUnauthenticatedRequest, ReasonPrincipalChanged,
}

// msgBadCredentials is sent for unknown users and wrong passwords alike, so a
// client cannot learn which user names exist.
const msgBadCredentials = "invalid username or password"

func authErr(reason, msg string) *filter.AuthError {
	return &filter.AuthError{Reason: reason, Message: msg}
}

func malformed(msg string) *filter.AuthError {
	return &filter.AuthError{Reason: ReasonMalformed, Message: "malformed message: " + msg}
}
