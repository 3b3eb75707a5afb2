package kafkaerr

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Group APIs: classic (OffsetCommit, OffsetFetch, FindCoordinator,
// LeaveGroup, DescribeGroups, DeleteGroups, OffsetDelete), KIP-848
// (ConsumerGroupDescribe), streams and share groups. APIs about one group
// with a single top-level error code (JoinGroup, Heartbeat, SyncGroup,
// ListGroups, ConsumerGroupHeartbeat, ShareGroupHeartbeat,
// StreamsGroupHeartbeat, ...) need no echo.

// noMetadata is the committed metadata Kafka answers for a partition it
// refuses: empty, not null (OffsetFetchResponse.NO_METADATA).
const noMetadata = ""

func init() {
	register(8, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.OffsetCommitRequest), s.(*kmsg.OffsetCommitResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
	// OffsetFetch, as Kafka answers a refused request
	// (OffsetFetchRequest.getErrorResponse): v0-1 have no top-level error,
	// so each partition asked for carries it, with no committed offset
	// (-1), no leader epoch (-1) and empty metadata; v2-7 carry it at the
	// top and list no topics; v8+ carry it on each group, with no topics.
	register(9, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.OffsetFetchRequest), s.(*kmsg.OffsetFetchResponse)
		if req.Version >= 2 && req.Version < 8 {
			resp.ErrorCode = code
			return
		}
		if req.Version < 2 {
			resp.ErrorCode = code
			for _, t := range req.Topics {
				rt := kmsg.NewOffsetFetchResponseTopic()
				rt.Topic = t.Topic
				for _, p := range t.Partitions {
					rp := kmsg.NewOffsetFetchResponseTopicPartition()
					rp.Partition, rp.ErrorCode = p, code
					rp.Offset, rp.LeaderEpoch, rp.Metadata = -1, -1, kmsg.StringPtr(noMetadata)
					rt.Partitions = append(rt.Partitions, rp)
				}
				resp.Topics = append(resp.Topics, rt)
			}
			return
		}
		for _, g := range req.Groups {
			rg := kmsg.NewOffsetFetchResponseGroup()
			rg.Group, rg.ErrorCode = g.Group, code
			resp.Groups = append(resp.Groups, rg)
		}
	})
	register(10, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.FindCoordinatorRequest), s.(*kmsg.FindCoordinatorResponse)
		if req.Version < 4 {
			resp.ErrorCode, resp.NodeID, resp.Port = code, -1, -1
			if req.Version >= 1 {
				resp.ErrorMessage = message(code)
			}
			return
		}
		for _, k := range req.CoordinatorKeys {
			c := kmsg.NewFindCoordinatorResponseCoordinator()
			c.Key, c.ErrorCode, c.ErrorMessage, c.NodeID, c.Port = k, code, message(code), -1, -1
			resp.Coordinators = append(resp.Coordinators, c)
		}
	})
	register(13, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.LeaveGroupRequest), s.(*kmsg.LeaveGroupResponse)
		resp.ErrorCode = code
		if req.Version >= 3 {
			for _, m := range req.Members {
				rm := kmsg.NewLeaveGroupResponseMember()
				rm.MemberID, rm.InstanceID, rm.ErrorCode = m.MemberID, m.InstanceID, code
				resp.Members = append(resp.Members, rm)
			}
		}
	})
	register(15, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.DescribeGroupsRequest), s.(*kmsg.DescribeGroupsResponse)
		for _, g := range req.Groups {
			rg := kmsg.NewDescribeGroupsResponseGroup()
			rg.Group, rg.ErrorCode = g, code
			if req.Version >= 6 {
				rg.ErrorMessage = message(code)
			}
			resp.Groups = append(resp.Groups, rg)
		}
	})
	register(42, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.DeleteGroupsRequest), s.(*kmsg.DeleteGroupsResponse)
		for _, g := range req.Groups {
			rg := kmsg.NewDeleteGroupsResponseGroup()
			rg.Group, rg.ErrorCode = g, code
			resp.Groups = append(resp.Groups, rg)
		}
	})
	register(47, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.OffsetDeleteRequest), s.(*kmsg.OffsetDeleteResponse)
		resp.ErrorCode = code
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetDeleteResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetDeleteResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(69, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.ConsumerGroupDescribeRequest), s.(*kmsg.ConsumerGroupDescribeResponse)
		for _, g := range req.Groups {
			rg := kmsg.NewConsumerGroupDescribeResponseGroup()
			rg.Group, rg.ErrorCode, rg.ErrorMessage = g, code, message(code)
			resp.Groups = append(resp.Groups, rg)
		}
	})
	register(77, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.ShareGroupDescribeRequest), s.(*kmsg.ShareGroupDescribeResponse)
		for _, g := range req.GroupIDs {
			rg := kmsg.NewShareGroupDescribeResponseGroup()
			rg.GroupID, rg.ErrorCode, rg.ErrorMessage = g, code, message(code)
			resp.Groups = append(resp.Groups, rg)
		}
	})
	register(89, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.StreamsGroupDescribeRequest), s.(*kmsg.StreamsGroupDescribeResponse)
		for _, g := range req.Groups {
			rg := kmsg.NewStreamsGroupDescribeResponseGroup()
			rg.Group, rg.ErrorCode, rg.ErrorMessage = g, code, message(code)
			resp.Groups = append(resp.Groups, rg)
		}
	})
	register(90, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.DescribeShareGroupOffsetsRequest), s.(*kmsg.DescribeShareGroupOffsetsResponse)
		for _, g := range req.Groups {
			rg := kmsg.NewDescribeShareGroupOffsetsResponseGroup()
			rg.GroupID, rg.ErrorCode, rg.ErrorMessage = g.GroupID, code, message(code)
			for _, t := range g.Topics {
				rt := kmsg.NewDescribeShareGroupOffsetsResponseGroupTopic()
				rt.Topic = t.Topic
				for _, p := range t.Partitions {
					rp := kmsg.NewDescribeShareGroupOffsetsResponseGroupTopicPartition()
					rp.Partition, rp.ErrorCode, rp.ErrorMessage = p, code, message(code)
					rt.Partitions = append(rt.Partitions, rp)
				}
				rg.Topics = append(rg.Topics, rt)
			}
			resp.Groups = append(resp.Groups, rg)
		}
	})
	register(91, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.AlterShareGroupOffsetsRequest), s.(*kmsg.AlterShareGroupOffsetsResponse)
		resp.ErrorCode, resp.ErrorMessage = code, message(code)
		for _, t := range req.Topics {
			rt := kmsg.NewAlterShareGroupOffsetsResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewAlterShareGroupOffsetsResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.ErrorMessage = p.Partition, code, message(code)
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(92, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.DeleteShareGroupOffsetsRequest), s.(*kmsg.DeleteShareGroupOffsetsResponse)
		resp.ErrorCode, resp.ErrorMessage = code, message(code)
		for _, t := range req.Topics {
			rt := kmsg.NewDeleteShareGroupOffsetsResponseTopic()
			rt.Topic, rt.ErrorCode, rt.ErrorMessage = t.Topic, code, message(code)
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(78, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.ShareFetchRequest), s.(*kmsg.ShareFetchResponse)
		if !topicLevel(code) { // a topic's denial is the partitions', as Kafka answers it
			resp.ErrorCode, resp.ErrorMessage = code, message(code)
		}
		for _, t := range req.Topics {
			rt := kmsg.NewShareFetchResponseTopic()
			rt.TopicID = t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewShareFetchResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.ErrorMessage = p.Partition, code, message(code)
				rp.Records = []byte{} // empty, not null (see Fetch)
				if len(p.AcknowledgementBatches) > 0 {
					rp.AcknowledgeErrorCode = code
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(79, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.ShareAcknowledgeRequest), s.(*kmsg.ShareAcknowledgeResponse)
		if !topicLevel(code) { // a topic's denial is the partitions', as Kafka answers it
			resp.ErrorCode, resp.ErrorMessage = code, message(code)
		}
		for _, t := range req.Topics {
			rt := kmsg.NewShareAcknowledgeResponseTopic()
			rt.TopicID = t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewShareAcknowledgeResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.ErrorMessage = p.Partition, code, message(code)
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
}

// topicLevel reports whether code denies topics rather than the request:
// Kafka answers those per partition and leaves a share session's top-level
// error alone, which a client would take for a session failure and retry.
func topicLevel(code int16) bool {
	return code == kerr.TopicAuthorizationFailed.Code || code == kerr.UnknownTopicID.Code
}
