package masking

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/hamba/avro/v2"
)

// kind is the wire shape of an Avro value.
type kind uint8

const (
	kNull kind = iota
	kBool
	kInt
	kLong
	kFloat
	kDouble
	kBytes
	kString
	kFixed
	kEnum
	kRecord
	kArray
	kMap
	kUnion
)

// node is one schema position of a compiled plan. Nodes of subtrees without
// rules are shared (and may be cyclic for recursive schemas); nodes on a
// rule's path are built per plan.
type node struct {
	kind     kind
	size     int // byte size of fixed, float and double; symbol count for enums
	fields   []*node
	elem     *node   // array items, map values
	branches []*node // union branches
	act      *action // replace the whole value
	deep     bool    // act != nil or a descendant has one
	zero     bool    // the value may encode to zero bytes
	name     string  // for error messages
}

// action replaces one value.
type action struct {
	kind      actKind
	konst     []byte   // actConst: the complete encoding of the replacement
	symbols   []string // actExtract of an enum
	keepFirst int
	keepLast  int
	maskChar  string
	key       *keyedHash
}

type actKind uint8

const (
	actConst actKind = iota
	actPartial
	actHash
	actToken
	actExtract // row filters: remember the value, do not replace it
)

// errNoPath marks a path step that does not exist in a schema; a union
// tolerates it in some of its branches.
var errNoPath = errors.New("no such path")

type compiler struct {
	shared map[string]*node // plain (rule-free) nodes of named types
}

type prule struct {
	r    *rule
	rest []step
}

// compileAvro builds the plan tree of s for rules.
func compileAvro(s avro.Schema, rules []*rule) (*node, error) {
	c := &compiler{shared: make(map[string]*node)}
	prs := make([]prule, len(rules))
	for i, r := range rules {
		prs[i] = prule{r, r.path}
	}
	return c.build(s, prs, nil)
}

func deref(s avro.Schema) avro.Schema {
	for {
		r, ok := s.(*avro.RefSchema)
		if !ok {
			return s
		}
		s = r.Schema()
	}
}

func (c *compiler) build(s avro.Schema, rules []prule, field *avro.Field) (*node, error) {
	s = deref(s)
	if len(rules) == 0 {
		return c.plain(s)
	}
	var target *prule
	var deeper []prule
	for i := range rules {
		if len(rules[i].rest) == 0 {
			if target != nil && !sameRule(target.r, rules[i].r) {
				return nil, fmt.Errorf("masking: rules %q (%s) and %q (%s) mask the same field differently",
					target.r.raw.Field, target.r.strategy, rules[i].r.raw.Field, rules[i].r.strategy)
			}
			target = &rules[i]
		} else {
			deeper = append(deeper, rules[i])
		}
	}
	if target != nil {
		// A masked value hides everything below it; deeper rules are moot
		// but must still name real paths.
		for _, d := range deeper {
			if err := pathExists(s, d.rest); err != nil {
				return nil, fmt.Errorf("masking: rule %q: %w", d.r.raw.Field, err)
			}
		}
		return c.target(s, target.r, field)
	}
	n, err := c.shell(s)
	if err != nil {
		return nil, err
	}
	n.deep = true
	switch s := s.(type) {
	case *avro.RecordSchema:
		byField := make(map[string][]prule)
		for _, r := range deeper {
			st := r.rest[0]
			if st.kind != stepField {
				return nil, fmt.Errorf("masking: rule %q: %s is a record, not a collection", r.r.raw.Field, s.FullName())
			}
			if !slices.ContainsFunc(s.Fields(), func(f *avro.Field) bool { return f.Name() == st.field }) {
				return nil, fmt.Errorf("masking: rule %q: record %s has no field %q: %w", r.r.raw.Field, s.FullName(), st.field, errNoPath)
			}
			byField[st.field] = append(byField[st.field], prule{r.r, r.rest[1:]})
		}
		n.fields = make([]*node, len(s.Fields()))
		n.zero = true // a record of zero-byte fields takes no input bytes (blocks bounds such items apart)
		for i, f := range s.Fields() {
			if n.fields[i], err = c.build(f.Type(), byField[f.Name()], f); err != nil {
				return nil, err
			}
			n.zero = n.zero && n.fields[i].zero
		}
	case *avro.ArraySchema:
		next, err := c.collectionRules(deeper, stepArray, "array")
		if err != nil {
			return nil, err
		}
		if n.elem, err = c.build(s.Items(), next, nil); err != nil {
			return nil, err
		}
	case *avro.MapSchema:
		next, err := c.collectionRules(deeper, stepMap, "map")
		if err != nil {
			return nil, err
		}
		if n.elem, err = c.build(s.Values(), next, nil); err != nil {
			return nil, err
		}
	case *avro.UnionSchema:
		for _, r := range deeper {
			ok := false
			for _, b := range s.Types() {
				if pathExists(b, r.rest) == nil {
					ok = true
				}
			}
			if !ok {
				return nil, fmt.Errorf("masking: rule %q: no branch of union %s has path %q: %w", r.r.raw.Field, s, stepsString(r.rest), errNoPath)
			}
		}
		n.branches = make([]*node, len(s.Types()))
		for i, b := range s.Types() {
			var sub []prule
			for _, r := range deeper {
				if pathExists(b, r.rest) == nil {
					sub = append(sub, r)
				}
			}
			if n.branches[i], err = c.build(b, sub, nil); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("masking: rule %q: %s has no field %q: %w", deeper[0].r.raw.Field, s.Type(), stepsString(deeper[0].rest), errNoPath)
	}
	return n, nil
}

func (c *compiler) collectionRules(rules []prule, want stepKind, what string) ([]prule, error) {
	next := make([]prule, 0, len(rules))
	for _, r := range rules {
		if r.rest[0].kind != want {
			return nil, fmt.Errorf("masking: rule %q: field is a %s, the path must say %s there: %w", r.r.raw.Field, what, step{kind: want}, errNoPath)
		}
		next = append(next, prule{r.r, r.rest[1:]})
	}
	return next, nil
}

func sameRule(a, b *rule) bool {
	return a.strategy == b.strategy && a.replacement == b.replacement && a.keepFirst == b.keepFirst &&
		a.keepLast == b.keepLast && a.maskChar == b.maskChar && a.key == b.key
}

func stepsString(st []step) string {
	var sb strings.Builder
	for i, s := range st {
		if i > 0 && s.kind == stepField {
			sb.WriteByte('.')
		}
		sb.WriteString(s.String())
	}
	return sb.String()
}

// pathExists reports whether steps lead somewhere in s (through unions).
func pathExists(s avro.Schema, steps []step) error {
	s = deref(s)
	if len(steps) == 0 {
		return nil
	}
	switch s := s.(type) {
	case *avro.RecordSchema:
		if steps[0].kind == stepField {
			for _, f := range s.Fields() {
				if f.Name() == steps[0].field {
					return pathExists(f.Type(), steps[1:])
				}
			}
		}
	case *avro.ArraySchema:
		if steps[0].kind == stepArray {
			return pathExists(s.Items(), steps[1:])
		}
	case *avro.MapSchema:
		if steps[0].kind == stepMap {
			return pathExists(s.Values(), steps[1:])
		}
	case *avro.UnionSchema:
		for _, b := range s.Types() {
			if pathExists(b, steps) == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("%s has no path %q: %w", s.Type(), stepsString(steps), errNoPath)
}

// shell returns a node of s's kind with no children.
func (c *compiler) shell(s avro.Schema) (*node, error) {
	n := &node{}
	switch s := s.(type) {
	case *avro.NullSchema:
		n.kind, n.zero, n.name = kNull, true, "null"
	case *avro.PrimitiveSchema:
		n.name = string(s.Type())
		switch s.Type() {
		case avro.Null:
			n.kind, n.zero = kNull, true
		case avro.Boolean:
			n.kind = kBool
		case avro.Int:
			n.kind = kInt
		case avro.Long:
			n.kind = kLong
		case avro.Float:
			n.kind, n.size = kFloat, 4
		case avro.Double:
			n.kind, n.size = kDouble, 8
		case avro.Bytes:
			n.kind = kBytes
		case avro.String:
			n.kind = kString
		default:
			return nil, fmt.Errorf("masking: unsupported primitive %s", s.Type())
		}
	case *avro.FixedSchema:
		n.kind, n.size, n.zero, n.name = kFixed, s.Size(), s.Size() == 0, s.FullName()
	case *avro.EnumSchema:
		n.kind, n.size, n.name = kEnum, len(s.Symbols()), s.FullName()
	case *avro.RecordSchema:
		n.kind, n.name = kRecord, s.FullName()
	case *avro.ArraySchema:
		n.kind, n.name = kArray, "array"
	case *avro.MapSchema:
		n.kind, n.name = kMap, "map"
	case *avro.UnionSchema:
		n.kind, n.name = kUnion, "union"
	default:
		return nil, fmt.Errorf("masking: unsupported schema %T", s)
	}
	return n, nil
}

// plain builds the rule-free node of s, shared by full name for named types
// so recursive schemas terminate.
func (c *compiler) plain(s avro.Schema) (*node, error) {
	named, isNamed := s.(avro.NamedSchema)
	if isNamed {
		if n, ok := c.shared[named.FullName()]; ok {
			return n, nil
		}
	}
	n, err := c.shell(s)
	if err != nil {
		return nil, err
	}
	if isNamed {
		c.shared[named.FullName()] = n
	}
	switch s := s.(type) {
	case *avro.RecordSchema:
		n.fields = make([]*node, len(s.Fields()))
		n.zero = true
		for i, f := range s.Fields() {
			if n.fields[i], err = c.plain(deref(f.Type())); err != nil {
				return nil, err
			}
			// A recursive record reached again is not complete yet;
			// its zero flag is conservatively false.
			n.zero = n.zero && n.fields[i].zero
		}
	case *avro.ArraySchema:
		n.elem, err = c.plain(deref(s.Items()))
	case *avro.MapSchema:
		n.elem, err = c.plain(deref(s.Values()))
	case *avro.UnionSchema:
		n.branches = make([]*node, len(s.Types()))
		for i, b := range s.Types() {
			if n.branches[i], err = c.plain(deref(b)); err != nil {
				return nil, err
			}
		}
	}
	return n, err
}

// target builds the node of a value masked by r.
func (c *compiler) target(s avro.Schema, r *rule, field *avro.Field) (*node, error) {
	fail := func(why string, args ...any) error {
		return fmt.Errorf("masking: rule %q: %s cannot apply to %s: %s", r.raw.Field, r.strategy, typeName(s), fmt.Sprintf(why, args...))
	}
	n, err := c.plain(s)
	if err != nil {
		return nil, err
	}
	// Copy the shared plain node: this one carries an action.
	cp := *n
	n = &cp
	n.deep = true
	switch r.strategy {
	case StrategyNull:
		if s.Type() == avro.Null {
			n.act = &action{kind: actConst}
			return n, nil
		}
		u, ok := s.(*avro.UnionSchema)
		if !ok {
			return nil, fail("the field is not nullable")
		}
		idx := slices.IndexFunc(u.Types(), func(b avro.Schema) bool { return b.Type() == avro.Null })
		if idx < 0 {
			return nil, fail("the union has no null branch")
		}
		n.act = &action{kind: actConst, konst: appendLong(nil, int64(idx))}
		return n, nil
	case StrategyDefault:
		if field == nil || !field.HasDefault() {
			return nil, fail("the field has no default in the schema")
		}
		b, err := avro.Marshal(field.Type(), field.Default())
		if err != nil {
			return nil, fail("encode default: %v", err)
		}
		n.act = &action{kind: actConst, konst: b}
		return n, nil
	}
	if u, ok := s.(*avro.UnionSchema); ok {
		// Mask every non-null branch; the null branch stays null.
		n.branches = make([]*node, len(u.Types()))
		for i, b := range u.Types() {
			b = deref(b)
			if b.Type() == avro.Null || r.strategy == strategyExtract && !scalar(b) {
				// Null stays null; a row filter never matches a
				// non-scalar branch.
				if n.branches[i], err = c.plain(b); err != nil {
					return nil, err
				}
				continue
			}
			if n.branches[i], err = c.target(b, r, nil); err != nil {
				return nil, err
			}
		}
		return n, nil
	}
	logical := logicalOf(s)
	switch r.strategy {
	case strategyExtract:
		switch n.kind {
		case kString, kBytes, kInt, kLong, kBool:
		case kEnum:
			n.act = &action{kind: actExtract, symbols: s.(*avro.EnumSchema).Symbols()}
			return n, nil
		default:
			return nil, fail("row filters compare strings, enums, integers and booleans")
		}
		n.act = &action{kind: actExtract}
	case StrategyRedact:
		if n.act, err = redactAction(s, r, logical); err != nil {
			return nil, fail("%v", err)
		}
	case StrategyPartial, StrategyHash, StrategyTokenize:
		if n.kind != kString && n.kind != kBytes {
			return nil, fail("it only applies to strings and bytes")
		}
		if logical != "" {
			return nil, fail("the output would not be a valid %s", logical)
		}
		switch r.strategy {
		case StrategyPartial:
			if n.kind != kString {
				return nil, fail("it only applies to strings")
			}
			n.act = &action{kind: actPartial, keepFirst: r.keepFirst, keepLast: r.keepLast, maskChar: r.maskChar}
		case StrategyHash:
			n.act = &action{kind: actHash, key: r.key}
		default:
			n.act = &action{kind: actToken, key: r.key}
		}
	}
	return n, nil
}

func typeName(s avro.Schema) string {
	if l := logicalOf(s); l != "" {
		return fmt.Sprintf("%s (%s)", s.Type(), l)
	}
	if n, ok := s.(avro.NamedSchema); ok {
		return fmt.Sprintf("%s %s", s.Type(), n.FullName())
	}
	return string(s.Type())
}

func logicalOf(s avro.Schema) avro.LogicalType {
	if l, ok := s.(avro.LogicalTypeSchema); ok && l.Logical() != nil {
		return l.Logical().Type()
	}
	return ""
}

// redactAction is the constant a redacted value of s becomes. Strings and
// bytes become the replacement text; numbers become the replacement if it
// parses as one, else zero; booleans false; fixed all zero bytes; arrays and
// maps empty; enums the replacement symbol or the enum's default. Logical
// types become their zero: uuid the nil UUID, decimal 0, dates and times the
// epoch.
func redactAction(s avro.Schema, r *rule, logical avro.LogicalType) (*action, error) {
	var b []byte
	repl := r.replacement
	switch s := s.(type) {
	case *avro.PrimitiveSchema:
		switch s.Type() {
		case avro.String:
			if logical == avro.UUID {
				repl = "00000000-0000-0000-0000-000000000000"
			}
			b = appendBytes(nil, []byte(repl))
		case avro.Bytes:
			if logical == avro.Decimal {
				b = appendBytes(nil, []byte{0})
			} else {
				b = appendBytes(nil, []byte(repl))
			}
		case avro.Int, avro.Long:
			v, err := strconv.ParseInt(repl, 10, 64)
			if err != nil || !r.hasReplacement || logical != "" || (s.Type() == avro.Int && (v < math.MinInt32 || v > math.MaxInt32)) {
				v = 0
			}
			b = appendLong(nil, v)
		case avro.Float:
			v, err := strconv.ParseFloat(repl, 32)
			if err != nil || !r.hasReplacement {
				v = 0
			}
			b = binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(v)))
		case avro.Double:
			v, err := strconv.ParseFloat(repl, 64)
			if err != nil || !r.hasReplacement {
				v = 0
			}
			b = binary.LittleEndian.AppendUint64(nil, math.Float64bits(v))
		case avro.Boolean:
			b = []byte{0}
		default:
			return nil, errors.New("nothing to redact")
		}
	case *avro.FixedSchema:
		b = make([]byte, s.Size())
	case *avro.EnumSchema:
		sym := s.Default()
		if r.hasReplacement {
			sym = r.replacement
		}
		i := slices.Index(s.Symbols(), sym)
		if i < 0 {
			return nil, fmt.Errorf("set the replacement parameter to one of the symbols %v", s.Symbols())
		}
		b = appendLong(nil, int64(i))
	case *avro.ArraySchema, *avro.MapSchema:
		b = []byte{0}
	case *avro.RecordSchema:
		return nil, errors.New("mask its fields, or use null or default")
	default:
		return nil, fmt.Errorf("unsupported schema %T", s)
	}
	return &action{kind: actConst, konst: b}, nil
}

func appendLong(dst []byte, v int64) []byte {
	return binary.AppendUvarint(dst, uint64(v<<1)^uint64(v>>63))
}

func appendBytes(dst, b []byte) []byte {
	return append(appendLong(dst, int64(len(b))), b...)
}

func scalar(s avro.Schema) bool {
	switch s.Type() {
	case avro.String, avro.Bytes, avro.Int, avro.Long, avro.Boolean, avro.Enum:
		return true
	}
	return false
}
