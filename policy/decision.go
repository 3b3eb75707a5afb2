package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// Decision is the engine's answer to one Query.
type Decision struct {
	Allow  bool   `json:"allow"`
	Reason string `json:"reason,omitempty"`
	// Obligations are what an allow requires of later filters (masking,
	// row filter); nil when there are none. Shared between cached
	// decisions: never modify.
	Obligations *filter.Obligations `json:"obligations,omitempty"`
	// ExpiresAt, if non-zero, is when the decision stops being valid (the
	// grant's valid_until, the credential's expiry).
	ExpiresAt time.Time `json:"expires_at,omitempty"`
	// NoCache is set when the policy asked not to cache the decision.
	NoCache bool `json:"no_cache,omitempty"`
	// Revision is the policy revision that decided.
	Revision string `json:"revision"`
	// Cached reports whether the decision came from the cache.
	Cached bool `json:"cached"`
	// Error is set when the decision is a deny because the policy failed
	// (the fail-closed reason class: eval_error, undefined, timeout,
	// bad_output, no_revision).
	Error string `json:"error,omitempty"`
}

// GrantID returns the grant behind an allow, if the policy named one.
func (d *Decision) GrantID() string {
	if d.Obligations == nil {
		return ""
	}
	return d.Obligations.GrantID
}

// output is the policy's decision document. Unknown keys are errors so a
// typo in a policy ("allowed") is a deny, not a silent default.
type output struct {
	Allow       *bool           `json:"allow"`
	Reason      string          `json:"reason"`
	Obligations *outObligations `json:"obligations"`
	ExpiresAt   json.RawMessage `json:"expires_at"`
	Cache       *bool           `json:"cache"`
}

type outObligations struct {
	GrantID   string            `json:"grant_id"`
	Purpose   string            `json:"purpose"`
	Mask      []filter.MaskRule `json:"mask"`
	RowFilter *filter.RowFilter `json:"row_filter"`
}

// parseOutput converts the policy's result value (as OPA returns it:
// map[string]any, []any, string, bool, json.Number, nil) into a Decision,
// without a JSON round trip. Unknown keys are errors.
func parseOutput(v any) (Decision, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Decision{}, fmt.Errorf("policy: decision must be an object, got %T", v)
	}
	var d Decision
	seenAllow := false
	for k, val := range m {
		switch k {
		case "allow":
			b, ok := val.(bool)
			if !ok {
				return Decision{}, fmt.Errorf("policy: decision allow must be a boolean, got %T", val)
			}
			d.Allow, seenAllow = b, true
		case "reason":
			s, ok := val.(string)
			if !ok {
				return Decision{}, fmt.Errorf("policy: decision reason must be a string, got %T", val)
			}
			d.Reason = s
		case "cache":
			b, ok := val.(bool)
			if !ok {
				return Decision{}, fmt.Errorf("policy: decision cache must be a boolean, got %T", val)
			}
			d.NoCache = !b
		case "expires_at":
			t, err := timeValue(val)
			if err != nil {
				return Decision{}, fmt.Errorf("policy: decision expires_at: %w", err)
			}
			d.ExpiresAt = t
		case "obligations":
			if val == nil {
				continue
			}
			raw, err := json.Marshal(val)
			if err != nil {
				return Decision{}, fmt.Errorf("policy: decision obligations: %w", err)
			}
			var o outObligations
			if err := strictUnmarshal(raw, &o); err != nil {
				return Decision{}, fmt.Errorf("policy: malformed obligations: %w", err)
			}
			ob := &filter.Obligations{GrantID: o.GrantID, Purpose: o.Purpose, Mask: o.Mask, RowFilter: o.RowFilter}
			if err := checkObligations(ob); err != nil {
				return Decision{}, err
			}
			d.Obligations = ob
		default:
			return Decision{}, fmt.Errorf("policy: decision has unknown key %q", k)
		}
	}
	if !seenAllow {
		return Decision{}, fmt.Errorf("policy: decision has no allow field")
	}
	if !d.Allow {
		d.Obligations = nil
	}
	return d, nil
}

func timeValue(v any) (time.Time, error) {
	switch t := v.(type) {
	case nil:
		return time.Time{}, nil
	case string:
		return time.Parse(time.RFC3339Nano, t)
	case json.Number:
		return parseTime(json.RawMessage(t))
	case float64:
		return time.Unix(0, int64(t)), nil
	}
	return time.Time{}, fmt.Errorf("want an RFC 3339 string or unix nanoseconds, got %T", v)
}

func parseOutputJSON(raw []byte) (Decision, error) {
	var out output
	if err := strictUnmarshal(raw, &out); err != nil {
		return Decision{}, fmt.Errorf("policy: malformed decision: %w", err)
	}
	if out.Allow == nil {
		return Decision{}, fmt.Errorf("policy: decision has no allow field")
	}
	d := Decision{Allow: *out.Allow, Reason: out.Reason}
	if out.Cache != nil && !*out.Cache {
		d.NoCache = true
	}
	if len(out.ExpiresAt) > 0 && string(out.ExpiresAt) != "null" {
		t, err := parseTime(out.ExpiresAt)
		if err != nil {
			return Decision{}, fmt.Errorf("policy: decision expires_at: %w", err)
		}
		d.ExpiresAt = t
	}
	if o := out.Obligations; o != nil && d.Allow {
		ob := &filter.Obligations{GrantID: o.GrantID, Purpose: o.Purpose, Mask: o.Mask, RowFilter: o.RowFilter}
		if err := checkObligations(ob); err != nil {
			return Decision{}, err
		}
		d.Obligations = ob
	}
	return d, nil
}

// parseTime accepts an RFC 3339 string or a number of Unix nanoseconds.
func parseTime(raw json.RawMessage) (time.Time, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return time.Parse(time.RFC3339Nano, s)
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return time.Time{}, fmt.Errorf("want an RFC 3339 string or unix nanoseconds, got %s", raw)
	}
	ns, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil {
		f, ferr := n.Float64()
		if ferr != nil {
			return time.Time{}, fmt.Errorf("bad nanoseconds %s", n)
		}
		ns = int64(f)
	}
	return time.Unix(0, ns), nil
}

var maskStrategies = map[string]bool{"redact": true, "partial": true, "hash": true, "tokenize": true, "null": true, "default": true}

// checkObligations checks the shape of obligations (the masking package's
// hook checks what it can apply).
func checkObligations(o *filter.Obligations) error {
	for i, m := range o.Mask {
		if m.Field == "" {
			return fmt.Errorf("policy: obligation mask[%d] has no field", i)
		}
		if !maskStrategies[m.Strategy] {
			return fmt.Errorf("policy: obligation mask[%d] (%s): unknown strategy %q", i, m.Field, m.Strategy)
		}
		if m.Target != "" && m.Target != "value" && m.Target != "key" {
			return fmt.Errorf("policy: obligation mask[%d] (%s): target %q is not value or key", i, m.Field, m.Target)
		}
	}
	if rf := o.RowFilter; rf != nil {
		if rf.Field == "" {
			return fmt.Errorf("policy: row_filter has no field")
		}
		switch rf.Op {
		case "eq":
			if len(rf.Values) != 1 {
				return fmt.Errorf("policy: row_filter op eq needs exactly one value, got %d", len(rf.Values))
			}
		case "in":
			if len(rf.Values) == 0 {
				return fmt.Errorf("policy: row_filter op in needs values")
			}
		default:
			return fmt.Errorf("policy: row_filter op %q is not eq or in", rf.Op)
		}
	}
	return nil
}
