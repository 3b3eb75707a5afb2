package kafkaerr

import (
	"reflect"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Share-group state APIs (InitializeShareGroupState, ReadShareGroupState,
// WriteShareGroupState, DeleteShareGroupState, ReadShareGroupStateSummary)
// are broker-to-coordinator calls that all have the same shape: topics by
// id with partitions, answered per partition. One reflective echo serves the
// five; the table test checks each at every version.

func init() {
	for _, key := range []int16{83, 84, 85, 86, 87} {
		register(key, echoTopicIDPartitions)
	}
	register(35, func(_ kmsg.Request, s kmsg.Response, code int16) {
		s.(*kmsg.DescribeLogDirsResponse).ErrorCode = code // v3+; older versions answer empty
	})
}

func echoTopicIDPartitions(r kmsg.Request, s kmsg.Response, code int16) {
	reqTopics := reflect.ValueOf(r).Elem().FieldByName("Topics")
	respTopics := reflect.ValueOf(s).Elem().FieldByName("Topics")
	out := reflect.MakeSlice(respTopics.Type(), 0, reqTopics.Len())
	for i := 0; i < reqTopics.Len(); i++ {
		rt := reflect.New(respTopics.Type().Elem()).Elem()
		defaults(rt)
		rt.FieldByName("TopicID").Set(reqTopics.Index(i).FieldByName("TopicID"))
		reqParts := reqTopics.Index(i).FieldByName("Partitions")
		parts := rt.FieldByName("Partitions")
		ps := reflect.MakeSlice(parts.Type(), 0, reqParts.Len())
		for j := 0; j < reqParts.Len(); j++ {
			rp := reflect.New(parts.Type().Elem()).Elem()
			defaults(rp)
			rp.FieldByName("Partition").Set(reqParts.Index(j).FieldByName("Partition"))
			rp.FieldByName("ErrorCode").SetInt(int64(code))
			if m := rp.FieldByName("ErrorMessage"); m.IsValid() {
				m.Set(reflect.ValueOf(message(code)))
			}
			ps = reflect.Append(ps, rp)
		}
		parts.Set(ps)
		out = reflect.Append(out, rt)
	}
	respTopics.Set(out)
}

func defaults(v reflect.Value) {
	if d, ok := v.Addr().Interface().(interface{ Default() }); ok {
		d.Default()
	}
}
