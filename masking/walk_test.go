package masking

import (
	"errors"
	"testing"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// Items that encode to no bytes (an empty record here) cost a loop turn
// each and no input, so their count is bounded per value, not per block:
// 10000 three-byte block headers once claimed 655 million of them, seconds
// of CPU for a 30 KB value.
func TestZeroByteItemsBoundedPerValue(t *testing.T) {
	s := parseSchema(t, 5, `{"type":"record","name":"R","fields":[
	  {"name":"ssn","type":"string"},
	  {"name":"marks","type":{"type":"array","items":{"type":"record","name":"Empty","fields":[]}}}]}`)
	p := mustPlan(t, s, []filter.MaskRule{{Field: "ssn", Strategy: "hash"}})
	body := func(blocks int, per int64) []byte {
		b := appendBytes(nil, []byte("123-45-6789"))
		for range blocks {
			b = appendLong(b, per)
		}
		return append(b, 0)
	}
	if _, err := p.AppendMasked(nil, body(4, maxZeroItems/4)); err != nil {
		t.Fatalf("%d empty items in all: %v", maxZeroItems, err)
	}
	for _, blocks := range []int{2, 10000} {
		if _, err := p.AppendMasked(nil, body(blocks, maxZeroItems)); !errors.Is(err, errLength) {
			t.Fatalf("%d blocks of %d empty items: %v, want errLength", blocks, maxZeroItems, err)
		}
	}
}
