package masking

import (
	"fmt"
	"strings"
)

// A field path is a dotted list of field names; a name may be followed by
// "[]" (every element of an array) or "{}" (every value of a map), repeated
// for nested collections:
//
//	customer.ssn          field ssn of record field customer
//	items[].card          field card of every element of array items
//	attrs{}               every value of map attrs
//	attrs{}.city          field city of every record value of map attrs
//	matrix[][]            every element of an array of arrays
//
// Unions are transparent: a path continues into every non-null branch that
// has the next step (at least one must).
type step struct {
	kind  stepKind
	field string // for stepField
}

type stepKind uint8

const (
	stepField stepKind = iota
	stepArray
	stepMap
)

func (s step) String() string {
	switch s.kind {
	case stepArray:
		return "[]"
	case stepMap:
		return "{}"
	}
	return s.field
}

func parsePath(p string) ([]step, error) {
	if p == "" {
		return nil, fmt.Errorf("masking: empty field path")
	}
	var steps []step
	for i, part := range strings.Split(p, ".") {
		name := part
		for strings.HasSuffix(name, "[]") || strings.HasSuffix(name, "{}") {
			name = name[:len(name)-2]
		}
		if name == "" && !(i == 0 && len(part) > 0) {
			return nil, fmt.Errorf("masking: field path %q: empty name", p)
		}
		if strings.ContainsAny(name, "[]{} ") {
			return nil, fmt.Errorf("masking: field path %q: bad name %q", p, name)
		}
		if name != "" {
			steps = append(steps, step{kind: stepField, field: name})
		}
		for rest := part[len(name):]; rest != ""; rest = rest[2:] {
			if rest[:2] == "[]" {
				steps = append(steps, step{kind: stepArray})
			} else {
				steps = append(steps, step{kind: stepMap})
			}
		}
	}
	return steps, nil
}
