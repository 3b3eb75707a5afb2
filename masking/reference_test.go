package masking

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/hamba/avro/v2"

	"github.com/sluice-gw/sluice/schema"
)

// refMask is the slow reference masker: decode into generic values with
// hamba/avro, mask the values, encode again. Tests only.
func refMask(s avro.Schema, rules []*rule, body []byte) ([]byte, error) {
	var v any
	if err := refAPI.Unmarshal(s, body, &v); err != nil {
		return nil, err
	}
	for _, r := range rules {
		var err error
		v, err = refApply(s, v, r.path, r, nil)
		if err != nil {
			return nil, err
		}
	}
	return refAPI.Marshal(s, v)
}

// refAPI encodes arrays and maps with plain counts, as the walker does.
var refAPI = avro.Config{DisableBlockSizeHeader: true}.Freeze()

func refApply(s avro.Schema, v any, path []step, r *rule, field *avro.Field) (any, error) {
	s = deref(s)
	if len(path) == 0 {
		return refTarget(s, v, r, field)
	}
	switch s := s.(type) {
	case *avro.RecordSchema:
		m := v.(map[string]any)
		for _, f := range s.Fields() {
			if f.Name() == path[0].field {
				nv, err := refApply(f.Type(), m[f.Name()], path[1:], r, f)
				m[f.Name()] = nv
				return m, err
			}
		}
	case *avro.ArraySchema:
		a := v.([]any)
		for i := range a {
			var err error
			if a[i], err = refApply(s.Items(), a[i], path[1:], r, nil); err != nil {
				return nil, err
			}
		}
		return a, nil
	case *avro.MapSchema:
		m := v.(map[string]any)
		for k := range m {
			nv, err := refApply(s.Values(), m[k], path[1:], r, nil)
			if err != nil {
				return nil, err
			}
			m[k] = nv
		}
		return m, nil
	case *avro.UnionSchema:
		if v == nil {
			return nil, nil
		}
		b, bv, wrap := unionResolve(s, v)
		if pathExists(b, path) != nil {
			return v, nil
		}
		nv, err := refApply(b, bv, path, r, nil)
		return wrap(nv), err
	}
	return nil, fmt.Errorf("reference: no path")
}

// unionResolve finds the branch of a generically decoded union value: named
// types come wrapped as {"full.name": value}, primitives bare.
func unionResolve(u *avro.UnionSchema, v any) (avro.Schema, any, func(any) any) {
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		for k, bv := range m {
			if b := unionBranch(u, k); b != nil {
				return b, bv, func(nv any) any { return map[string]any{k: nv} }
			}
		}
	}
	want := map[reflect.Type]avro.Type{
		reflect.TypeFor[string](): avro.String, reflect.TypeFor[int64](): avro.Long, reflect.TypeFor[int](): avro.Int,
		reflect.TypeFor[[]byte](): avro.Bytes, reflect.TypeFor[bool](): avro.Boolean, reflect.TypeFor[float64](): avro.Double,
		reflect.TypeFor[float32](): avro.Float,
	}[reflect.TypeOf(v)]
	for _, b := range u.Types() {
		if b = deref(b); b.Type() == want {
			return b, v, func(nv any) any { return nv }
		}
	}
	panic(fmt.Sprintf("reference: no union branch for %T", v))
}

func unionBranch(u *avro.UnionSchema, name string) avro.Schema {
	for _, b := range u.Types() {
		b = deref(b)
		n := string(b.Type())
		if ns, ok := b.(avro.NamedSchema); ok {
			n = ns.FullName()
		} else if l := logicalOf(b); l != "" {
			n += "." + string(l)
		}
		if n == name {
			return b
		}
	}
	return nil
}

func refTarget(s avro.Schema, v any, r *rule, field *avro.Field) (any, error) {
	switch r.strategy {
	case StrategyNull:
		return nil, nil
	case StrategyDefault:
		return field.Default(), nil
	}
	if u, ok := s.(*avro.UnionSchema); ok {
		if v == nil {
			return nil, nil
		}
		b, bv, wrap := unionResolve(u, v)
		nv, err := refTarget(b, bv, r, nil)
		return wrap(nv), err
	}
	str := func(v any) string {
		if b, ok := v.([]byte); ok {
			return string(b)
		}
		return v.(string)
	}
	same := func(out string) any {
		if _, ok := v.([]byte); ok {
			return []byte(out)
		}
		return out
	}
	switch r.strategy {
	case StrategyHash:
		return same(refHash(str(v))), nil
	case StrategyTokenize:
		return same(refToken(str(v))), nil
	case StrategyPartial:
		return same(refPartial(str(v), r.keepFirst, r.keepLast, r.maskChar)), nil
	}
	// redact
	switch logicalOf(s) {
	case avro.UUID:
		return "00000000-0000-0000-0000-000000000000", nil
	case avro.Decimal:
		return new(big.Rat), nil
	case avro.Date, avro.TimestampMillis:
		return time.Unix(0, 0).UTC(), nil
	}
	switch s := s.(type) {
	case *avro.EnumSchema:
		if r.hasReplacement {
			return r.replacement, nil
		}
		return s.Default(), nil
	case *avro.FixedSchema:
		return reflect.New(reflect.ArrayOf(s.Size(), reflect.TypeFor[byte]())).Elem().Interface(), nil
	case *avro.ArraySchema:
		return []any{}, nil
	case *avro.MapSchema:
		return map[string]any{}, nil
	}
	switch v.(type) {
	case string:
		return r.replacement, nil
	case []byte:
		return []byte(r.replacement), nil
	case int:
		var n int
		if r.hasReplacement {
			fmt.Sscan(r.replacement, &n)
		}
		return n, nil
	case int64:
		var n int64
		if r.hasReplacement {
			fmt.Sscan(r.replacement, &n)
		}
		return n, nil
	case float32:
		var f float32
		if r.hasReplacement {
			fmt.Sscan(r.replacement, &f)
		}
		return f, nil
	case float64:
		var f float64
		if r.hasReplacement {
			fmt.Sscan(r.replacement, &f)
		}
		return f, nil
	case bool:
		return false, nil
	}
	return nil, fmt.Errorf("reference: cannot redact %T", v)
}

// gen appends random binary values of a schema. multi reports a map with
// more than one entry (whose order a generic re-encode does not keep) or a
// sized block (which the reference re-encodes without size).
type gen struct {
	rng   *rand.Rand
	multi bool
	depth int
}

const genAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_ äöü€𝄞"

func (g *gen) str() string {
	rs := []rune(genAlphabet)
	n := g.rng.IntN(12)
	out := make([]rune, n)
	for i := range out {
		out[i] = rs[g.rng.IntN(len(rs))]
	}
	return string(out)
}

func (g *gen) value(dst []byte, s avro.Schema) []byte {
	s = deref(s)
	g.depth++
	defer func() { g.depth-- }()
	switch l := logicalOf(s); l {
	case avro.UUID:
		u := g.rng.Uint64()
		return appendBytes(dst, fmt.Appendf(nil, "%08x-%04x-4%03x-8%03x-%012x", uint32(u), uint16(u>>32), g.rng.IntN(4096), g.rng.IntN(4096), g.rng.Uint64()&(1<<48-1)))
	case avro.Decimal:
		v := big.NewInt(g.rng.Int64N(2_000_000) - 1_000_000)
		b, _ := avro.Marshal(s, new(big.Rat).SetFrac(v, big.NewInt(100)))
		return append(dst, b...)
	case avro.Date:
		return appendLong(dst, g.rng.Int64N(40000))
	case avro.TimestampMillis:
		return appendLong(dst, g.rng.Int64N(2e12))
	}
	switch s := s.(type) {
	case *avro.NullSchema:
		return dst
	case *avro.PrimitiveSchema:
		switch s.Type() {
		case avro.Boolean:
			return append(dst, byte(g.rng.IntN(2)))
		case avro.Int:
			return appendLong(dst, int64(int32(g.rng.Uint32())))
		case avro.Long:
			return appendLong(dst, int64(g.rng.Uint64())>>g.rng.IntN(64))
		case avro.Float:
			return binary.LittleEndian.AppendUint32(dst, math.Float32bits(g.rng.Float32()*1000))
		case avro.Double:
			return binary.LittleEndian.AppendUint64(dst, math.Float64bits(g.rng.NormFloat64()))
		case avro.Bytes:
			b := make([]byte, g.rng.IntN(8))
			for i := range b {
				b[i] = byte(g.rng.Uint32())
			}
			return appendBytes(dst, b)
		case avro.String:
			return appendBytes(dst, []byte(g.str()))
		}
	case *avro.FixedSchema:
		for range s.Size() {
			dst = append(dst, byte(g.rng.Uint32()))
		}
		return dst
	case *avro.EnumSchema:
		return appendLong(dst, int64(g.rng.IntN(len(s.Symbols()))))
	case *avro.RecordSchema:
		for _, f := range s.Fields() {
			dst = g.value(dst, f.Type())
		}
		return dst
	case *avro.ArraySchema:
		n := g.rng.IntN(4)
		if g.depth > 6 {
			n = 0
		}
		if n > 0 {
			if g.rng.IntN(10) == 0 {
				// A block with a byte size (negative count).
				g.multi = true
				var blk []byte
				for range n {
					blk = g.value(blk, s.Items())
				}
				dst = appendLong(appendLong(dst, int64(-n)), int64(len(blk)))
				dst = append(dst, blk...)
			} else {
				dst = appendLong(dst, int64(n))
				for range n {
					dst = g.value(dst, s.Items())
				}
			}
		}
		return append(dst, 0)
	case *avro.MapSchema:
		n := g.rng.IntN(2)
		if g.rng.IntN(8) == 0 {
			n = 2 + g.rng.IntN(2)
		}
		if g.depth > 6 {
			n = 0
		}
		if n > 1 {
			g.multi = true
		}
		if n > 0 {
			dst = appendLong(dst, int64(n))
			for i := range n {
				dst = appendBytes(dst, fmt.Appendf(nil, "k%d%s", i, g.str()))
				dst = g.value(dst, s.Values())
			}
		}
		return append(dst, 0)
	case *avro.UnionSchema:
		i := g.rng.IntN(len(s.Types()))
		if g.depth > 6 {
			i = slices_indexNull(s)
		}
		dst = appendLong(dst, int64(i))
		return g.value(dst, s.Types()[i])
	}
	panic(fmt.Sprintf("gen: %T", s))
}

func slices_indexNull(u *avro.UnionSchema) int {
	for i, b := range u.Types() {
		if b.Type() == avro.Null {
			return i
		}
	}
	return 0
}

// TestPropertyReference checks the plan against the reference masker over
// thousands of random records: same bytes (when no map has more than one
// entry, whose order a generic re-encode loses) and same decoded values.
func TestPropertyReference(t *testing.T) {
	cases := []struct {
		s     *schema.Schema
		rules [][]*rule
	}{
		{parseSchema(t, 1, schema.DemoPaymentsSchema), [][]*rule{parseRules(t, demoRules)}},
		{parseSchema(t, 2, kitchenSchema), nil},
	}
	for _, rs := range kitchenRules {
		cases[1].rules = append(cases[1].rules, parseRules(t, rs))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	n, nbytes := 0, 0
	for _, c := range cases {
		for ri, rules := range c.rules {
			p, err := compileSchema(c.s, rules)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 400 {
				g := &gen{rng: rng}
				body := g.value(nil, c.s.Avro)
				// The generator must produce canonical encodings.
				var v any
				if err := avro.Unmarshal(c.s.Avro, body, &v); err != nil {
					t.Fatalf("generated record does not decode: %v", err)
				}
				got, err := p.AppendMasked(nil, body)
				if err != nil {
					t.Fatalf("schema %d rules %d record %d: %v", c.s.ID, ri, i, err)
				}
				want, err := refMask(c.s.Avro, rules, body)
				if err != nil {
					t.Fatalf("reference: %v", err)
				}
				if !g.multi {
					nbytes++
				}
				if !g.multi && !bytes.Equal(got, want) {
					t.Fatalf("schema %d rules %d record %d: bytes differ\n got %x\nwant %x", c.s.ID, ri, i, got, want)
				}
				var gv, wv any
				if err := avro.Unmarshal(c.s.Avro, got, &gv); err != nil {
					t.Fatalf("masked output does not decode: %v", err)
				}
				if err := avro.Unmarshal(c.s.Avro, want, &wv); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(gv, wv) {
					t.Fatalf("schema %d rules %d record %d: values differ\n got %v\nwant %v", c.s.ID, ri, i, gv, wv)
				}
				n++
			}
		}
	}
	t.Logf("%d random records agree with the reference masker (%d compared byte for byte)", n, nbytes)
	if nbytes < n/4 {
		t.Fatalf("only %d of %d records compared byte for byte", nbytes, n)
	}
}
