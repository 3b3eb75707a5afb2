package kafkaerr

import "github.com/twmb/franz-go/pkg/kmsg"

// Transactional APIs naming topics or transactional ids. InitProducerID,
// AddOffsetsToTxn, EndTxn and ListTransactions answer with their top-level
// error code.

func init() {
	register(24, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.AddPartitionsToTxnRequest), s.(*kmsg.AddPartitionsToTxnResponse)
		topics := func(ts []kmsg.AddPartitionsToTxnRequestTopic) []kmsg.AddPartitionsToTxnResponseTopic {
			var out []kmsg.AddPartitionsToTxnResponseTopic
			for _, t := range ts {
				rt := kmsg.NewAddPartitionsToTxnResponseTopic()
				rt.Topic = t.Topic
				for _, p := range t.Partitions {
					rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
					rp.Partition, rp.ErrorCode = p, code
					rt.Partitions = append(rt.Partitions, rp)
				}
				out = append(out, rt)
			}
			return out
		}
		if req.Version < 4 {
			resp.Topics = topics(req.Topics)
			return
		}
		// v4+ (KIP-890, broker-to-broker): Kafka answers a refused
		// request with the top-level error code and no results
		// (AddPartitionsToTxnRequest.getErrorResponse).
		resp.ErrorCode = code
	})
	register(28, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.TxnOffsetCommitRequest), s.(*kmsg.TxnOffsetCommitResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewTxnOffsetCommitResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(65, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.DescribeTransactionsRequest), s.(*kmsg.DescribeTransactionsResponse)
		for _, id := range req.TransactionalIDs {
			st := kmsg.NewDescribeTransactionsResponseTransactionState()
			st.TransactionalID, st.ErrorCode = id, code
			resp.TransactionStates = append(resp.TransactionStates, st)
		}
	})
	register(27, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.WriteTxnMarkersRequest), s.(*kmsg.WriteTxnMarkersResponse)
		for _, m := range req.Markers {
			rm := kmsg.NewWriteTxnMarkersResponseMarker()
			rm.ProducerID = m.ProducerID
			for _, t := range m.Topics {
				rt := kmsg.NewWriteTxnMarkersResponseMarkerTopic()
				rt.Topic = t.Topic
				for _, p := range t.Partitions {
					rp := kmsg.NewWriteTxnMarkersResponseMarkerTopicPartition()
					rp.Partition, rp.ErrorCode = p, code
					rt.Partitions = append(rt.Partitions, rp)
				}
				rm.Topics = append(rm.Topics, rt)
			}
			resp.Markers = append(resp.Markers, rm)
		}
	})
}
