package policy

import (
	"fmt"
	"reflect"

	"github.com/twmb/franz-go/pkg/kerr"
)

// nameFields are the struct fields that name a resource in Kafka messages,
// with the kind of resource each names, in the order they are looked for.
var nameFields = []struct{ field, kind string }{
	{"Topic", "topic"}, {"TopicID", "topic"}, {"Group", "group"}, {"GroupID", "group"},
	{"TransactionalID", "txn"}, {"Key", "key"}, {"ResourceName", "config"},
}

// nameLists are []string fields that list resources.
var nameLists = map[string]string{
	"Groups": "group", "GroupIDs": "group", "TransactionalIDs": "txn", "TopicNames": "topic",
	"SubscribedTopicNames": "topic", "CoordinatorKeys": "key",
}

// authCodes are the authorization-failed error codes the policy filter
// answers with, by the kind of resource each is about.
var authCodes = map[int16]string{
	kerr.TopicAuthorizationFailed.Code:           "topic",
	kerr.GroupAuthorizationFailed.Code:           "group",
	kerr.ClusterAuthorizationFailed.Code:         "cluster",
	kerr.TransactionalIDAuthorizationFailed.Code: "txn",
	kerr.DelegationTokenAuthorizationFailed.Code: "token",
}

// resources returns every resource a Kafka request or response names, as
// "kind:name" (nested under its parent's key with "/", as
// "group:g/topic:t"), mapped to the error code carried with it: its own
// ErrorCode if set, else the first nonzero ErrorCode of its partitions. The
// message's top-level ErrorCode is under "" and names at the top level (an
// EndTxn's transactional id) carry it.
func resources(msg any) map[string]int16 {
	out := map[string]int16{}
	v := reflect.ValueOf(msg).Elem()
	top := int16(0)
	if ec := v.FieldByName("ErrorCode"); ec.IsValid() && ec.Kind() == reflect.Int16 {
		top = int16(ec.Int())
		out[""] = top
	}
	if k := nameOf(v); k != "" {
		out[k] = top
	}
	walkResources(v, "", false, out)
	return out
}

// nameOf returns "kind:name" for a struct that names a resource, "" for one
// that does not (a partition). A top-level message may name several (a
// TxnOffsetCommit's transactional id and group); only the first counts
// here, walkResources records the others.
func nameOf(v reflect.Value) string {
	for _, nf := range nameFields {
		if n := nameValue(v.FieldByName(nf.field)); n != "" {
			return nf.kind + ":" + n
		}
	}
	return ""
}

func nameValue(f reflect.Value) string {
	switch {
	case !f.IsValid():
	case f.Kind() == reflect.String:
		return f.String()
	case f.Kind() == reflect.Ptr && f.Type().Elem().Kind() == reflect.String && !f.IsNil():
		return f.Elem().String()
	case f.Kind() == reflect.Array && f.Type().Elem().Kind() == reflect.Uint8 && !f.IsZero():
		id := f.Interface().([16]byte)
		if n, ok := resolver.TopicName(id); ok {
			return n
		}
		return fmt.Sprintf("id-%x", id)
	}
	return ""
}

// codeOf is the error code a resource element carries: its own ErrorCode
// if set, else the first nonzero code of its partitions; an element without
// an ErrorCode of its own (a batched AddPartitionsToTxn transaction) carries
// the first nonzero code of its named children.
func codeOf(v reflect.Value) int16 {
	ec := v.FieldByName("ErrorCode")
	own := ec.IsValid() && ec.Kind() == reflect.Int16
	if own && ec.Int() != 0 {
		return int16(ec.Int())
	}
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if f.Kind() != reflect.Slice || f.Type().Elem().Kind() != reflect.Struct {
			continue
		}
		for j := 0; j < f.Len(); j++ {
			e := f.Index(j)
			if nameOf(e) != "" {
				if !own {
					if c := codeOf(e); c != 0 {
						return c
					}
				}
				continue
			}
			if c := e.FieldByName("ErrorCode"); c.IsValid() && c.Kind() == reflect.Int16 && c.Int() != 0 {
				return int16(c.Int())
			}
		}
	}
	return 0
}

// walkResources records the resources of v's lists under prefix. Elements
// that name nothing are walked through; outside a named resource (where
// they would be its partitions) those carrying an ErrorCode are recorded
// by position, as "#0" (CreateACLs results).
func walkResources(v reflect.Value, prefix string, inNamed bool, out map[string]int16) {
	if prefix == "" && !inNamed {
		// Every name field of the top level, not only the first.
		for _, nf := range nameFields {
			if n := nameValue(v.FieldByName(nf.field)); n != "" {
				if _, seen := out[nf.kind+":"+n]; !seen {
					out[nf.kind+":"+n] = out[""]
				}
			}
		}
	}
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if f.Kind() != reflect.Slice {
			continue
		}
		if kind, ok := nameLists[v.Type().Field(i).Name]; ok && f.Type().Elem().Kind() == reflect.String {
			for j := 0; j < f.Len(); j++ {
				out[prefix+kind+":"+f.Index(j).String()] = 0
			}
			continue
		}
		if f.Type().Elem().Kind() != reflect.Struct {
			continue
		}
		for j := 0; j < f.Len(); j++ {
			e := f.Index(j)
			k := nameOf(e)
			if k == "" {
				if ec := e.FieldByName("ErrorCode"); !inNamed && ec.IsValid() && ec.Kind() == reflect.Int16 {
					out[fmt.Sprintf("%s#%d", prefix, j)] = int16(ec.Int())
				}
				walkResources(e, prefix, inNamed, out)
				continue
			}
			out[prefix+k] = codeOf(e)
			walkResources(e, prefix+k+"/", true, out)
		}
	}
}
