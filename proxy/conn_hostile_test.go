package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/proxy/filter"
)

// A filter that replaces x.Request (the Filter contract: "It may rewrite
// x.Request") and does not implement RequestChangeReporter must have its
// request forwarded. forward re-encodes its local `req`, not x.Request.
func TestReplacedRequestForwarded(t *testing.T) {
	f := filter.Funcs{FilterName: "replace", Keys: []int16{19}, Req: func(_ context.Context, x *filter.Exchange) error {
		old := x.Request.(*kmsg.CreateTopicsRequest)
		nr := kmsg.NewPtrCreateTopicsRequest()
		nr.SetVersion(old.GetVersion())
		nr.TimeoutMillis = old.TimeoutMillis
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = "replaced-by-filter", 1, 1
		nr.Topics = append(nr.Topics, rt)
		x.Request = nr
		return nil
	}}
	e := newTestEnv(t, f)
	cl := e.client(t)
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = "as-sent", 1, 1
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != 1 || resp.Topics[0].Topic != "replaced-by-filter" {
		t.Fatalf("upstream got the client's request, not the filter's: created %+v", resp.Topics[0].Topic)
	}
}

// Shutdown drains: answers owed for requests already forwarded are still
// written. When the read loop is in the middle of reading a large frame
// (>= 256 KiB, read whole because a filter wants the key) the drain's read
// deadline makes readRest fail and readLoop returns false (not drained), so
// the connection is closed and the earlier request's answer is lost.
func TestDrainMidLargeFrameKeepsOwedAnswer(t *testing.T) {
	e := newTestEnv(t, filter.Funcs{FilterName: "wants-produce", Keys: []int16{0}})
	release, entered := e.holdKey(2)

	c, err := net.Dial("tcp", e.boot)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw"))

	// A: ListOffsets, held in the broker.
	lo := listOffsetsLatest("drain-mid-frame")
	lo.SetVersion(4)
	if _, err := c.Write(f.AppendRequest(nil, lo, 1)); err != nil {
		t.Fatal(err)
	}
	<-entered

	// B: the first 8 KiB of a 300 KiB Produce frame.
	const size = 300 << 10
	hdr := binary.BigEndian.AppendUint32(nil, size)
	hdr = binary.BigEndian.AppendUint16(hdr, 0) // Produce
	hdr = binary.BigEndian.AppendUint16(hdr, 7) // v7
	hdr = binary.BigEndian.AppendUint32(hdr, 2) // correlation id
	hdr = binary.BigEndian.AppendUint16(hdr, 3)
	hdr = append(hdr, "raw"...)
	part := make([]byte, 8<<10)
	copy(part, hdr)
	if _, err := c.Write(part); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the read loop waits in readRest

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- e.srv.Shutdown(ctx)
	}()
	time.Sleep(300 * time.Millisecond)
	close(release)

	var sz [4]byte
	if _, err := io.ReadFull(c, sz[:]); err != nil {
		t.Fatalf("answer to the in-flight ListOffsets (correlation 1) lost at shutdown: %v", err)
	}
	b := make([]byte, binary.BigEndian.Uint32(sz[:]))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	if corr := int32(binary.BigEndian.Uint32(b)); corr != 1 {
		t.Fatalf("correlation %d, want 1", corr)
	}
	<-shut
}

// serve replaces c.nc with the TLS connection after the handshake, on the
// connection's goroutine, while Shutdown (drain) and the shutdown deadline
// (close) read c.nc from another goroutine with no synchronisation.
// Run with -race.
func TestTLSConnDrainNoRace(t *testing.T) {
	pki, err := authntest.NewPKI(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cert, key := pki.Server.CertFile, pki.Server.KeyFile
	e := newTestEnvWith(t, func(c *Config) {
		c.Listeners = []ListenerConfig{{TLS: ServerTLSConfig{Enabled: true, CertFile: cert, KeyFile: key}}}
	})
	tc, err := tls.Dial("tcp", e.boot, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // serve has set c.nc = tc
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = e.srv.Shutdown(ctx)
}
