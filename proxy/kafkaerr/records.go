package kafkaerr

import "github.com/twmb/franz-go/pkg/kmsg"

// Produce, Fetch, ListOffsets, OffsetForLeaderEpoch, DeleteRecords,
// DescribeProducers: topics with partitions.

func init() {
	register(0, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.ProduceRequest), s.(*kmsg.ProduceResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				// As Kafka (PartitionResponse(error)): no offset, no
				// append time, no log start offset.
				rp.BaseOffset, rp.LogAppendTime, rp.LogStartOffset = -1, -1, -1
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(1, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.FetchRequest), s.(*kmsg.FetchResponse)
		resp.SessionID = req.SessionID
		for _, t := range req.Topics {
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewFetchResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rp.HighWatermark = -1 // as Kafka: no offsets for a refused partition
				// An empty record set, never a null one: librdkafka
				// (at least 2.0) fails to parse null records.
				rp.RecordBatches = []byte{}
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(2, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.ListOffsetsRequest), s.(*kmsg.ListOffsetsResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewListOffsetsResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewListOffsetsResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rp.Timestamp, rp.Offset, rp.LeaderEpoch = -1, -1, -1 // as Kafka: unknown
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(21, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.DeleteRecordsRequest), s.(*kmsg.DeleteRecordsResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewDeleteRecordsResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewDeleteRecordsResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rp.LowWatermark = -1 // as Kafka: INVALID_LOW_WATERMARK
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(23, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.OffsetForLeaderEpochRequest), s.(*kmsg.OffsetForLeaderEpochResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetForLeaderEpochResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rp.LeaderEpoch, rp.EndOffset = -1, -1 // as Kafka: undefined
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(61, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.DescribeProducersRequest), s.(*kmsg.DescribeProducersResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewDescribeProducersResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewDescribeProducersResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
}
