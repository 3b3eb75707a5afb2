package proxy

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap/zaptest"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// DESIGN: "dialled ... after the client authenticated, so a stranger cannot
// make the gateway dial upstream". Before any client has authenticated (no
// cached ApiVersions), an unauthenticated stranger's ApiVersions makes the
// gateway dial upstream and authenticate with its own credentials.
func TestStrangerApiVersionsNeverDialsUpstream(t *testing.T) {
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	var dials atomic.Int32
	kf.Control(func(req kmsg.Request) (kmsg.Response, error, bool) {
		if av, ok := req.(*kmsg.ApiVersionsRequest); ok && av.ClientSoftwareName == "sluice" {
			dials.Add(1)
		}
		return nil, nil, false
	})
	kf.KeepControl()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	zero := 0
	cfg.BrokerPortBase = &zero
	cfg.Listeners = []ListenerConfig{{SASL: []string{"PLAIN"}}}
	cfg.Upstream.Brokers = kf.ListenAddrs()
	srv, err := New(Options{Config: cfg, Logger: zaptest.NewLogger(t), Registerer: prometheus.NewRegistry(),
		Authenticator: func(ListenerConfig) (filter.Authenticator, error) { return plainAuth{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	r := dialRaw(t, srv.Addrs()["default"])
	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(3)
	r.send(req)
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(3)
	if err := r.recv(resp); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := dials.Load(); n > 0 {
		t.Fatalf("an unauthenticated client made the gateway dial (and authenticate to) the upstream %d time(s)", n)
	}
}

// max_sasl_frame_bytes bounds "every ApiVersions, SASL handshake and SASL
// token frame at any time (re-authentication)". The check after
// authentication only runs for frames read in part (>= cutThroughMin,
// 256 KiB): with a limit under 256 KiB, a re-authentication frame between
// the limit and 256 KiB is read whole and processed.
func TestSASLFrameLimitBelowCutThrough(t *testing.T) {
	const limit = 8 << 10
	addr, events := newSASLEnvWith(t, 0, func(c *Config) { c.MaxSASLFrameBytes = limit })
	r := dialRaw(t, addr)
	handshake(r, 1, "PLAIN")
	if resp, err := authenticate(r, "\x00alice\x00secret"); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("authenticate: %+v %v", resp, err)
	}
	<-events
	// ApiVersions is bounded the same way (DESIGN: "max_sasl_frame_bytes
	// ... for ApiVersions/SASL frames").
	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(3)
	req.ClientSoftwareName = strings.Repeat("a", 100<<10) // 12x the limit
	req.ClientSoftwareVersion = "1"
	r.send(req)
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(3)
	if err := r.recv(resp); err == nil {
		t.Fatalf("a %d-byte ApiVersions after authentication was read and answered (error code %d); max_sasl_frame_bytes is %d",
			len(req.ClientSoftwareName), resp.ErrorCode, limit)
	}
}
