package kafkaerr

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fill gives every list in v one element and every name a value, so a
// request names at least one resource of each kind it can.
func fill(v reflect.Value, depth int) {
	switch v.Kind() {
	case reflect.Ptr:
		if depth > 0 && v.IsNil() && v.Type().Elem().Kind() == reflect.String {
			s := "r"
			v.Set(reflect.ValueOf(&s))
		}
		if v.Type().Elem().Kind() == reflect.Struct && !v.IsNil() {
			fill(v.Elem(), depth+1)
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			f := v.Field(i)
			name := v.Type().Field(i).Name
			if !f.CanSet() || name == "Version" || name == "UnknownTags" {
				continue
			}
			fill(f, depth+1)
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return
		}
		if depth < 6 && v.Len() == 0 {
			s := reflect.MakeSlice(v.Type(), 1, 1)
			if e := s.Index(0); e.Kind() == reflect.Struct {
				if d, ok := e.Addr().Interface().(interface{ Default() }); ok {
					d.Default()
				}
			}
			fill(s.Index(0), depth+1)
			v.Set(s)
		}
	case reflect.String:
		if v.String() == "" {
			v.SetString("r")
		}
	case reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			for i := 0; i < v.Len(); i++ {
				v.Index(i).SetUint(7)
			}
		}
	}
}

// codes collects every ErrorCode-like field value in v.
func codes(v reflect.Value, out map[int16]int) {
	switch v.Kind() {
	case reflect.Ptr:
		if !v.IsNil() {
			codes(v.Elem(), out)
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			f := v.Field(i)
			if n := v.Type().Field(i).Name; (n == "ErrorCode" || n == "AcknowledgeErrorCode") && f.Kind() == reflect.Int16 {
				out[int16(f.Int())]++
			}
			codes(f, out)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			codes(v.Index(i), out)
		}
	}
}

func TestErrorResponseEveryKeyEveryVersion(t *testing.T) {
	code := kerr.TopicAuthorizationFailed.Code
	for key := int16(0); kmsg.RequestForKey(key) != nil; key++ {
		proto := kmsg.RequestForKey(key)
		t.Run(kmsg.NameForKey(key), func(t *testing.T) {
			for v := int16(0); v <= proto.MaxVersion(); v++ {
				req := kmsg.RequestForKey(key)
				if d, ok := req.(interface{ Default() }); ok {
					d.Default()
				}
				fill(reflect.ValueOf(req).Elem(), 0)
				req.SetVersion(v)
				resp, err := ErrorResponse(req, code)
				if err != nil {
					t.Fatalf("v%d: %v", v, err)
				}
				if resp.Key() != key || resp.GetVersion() != v {
					t.Fatalf("v%d: response key %d version %d", v, resp.Key(), resp.GetVersion())
				}
				// Round trip through the wire format at this version.
				wire := resp.AppendTo(nil)
				back := kmsg.ResponseForKey(key)
				back.SetVersion(v)
				if err := back.ReadFrom(wire); err != nil {
					t.Fatalf("v%d: response does not decode: %v", v, err)
				}
				if again := back.AppendTo(nil); !bytes.Equal(again, wire) {
					t.Fatalf("v%d: response changed in a round trip", v)
				}
				got := map[int16]int{}
				codes(reflect.ValueOf(back), got)
				if got[code] == 0 && !(key == 35 && v < 3) {
					// DescribeLogDirs before v3 has no error field for a
					// refused request; Kafka answers an empty result.
					t.Fatalf("v%d: error code %d not in the decoded response (%v)", v, code, got)
				}
				// Every resource echoed: a request naming N resources gets
				// no fewer error entries than resource lists it filled.
				if _, echoing := echoes[key]; echoing && got[0] > 0 && !allowsZero(key) {
					t.Errorf("v%d: some entries carry no error: %v", v, got)
				}
			}
		})
	}
}

// allowsZero lists responses where an unset secondary code (a top-level
// code beside per-resource codes, an acknowledgement code) legitimately
// stays zero.
func allowsZero(key int16) bool {
	switch key {
	case 1, 3, 9, 10, 24, 35, 43, 78, 79: // 78, 79: a topic denial leaves the share session's top-level error alone
		return true
	}
	return false
}

func TestErrorResponseEchoesResources(t *testing.T) {
	code := kerr.GroupAuthorizationFailed.Code
	req := kmsg.NewPtrDescribeGroupsRequest()
	req.Version = 5
	req.Groups = []string{"a", "b"}
	r, err := ErrorResponse(req, code)
	if err != nil {
		t.Fatal(err)
	}
	resp := r.(*kmsg.DescribeGroupsResponse)
	if len(resp.Groups) != 2 || resp.Groups[0].Group != "a" || resp.Groups[1].Group != "b" || resp.Groups[1].ErrorCode != code {
		t.Fatalf("%+v", resp.Groups)
	}

	pr := kmsg.NewPtrProduceRequest()
	pr.Version = 9
	pt := kmsg.NewProduceRequestTopic()
	pt.Topic = "t"
	for _, p := range []int32{0, 3} {
		pp := kmsg.NewProduceRequestTopicPartition()
		pp.Partition = p
		pt.Partitions = append(pt.Partitions, pp)
	}
	pr.Topics = append(pr.Topics, pt)
	r, err = ErrorResponse(pr, kerr.TopicAuthorizationFailed.Code)
	if err != nil {
		t.Fatal(err)
	}
	presp := r.(*kmsg.ProduceResponse)
	if len(presp.Topics) != 1 || presp.Topics[0].Topic != "t" || len(presp.Topics[0].Partitions) != 2 ||
		presp.Topics[0].Partitions[1].Partition != 3 || presp.Topics[0].Partitions[1].ErrorCode != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("%+v", presp.Topics)
	}
}

func TestErrorResponseRejects(t *testing.T) {
	if _, err := ErrorResponse(nil, 1); err == nil {
		t.Error("nil request accepted")
	}
	var nilReq *kmsg.FetchRequest
	if _, err := ErrorResponse(nilReq, 1); err == nil {
		t.Error("typed nil request accepted")
	}
	req := kmsg.NewPtrFetchRequest()
	req.Version = req.MaxVersion() + 1
	if _, err := ErrorResponse(req, 1); err == nil {
		t.Error("unknown version accepted")
	}
}

// TestFetchRefusalHasEmptyRecords: a refused Fetch partition carries an
// empty record set on the wire, never a null one (length -1), which
// librdkafka 2.0 cannot parse.
func TestFetchRefusalHasEmptyRecords(t *testing.T) {
	for v := int16(4); v <= kmsg.NewPtrFetchRequest().MaxVersion(); v++ {
		req := kmsg.NewPtrFetchRequest()
		req.SetVersion(v)
		tp := kmsg.NewFetchRequestTopic()
		tp.Topic, tp.TopicID = "t", [16]byte{1}
		tp.Partitions = append(tp.Partitions, kmsg.NewFetchRequestTopicPartition())
		req.Topics = append(req.Topics, tp)
		resp, err := ErrorResponse(req, 29)
		if err != nil {
			t.Fatal(err)
		}
		// Re-decode: a null record set decodes back as nil, an empty
		// one as a non-nil empty slice.
		out := kmsg.NewPtrFetchResponse()
		out.SetVersion(v)
		if err := out.ReadFrom(resp.AppendTo(nil)); err != nil {
			t.Fatal(err)
		}
		rb := out.Topics[0].Partitions[0].RecordBatches
		if rb == nil || len(rb) != 0 {
			t.Fatalf("v%d: refused partition records %v (nil = null on the wire)", v, rb)
		}
	}
}

// A share fetch or acknowledge whose topics are all denied is answered as
// Kafka answers it: per partition, the top-level error left alone (a
// client takes a top-level error for a share session failure and retries);
// a denied group is the top-level error.
func TestShareTopicDenialIsPerPartition(t *testing.T) {
	req := kmsg.NewPtrShareFetchRequest()
	rt := kmsg.NewShareFetchRequestTopic()
	rt.Partitions = append(rt.Partitions, kmsg.NewShareFetchRequestTopicPartition())
	req.Topics = append(req.Topics, rt)
	resp, err := ErrorResponse(req, kerr.TopicAuthorizationFailed.Code)
	if err != nil {
		t.Fatal(err)
	}
	r := resp.(*kmsg.ShareFetchResponse)
	if r.ErrorCode != 0 || r.Topics[0].Partitions[0].ErrorCode != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("topic denial: top-level %d, partition %d", r.ErrorCode, r.Topics[0].Partitions[0].ErrorCode)
	}
	resp, err = ErrorResponse(req, kerr.GroupAuthorizationFailed.Code)
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.(*kmsg.ShareFetchResponse); r.ErrorCode != kerr.GroupAuthorizationFailed.Code {
		t.Fatalf("group denial: top-level %d", r.ErrorCode)
	}
}
