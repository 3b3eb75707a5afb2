package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/proxy/kafkaerr"
)

// requests returns sluice_proxy_requests_total{api, outcome} from the
// gateway's registry.
func (e *testEnv) requests(t *testing.T, api, outcome string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sluice_proxy_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["api"] == api && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestLocalAnswerOutcome: a request a filter answers locally because it
// denied every resource in it (it records only deny decisions and sets
// x.Local, as the policy does for a Produce whose topics are all denied)
// is counted as outcome="denied"; a local answer with an allowed decision,
// or without decisions, stays "local", and so does ApiVersions.
func TestLocalAnswerOutcome(t *testing.T) {
	// The filter's behaviour is chosen by the first topic's name.
	local := filter.Funcs{FilterName: "local", Keys: []int16{0}, Req: func(_ context.Context, x *filter.Exchange) error {
		req := x.Request.(*kmsg.ProduceRequest)
		mode, _, _ := strings.Cut(req.Topics[0].Topic, "-")
		for i, tp := range req.Topics {
			switch mode {
			case "denied":
				x.Decisions = append(x.Decisions, filter.Decision{Action: "write", ResourceType: "topic", Resource: tp.Topic, Reason: "test deny"})
			case "mixed":
				x.Decisions = append(x.Decisions, filter.Decision{Action: "write", ResourceType: "topic", Resource: tp.Topic, Allow: i == 0})
			}
		}
		resp, err := kafkaerr.ErrorResponse(req, kerr.TopicAuthorizationFailed.Code)
		if err != nil {
			return err
		}
		x.Local = resp
		return nil
	}}
	e := newTestEnv(t, local)
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("outcome"))
	produce := func(topics ...string) {
		t.Helper()
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(9)
		req.Acks, req.TimeoutMillis = -1, 5000
		for _, name := range topics {
			tp := kmsg.NewProduceRequestTopic()
			tp.Topic = name
			p := kmsg.NewProduceRequestTopicPartition()
			tp.Partitions = append(tp.Partitions, p)
			req.Topics = append(req.Topics, tp)
		}
		_, body, err := rawRequest(t, e.boot, f.AppendRequest(nil, req, 1))
		if err != nil {
			t.Fatal(err)
		}
		resp := kmsg.NewPtrProduceResponse()
		resp.SetVersion(9)
		if err := resp.ReadFrom(body[5:]); err != nil { // correlation id, empty tags
			t.Fatal(err)
		}
		if len(resp.Topics) != len(topics) || resp.Topics[0].Partitions[0].ErrorCode != kerr.TopicAuthorizationFailed.Code {
			t.Fatalf("local answer %+v, want every topic TOPIC_AUTHORIZATION_FAILED", resp.Topics)
		}
	}
	for _, tc := range []struct {
		name    string
		topics  []string
		outcome string
	}{
		{"every resource denied", []string{"denied-a", "denied-b"}, "denied"},
		{"one resource allowed", []string{"mixed-a", "mixed-b"}, "local"},
		{"no decisions", []string{"plain-a"}, "local"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := map[string]float64{}
			for _, o := range []string{"local", "denied"} {
				before[o] = e.requests(t, "Produce", o)
			}
			produce(tc.topics...)
			// The write loop counts after writing the answer.
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				if e.requests(t, "Produce", "local")+e.requests(t, "Produce", "denied") > before["local"]+before["denied"] {
					break
				}
			}
			for _, o := range []string{"local", "denied"} {
				want := before[o]
				if o == tc.outcome {
					want++
				}
				if got := e.requests(t, "Produce", o); got != want {
					t.Errorf("Produce outcome=%q: %v, want %v", o, got, want)
				}
			}
		})
	}
	if e.requests(t, "Produce", "forwarded") != 0 {
		t.Error("a locally answered produce was counted as forwarded")
	}

	// ApiVersions is answered by the gateway: local, never denied.
	av := kmsg.NewPtrApiVersionsRequest()
	av.SetVersion(3)
	av.ClientSoftwareName, av.ClientSoftwareVersion = "outcome", "1"
	before := e.requests(t, "ApiVersions", "local")
	if _, _, err := rawRequest(t, e.boot, f.AppendRequest(nil, av, 2)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && e.requests(t, "ApiVersions", "local") == before; {
		time.Sleep(5 * time.Millisecond)
	}
	if got := e.requests(t, "ApiVersions", "local"); got != before+1 {
		t.Errorf("ApiVersions outcome=local: %v, want %v", got, before+1)
	}
	if got := e.requests(t, "ApiVersions", "denied"); got != 0 {
		t.Errorf("ApiVersions outcome=denied: %v, want 0", got)
	}
}
