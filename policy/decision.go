package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

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
	ExpiresAt time.Time `json:"expires_at,omitzero"`
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

// parseResult parses the value of an evaluation's expression: the AST term
// keepTerm left, or (for a query that is not a term, such as a comparison)
// a bool, which is not a decision.
func parseResult(v any, memo *obligationsMemo) (Decision, error) {
	t, ok := v.(*ast.Term)
	if !ok {
		return Decision{}, fmt.Errorf("policy: decision must be an object, got %T", v)
	}
	return parseOutputTerm(t, memo)
}

// parseOutputTerm converts the policy's result, as OPA's evaluator leaves
// it (an AST term), into a Decision. Only the values of the decision's keys
// are converted to Go values, not the object around them, and obligations
// seen before come from memo (which may be nil). Unknown keys are errors.
func parseOutputTerm(t *ast.Term, memo *obligationsMemo) (Decision, error) {
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return Decision{}, fmt.Errorf("policy: decision must be an object, got %s", ast.ValueName(t.Value))
	}
	var d Decision
	seenAllow := false
	err := obj.Iter(func(k, v *ast.Term) error {
		ks, ok := k.Value.(ast.String)
		if !ok {
			return fmt.Errorf("policy: decision has a non-string key %v", k)
		}
		if ks == "obligations" {
			if _, null := v.Value.(ast.Null); null {
				return nil
			}
			ob, err := memo.parse(v.Value)
			d.Obligations = ob
			return err
		}
		val, err := ast.JSON(v.Value)
		if err != nil {
			return fmt.Errorf("policy: decision %s: %w", ks, err)
		}
		return d.set(string(ks), val, &seenAllow)
	})
	if err != nil {
		return Decision{}, err
	}
	return d.finish(seenAllow)
}

// obligationsMemo remembers the obligations parsed from a revision's
// output values. A policy derives obligations from its data, so it yields
// few distinct ones, each again and again: for every principal of an
// organisation, and whenever a cached decision has lapsed. Equal values
// (ast.Compare) parse to equal obligations, since obligations hold only
// strings, lists and objects. The memo stops growing at
// obligationsMemoMax entries; later values are parsed every time.
type obligationsMemo struct {
	mu sync.Mutex
	m  map[int][]memoEntry
	n  int
}

type memoEntry struct {
	v  ast.Value
	ob *filter.Obligations
}

const obligationsMemoMax = 4096

func newObligationsMemo() *obligationsMemo {
	return &obligationsMemo{m: map[int][]memoEntry{}}
}

// parse returns the obligations v stands for, checked. The result is
// shared: never modify it.
func (m *obligationsMemo) parse(v ast.Value) (*filter.Obligations, error) {
	if m == nil {
		return parseObligations(v)
	}
	h := v.Hash()
	m.mu.Lock()
	for _, e := range m.m[h] {
		if e.v.Compare(v) == 0 {
			m.mu.Unlock()
			return e.ob, nil
		}
	}
	m.mu.Unlock()
	ob, err := parseObligations(v)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.n < obligationsMemoMax {
		m.m[h] = append(m.m[h], memoEntry{v: v, ob: ob})
		m.n++
	}
	m.mu.Unlock()
	return ob, nil
}

func parseObligations(v ast.Value) (*filter.Obligations, error) {
	val, err := ast.JSON(v)
	if err != nil {
		return nil, fmt.Errorf("policy: decision obligations: %w", err)
	}
	ob, err := obligationsValue(val)
	if err != nil {
		return nil, err
	}
	if err := checkObligations(ob); err != nil {
		return nil, err
	}
	return ob, nil
}

// set sets the decision's field k (any but obligations) from its value in
// the policy's output.
func (d *Decision) set(k string, val any, seenAllow *bool) error {
	switch k {
	case "allow":
		b, ok := val.(bool)
		if !ok {
			return fmt.Errorf("policy: decision allow must be a boolean, got %T", val)
		}
		d.Allow, *seenAllow = b, true
	case "reason":
		s, ok := val.(string)
		if !ok {
			return fmt.Errorf("policy: decision reason must be a string, got %T", val)
		}
		d.Reason = s
	case "cache":
		b, ok := val.(bool)
		if !ok {
			return fmt.Errorf("policy: decision cache must be a boolean, got %T", val)
		}
		d.NoCache = !b
	case "expires_at":
		t, err := timeValue(val)
		if err != nil {
			return fmt.Errorf("policy: decision expires_at: %w", err)
		}
		d.ExpiresAt = t
	default: // obligations are parsed by parseOutputTerm
		return fmt.Errorf("policy: decision has unknown key %q", k)
	}
	return nil
}

func (d *Decision) finish(seenAllow bool) (Decision, error) {
	if !seenAllow {
		return Decision{}, fmt.Errorf("policy: decision has no allow field")
	}
	if !d.Allow {
		d.Obligations = nil
	}
	return *d, nil
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

// obligationsValue converts the obligations object without a JSON round
// trip; unknown keys and wrong types are errors.
func obligationsValue(v any) (*filter.Obligations, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("policy: obligations must be an object, got %T", v)
	}
	o := &filter.Obligations{}
	for k, val := range m {
		var err error
		switch k {
		case "grant_id":
			o.GrantID, err = stringValue(k, val)
		case "purpose":
			o.Purpose, err = stringValue(k, val)
		case "mask":
			o.Mask, err = maskValue(val)
		case "row_filter":
			o.RowFilter, err = rowFilterValue(val)
		default:
			err = fmt.Errorf("policy: obligations has unknown key %q", k)
		}
		if err != nil {
			return nil, err
		}
	}
	return o, nil
}

func stringValue(k string, v any) (string, error) {
	switch s := v.(type) {
	case nil:
		return "", nil
	case string:
		return s, nil
	}
	return "", fmt.Errorf("policy: obligations %s must be a string, got %T", k, v)
}

func stringsValue(k string, v any) ([]string, error) {
	l, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("policy: %s must be a list, got %T", k, v)
	}
	out := make([]string, len(l))
	for i, e := range l {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("policy: %s[%d] must be a string, got %T", k, i, e)
		}
		out[i] = s
	}
	return out, nil
}

func maskValue(v any) ([]filter.MaskRule, error) {
	if v == nil {
		return nil, nil
	}
	l, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("policy: obligations mask must be a list, got %T", v)
	}
	out := make([]filter.MaskRule, 0, len(l))
	for i, e := range l {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("policy: mask[%d] must be an object, got %T", i, e)
		}
		var r filter.MaskRule
		for k, val := range m {
			var err error
			switch k {
			case "field":
				r.Field, err = stringValue("mask field", val)
			case "strategy":
				r.Strategy, err = stringValue("mask strategy", val)
			case "target":
				r.Target, err = stringValue("mask target", val)
			case "params":
				pm, ok := val.(map[string]any)
				if !ok && val != nil {
					return nil, fmt.Errorf("policy: mask[%d] params must be an object, got %T", i, val)
				}
				if len(pm) > 0 {
					r.Params = make(map[string]string, len(pm))
				}
				for pk, pv := range pm {
					s, ok := pv.(string)
					if !ok {
						return nil, fmt.Errorf("policy: mask[%d] param %s must be a string, got %T", i, pk, pv)
					}
					r.Params[pk] = s
				}
			default:
				err = fmt.Errorf("policy: mask[%d] has unknown key %q", i, k)
			}
			if err != nil {
				return nil, err
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func rowFilterValue(v any) (*filter.RowFilter, error) {
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("policy: row_filter must be an object, got %T", v)
	}
	rf := &filter.RowFilter{}
	for k, val := range m {
		var err error
		switch k {
		case "field":
			rf.Field, err = stringValue("row_filter field", val)
		case "op":
			rf.Op, err = stringValue("row_filter op", val)
		case "values":
			rf.Values, err = stringsValue("row_filter values", val)
		default:
			err = fmt.Errorf("policy: row_filter has unknown key %q", k)
		}
		if err != nil {
			return nil, err
		}
	}
	return rf, nil
}
