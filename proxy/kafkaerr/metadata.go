package kafkaerr

import "github.com/twmb/franz-go/pkg/kmsg"

// Metadata, DescribeTopicPartitions, CreateTopics, DeleteTopics,
// CreatePartitions: whole topics.

func init() {
	register(3, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.MetadataRequest), s.(*kmsg.MetadataResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewMetadataResponseTopic()
			rt.Topic, rt.TopicID, rt.ErrorCode = t.Topic, t.TopicID, code
			if rt.Topic == nil && req.Version < 10 {
				empty := ""
				rt.Topic = &empty
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(75, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.DescribeTopicPartitionsRequest), s.(*kmsg.DescribeTopicPartitionsResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewDescribeTopicPartitionsResponseTopic()
			name := t.Topic
			rt.Topic, rt.ErrorCode = &name, code
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(19, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.CreateTopicsRequest), s.(*kmsg.CreateTopicsResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewCreateTopicsResponseTopic()
			rt.Topic, rt.ErrorCode, rt.ErrorMessage = t.Topic, code, message(code)
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(20, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.DeleteTopicsRequest), s.(*kmsg.DeleteTopicsResponse)
		if req.Version < 6 {
			for _, n := range req.TopicNames {
				rt := kmsg.NewDeleteTopicsResponseTopic()
				name := n
				rt.Topic, rt.ErrorCode = &name, code
				resp.Topics = append(resp.Topics, rt)
			}
			return
		}
		for _, t := range req.Topics {
			rt := kmsg.NewDeleteTopicsResponseTopic()
			rt.Topic, rt.TopicID, rt.ErrorCode, rt.ErrorMessage = t.Topic, t.TopicID, code, message(code)
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(37, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.CreatePartitionsRequest), s.(*kmsg.CreatePartitionsResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewCreatePartitionsResponseTopic()
			rt.Topic, rt.ErrorCode, rt.ErrorMessage = t.Topic, code, message(code)
			resp.Topics = append(resp.Topics, rt)
		}
	})
}
