package proxy

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// cluster is the gateway's view of the upstream cluster: broker addresses by
// node id and topic names by id, from its own metadata requests and from
// every Metadata response passing through.
type cluster struct {
	log *zap.Logger

	mu       sync.RWMutex
	brokers  map[int32]string // node id -> upstream host:port
	idToName map[[16]byte]string
	nameToID map[string][16]byte
	names    map[string]struct{} // every topic seen, with or without an id

	ready atomic.Bool
	rr    atomic.Uint32

	// onBroker is called, outside the lock, for a node id seen for the
	// first time.
	onBroker func(id int32)
}

func newCluster(log *zap.Logger) *cluster {
	return &cluster{
		log:      log,
		brokers:  map[int32]string{},
		idToName: map[[16]byte]string{},
		nameToID: map[string][16]byte{},
		names:    map[string]struct{}{},
	}
}

// TopicKnown implements filter.TopicResolver: metadata has shown the
// topic (brokers before Kafka 2.8 give topics no id, so TopicID does not
// know them).
func (c *cluster) TopicKnown(name string) bool {
	c.mu.RLock()
	_, ok := c.names[name]
	c.mu.RUnlock()
	return ok
}

// TopicName implements filter.TopicResolver.
func (c *cluster) TopicName(id [16]byte) (string, bool) {
	c.mu.RLock()
	n, ok := c.idToName[id]
	c.mu.RUnlock()
	return n, ok
}

// TopicID implements filter.TopicResolver.
func (c *cluster) TopicID(name string) ([16]byte, bool) {
	c.mu.RLock()
	id, ok := c.nameToID[name]
	c.mu.RUnlock()
	return id, ok
}

// brokerAddr returns the upstream address of a node.
func (c *cluster) brokerAddr(id int32) (string, bool) {
	c.mu.RLock()
	a, ok := c.brokers[id]
	c.mu.RUnlock()
	return a, ok
}

// anyBroker returns known broker addresses starting at a rotating index,
// for bootstrap connections.
func (c *cluster) bootstrapOrder(seeds []string) []string {
	c.mu.RLock()
	out := make([]string, 0, len(c.brokers)+len(seeds))
	for _, a := range c.brokers {
		out = append(out, a)
	}
	c.mu.RUnlock()
	out = append(out, seeds...)
	if len(out) > 1 {
		n := int(c.rr.Add(1)) % len(out)
		out = append(out[n:], out[:n]...)
	}
	return out
}

// nodeIDs returns the known node ids.
func (c *cluster) nodeIDs() []int32 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ids := make([]int32, 0, len(c.brokers))
	for id := range c.brokers {
		ids = append(ids, id)
	}
	return ids
}

// learnBroker records a broker's upstream address.
func (c *cluster) learnBroker(id int32, host string, port int32) {
	addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
	c.mu.RLock()
	old, ok := c.brokers[id]
	c.mu.RUnlock()
	if ok && old == addr {
		return
	}
	c.mu.Lock()
	old, ok = c.brokers[id]
	c.brokers[id] = addr
	c.mu.Unlock()
	if !ok {
		c.log.Info("upstream broker discovered", zap.Int32("node_id", id), zap.String("upstream", addr))
		if c.onBroker != nil {
			c.onBroker(id)
		}
	} else if old != addr {
		c.log.Info("upstream broker moved", zap.Int32("node_id", id), zap.String("from", old), zap.String("to", addr))
	}
}

// learnMetadata records brokers and topic ids from a Metadata response.
// It runs before the response's addresses are rewritten.
func (c *cluster) learnMetadata(resp *kmsg.MetadataResponse) {
	for _, b := range resp.Brokers {
		c.learnBroker(b.NodeID, b.Host, b.Port)
	}
	var zero [16]byte
	changed := false
	c.mu.RLock()
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		if _, ok := c.names[*t.Topic]; !ok && t.ErrorCode == 0 {
			changed = true
			break
		}
		if t.TopicID == zero {
			continue
		}
		if n, ok := c.idToName[t.TopicID]; !ok || n != *t.Topic {
			changed = true
			break
		}
	}
	c.mu.RUnlock()
	if !changed {
		return
	}
	c.mu.Lock()
	for _, t := range resp.Topics {
		if t.Topic != nil && t.ErrorCode == 0 {
			c.names[*t.Topic] = struct{}{}
		}
		if t.Topic == nil || t.TopicID == zero {
			continue
		}
		if oldID, ok := c.nameToID[*t.Topic]; ok && oldID != t.TopicID {
			delete(c.idToName, oldID) // topic recreated
		}
		c.idToName[t.TopicID] = *t.Topic
		c.nameToID[*t.Topic] = t.TopicID
	}
	c.mu.Unlock()
}

// refresh loads metadata for all topics through the gateway's own client.
func (c *cluster) refresh(ctx context.Context, cl *kgo.Client) error {
	req := kmsg.NewPtrMetadataRequest()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	c.learnMetadata(resp)
	for _, t := range resp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil && t.Topic != nil {
			c.log.Debug("metadata topic error", zap.String("topic", *t.Topic), zap.Error(err))
		}
	}
	if !c.ready.Swap(true) {
		c.log.Info("upstream metadata loaded", zap.Int("brokers", len(resp.Brokers)), zap.Int("topics", len(resp.Topics)))
	}
	return nil
}

// run refreshes metadata until ctx is done.
func (c *cluster) run(ctx context.Context, cl *kgo.Client, every time.Duration, onErr func(error)) {
	backoff := time.Second
	for {
		err := c.refresh(ctx, cl)
		wait := every
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			onErr(err)
			c.log.Warn("upstream metadata refresh failed", zap.Error(err), zap.Duration("retry_in", backoff))
			wait = backoff
			if backoff < every {
				backoff *= 2
			}
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
