package audit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func vals(from, n int) [][]byte {
	var out [][]byte
	for i := from; i < from+n; i++ {
		out = append(out, fmt.Appendf(nil, "record-%04d-%s", i, bytes.Repeat([]byte("x"), 100)))
	}
	return out
}

func drain(t *testing.T, s *spool) [][]byte {
	t.Helper()
	var got [][]byte
	for !s.empty() {
		vs, next, err := s.peek(7, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, vs...)
		if err := s.advance(next); err != nil {
			t.Fatal(err)
		}
	}
	return got
}

func TestSpoolOrderRotationAndRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	s.segMax = 2048 // force rotation
	for i := 0; i < 50; i += 10 {
		if err := s.append(vals(i, 10)); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.segs) < 3 {
		t.Fatalf("no rotation: %d segments", len(s.segs))
	}
	// Release some, then reopen: the rest comes back in order.
	vs, next, err := s.peek(15, 1<<20) // stops at the first segment's end
	if err != nil || len(vs) == 0 {
		t.Fatalf("peek: %d %v", len(vs), err)
	}
	if err := s.advance(next); err != nil {
		t.Fatal(err)
	}
	s.close()
	s, err = openSpool(dir, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, s)
	want := vals(len(vs), 50-len(vs))
	if len(got) != len(want) {
		t.Fatalf("got %d records after restart, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("record %d = %q, want %q", i, got[i], want[i])
		}
	}
	if s.pending() != 0 || s.total != 0 {
		t.Fatalf("drained spool: pending %d total %d", s.pending(), s.total)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) > 3 { // one empty segment, replay.pos, LOCK
		t.Fatalf("drained spool left %d files", len(ents))
	}
}

func TestSpoolFullAndTornTail(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 4096)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		err := s.append(vals(n, 1))
		if errors.Is(err, errSpoolFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if s.total > 4096 || n == 0 {
		t.Fatalf("total %d with %d records", s.total, n)
	}
	s.close()
	// A torn write: half a record at the end.
	seg := s.segPath(s.segs[len(s.segs)-1])
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0, 0, 0, 50, 1, 2})
	f.Close()
	s, err = openSpool(dir, 4096)
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, s)
	if len(got) != n {
		t.Fatalf("got %d records, want %d", len(got), n)
	}
	// A corrupt record in the middle is reported, not returned.
	if err := s.append(vals(0, 3)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(s.segPath(s.segs[0]))
	b[s.roff+spoolHeader+5] ^= 0xff
	os.WriteFile(s.segPath(s.segs[0]), b, 0o600)
	if _, _, err := s.peek(10, 1<<20); err == nil {
		t.Fatal("corrupt record not detected")
	}
	if err := s.skipCorrupt(); err != nil || !s.empty() {
		t.Fatalf("skip: %v empty %t", err, s.empty())
	}
	if _, err := os.Stat(filepath.Join(dir, posFile)); err != nil {
		t.Fatal(err)
	}
}
