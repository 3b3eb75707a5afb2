package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Event kinds. The CloudEvents type of an event is "io.sluice.audit.<kind>.v1".
const (
	KindDecision     = "decision"
	KindAuthn        = "authn"
	KindPolicyReload = "policy_reload"
	KindMaskFailure  = "mask_failure"
	KindChainHead    = "chain_head"
)

// Schema identifiers.
const (
	// SchemaVersion is the version of Data; it changes only on an
	// incompatible change (fields are only ever added within a version).
	SchemaVersion = 1
	// DataSchema is the CloudEvents dataschema attribute of every event.
	DataSchema = "urn:sluice:audit:v1"
	// SpecVersion is the CloudEvents version of the envelope.
	SpecVersion = "1.0"
)

// TimeFormat is the format of every time in an event: RFC 3339, UTC,
// nanoseconds.
const TimeFormat = "2006-01-02T15:04:05.000000000Z"

// Decision values in Data.Decision.
const (
	Allow   = "allow"
	Deny    = "deny"
	Success = "success" // authn
	Failure = "failure" // authn, policy_reload
)

// Envelope is one audit event: a CloudEvents 1.0 structured-mode JSON
// event. Sequence, PrevHash and ChainID are extension attributes forming
// the per-instance hash chain.
type Envelope struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	DataSchema      string `json:"dataschema"`
	// Sequence is the event's position in its chain, a decimal uint64
	// starting at 0 (a string, as CloudEvents integers are 32-bit).
	Sequence string `json:"sequence"`
	// PrevHash is the lowercase hex SHA-256 of the previous event's
	// record value in the chain; 64 zeros for sequence 0.
	PrevHash string `json:"prevhash"`
	// ChainID identifies one run of one instance (random per start).
	ChainID string `json:"chainid"`
	Data    Data   `json:"data"`
}

// Data is the versioned payload of an event.
type Data struct {
	SchemaVersion int    `json:"schema_version"`
	Kind          string `json:"kind"`
	Instance      string `json:"instance"`

	Principal *PrincipalRef `json:"principal,omitempty"`
	Client    *ClientRef    `json:"client,omitempty"`
	API       *APIRef       `json:"api,omitempty"`

	Action       string  `json:"action,omitempty"`
	ResourceType string  `json:"resource_type,omitempty"`
	Resource     string  `json:"resource,omitempty"`
	Partitions   []int32 `json:"partitions,omitempty"`
	// PartitionCount is set when Partitions was cut to its first 1024.
	PartitionCount int `json:"partition_count,omitempty"`

	// Decision is allow|deny for decisions, success|failure for authn
	// and policy_reload.
	Decision       string `json:"decision,omitempty"`
	Reason         string `json:"reason,omitempty"`
	GrantID        string `json:"grant_id,omitempty"`
	Purpose        string `json:"purpose,omitempty"`
	PolicyRevision string `json:"policy_revision,omitempty"`

	Obligations *AppliedObligations `json:"obligations,omitempty"`

	// Count is how many identical decisions this event stands for (>1
	// when folded); FirstTime and LastTime bound them.
	Count     int64  `json:"count,omitempty"`
	FirstTime string `json:"first_time,omitempty"`
	LastTime  string `json:"last_time,omitempty"`
	Records   int64  `json:"records,omitempty"`
	Bytes     int64  `json:"bytes,omitempty"`

	// Mechanism is the SASL mechanism (authn).
	Mechanism string `json:"mechanism,omitempty"`
	// Error is the failure text (authn, policy_reload, mask_failure).
	// Free-text fields are cut at 1024 bytes (marked "...(truncated)").
	Error string `json:"error,omitempty"`

	Head *ChainHead `json:"chain_head,omitempty"`
}

// PrincipalRef identifies who acted.
type PrincipalRef struct {
	ID        string `json:"id"`
	Org       string `json:"org,omitempty"`
	Mechanism string `json:"mechanism,omitempty"`
}

// ClientRef identifies the client connection.
type ClientRef struct {
	Address  string `json:"address,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	ConnID   uint64 `json:"conn_id"`
	Listener string `json:"listener,omitempty"`
}

// APIRef is the Kafka request.
type APIRef struct {
	Key     int16  `json:"key"`
	Name    string `json:"name"`
	Version int16  `json:"version"`
}

// AppliedObligations are the obligations the decision attached.
type AppliedObligations struct {
	// MaskedFields are "field:strategy" (prefixed "key." for key rules).
	MaskedFields []string `json:"masked_fields,omitempty"`
	// RowFilter is "field op values", e.g. "region in [eu,uk]".
	RowFilter string `json:"row_filter,omitempty"`
}

// ChainHead is the data of a chain_head event: a signature over the
// event itself (with Signature empty), so it covers the chain up to and
// including this head.
type ChainHead struct {
	// SignedSequence and SignedHash repeat the head's own link (its
	// sequence - 1 and prevhash) for readers that do not parse the
	// envelope.
	SignedSequence uint64 `json:"signed_sequence"`
	SignedHash     string `json:"signed_hash"`
	// Events is the number of events in the chain before this head.
	Events uint64 `json:"events"`
	// Final marks the head written on clean shutdown.
	Final bool `json:"final,omitempty"`
	// KeyID is the hex of the first 8 bytes of SHA-256 of the public key.
	KeyID string `json:"key_id"`
	// Signature is base64 (std) Ed25519 over the event's JSON encoding
	// with Signature set to "".
	Signature string `json:"signature"`
}

// EventType returns the CloudEvents type of a kind.
func EventType(kind string) string { return "io.sluice.audit." + kind + ".v1" }

// zeroHash is PrevHash of sequence 0.
var zeroHash = hex.EncodeToString(make([]byte, sha256.Size))

// HashRecord is the chain hash of an event: SHA-256 of its exact record
// value bytes, lowercase hex.
func HashRecord(value []byte) string {
	s := sha256.Sum256(value)
	return hex.EncodeToString(s[:])
}

// ParseEvent decodes a record value.
func ParseEvent(value []byte) (*Envelope, uint64, error) {
	var e Envelope
	if err := json.Unmarshal(value, &e); err != nil {
		return nil, 0, fmt.Errorf("audit: parse event: %w", err)
	}
	if e.SpecVersion != SpecVersion {
		return nil, 0, fmt.Errorf("audit: parse event: specversion %q", e.SpecVersion)
	}
	seq, err := strconv.ParseUint(e.Sequence, 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("audit: parse event: sequence %q", e.Sequence)
	}
	if e.ChainID == "" || len(e.PrevHash) != 2*sha256.Size {
		return nil, 0, fmt.Errorf("audit: parse event: missing chain attributes")
	}
	return &e, seq, nil
}

// EventTime parses Envelope.Time.
func (e *Envelope) EventTime() (time.Time, error) { return time.Parse(time.RFC3339Nano, e.Time) }

func fmtTime(t time.Time) string { return t.UTC().Format(TimeFormat) }
