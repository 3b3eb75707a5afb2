package harness

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// rawRequest encodes a v1-header request frame by hand, so any key and
// version can be sent.
func rawRequest(key, version int16, corr int32, body []byte) []byte {
	b := make([]byte, 4, 64)
	b = binary.BigEndian.AppendUint16(b, uint16(key))
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	b = binary.BigEndian.AppendUint16(b, 4)
	b = append(b, "test"...)
	b = append(b, body...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// TestRecorder checks what the isolation assertions rest on: a direct
// connection is attributed to this process (not to a gateway), and a request
// kfake cannot parse is stopped and recorded instead of crashing the cluster.
func TestRecorder(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl); err != nil {
		t.Fatal(err)
	}
	conns := c.Conns()
	if len(conns) == 0 {
		t.Fatal("no connection recorded")
	}
	for _, cn := range conns {
		if cn.Owner != "test" {
			t.Errorf("direct connection attributed to %q (pid %d), want test", cn.Owner, cn.PID)
		}
	}
	var sawMetadata bool
	for _, r := range c.Requests() {
		sawMetadata = sawMetadata || r.Key == 3
	}
	if !sawMetadata {
		t.Errorf("metadata request not recorded: %+v", c.Requests())
	}

	for _, tc := range []struct {
		name         string
		key, version int16
	}{
		{"unknown key", 9999, 0},
		{"metadata v99", 3, 99},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(c.Leaks())
			conn, err := net.DialTimeout("tcp", c.Addrs()[0], 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(rawRequest(tc.key, tc.version, 7, nil)); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := io.ReadFull(conn, make([]byte, 4)); err == nil {
				t.Fatalf("broker answered %d bytes; the recorder should have closed the connection", n)
			}
			leaks := c.Leaks()
			if len(leaks) != before+1 {
				t.Fatalf("leaks %+v, want one more than %d", leaks, before)
			}
			if l := leaks[len(leaks)-1]; l.Key != tc.key || l.Version != tc.version {
				t.Errorf("leak %+v, want key %d version %d", l, tc.key, tc.version)
			}
		})
	}
	// The cluster still serves.
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl); err != nil {
		t.Fatalf("cluster stopped serving: %v", err)
	}
}
