package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// errSpoolFull is returned by spool.append when the records do not fit.
var errSpoolFull = errors.New("audit: spool full")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const (
	spoolHeader = 8 // 4 bytes length, 4 bytes CRC-32C of the payload
	spoolMaxRec = 16 << 20
	posFile     = "replay.pos"
)

// spool is an append-only, fsync'd, size-bounded queue of record values on
// disk, split into segment files "<n>.seg". Records are read back (peek) in
// append order and released (advance) once written to the topic; the read
// position survives restarts in replay.pos. Each record is framed as
// [length uint32][crc32c uint32][payload]; a torn tail of the last
// segment is cut on open. Not safe for concurrent use.
type spool struct {
	dir    string
	max    int64 // bound on the total size of all segments
	segMax int64

	segs  []int64 // segment numbers, ascending
	sizes []int64 // size of each segment
	w     *os.File
	lock  *os.File
	roff  int64 // read offset in segs[0]
	total int64 // sum of sizes
}

func openSpool(dir string, max int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: spool: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &spool{dir: dir, max: max, segMax: max / 8, lock: lock}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	if s.segMax < 64<<10 {
		s.segMax = min(64<<10, max)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("audit: spool: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(name, 10, 64)
		if err != nil || n < 0 {
			continue
		}
		s.segs = append(s.segs, n)
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i] < s.segs[j] })
	rseg, roff, err := s.readPos()
	if err != nil {
		return nil, err
	}
	// Drop segments before the read position (already replayed).
	for len(s.segs) > 0 && s.segs[0] < rseg {
		_ = os.Remove(s.segPath(s.segs[0]))
		s.segs = s.segs[1:]
	}
	if len(s.segs) == 0 || s.segs[0] != rseg {
		roff = 0
	}
	for i, n := range s.segs {
		size, err := s.recover(n, i == len(s.segs)-1)
		if err != nil {
			return nil, err
		}
		s.sizes = append(s.sizes, size)
		s.total += size
	}
	if len(s.segs) > 0 && roff > s.sizes[0] {
		roff = s.sizes[0]
	}
	s.roff = roff
	if len(s.segs) == 0 {
		s.segs = []int64{rseg}
		s.sizes = []int64{0}
	}
	s.w, err = os.OpenFile(s.segPath(s.segs[len(s.segs)-1]), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: spool: %w", err)
	}
	ok = true
	return s, nil
}

func (s *spool) segPath(n int64) string { return filepath.Join(s.dir, fmt.Sprintf("%016d.seg", n)) }

// recover returns the size of the valid prefix of a segment; for the last
// segment a torn or corrupt tail is truncated.
func (s *spool) recover(n int64, last bool) (int64, error) {
	f, err := os.OpenFile(s.segPath(n), os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("audit: spool: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("audit: spool: %w", err)
	}
	if !last {
		return st.Size(), nil
	}
	var off int64
	hdr := make([]byte, spoolHeader)
	for {
		if _, err := f.ReadAt(hdr, off); err != nil {
			break
		}
		l := int64(binary.BigEndian.Uint32(hdr))
		// An event is never empty, and a zero-filled tail (the size of a
		// file reaches the disk before its data on some filesystems)
		// would otherwise read as empty records whose CRC, 0, matches.
		if l == 0 || l > spoolMaxRec || off+spoolHeader+l > st.Size() {
			break
		}
		p := make([]byte, l)
		if _, err := f.ReadAt(p, off+spoolHeader); err != nil || crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(hdr[4:]) {
			break
		}
		off += spoolHeader + l
	}
	if off != st.Size() {
		if err := f.Truncate(off); err != nil {
			return 0, fmt.Errorf("audit: spool: truncate torn tail: %w", err)
		}
		if err := f.Sync(); err != nil {
			return 0, fmt.Errorf("audit: spool: %w", err)
		}
	}
	return off, nil
}

func (s *spool) readPos() (int64, int64, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, posFile))
	if errors.Is(err, os.ErrNotExist) {
		if len(s.segs) > 0 {
			return s.segs[0], 0, nil
		}
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("audit: spool: %w", err)
	}
	if len(b) != 16 {
		return 0, 0, fmt.Errorf("audit: spool: corrupt %s", posFile)
	}
	return int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:])), nil
}

func (s *spool) writePos() error {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], uint64(s.segs[0]))
	binary.BigEndian.PutUint64(b[8:], uint64(s.roff))
	tmp := filepath.Join(s.dir, posFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b[:]); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.dir, posFile))
}

// pending is the number of bytes not yet released.
func (s *spool) pending() int64 { return s.total - s.roff }

func (s *spool) empty() bool { return s.pending() == 0 }

// append writes vals durably, all or none. It returns errSpoolFull when
// they do not fit in max.
func (s *spool) append(vals [][]byte) error {
	var need int64
	for _, v := range vals {
		if len(v) > spoolMaxRec {
			return fmt.Errorf("audit: spool: record of %d bytes too large", len(v))
		}
		need += spoolHeader + int64(len(v))
	}
	if s.total+need > s.max {
		return errSpoolFull
	}
	if s.sizes[len(s.sizes)-1] >= s.segMax {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	buf := make([]byte, 0, need)
	for _, v := range vals {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(v)))
		buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(v, castagnoli))
		buf = append(buf, v...)
	}
	last := len(s.sizes) - 1
	if _, err := s.w.Write(buf); err != nil {
		_ = s.w.Truncate(s.sizes[last])
		return fmt.Errorf("audit: spool: write: %w", err)
	}
	if err := s.w.Sync(); err != nil {
		_ = s.w.Truncate(s.sizes[last])
		return fmt.Errorf("audit: spool: fsync: %w", err)
	}
	s.sizes[last] += need
	s.total += need
	return nil
}

// appendFit appends the longest prefix of vals that fits in the spool and
// returns its length; when not all of vals fit, the error is errSpoolFull
// (or the write error).
func (s *spool) appendFit(vals [][]byte) (int, error) {
	room := s.max - s.total
	n := 0
	for _, v := range vals {
		need := spoolHeader + int64(len(v))
		if need > room {
			break
		}
		room -= need
		n++
	}
	if n > 0 {
		if err := s.append(vals[:n]); err != nil {
			return 0, err
		}
	}
	if n < len(vals) {
		return n, errSpoolFull
	}
	return n, nil
}

func (s *spool) rotate() error {
	n := s.segs[len(s.segs)-1] + 1
	f, err := os.OpenFile(s.segPath(n), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit: spool: rotate: %w", err)
	}
	if err := s.w.Close(); err != nil {
		f.Close()
		return fmt.Errorf("audit: spool: rotate: %w", err)
	}
	s.w = f
	s.segs = append(s.segs, n)
	s.sizes = append(s.sizes, 0)
	return nil
}

// peek returns up to maxN records (about maxBytes, at least one) from the
// read position without releasing them, and the read offset after them in
// the first segment.
func (s *spool) peek(maxN int, maxBytes int64) ([][]byte, int64, error) {
	end := s.sizes[0]
	if s.roff >= end {
		return nil, s.roff, nil
	}
	f, err := os.Open(s.segPath(s.segs[0]))
	if err != nil {
		return nil, s.roff, fmt.Errorf("audit: spool: %w", err)
	}
	defer f.Close()
	var out [][]byte
	off := s.roff
	var hdr [spoolHeader]byte
	for len(out) < maxN && off < end && (off-s.roff < maxBytes || len(out) == 0) {
		corrupt := fmt.Errorf("audit: spool: corrupt record at %s:%d", s.segPath(s.segs[0]), off)
		if off+spoolHeader > end {
			return out, off, corrupt
		}
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			return out, off, fmt.Errorf("audit: spool: read: %w", err)
		}
		l := int64(binary.BigEndian.Uint32(hdr[:]))
		if l == 0 || l > spoolMaxRec || off+spoolHeader+l > end { // never empty (see recover)
			return out, off, corrupt
		}
		p := make([]byte, l)
		if _, err := f.ReadAt(p, off+spoolHeader); err != nil && !errors.Is(err, io.EOF) {
			return out, off, fmt.Errorf("audit: spool: read: %w", err)
		}
		if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(hdr[4:]) {
			return out, off, corrupt
		}
		out = append(out, p)
		off += spoolHeader + l
	}
	return out, off, nil
}

// advance releases everything before off in the first segment, deleting
// drained segments, and persists the read position.
func (s *spool) advance(off int64) error {
	s.roff = off
	for s.roff >= s.sizes[0] && s.sizes[0] > 0 {
		if len(s.segs) == 1 {
			// Fully drained: start a fresh segment.
			if err := s.rotate(); err != nil {
				return err
			}
		}
		_ = os.Remove(s.segPath(s.segs[0]))
		s.total -= s.sizes[0]
		s.segs, s.sizes = s.segs[1:], s.sizes[1:]
		s.roff = 0
	}
	if err := s.writePos(); err != nil {
		return fmt.Errorf("audit: spool: persist position: %w", err)
	}
	return nil
}

// skipCorrupt drops the rest of the first segment after a corrupt record.
func (s *spool) skipCorrupt() error { return s.advance(s.sizes[0]) }

func (s *spool) close() error {
	err := s.w.Close()
	s.lock.Close()
	return err
}
