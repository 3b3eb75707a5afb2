package proxy

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// BenchmarkParseRequestHeader is the per-request cost of framing on the raw
// path (no filter wants the key).
func BenchmarkParseRequestHeader(b *testing.B) {
	req := kmsg.NewPtrFetchRequest()
	req.SetVersion(13)
	frame := kmsg.NewRequestFormatter(kmsg.FormatterClientID("bench-client")).AppendRequest(nil, req, 1)[4:]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseRequestHeader(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFetchResponseDecode is what the gateway pays per Fetch response
// at flexible versions to look for KIP-951 endpoints: a decode that aliases
// the record bytes, and the rewrite check.
func BenchmarkFetchResponseDecode(b *testing.B) {
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(16)
	for t := 0; t < 3; t++ {
		tp := kmsg.NewFetchResponseTopic()
		tp.TopicID = [16]byte{byte(t)}
		for p := 0; p < 6; p++ {
			pp := kmsg.NewFetchResponseTopicPartition()
			pp.Partition = int32(p)
			pp.RecordBatches = make([]byte, 64<<10)
			tp.Partitions = append(tp.Partitions, pp)
		}
		resp.Topics = append(resp.Topics, tp)
	}
	body := resp.AppendTo(nil)
	cl := newCluster(zap.NewNop())
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		r := kmsg.NewPtrFetchResponse()
		r.SetVersion(16)
		if err := r.ReadFrom(body); err != nil {
			b.Fatal(err)
		}
		if rewriteAddresses(r, fakeAdv{}, cl) {
			b.Fatal("nothing to rewrite")
		}
	}
}

// BenchmarkRewriteMetadata rewrites a 3-broker, 50-topic Metadata response
// and re-encodes it.
func BenchmarkRewriteMetadata(b *testing.B) {
	in := upstreamResponse(3, 12).(*kmsg.MetadataResponse)
	for i := 0; i < 50; i++ {
		t := in.Topics[0]
		name := "topic-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		t.Topic = &name
		t.TopicID = [16]byte{byte(i), 1}
		in.Topics = append(in.Topics, t)
	}
	body := in.AppendTo(nil)
	cl := newCluster(zap.NewNop())
	dst := make([]byte, 0, 2*len(body))
	b.ReportAllocs()
	for b.Loop() {
		r := kmsg.NewPtrMetadataResponse()
		r.SetVersion(12)
		if err := r.ReadFrom(body); err != nil {
			b.Fatal(err)
		}
		rewriteAddresses(r, fakeAdv{}, cl)
		dst = r.AppendTo(dst[:0])
	}
}
