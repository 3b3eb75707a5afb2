package masking

import (
	"encoding/json"
	"fmt"

	"github.com/valyala/fastjson"
)

// JSON masking applies the same paths and strategies to JSON text. JSON has
// no schema, so a path that is absent from a value masks nothing, and the
// strategies map JSON types as follows (null values stay null):
//
//	redact    strings: the replacement; numbers: the replacement if it is
//	          a number, else 0; booleans: false; objects and arrays: the
//	          replacement string
//	partial   strings: as for Avro; other types: redacted
//	hash      strings: the hex HMAC of the string's characters, as for
//	          Avro (so hashes join across formats); other types: the hex
//	          HMAC of the value's JSON text
//	tokenize  like hash, with the token format
//	null      JSON null
//	default   rejected: JSON values have no schema default
type jsonPlan struct {
	root *jnode
}

type jnode struct {
	act     *rule
	fields  map[string]*jnode
	elem    *jnode // [] array elements
	mapVals *jnode // {} object values
}

var (
	jsonParsers fastjson.ParserPool
	jsonArenas  fastjson.ArenaPool
)

func compileJSON(rules []*rule) (*jsonPlan, error) {
	root := &jnode{}
	for _, r := range rules {
		if r.strategy == StrategyDefault {
			return nil, fmt.Errorf("masking: rule %q: default needs a schema default; JSON values have none (use null or redact)", r.raw.Field)
		}
		n := root
		for _, s := range r.path {
			var next **jnode
			switch s.kind {
			case stepField:
				if n.fields == nil {
					n.fields = make(map[string]*jnode)
				}
				if n.fields[s.field] == nil {
					n.fields[s.field] = &jnode{}
				}
				n = n.fields[s.field]
				continue
			case stepArray:
				next = &n.elem
			case stepMap:
				next = &n.mapVals
			}
			if *next == nil {
				*next = &jnode{}
			}
			n = *next
		}
		if n.act != nil && !sameRule(n.act, r) {
			return nil, fmt.Errorf("masking: rules %q and %q mask the same field differently", n.act.raw.Field, r.raw.Field)
		}
		n.act = r
	}
	return &jsonPlan{root: root}, nil
}

func (rs *RuleSet) jsonPlan(key bool) (*jsonPlan, error) {
	i := 0
	rules := rs.value
	if key {
		i, rules = 1, rs.key
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.json[i] == nil {
		p, err := compileJSON(rules)
		if err != nil {
			return nil, err
		}
		rs.json[i] = p
	}
	return rs.json[i], nil
}

// AppendMasked appends the masked JSON text of b to dst.
func (p *jsonPlan) AppendMasked(dst, b []byte) ([]byte, error) {
	ps := jsonParsers.Get()
	defer jsonParsers.Put(ps)
	v, err := ps.ParseBytes(b)
	if err != nil {
		return dst, fmt.Errorf("masking: json: %w", err)
	}
	a := jsonArenas.Get()
	defer jsonArenas.Put(a)
	if err := p.root.apply(v, a); err != nil {
		return dst, err
	}
	return appendJSON(dst, v), nil
}

// appendJSON writes v as JSON. fastjson's MarshalTo escapes a string with
// a quote, a backslash or a control byte by strconv.AppendQuote, whose Go
// escapes (\x00, \v, \a) are not JSON: a key or a kept character like
// that made the whole masked record unparsable.
func appendJSON(dst []byte, v *fastjson.Value) []byte {
	switch v.Type() {
	case fastjson.TypeObject:
		o, _ := v.Object()
		dst = append(dst, '{')
		first := true
		o.Visit(func(k []byte, e *fastjson.Value) {
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendJSON(dst, e)
		})
		return append(dst, '}')
	case fastjson.TypeArray:
		a, _ := v.Array()
		dst = append(dst, '[')
		for i, e := range a {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSON(dst, e)
		}
		return append(dst, ']')
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return appendJSONString(dst, b)
	}
	return v.MarshalTo(dst) // numbers, true, false, null
}

// appendJSONString writes s as a JSON string: quote, backslash and control
// bytes escaped as JSON escapes them, every other byte as it is.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// apply masks below v. Replacements go through the parent (Object.Set,
// SetArrayItem), never through the child pointer: fastjson shares one Value
// for every true, false and null. An object with a duplicate key on a masked
// path is an error, since Set would only replace the first occurrence.
func (n *jnode) apply(v *fastjson.Value, a *fastjson.Arena) error {
	switch v.Type() {
	case fastjson.TypeObject:
		if n.fields == nil && n.mapVals == nil {
			return nil
		}
		o, _ := v.Object()
		type repl struct {
			key string
			v   *fastjson.Value
		}
		var (
			repls []repl
			seen  map[string]struct{}
			err   error
		)
		o.Visit(func(k []byte, c *fastjson.Value) {
			if err != nil {
				return
			}
			if n.fields[string(k)] == nil && n.mapVals == nil {
				return
			}
			if seen == nil {
				seen = make(map[string]struct{}, o.Len())
			}
			if _, dup := seen[string(k)]; dup {
				err = fmt.Errorf("masking: json: duplicate key %q on a masked path", k)
				return
			}
			seen[string(k)] = struct{}{}
			for _, child := range [2]*jnode{n.fields[string(k)], n.mapVals} {
				if child == nil {
					continue
				}
				if child.act != nil {
					if c.Type() != fastjson.TypeNull {
						repls = append(repls, repl{string(k), jsonReplace(c, child.act, a)})
					}
					continue
				}
				if err = child.apply(c, a); err != nil {
					return
				}
			}
		})
		if err != nil {
			return err
		}
		for _, r := range repls {
			o.Set(r.key, r.v)
		}
	case fastjson.TypeArray:
		if n.elem == nil {
			return nil
		}
		items, _ := v.Array()
		for i, c := range items {
			if n.elem.act != nil {
				if c.Type() != fastjson.TypeNull {
					v.SetArrayItem(i, jsonReplace(c, n.elem.act, a))
				}
				continue
			}
			if err := n.elem.apply(c, a); err != nil {
				return err
			}
		}
	}
	return nil
}

func jsonReplace(v *fastjson.Value, r *rule, a *fastjson.Arena) *fastjson.Value {
	var content []byte
	if v.Type() == fastjson.TypeString {
		content, _ = v.StringBytes()
	} else {
		content = v.MarshalTo(nil)
	}
	switch r.strategy {
	case StrategyNull:
		return a.NewNull()
	case StrategyPartial:
		if v.Type() == fastjson.TypeString {
			return a.NewStringBytes(appendPartial(nil, content, r.keepFirst, r.keepLast, r.maskChar))
		}
		return a.NewString(DefaultReplacement)
	case StrategyHash:
		return a.NewStringBytes(r.key.appendHex(nil, content))
	case StrategyTokenize:
		return a.NewStringBytes(r.key.appendToken(nil, content))
	}
	// redact
	switch v.Type() {
	case fastjson.TypeNumber:
		if r.hasReplacement && jsonNumber(r.replacement) {
			return a.NewNumberString(r.replacement)
		}
		return a.NewNumberInt(0)
	case fastjson.TypeTrue, fastjson.TypeFalse:
		return a.NewFalse()
	}
	return a.NewString(r.replacement)
}

// jsonNumber reports whether s is a JSON number literal (strconv accepts
// NaN, Inf, +1, .5, 1. and hex floats, which JSON does not).
func jsonNumber(s string) bool {
	return s != "" && (s[0] == '-' || s[0] >= '0' && s[0] <= '9') && json.Valid([]byte(s))
}

// jsonPredicate is a row filter on JSON values.
type jsonPredicate struct {
	path   []string
	values []string
}

func (rs *RuleSet) jsonPredicate() *jsonPredicate {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.jrow == nil {
		p := &jsonPredicate{values: rs.row.Values}
		for _, s := range rs.rowR.path {
			p.path = append(p.path, s.field)
		}
		rs.jrow = p
	}
	return rs.jrow
}

func (p *jsonPredicate) match(b []byte) (bool, error) {
	ps := jsonParsers.Get()
	defer jsonParsers.Put(ps)
	v, err := ps.ParseBytes(b)
	if err != nil {
		return false, fmt.Errorf("masking: json: %w", err)
	}
	// The path is walked object by object: a key that occurs twice on it
	// fails the record (fastjson would take the first, while consumers'
	// parsers take the last, so the filter would judge a value no
	// consumer reads), and a step that is not an object has no field.
	f := v
	for _, k := range p.path {
		o, err := f.Object()
		if err != nil {
			return false, nil
		}
		var next *fastjson.Value
		n := 0
		o.Visit(func(key []byte, val *fastjson.Value) {
			if string(key) == k {
				n++
				next = val
			}
		})
		if n > 1 {
			return false, fmt.Errorf("masking: json: key %q occurs %d times on the row filter's path", k, n)
		}
		if next == nil {
			return false, nil
		}
		f = next
	}
	var s []byte
	switch f.Type() {
	case fastjson.TypeString:
		s, _ = f.StringBytes()
	case fastjson.TypeNumber, fastjson.TypeTrue, fastjson.TypeFalse:
		s = f.MarshalTo(nil)
	default:
		return false, nil
	}
	for _, want := range p.values {
		if string(s) == want {
			return true, nil
		}
	}
	return false, nil
}
