package masking

import (
	"context"
	"errors"
	"fmt"

	"github.com/sluice-gw/sluice/schema"
)

// Reasons of masking failures, used as metric labels and as the prefix of
// the sluice-mask-error header.
const (
	reasonRegistry = "registry" // the registry could not be reached
	reasonFormat   = "format"   // not wire format, or not JSON
	reasonDecode   = "decode"   // the body does not decode under its schema
	reasonRule     = "rule"     // a rule does not apply to the record's schema
	reasonNoSchema = "schema"   // the schema id is unknown
)

// maskError is a failure to mask one record, with a bounded reason.
type maskError struct {
	reason string
	err    error
}

func (e *maskError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *maskError) Unwrap() error { return e.err }

// recordMasker is the Transformer of one partition under one rule set.
type recordMasker struct {
	ctx    context.Context
	p      *Planner
	rs     *RuleSet
	tc     TopicConfig
	row    bool // apply the row filter (fetch only)
	strict bool // any failure is an error (produce), whatever OnError says
	vbuf   []byte
	kbuf   []byte

	// The last plan used, so consecutive records of one schema skip the
	// rule set's lock.
	lastID   int
	lastKey  bool
	lastPlan *Plan
	// Schema ids whose lookup failed during this rewrite: later records
	// fail fast instead of retrying the registry once each.
	failedIDs map[int]*maskError

	failures int
	lastErr  *maskError
	reasons  map[string]int
}

func (m *recordMasker) Transform(key, value []byte, e *RecordEdit) error {
	if m.row && m.rs.row != nil {
		ok, err := m.match(value)
		if err != nil {
			return m.fail(e, err)
		}
		if !ok {
			e.Drop = true
			return nil
		}
	}
	if len(m.rs.value) > 0 && value != nil {
		out, err := m.mask(m.vbuf[:0], value, false)
		if err != nil {
			return m.fail(e, err)
		}
		m.vbuf = out
		e.SetValue, e.Value = true, out
	}
	if len(m.rs.key) > 0 && key != nil {
		out, err := m.mask(m.kbuf[:0], key, true)
		if err != nil {
			return m.fail(e, err)
		}
		m.kbuf = out
		e.SetKey, e.Key = true, out
	}
	return nil
}

// appendValue is the rewriter's fast path (valueAppender): the record's
// masked value appended to dst when the rule set changes values only and
// the record masks without failure. Every other record is Transform's.
func (m *recordMasker) appendValue(dst, value []byte) ([]byte, fastResult) {
	if len(m.rs.key) > 0 || len(m.rs.value) == 0 {
		return dst, fastNo
	}
	if m.row && m.rs.row != nil {
		ok, err := m.match(value)
		if err != nil {
			return dst, fastNo
		}
		if !ok {
			return dst, fastDrop
		}
	}
	out, err := m.mask(dst, value, false)
	if err != nil {
		return dst, fastNo
	}
	return out, fastOK
}

// fail applies the failure policy: never deliver in clear.
func (m *recordMasker) fail(e *RecordEdit, err error) error {
	var me *maskError
	if !errors.As(err, &me) {
		me = &maskError{reasonDecode, err}
	}
	m.failures++
	m.lastErr = me
	if m.reasons == nil {
		m.reasons = make(map[string]int, 2)
	}
	m.reasons[me.reason]++
	if m.strict || m.tc.OnError == OnErrorFailPartition {
		return me
	}
	*e = RecordEdit{SetValue: true, Error: me.Error()}
	if len(m.rs.key) > 0 {
		e.SetKey = true
	}
	return nil
}

func (m *recordMasker) format(key bool) string {
	if key {
		return m.tc.KeyFormat
	}
	return m.tc.Format
}

func (m *recordMasker) mask(dst, v []byte, key bool) ([]byte, error) {
	if m.format(key) == FormatJSON {
		jp, err := m.rs.jsonPlan(key)
		if err != nil {
			return dst, &maskError{reasonRule, err}
		}
		out, err := jp.AppendMasked(dst, v)
		if err != nil {
			return dst, &maskError{reasonFormat, err}
		}
		return out, nil
	}
	id, body, err := schema.ParseWire(v)
	if err != nil {
		return dst, &maskError{reasonFormat, err}
	}
	plan := m.lastPlan
	if plan == nil || m.lastID != id || m.lastKey != key {
		if me := m.failedIDs[id]; me != nil {
			return dst, me
		}
		if plan, err = m.p.plan(m.ctx, m.rs, id, key); err != nil {
			return dst, m.lookupFailed(id, err)
		}
		m.lastID, m.lastKey, m.lastPlan = id, key, plan
	}
	// The header is copied with the value's untouched bytes.
	out, err := plan.appendMaskedAt(dst, v, len(v)-len(body))
	if err != nil {
		return dst, &maskError{reasonDecode, fmt.Errorf("schema id %d: %w", id, err)}
	}
	return out, nil
}

func (m *recordMasker) match(v []byte) (bool, error) {
	if v == nil {
		return false, nil
	}
	if m.tc.Format == FormatJSON {
		ok, err := m.rs.jsonPredicate().match(v)
		if err != nil {
			return false, &maskError{reasonFormat, err}
		}
		return ok, nil
	}
	id, body, err := schema.ParseWire(v)
	if err != nil {
		return false, &maskError{reasonFormat, err}
	}
	if me := m.failedIDs[id]; me != nil {
		return false, me
	}
	pr, err := m.p.predicate(m.ctx, m.rs, id)
	if err != nil {
		return false, m.lookupFailed(id, err)
	}
	ok, err := pr.match(body)
	if err != nil {
		return false, &maskError{reasonDecode, fmt.Errorf("schema id %d: %w", id, err)}
	}
	return ok, nil
}

func classify(err error) *maskError {
	switch {
	case errors.Is(err, schema.ErrUnavailable):
		return &maskError{reasonRegistry, err}
	case errors.Is(err, schema.ErrNotFound):
		return &maskError{reasonNoSchema, err}
	}
	return &maskError{reasonRule, err}
}

func (m *recordMasker) lookupFailed(id int, err error) *maskError {
	me := classify(err)
	if m.failedIDs == nil {
		m.failedIDs = make(map[int]*maskError, 1)
	}
	m.failedIDs[id] = me
	return me
}
