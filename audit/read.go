package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Record is one record of the audit topic, as Verify checks it.
type Record struct {
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Key       []byte `json:"key,omitempty"`
	Value     []byte `json:"value"`
}

// WriteRecords writes records as JSON lines (values base64), the format
// ReadRecords reads: a copy of the topic that can be verified offline.
func WriteRecords(w io.Writer, recs []Record) error {
	enc := json.NewEncoder(w)
	for i := range recs {
		if err := enc.Encode(&recs[i]); err != nil {
			return fmt.Errorf("audit: write records: %w", err)
		}
	}
	return nil
}

// ReadRecords reads JSON lines written by WriteRecords.
func ReadRecords(r io.Reader) ([]Record, error) {
	var out []Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("audit: read records: line %d: %w", line, err)
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("audit: read records: %w", err)
	}
	return out, nil
}

// ReadTopic reads every record of topic that exists when it starts, in
// partition and offset order.
func ReadTopic(ctx context.Context, opts []kgo.Opt, topic string) ([]Record, error) {
	var out []Record
	err := consume(ctx, opts, topic, kgo.NewOffset().AtStart(), true, func(r *kgo.Record) {
		out = append(out, Record{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value})
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Partition != out[j].Partition {
			return out[i].Partition < out[j].Partition
		}
		return out[i].Offset < out[j].Offset
	})
	return out, nil
}

// endOffsets returns the high watermark of every partition of topic.
func endOffsets(ctx context.Context, cl *kgo.Client, topic string) (map[int32]int64, error) {
	mreq := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	mreq.Topics = append(mreq.Topics, mt)
	mresp, err := mreq.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("audit: metadata: %w", err)
	}
	if len(mresp.Topics) != 1 {
		return nil, fmt.Errorf("audit: metadata: topic %s not returned", topic)
	}
	if err := kerr.ErrorForCode(mresp.Topics[0].ErrorCode); err != nil {
		return nil, fmt.Errorf("audit: topic %s: %w", topic, err)
	}
	lreq := kmsg.NewPtrListOffsetsRequest()
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = topic
	for _, p := range mresp.Topics[0].Partitions {
		lp := kmsg.NewListOffsetsRequestTopicPartition()
		lp.Partition = p.Partition
		lp.Timestamp = -1
		lt.Partitions = append(lt.Partitions, lp)
	}
	lreq.Topics = append(lreq.Topics, lt)
	lresp, err := lreq.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("audit: list offsets: %w", err)
	}
	ends := make(map[int32]int64)
	for _, t := range lresp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("audit: list offsets %s/%d: %w", topic, p.Partition, err)
			}
			ends[p.Partition] = p.Offset
		}
	}
	if len(ends) != len(mresp.Topics[0].Partitions) {
		return nil, errors.New("audit: list offsets: partitions missing from the answer")
	}
	return ends, nil
}

// consume calls fn for every record of topic from start; with stopAtEnd it
// returns once the high watermarks seen at the start are reached,
// otherwise when ctx is done.
func consume(ctx context.Context, opts []kgo.Opt, topic string, start kgo.Offset, stopAtEnd bool, fn func(*kgo.Record)) error {
	meta, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("audit: client: %w", err)
	}
	ends, err := endOffsets(ctx, meta, topic)
	meta.Close()
	if err != nil {
		return err
	}
	parts := make(map[int32]kgo.Offset, len(ends))
	for p := range ends {
		parts[p] = start
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), opts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}))...)
	if err != nil {
		return fmt.Errorf("audit: client: %w", err)
	}
	defer cl.Close()
	// done tracks the partitions that reached their end offset.
	left := make(map[int32]int64)
	for p, e := range ends {
		if e > 0 {
			left[p] = e
		}
	}
	if stopAtEnd && len(left) == 0 {
		return nil
	}
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			if stopAtEnd {
				return fmt.Errorf("audit: reading %s: %w", topic, err)
			}
			return nil
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("audit: fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			fn(r)
			if e, ok := left[r.Partition]; ok && r.Offset >= e-1 {
				delete(left, r.Partition)
			}
		})
		if stopAtEnd && len(left) == 0 {
			return nil
		}
	}
}
