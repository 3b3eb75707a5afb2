package e2e

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/test/harness"
)

// rawRequest encodes a request frame by hand, so any key and version can be
// sent. For a key kmsg knows, the header is flexible (v2) when the version
// would be, and the body is a valid encoding at the nearest version kmsg
// knows, as a newer client would send; an unknown key gets a v1 header and
// an empty body.
func rawRequest(key, version int16, corr int32) []byte {
	b := make([]byte, 4, 64)
	b = binary.BigEndian.AppendUint16(b, uint16(key))
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	b = binary.BigEndian.AppendUint16(b, 3)
	b = append(b, "raw"...)
	if req := kmsg.RequestForKey(key); req != nil {
		req.SetVersion(version)
		if req.IsFlexible() {
			b = append(b, 0) // empty header tagged fields
		}
		bodyVersion := min(max(version, 0), req.MaxVersion())
		req.SetVersion(bodyVersion)
		if av, ok := req.(*kmsg.ApiVersionsRequest); ok {
			av.ClientSoftwareName, av.ClientSoftwareVersion = "raw", "1"
		}
		b = req.AppendTo(b)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// readFrame reads one response frame; io.EOF (or a reset) means the gateway
// closed the connection.
func readFrame(conn net.Conn) ([]byte, error) {
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > 1<<20 {
		return nil, errors.New("response frame too large")
	}
	b := make([]byte, n)
	_, err := io.ReadFull(conn, b)
	return b, err
}

func closed(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		(errors.As(err, &ne) && !ne.Timeout()) || errors.Is(err, net.ErrClosed)
}

// TestRefusedRequests sends requests the gateway must never forward: an
// unknown API key, a known key at a version nobody supports, and a known key
// at a version kmsg knows but the upstream does not advertise. kfake would
// crash (or misparse) on the first two; the cluster's recorder stops and
// records anything that gets through. The gateway must answer with an error
// or close the connection, and keep serving.
func TestRefusedRequests(t *testing.T) {
	t.Parallel()
	cluster := harness.StartCluster(t, 3, kfake.SeedTopics(3, "e2e-raw"))
	gw := harness.StartGateway(t, cluster, map[string]any{"max_frame_bytes": 1 << 20})

	type refused struct {
		name         string
		key, version int16
	}
	cases := []refused{
		{"unknown key 9999", 9999, 0},
		{"unknown key 10000 (vendor range)", 10000, 0},
		{"metadata v99", int16(kmsg.Metadata), 99},
		{"produce v-1", int16(kmsg.Produce), -1},
	}
	// A version kmsg can decode but the brokers do not advertise.
	mv := cluster.MaxVersions()
	for key := int16(0); key < 100; key++ {
		req := kmsg.RequestForKey(key)
		if req == nil {
			continue
		}
		if max, ok := mv[key]; ok && req.MaxVersion() > max {
			cases = append(cases, refused{"above upstream max: " + kmsg.NameForKey(key), key, max + 1})
			break
		}
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", gw.Bootstrap, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(rawRequest(tc.key, tc.version, 42)); err != nil {
				t.Fatal(err)
			}
			resp, err := readFrame(conn)
			switch {
			case err == nil:
				if len(resp) < 4 || int32(binary.BigEndian.Uint32(resp)) != 42 {
					t.Errorf("answer %x does not carry correlation id 42", resp)
				}
				t.Logf("gateway answered %d bytes", len(resp))
			case closed(err):
				t.Logf("gateway closed the connection: %v", err)
			default:
				t.Errorf("gateway neither answered nor closed: %v", err)
			}
			for _, r := range cluster.Requests() {
				if r.Key == tc.key && r.Version == tc.version {
					t.Errorf("request key %d v%d reached upstream broker %s", r.Key, r.Version, r.Listener)
				}
			}
		})
	}

	t.Run("ApiVersions v99 gets a v0 UNSUPPORTED_VERSION answer", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", gw.Bootstrap, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write(rawRequest(int16(kmsg.ApiVersions), 99, 7)); err != nil {
			t.Fatal(err)
		}
		resp, err := readFrame(conn)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		if len(resp) < 6 || binary.BigEndian.Uint32(resp) != 7 {
			t.Fatalf("bad answer %x", resp)
		}
		v0 := kmsg.NewPtrApiVersionsResponse()
		v0.SetVersion(0)
		if err := v0.ReadFrom(resp[4:]); err != nil {
			t.Fatalf("answer is not an ApiVersions v0 body: %v (%x)", err, resp)
		}
		if v0.ErrorCode != kerr.UnsupportedVersion.Code {
			t.Errorf("error code %d, want UNSUPPORTED_VERSION (35)", v0.ErrorCode)
		}
		if len(v0.ApiKeys) == 0 {
			t.Errorf("answer lists no API keys to retry with")
		}
	})

	t.Run("oversized frame", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", gw.Bootstrap, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var hdr [12]byte
		binary.BigEndian.PutUint32(hdr[:], 64<<20) // 64 MiB > max_frame_bytes (1 MiB)
		binary.BigEndian.PutUint16(hdr[4:], uint16(kmsg.Produce))
		binary.BigEndian.PutUint16(hdr[6:], 9)
		binary.BigEndian.PutUint32(hdr[8:], 1)
		if _, err := conn.Write(hdr[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := readFrame(conn); !closed(err) {
			t.Errorf("gateway did not close a connection announcing a 64 MiB frame: %v", err)
		}
	})

	// The cluster and the gateway still serve, and nothing leaked.
	if b := gw.Brokers(t); len(b) != 3 {
		t.Errorf("after the refused requests the gateway lists %d brokers", len(b))
	}
	if gw.Exited() {
		t.Errorf("gateway exited")
	}
	cluster.AssertOnlyGateway(t)
}
