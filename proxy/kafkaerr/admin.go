package kafkaerr

import "github.com/twmb/franz-go/pkg/kmsg"

// Administrative APIs naming resources. The others (DescribeACLs,
// DescribeLogDirs, delegation tokens, ListPartitionReassignments,
// DescribeClientQuotas, UpdateFeatures, DescribeCluster,
// ListConfigResources, the controller and broker-to-broker APIs) answer
// with their top-level error code.

func init() {
	register(30, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.CreateACLsRequest), s.(*kmsg.CreateACLsResponse)
		for range req.Creations {
			rr := kmsg.NewCreateACLsResponseResult()
			rr.ErrorCode, rr.ErrorMessage = code, message(code)
			resp.Results = append(resp.Results, rr)
		}
	})
	register(31, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.DeleteACLsRequest), s.(*kmsg.DeleteACLsResponse)
		for range req.Filters {
			rr := kmsg.NewDeleteACLsResponseResult()
			rr.ErrorCode, rr.ErrorMessage = code, message(code)
			resp.Results = append(resp.Results, rr)
		}
	})
	register(32, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.DescribeConfigsRequest), s.(*kmsg.DescribeConfigsResponse)
		for _, res := range req.Resources {
			rr := kmsg.NewDescribeConfigsResponseResource()
			rr.ResourceType, rr.ResourceName, rr.ErrorCode, rr.ErrorMessage = res.ResourceType, res.ResourceName, code, message(code)
			resp.Resources = append(resp.Resources, rr)
		}
	})
	register(33, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.AlterConfigsRequest), s.(*kmsg.AlterConfigsResponse)
		for _, res := range req.Resources {
			rr := kmsg.NewAlterConfigsResponseResource()
			rr.ResourceType, rr.ResourceName, rr.ErrorCode, rr.ErrorMessage = res.ResourceType, res.ResourceName, code, message(code)
			resp.Resources = append(resp.Resources, rr)
		}
	})
	register(44, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.IncrementalAlterConfigsRequest), s.(*kmsg.IncrementalAlterConfigsResponse)
		for _, res := range req.Resources {
			rr := kmsg.NewIncrementalAlterConfigsResponseResource()
			rr.ResourceType, rr.ResourceName, rr.ErrorCode, rr.ErrorMessage = res.ResourceType, res.ResourceName, code, message(code)
			resp.Resources = append(resp.Resources, rr)
		}
	})
	register(34, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.AlterReplicaLogDirsRequest), s.(*kmsg.AlterReplicaLogDirsResponse)
		for _, d := range req.Dirs {
			for _, t := range d.Topics {
				rt := kmsg.NewAlterReplicaLogDirsResponseTopic()
				rt.Topic = t.Topic
				for _, p := range t.Partitions {
					rp := kmsg.NewAlterReplicaLogDirsResponseTopicPartition()
					rp.Partition, rp.ErrorCode = p, code
					rt.Partitions = append(rt.Partitions, rp)
				}
				resp.Topics = append(resp.Topics, rt)
			}
		}
	})
	register(43, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.ElectLeadersRequest), s.(*kmsg.ElectLeadersResponse)
		resp.ErrorCode = code
		for _, t := range req.Topics {
			rt := kmsg.NewElectLeadersResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewElectLeadersResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.ErrorMessage = p, code, message(code)
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(45, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.AlterPartitionAssignmentsRequest), s.(*kmsg.AlterPartitionAssignmentsResponse)
		resp.ErrorCode, resp.ErrorMessage = code, message(code)
		for _, t := range req.Topics {
			rt := kmsg.NewAlterPartitionAssignmentsResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewAlterPartitionAssignmentsResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.ErrorMessage = p.Partition, code, message(code)
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	})
	register(49, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.AlterClientQuotasRequest), s.(*kmsg.AlterClientQuotasResponse)
		for _, e := range req.Entries {
			re := kmsg.NewAlterClientQuotasResponseEntry()
			re.ErrorCode, re.ErrorMessage = code, message(code)
			for _, en := range e.Entity {
				ren := kmsg.NewAlterClientQuotasResponseEntryEntity()
				ren.Type, ren.Name = en.Type, en.Name
				re.Entity = append(re.Entity, ren)
			}
			resp.Entries = append(resp.Entries, re)
		}
	})
	register(50, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.DescribeUserSCRAMCredentialsRequest), s.(*kmsg.DescribeUserSCRAMCredentialsResponse)
		resp.ErrorCode, resp.ErrorMessage = code, message(code)
		for _, u := range req.Users {
			rr := kmsg.NewDescribeUserSCRAMCredentialsResponseResult()
			rr.User, rr.ErrorCode, rr.ErrorMessage = u.Name, code, message(code)
			resp.Results = append(resp.Results, rr)
		}
	})
	register(51, func(r kmsg.Request, s kmsg.Response, code int16) {
		req, resp := r.(*kmsg.AlterUserSCRAMCredentialsRequest), s.(*kmsg.AlterUserSCRAMCredentialsResponse)
		add := func(user string) {
			rr := kmsg.NewAlterUserSCRAMCredentialsResponseResult()
			rr.User, rr.ErrorCode, rr.ErrorMessage = user, code, message(code)
			resp.Results = append(resp.Results, rr)
		}
		for _, d := range req.Deletions {
			add(d.Name)
		}
		for _, u := range req.Upsertions {
			add(u.Name)
		}
	})
}
