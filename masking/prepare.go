package masking

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/bufpool"
	"github.com/sluice-gw/sluice/proxy/filter"
)

// Masking partitions while the rest of a Fetch response arrives
// (filter.FetchPreparer).
//
// A consumer's Fetch response is megabytes, several partitions of it, and
// the broker sends it at its own pace. Read whole before anything is
// masked, the gateway waits while it arrives and the consumer waits while
// it is masked. So each partition with obligations is masked as soon as its
// record batches are in, on its own goroutine (at most GOMAXPROCS at once),
// while the read goes on. OnResponse then takes the result for every
// partition whose records are those very bytes (the decode aliases the
// read buffer) under the same obligations, and masks the rest as before:
// the decoded response is what is decided on, and a head start never
// changes that. A result nothing
// claims (a later filter emptied the partition) is dropped.

type prepKey struct{}

// prepared is the head start of one exchange.
type prepared struct {
	wg   sync.WaitGroup
	sem  chan struct{}
	mu   sync.Mutex
	done map[*byte]*prepResult // by the first byte of the records masked
	// carried is a panic of a masking goroutine, raised by FetchRead.
	carried atomic.Pointer[carriedPanic]
}

type prepResult struct {
	obl   *filter.Obligations              // the obligations it was masked under
	n     int                              // length of the records masked
	p     kmsg.FetchResponseTopicPartition // the masked partition (RecordBatches, ErrorCode)
	out   *[]byte                          // the pooled buffer p.RecordBatches is in, or nil
	stats filter.Stats
}

// PrepareFetch implements filter.FetchPreparer: a Fetch response is masked
// as it arrives when some topic of it carries obligations.
func (f *Filter) PrepareFetch(x *filter.Exchange) bool {
	if !x.HasObligations() {
		return false
	}
	x.Set(prepKey{}, &prepared{sem: make(chan struct{}, runtime.GOMAXPROCS(0)), done: map[*byte]*prepResult{}})
	return true
}

// FetchPartition implements filter.FetchPreparer.
func (f *Filter) FetchPartition(ctx context.Context, x *filter.Exchange, topic string, id [16]byte, partition int32, records []byte) {
	pr, _ := x.Get(prepKey{}).(*prepared)
	if pr == nil || len(records) == 0 {
		return
	}
	name := topic
	if name == "" {
		var ok bool
		if name, ok = resolveTopic(x, id); !ok {
			return // OnResponse fails it closed
		}
	}
	obl := x.Obligations[name]
	if obl.Empty() {
		return
	}
	pr.wg.Add(1)
	go func() {
		defer pr.wg.Done()
		defer carry(&pr.carried) // raised by FetchRead, on the connection's goroutine
		pr.sem <- struct{}{}
		defer func() { <-pr.sem }()
		r := &prepResult{obl: obl, n: len(records), p: kmsg.FetchResponseTopicPartition{Partition: partition, RecordBatches: records}}
		r.out = maskPartition(f, ctx, x, name, obl, &r.p, &r.stats)
		pr.mu.Lock()
		pr.done[unsafe.SliceData(records)] = r
		pr.mu.Unlock()
	}()
}

// FetchRead implements filter.FetchPreparer: it waits for the partitions
// being masked.
func (f *Filter) FetchRead(x *filter.Exchange) {
	if pr, _ := x.Get(prepKey{}).(*prepared); pr != nil {
		pr.wg.Wait()
		pr.carried.Load().raise()
	}
}

// take returns and forgets the result masked from exactly records under
// exactly obl. Obligations the policy filter attached on the response side
// (a policy change during a long poll) are other ones: the partition is
// then masked again under them.
func (pr *prepared) take(records []byte, obl *filter.Obligations) *prepResult {
	if pr == nil || len(records) == 0 {
		return nil
	}
	k := unsafe.SliceData(records)
	r := pr.done[k]
	if r == nil || r.n != len(records) || r.obl != obl {
		return nil
	}
	delete(pr.done, k)
	return r
}

// drop gives back the buffers of results nothing took.
func (pr *prepared) drop() {
	if pr == nil {
		return
	}
	for k, r := range pr.done {
		if r.out != nil {
			bufpool.Put(r.out)
		}
		delete(pr.done, k)
	}
}
