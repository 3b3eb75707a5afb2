package harness

import (
	"net"
	"net/netip"
	"os"
	"testing"
)

func TestParseProcAddr(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0100007F:1F90", "127.0.0.1:8080"},
		{"00000000:0050", "0.0.0.0:80"},
		{"00000000000000000000000001000000:0035", "[::1]:53"},
		{"0000000000000000FFFF00000100007F:1F90", "127.0.0.1:8080"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseProcAddr(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "zz:1", "0100007F", "0100007F:zz", "01007F:0001"} {
		if _, err := parseProcAddr(bad); err == nil {
			t.Errorf("%q: want error", bad)
		}
	}
}

// TestSocketOwnership checks the attribution the isolation assertions rely
// on: both ends of a loopback connection belong to this process, and a
// listening socket is found by its address.
func TestSocketOwnership(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	local := netip.MustParseAddrPort(c.LocalAddr().String())
	remote := netip.MustParseAddrPort(ln.Addr().String())
	ino, err := socketInode(local, remote, tcpEstablished)
	if err != nil || ino == 0 {
		t.Fatalf("client socket not found: ino=%d err=%v", ino, err)
	}
	if !pidOwnsInode(os.Getpid(), ino) {
		t.Fatal("this process does not own its own client socket")
	}
	if pidOwnsInode(1, ino) {
		t.Fatal("pid 1 claims our socket")
	}
	ok, err := ListeningPID(os.Getpid(), ln.Addr().String())
	if err != nil || !ok {
		t.Fatalf("listener not attributed to this process: %v %v", ok, err)
	}
	ok, _ = ListeningPID(os.Getpid(), c.LocalAddr().String())
	if ok {
		t.Fatal("a connected socket was reported as listening")
	}
}
