package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-gw/sluice/test/harness"
)

// TestGroupWithThreeMembers runs three franz-go members of one group at
// once through the gateway while a producer writes: the group balances the
// six partitions over the members (JoinGroup/SyncGroup/Heartbeat through the
// coordinator's gateway listener) and, together, they see every record
// exactly once.
func TestGroupWithThreeMembers(t *testing.T) {
	t.Parallel()
	const topic, group, n = "e2e-members", "e2e-members-group", 120
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(6, topic))
	gw := harness.StartGateway(t, cluster, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	k := &kgoClient{}
	var (
		mu       sync.Mutex
		seen     = map[string]int{}
		perMem   = make([]map[int32]bool, 3)
		wg       sync.WaitGroup
		failures = make(chan error, 3)
	)
	members := make([]*kgo.Client, 3)
	assigned := make([]int, 3) // partitions each member owns now
	for i := range members {
		track := func(delta int) func(context.Context, *kgo.Client, map[string][]int32) {
			return func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				mu.Lock()
				assigned[i] += delta * len(m[topic])
				mu.Unlock()
			}
		}
		members[i] = k.newClient(t, gw.Bootstrap,
			kgo.OnPartitionsAssigned(track(1)),
			kgo.OnPartitionsRevoked(track(-1)),
			kgo.OnPartitionsLost(track(-1)),
			kgo.ConsumeTopics(topic),
			kgo.ConsumerGroup(group),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.Balancers(kgo.RoundRobinBalancer()),
			kgo.SessionTimeout(10*time.Second),
			kgo.HeartbeatInterval(500*time.Millisecond),
		)
		defer members[i].Close()
		perMem[i] = map[int32]bool{}
	}
	done := make(chan struct{})
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
				fs := m.PollFetches(pctx)
				pcancel()
				fs.EachError(func(topic string, p int32, err error) {
					if err != context.DeadlineExceeded && err != context.Canceled {
						select {
						case failures <- fmt.Errorf("member %d %s[%d]: %v", i, topic, p, err):
						default:
						}
					}
				})
				mu.Lock()
				fs.EachRecord(func(r *kgo.Record) {
					seen[string(r.Value)]++
					perMem[i][r.Partition] = true
				})
				mu.Unlock()
			}
		}()
	}

	// Produce once the group has settled with every member owning two
	// partitions, so the work really is shared.
	for balanced := false; !balanced; {
		mu.Lock()
		balanced = assigned[0] == 2 && assigned[1] == 2 && assigned[2] == 2
		state := fmt.Sprint(assigned)
		mu.Unlock()
		select {
		case err := <-failures:
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatalf("group never balanced: partitions per member %s", state)
		case <-time.After(100 * time.Millisecond):
		}
	}

	prod := k.newClient(t, gw.Bootstrap, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	defer prod.Close()
	for i := 0; i < n; i++ {
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("m-%d", i))}).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	for {
		mu.Lock()
		got := len(seen)
		mu.Unlock()
		if got >= n {
			break
		}
		select {
		case err := <-failures:
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatalf("members saw %d of %d records", got, n)
		case <-time.After(100 * time.Millisecond):
		}
	}
	close(done)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < n; i++ {
		if c := seen[fmt.Sprintf("m-%d", i)]; c != 1 {
			t.Errorf("record m-%d seen %d times", i, c)
		}
	}
	for i, parts := range perMem {
		if len(parts) == 0 {
			t.Errorf("member %d consumed nothing: %v", i, perMem)
		}
	}
	gw.AssertGatewayAddrs(t, cluster, dedupe(k.dialedAddrs()))
	cluster.AssertOnlyGateway(t)
}
