package kafkaerr

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestRefusedPartitionDefaults: a partition the gateway refuses carries
// the values Kafka answers for one it refuses, not zero values that read
// as real offsets (an OffsetFetch committed offset 0 would make a consumer
// start at the beginning; a Produce base offset 0 looks like an append).
// Checked at every version after a round trip through the wire format,
// so a field a version does not carry decodes to its protocol default.
func TestRefusedPartitionDefaults(t *testing.T) {
	topicReq := func(key int16) kmsg.Request {
		req := kmsg.RequestForKey(key)
		req.(interface{ Default() }).Default()
		return req
	}
	cases := []struct {
		name       string
		minV, maxV int16 // maxV -1: the highest kmsg knows
		req        func(v int16) kmsg.Request
		parts      func(kmsg.Response) []any // every refused partition of the answer
		want       map[string]any            // field -> value in every partition
	}{
		{
			name: "Produce", maxV: -1,
			req: func(int16) kmsg.Request {
				req := topicReq(0).(*kmsg.ProduceRequest)
				tp := kmsg.NewProduceRequestTopic()
				tp.Topic, tp.TopicID = "t", [16]byte{1}
				for _, p := range []int32{0, 2} {
					pp := kmsg.NewProduceRequestTopicPartition()
					pp.Partition = p
					tp.Partitions = append(tp.Partitions, pp)
				}
				req.Topics = append(req.Topics, tp)
				return req
			},
			parts: func(r kmsg.Response) (out []any) {
				for _, t := range r.(*kmsg.ProduceResponse).Topics {
					for _, p := range t.Partitions {
						out = append(out, p)
					}
				}
				return out
			},
			want: map[string]any{"BaseOffset": int64(-1), "LogAppendTime": int64(-1), "LogStartOffset": int64(-1)},
		},
		{
			name: "Fetch", maxV: -1,
			req: func(int16) kmsg.Request {
				req := topicReq(1).(*kmsg.FetchRequest)
				tp := kmsg.NewFetchRequestTopic()
				tp.Topic, tp.TopicID = "t", [16]byte{1}
				for _, p := range []int32{0, 2} {
					pp := kmsg.NewFetchRequestTopicPartition()
					pp.Partition = p
					tp.Partitions = append(tp.Partitions, pp)
				}
				req.Topics = append(req.Topics, tp)
				return req
			},
			parts: func(r kmsg.Response) (out []any) {
				for _, t := range r.(*kmsg.FetchResponse).Topics {
					for _, p := range t.Partitions {
						out = append(out, p)
					}
				}
				return out
			},
			want: map[string]any{"HighWatermark": int64(-1), "LastStableOffset": int64(-1), "LogStartOffset": int64(-1), "PreferredReadReplica": int32(-1)},
		},
		{
			name: "ListOffsets", maxV: -1,
			req: func(int16) kmsg.Request {
				req := topicReq(2).(*kmsg.ListOffsetsRequest)
				tp := kmsg.NewListOffsetsRequestTopic()
				tp.Topic = "t"
				for _, p := range []int32{0, 2} {
					pp := kmsg.NewListOffsetsRequestTopicPartition()
					pp.Partition, pp.Timestamp = p, -1
					tp.Partitions = append(tp.Partitions, pp)
				}
				req.Topics = append(req.Topics, tp)
				return req
			},
			parts: func(r kmsg.Response) (out []any) {
				for _, t := range r.(*kmsg.ListOffsetsResponse).Topics {
					for _, p := range t.Partitions {
						out = append(out, p)
					}
				}
				return out
			},
			want: map[string]any{"Offset": int64(-1), "Timestamp": int64(-1), "LeaderEpoch": int32(-1)},
		},
		{
			name: "DeleteRecords", maxV: -1,
			req: func(int16) kmsg.Request {
				req := topicReq(21).(*kmsg.DeleteRecordsRequest)
				tp := kmsg.NewDeleteRecordsRequestTopic()
				tp.Topic = "t"
				for _, p := range []int32{0, 2} {
					pp := kmsg.NewDeleteRecordsRequestTopicPartition()
					pp.Partition, pp.Offset = p, 10
					tp.Partitions = append(tp.Partitions, pp)
				}
				req.Topics = append(req.Topics, tp)
				return req
			},
			parts: func(r kmsg.Response) (out []any) {
				for _, t := range r.(*kmsg.DeleteRecordsResponse).Topics {
					for _, p := range t.Partitions {
						out = append(out, p)
					}
				}
				return out
			},
			want: map[string]any{"LowWatermark": int64(-1)},
		},
		{
			name: "OffsetForLeaderEpoch", maxV: -1,
			req: func(int16) kmsg.Request {
				req := topicReq(23).(*kmsg.OffsetForLeaderEpochRequest)
				tp := kmsg.NewOffsetForLeaderEpochRequestTopic()
				tp.Topic = "t"
				for _, p := range []int32{0, 2} {
					pp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
					pp.Partition, pp.LeaderEpoch = p, 3
					tp.Partitions = append(tp.Partitions, pp)
				}
				req.Topics = append(req.Topics, tp)
				return req
			},
			parts: func(r kmsg.Response) (out []any) {
				for _, t := range r.(*kmsg.OffsetForLeaderEpochResponse).Topics {
					for _, p := range t.Partitions {
						out = append(out, p)
					}
				}
				return out
			},
			want: map[string]any{"LeaderEpoch": int32(-1), "EndOffset": int64(-1)},
		},
		{
			name: "OffsetFetch topics", minV: 0, maxV: 1,
			req: func(int16) kmsg.Request {
				req := topicReq(9).(*kmsg.OffsetFetchRequest)
				req.Group = "g"
				tp := kmsg.NewOffsetFetchRequestTopic()
				tp.Topic, tp.Partitions = "t", []int32{0, 2}
				req.Topics = append(req.Topics, tp)
				return req
			},
			parts: func(r kmsg.Response) (out []any) {
				for _, t := range r.(*kmsg.OffsetFetchResponse).Topics {
					for _, p := range t.Partitions {
						out = append(out, p)
					}
				}
				return out
			},
			want: map[string]any{"Offset": int64(-1), "LeaderEpoch": int32(-1), "Metadata": kmsg.StringPtr("")},
		},
	}
	code := kerr.TopicAuthorizationFailed.Code
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			maxV := tc.maxV
			if maxV < 0 {
				maxV = tc.req(0).MaxVersion()
			}
			for v := tc.minV; v <= maxV; v++ {
				req := tc.req(v)
				req.SetVersion(v)
				resp, err := ErrorResponse(req, code)
				if err != nil {
					t.Fatalf("v%d: %v", v, err)
				}
				back := kmsg.ResponseForKey(req.Key())
				back.SetVersion(v)
				if err := back.ReadFrom(resp.AppendTo(nil)); err != nil {
					t.Fatalf("v%d: %v", v, err)
				}
				parts := tc.parts(back)
				if len(parts) == 0 {
					t.Fatalf("v%d: no refused partitions in the answer", v)
				}
				for i, p := range parts {
					pv := reflect.ValueOf(p)
					if c := pv.FieldByName("ErrorCode").Int(); c != int64(code) {
						t.Errorf("v%d partition %d: error code %d, want %d", v, i, c, code)
					}
					for field, want := range tc.want {
						got := pv.FieldByName(field).Interface()
						if !reflect.DeepEqual(got, want) {
							t.Errorf("v%d partition %d: %s = %s, want %s", v, i, field, show(got), show(want))
						}
					}
				}
			}
		})
	}
}

func show(v any) string {
	if s, ok := v.(*string); ok {
		if s == nil {
			return "null"
		}
		return fmt.Sprintf("%q", *s)
	}
	return fmt.Sprint(v)
}

// TestOffsetFetchRefusal checks the refused OffsetFetch against Kafka's
// OffsetFetchRequest.getErrorResponse for every version: v0-1 echo each
// partition with the error (they have no top-level error), v2-7 carry it
// at the top with no topics, v8+ on every group asked for, with no topics.
func TestOffsetFetchRefusal(t *testing.T) {
	code := kerr.GroupAuthorizationFailed.Code
	for v := int16(0); v <= kmsg.NewPtrOffsetFetchRequest().MaxVersion(); v++ {
		req := kmsg.NewPtrOffsetFetchRequest()
		req.SetVersion(v)
		req.Group = "g"
		tp := kmsg.NewOffsetFetchRequestTopic()
		tp.Topic, tp.Partitions = "t", []int32{0, 2}
		req.Topics = append(req.Topics, tp)
		for _, g := range []string{"g1", "g2"} {
			rg := kmsg.NewOffsetFetchRequestGroup()
			rg.Group = g
			gt := kmsg.NewOffsetFetchRequestGroupTopic()
			gt.Topic, gt.Partitions = "t", []int32{0}
			rg.Topics = append(rg.Topics, gt)
			req.Groups = append(req.Groups, rg)
		}
		r, err := ErrorResponse(req, code)
		if err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		back := kmsg.NewPtrOffsetFetchResponse()
		back.SetVersion(v)
		if err := back.ReadFrom(r.AppendTo(nil)); err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		switch {
		case v < 2:
			if len(back.Topics) != 1 || len(back.Topics[0].Partitions) != 2 || back.Topics[0].Partitions[1].ErrorCode != code {
				t.Errorf("v%d: want the two partitions asked for, each with the error: %+v", v, back.Topics)
			}
		case v < 8:
			if back.ErrorCode != code || len(back.Topics) != 0 {
				t.Errorf("v%d: want the error at the top and no topics, got %d and %+v", v, back.ErrorCode, back.Topics)
			}
		default:
			if len(back.Groups) != 2 || back.Groups[0].Group != "g1" || back.Groups[1].ErrorCode != code || len(back.Groups[0].Topics) != 0 {
				t.Errorf("v%d: want both groups with the error and no topics: %+v", v, back.Groups)
			}
		}
	}
}
