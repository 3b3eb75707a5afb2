package policy

import (
	"context"
	"runtime"
	"sync"
	"weak"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// fetchSessions remembers, per client connection, the topics of its fetch
// session (KIP-227). An incremental fetch does not list the partitions
// already in the session, yet the broker returns their records; so that the
// masking filter, whose response step may run before this filter's, finds
// the obligations of every topic that can come back, OnRequest attaches
// them for the whole session, not only for the topics listed.
type fetchSessions struct {
	m sync.Map // weak.Pointer[filter.Conn] -> *fetchSession
}

type fetchSession struct {
	mu sync.Mutex
	// topics holds the session's partitions by topic name: forgetting
	// some partitions of a topic keeps the others in the broker's session.
	topics map[string]map[int32]struct{}
}

func (s *fetchSessions) get(c *filter.Conn) *fetchSession {
	key := weak.Make(c)
	if v, ok := s.m.Load(key); ok {
		return v.(*fetchSession)
	}
	fs := &fetchSession{topics: map[string]map[int32]struct{}{}}
	if v, loaded := s.m.LoadOrStore(key, fs); loaded {
		return v.(*fetchSession)
	}
	// The proxy has no close hook for filters: forget the session when the
	// connection is collected.
	runtime.AddCleanup(c, func(k weak.Pointer[filter.Conn]) { s.m.Delete(k) }, key)
	return fs
}

// track updates the session of x's connection with req (after denied
// topics were removed) and attaches the obligations of every session topic
// the request did not list.
func (f *Filter) track(ctx context.Context, x *filter.Exchange, req *kmsg.FetchRequest) {
	if x.Conn == nil {
		return
	}
	fs := f.sessions.get(x.Conn)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if req.Version < 7 || req.SessionEpoch <= 0 {
		// Sessionless, or a full fetch that (re)starts the session.
		clear(fs.topics)
	}
	for _, t := range req.ForgottenTopics {
		if name, ok := topicName(x, t.Topic, t.TopicID); ok {
			ps := fs.topics[name]
			for _, p := range t.Partitions {
				delete(ps, p)
			}
			if len(ps) == 0 {
				delete(fs.topics, name)
			}
		}
	}
	listed := make(map[string]struct{}, len(req.Topics))
	for _, t := range req.Topics {
		if name, ok := topicName(x, t.Topic, t.TopicID); ok {
			listed[name] = struct{}{}
			ps := fs.topics[name]
			if ps == nil {
				ps = make(map[int32]struct{}, len(t.Partitions))
				fs.topics[name] = ps
			}
			for _, p := range t.Partitions {
				ps[p.Partition] = struct{}{}
			}
		}
	}
	if req.Version < 7 || req.SessionEpoch < 0 {
		clear(fs.topics) // no session: nothing comes back unlisted
		return
	}
	for name := range fs.topics {
		if _, ok := listed[name]; ok {
			continue
		}
		d := f.query(ctx, x, ActionRead, ResourceTopic, name)
		if d.Allow {
			attach(x, name, d)
		}
	}
}
