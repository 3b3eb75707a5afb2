package harness

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// TCP connection states in /proc/net/tcp.
const (
	tcpEstablished = "01"
	tcpListen      = "0A"
)

// socketInode finds the inode of the TCP socket whose local address is local
// and, if remote is valid, whose remote address is remote, in the given
// state ("" for any). It reads /proc/net/tcp and /proc/net/tcp6.
func socketInode(local, remote netip.AddrPort, state string) (uint64, error) {
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		ino, err := scanProcNet(f, local, remote, state)
		if err != nil {
			return 0, err
		}
		if ino != 0 {
			return ino, nil
		}
	}
	return 0, nil
}

func scanProcNet(file string, local, remote netip.AddrPort, state string) (uint64, error) {
	f, err := os.Open(file)
	if err != nil {
		if os.IsNotExist(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("harness: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		l, err := parseProcAddr(fields[1])
		if err != nil || !sameAddrPort(l, local) {
			continue
		}
		if remote.IsValid() {
			r, err := parseProcAddr(fields[2])
			if err != nil || !sameAddrPort(r, remote) {
				continue
			}
		}
		if state != "" && fields[3] != state {
			continue
		}
		ino, err := strconv.ParseUint(fields[9], 10, 64)
		if err != nil || ino == 0 {
			continue
		}
		return ino, nil
	}
	return 0, sc.Err()
}

func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}

// parseProcAddr decodes "0100007F:1F90" (IPv4) or the 32-hex-digit IPv6 form.
// The kernel prints each 32-bit word of the address in host (little-endian)
// byte order.
func parseProcAddr(s string) (netip.AddrPort, error) {
	host, port, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("harness: bad /proc address %q", s)
	}
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("harness: bad /proc port %q", s)
	}
	raw, err := hex.DecodeString(host)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("harness: bad /proc host %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(p)), nil
}

// pidOwnsInode reports whether process pid holds a file descriptor for the
// socket inode.
func pidOwnsInode(pid int, inode uint64) bool {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	want := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	for _, e := range ents {
		if link, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && link == want {
			return true
		}
	}
	return false
}

// ListeningPID reports whether process pid owns a listening TCP socket on
// addr (host:port).
func ListeningPID(pid int, addr string) (bool, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return false, fmt.Errorf("harness: %q: %v", addr, err)
	}
	ino, err := socketInode(ap, netip.AddrPort{}, tcpListen)
	if err != nil || ino == 0 {
		return false, err
	}
	return pidOwnsInode(pid, ino), nil
}
