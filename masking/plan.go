package masking

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/schema"
)

// SchemaSource is what the planner needs of a schema registry;
// *schema.Registry implements it.
type SchemaSource interface {
	SchemaByID(ctx context.Context, id int) (*schema.Schema, error)
	Latest(ctx context.Context, subject string) (*schema.SubjectSchema, error)
	IDInSubject(ctx context.Context, subject string, id int) (bool, error)
}

// Plan masks Avro binary values of one schema under one rule set. It is
// immutable and safe for concurrent use.
type Plan struct {
	root *node
}

// Masks reports whether the plan changes anything.
func (p *Plan) Masks() bool { return p.root.deep }

// AppendMasked appends the masked form of body (an Avro binary value, without
// the wire-format header) to dst. Untouched bytes are copied as they are. On
// error dst is returned unchanged: nothing of body is appended.
func (p *Plan) AppendMasked(dst, body []byte) ([]byte, error) {
	return p.appendMaskedAt(dst, body, 0)
}

// appendMaskedAt is AppendMasked of the Avro value at v[at:], with v[:at]
// (a wire-format header) copied in front of it as it is.
func (p *Plan) appendMaskedAt(dst, v []byte, at int) ([]byte, error) {
	// Field by field: a composite literal here is built in a temporary
	// and copied with 16-byte loads of 8-byte stores, a store-forwarding
	// stall that cost a tenth of a batch rewrite.
	var w walker
	w.src, w.pos, w.dst, w.write = v, at, dst, true
	if err := w.value(p.root); err != nil {
		return dst, err
	}
	if w.pos != len(v) {
		return dst, errTrailing
	}
	return append(w.dst, v[w.mark:]...), nil
}

// Validate checks that body decodes under the plan's schema, consuming every
// byte.
func (p *Plan) Validate(body []byte) error {
	var w walker
	w.src = body
	if err := w.value(p.root); err != nil {
		return err
	}
	if w.pos != len(body) {
		return errTrailing
	}
	return nil
}

// predicate is a compiled row filter on one Avro schema.
type predicate struct {
	root   *node
	values []string
}

// match reports whether body's filter field equals one of the values. A
// field that is null (or in a union branch without it) matches nothing.
func (p *predicate) match(body []byte) (bool, error) {
	var w walker
	w.src = body
	if err := w.value(p.root); err != nil {
		return false, err
	}
	if w.pos != len(body) {
		return false, errTrailing
	}
	if w.foundNode == nil {
		return false, nil
	}
	v := w.found
	var buf [24]byte
	switch w.foundNode.kind {
	case kString, kBytes:
		r := walker{src: v}
		b, err := r.lenPrefixed()
		if err != nil {
			return false, err
		}
		v = b
	case kInt, kLong:
		r := walker{src: v}
		n, err := r.long()
		if err != nil {
			return false, err
		}
		v = strconv.AppendInt(buf[:0], n, 10)
	case kBool:
		if v[0] == 1 {
			v = append(buf[:0], "true"...)
		} else {
			v = append(buf[:0], "false"...)
		}
	case kEnum:
		r := walker{src: v}
		n, err := r.long()
		if err != nil {
			return false, err
		}
		v = append(buf[:0], w.foundNode.act.symbols[n]...)
	}
	for _, want := range p.values {
		if string(v) == want {
			return true, nil
		}
	}
	return false, nil
}

// RuleSet is a parsed set of obligations (mask rules and a row filter),
// with its compiled plans per schema id. Obtain it from Planner.RuleSet.
type RuleSet struct {
	fp    string
	value []*rule
	key   []*rule
	row   *filter.RowFilter
	rowR  *rule

	mu    sync.Mutex
	plans map[planKey]planEntry
	preds map[int]predEntry
	json  [2]*jsonPlan // value, key
	jrow  *jsonPredicate
}

type planKey struct {
	id  int
	key bool
}

type planEntry struct {
	p   *Plan
	err error
}

type predEntry struct {
	p   *predicate
	err error
}

// HasKeyRules reports whether some rule targets record keys.
func (rs *RuleSet) HasKeyRules() bool { return len(rs.key) > 0 }

// HasValueRules reports whether some rule targets record values.
func (rs *RuleSet) HasValueRules() bool { return len(rs.value) > 0 }

// RowFilter returns the row filter, nil if none.
func (rs *RuleSet) RowFilter() *filter.RowFilter { return rs.row }

// Planner compiles obligations into rule sets and plans and caches them. It
// is safe for concurrent use.
type Planner struct {
	cfg  Config
	reg  SchemaSource
	keys *Keys

	mu         sync.Mutex
	sets       map[string]*RuleSet
	validators map[int]*Plan
}

// maxRuleSets bounds the rule-set cache; it is cleared when full.
const maxRuleSets = 4096

// NewPlanner builds a planner; reg may be nil when no topic is Avro.
func NewPlanner(cfg Config, reg SchemaSource, keys *Keys) *Planner {
	return &Planner{cfg: cfg, reg: reg, keys: keys, sets: make(map[string]*RuleSet)}
}

// fingerprint is a canonical, unambiguous encoding of obligations' rules
// and row filter: every string is length-prefixed and every list counted,
// so no choice of field names, parameters or values (control bytes
// included) makes two different rule sets encode alike and share a cached
// RuleSet.
func fingerprint(rules []filter.MaskRule, row *filter.RowFilter) string {
	b := make([]byte, 0, 64*len(rules)+16)
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(rules)))
	for _, r := range rules {
		str(r.Field)
		str(r.Strategy)
		str(r.Target)
		keys := make([]string, 0, len(r.Params))
		for k := range r.Params {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = binary.AppendUvarint(b, uint64(len(keys)))
		for _, k := range keys {
			str(k)
			str(r.Params[k])
		}
	}
	if row != nil {
		b = append(b, 1)
		str(row.Field)
		str(row.Op)
		b = binary.AppendUvarint(b, uint64(len(row.Values)))
		for _, v := range row.Values {
			str(v)
		}
	}
	return string(b)
}

// RuleSet parses obligations, from the cache when the same rules were seen.
func (p *Planner) RuleSet(o *filter.Obligations) (*RuleSet, error) {
	fp := fingerprint(o.Mask, o.RowFilter)
	p.mu.Lock()
	rs, ok := p.sets[fp]
	p.mu.Unlock()
	if ok {
		return rs, nil
	}
	rs = &RuleSet{fp: fp, plans: make(map[planKey]planEntry), preds: make(map[int]predEntry)}
	for _, mr := range o.Mask {
		r, err := parseRule(mr, p.keys)
		if err != nil {
			return nil, err
		}
		if mr.Target == "key" {
			rs.key = append(rs.key, r)
		} else {
			rs.value = append(rs.value, r)
		}
	}
	if rf := o.RowFilter; rf != nil {
		if rf.Op != "eq" && rf.Op != "in" {
			return nil, fmt.Errorf("masking: row filter on %q: unknown op %q", rf.Field, rf.Op)
		}
		if rf.Op == "eq" && len(rf.Values) != 1 {
			return nil, fmt.Errorf("masking: row filter on %q: eq takes one value", rf.Field)
		}
		if len(rf.Values) == 0 {
			return nil, fmt.Errorf("masking: row filter on %q: no values", rf.Field)
		}
		path, err := parsePath(rf.Field)
		if err != nil {
			return nil, err
		}
		for _, s := range path {
			if s.kind != stepField {
				return nil, fmt.Errorf("masking: row filter on %q: the path cannot go through arrays or maps", rf.Field)
			}
		}
		rs.row = rf
		rs.rowR = &rule{raw: filter.MaskRule{Field: rf.Field, Strategy: strategyExtract}, path: path, strategy: strategyExtract}
	}
	p.mu.Lock()
	if len(p.sets) >= maxRuleSets {
		clear(p.sets)
	}
	p.sets[fp] = rs
	p.mu.Unlock()
	return rs, nil
}

// plan returns the compiled plan of rs for schema id (value or key rules).
// Compile errors are cached; registry errors are not.
func (p *Planner) plan(ctx context.Context, rs *RuleSet, id int, key bool) (*Plan, error) {
	k := planKey{id, key}
	rs.mu.Lock()
	e, ok := rs.plans[k]
	rs.mu.Unlock()
	if ok {
		return e.p, e.err
	}
	if p.reg == nil {
		return nil, fmt.Errorf("masking: no schema registry configured for schema id %d", id)
	}
	s, err := p.reg.SchemaByID(ctx, id)
	if err != nil {
		return nil, err
	}
	rules := rs.value
	if key {
		rules = rs.key
	}
	e.p, e.err = compileSchema(s, rules)
	rs.mu.Lock()
	rs.plans[k] = e
	rs.mu.Unlock()
	return e.p, e.err
}

func compileSchema(s *schema.Schema, rules []*rule) (*Plan, error) {
	if s.Avro == nil {
		return nil, fmt.Errorf("masking: schema id %d is %s, not avro", s.ID, s.Type)
	}
	root, err := compileAvro(s.Avro, rules)
	if err != nil {
		return nil, fmt.Errorf("%w (schema id %d)", err, s.ID)
	}
	return &Plan{root: root}, nil
}

func (p *Planner) predicate(ctx context.Context, rs *RuleSet, id int) (*predicate, error) {
	rs.mu.Lock()
	e, ok := rs.preds[id]
	rs.mu.Unlock()
	if ok {
		return e.p, e.err
	}
	if p.reg == nil {
		return nil, fmt.Errorf("masking: no schema registry configured for schema id %d", id)
	}
	s, err := p.reg.SchemaByID(ctx, id)
	if err != nil {
		return nil, err
	}
	pl, err := compileSchema(s, []*rule{rs.rowR})
	if err == nil {
		e.p = &predicate{root: pl.root, values: rs.row.Values}
	}
	e.err = err
	rs.mu.Lock()
	rs.preds[id] = e
	rs.mu.Unlock()
	return e.p, e.err
}

// Validate compiles rules against the latest schema registered for the
// topic's value (and key, for key rules) subject, or checks them as JSON
// paths for JSON topics, so that a rule which cannot apply is rejected when
// a policy is loaded rather than at fetch time.
func (p *Planner) Validate(ctx context.Context, topic string, rules []filter.MaskRule) error {
	return p.ValidateObligations(ctx, topic, &filter.Obligations{Mask: rules})
}

// ValidateObligations is Validate for mask rules and a row filter.
func (p *Planner) ValidateObligations(ctx context.Context, topic string, o *filter.Obligations) error {
	rs, err := p.RuleSet(o)
	if err != nil {
		return err
	}
	tc := p.cfg.Topic(topic)
	check := func(format, subject string, rules []*rule, key bool) error {
		if format == FormatJSON {
			_, err := rs.jsonPlan(key)
			return err
		}
		if p.reg == nil {
			return fmt.Errorf("masking: topic %q is avro but no schema registry is configured", topic)
		}
		ss, err := p.reg.Latest(ctx, subject)
		if errors.Is(err, schema.ErrNotFound) {
			// No schema yet (or a topic pattern): nothing to check
			// against now. Plans compiled at fetch time still fail
			// closed if a rule cannot apply.
			return nil
		}
		if err != nil {
			return fmt.Errorf("masking: topic %q: %w", topic, err)
		}
		_, err = compileSchema(ss.Schema, rules)
		return err
	}
	if rs.rowR != nil && tc.Format != FormatJSON {
		if err := check(tc.Format, schema.ValueSubject(topic), []*rule{rs.rowR}, false); err != nil {
			return err
		}
	}
	if len(rs.value) > 0 {
		if err := check(tc.Format, schema.ValueSubject(topic), rs.value, false); err != nil {
			return err
		}
	}
	if len(rs.key) > 0 {
		if err := check(tc.KeyFormat, schema.KeySubject(topic), rs.key, true); err != nil {
			return err
		}
	}
	return nil
}

// validator returns the rule-free plan of a schema, which validates bodies.
func (p *Planner) validator(s *schema.Schema) (*Plan, error) {
	p.mu.Lock()
	if p.validators == nil {
		p.validators = make(map[int]*Plan)
	}
	pl, ok := p.validators[s.ID]
	p.mu.Unlock()
	if ok {
		return pl, nil
	}
	pl, err := compileSchema(s, nil)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if len(p.validators) >= maxRuleSets {
		clear(p.validators)
	}
	p.validators[s.ID] = pl
	p.mu.Unlock()
	return pl, nil
}
