package masking

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// A panic in a masking goroutine (standing in for any bug) is raised again
// on the goroutine that waits for the masking, the connection's, where the
// proxy closes that one connection; left in the masking goroutine it would
// end the process.
func TestMaskingPanicReachesTheCaller(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	orig := maskPartition
	defer func() { maskPartition = orig }()
	maskPartition = func(*Filter, context.Context, *filter.Exchange, string, *filter.Obligations, *kmsg.FetchResponseTopicPartition, *filter.Stats) *[]byte {
		panic("bug")
	}
	jobs := make([]maskJob, 4)
	for i := range jobs {
		jobs[i].p = &kmsg.FetchResponseTopicPartition{}
	}
	got := func() (r any) {
		defer func() { r = recover() }()
		(&Filter{}).runMaskJobs(context.Background(), &filter.Exchange{}, jobs)
		return nil
	}()
	if got == nil || !strings.Contains(fmt.Sprint(got), "masking goroutine: bug") {
		t.Fatalf("panic on the caller: %v", got)
	}
}
