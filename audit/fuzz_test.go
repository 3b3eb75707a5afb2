package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

var (
	fuzzOnce  sync.Once
	fuzzRecs  []Record
	fuzzPub   ed25519.PublicKey
	fuzzError error
)

// fuzzChain loads the signed chain committed in testdata/chain.jsonl.
func fuzzChain(t testing.TB) ([]Record, ed25519.PublicKey) {
	fuzzOnce.Do(func() {
		f, err := os.Open(filepath.Join("testdata", "chain.jsonl"))
		if err != nil {
			fuzzError = err
			return
		}
		defer f.Close()
		fuzzRecs, fuzzError = ReadRecords(f)
		if fuzzError == nil {
			fuzzPub, fuzzError = LoadPublicKey(filepath.Join("testdata", "chain.pub"))
		}
	})
	if fuzzError != nil {
		t.Fatal(fuzzError)
	}
	return fuzzRecs, fuzzPub
}

// FuzzVerifyReplace replaces one record of a valid signed chain with
// arbitrary bytes. Invariants: Verify never panics, and a chain whose
// record other than the last is replaced by different bytes never
// verifies. (Replacing the last record can look like a truncated tail,
// the documented limit, unless the chain ends with a final head whose
// replacement must still fail when it parses as the same chain and is not
// a duplicate of an earlier record.) Under RequireFinal(FinalAll) that
// exception goes too: the chain was closed cleanly, so any changed record
// fails it.
func FuzzVerifyReplace(f *testing.F) {
	recs, _ := fuzzChain(f)
	f.Add(uint8(3), []byte(`{}`))
	f.Add(uint8(0), bytes.Replace(recs[0].Value, []byte(`"t0"`), []byte(`"t9"`), 1))
	f.Add(uint8(5), recs[6].Value)
	f.Fuzz(func(t *testing.T, idx uint8, v []byte) {
		recs, pub := fuzzChain(t)
		i := int(idx) % len(recs)
		rs := cloneRecords(recs)
		rs[i].Value = v
		rep := VerifyRecords(rs, pub)
		if bytes.Equal(v, recs[i].Value) {
			if !rep.OK() {
				t.Fatalf("unchanged chain failed: %v", rep.Problems)
			}
			return
		}
		if i < len(recs)-1 && rep.OK() {
			t.Fatalf("record %d replaced by %q and the chain verified", i, v)
		}
		if i == len(recs)-1 && rep.OK() {
			// Only acceptable if the replacement is not part of the
			// chain, or is a byte-identical copy of an earlier record:
			// a redelivered duplicate, which verification skips, so the
			// chain then ends one record early (a truncated tail).
			dup := false
			for _, r := range recs[:i] {
				dup = dup || bytes.Equal(r.Value, v)
			}
			e, _, err := ParseEvent(v)
			if err == nil && e.ChainID == rep.Chains[0].Chain && !dup {
				t.Fatalf("final record replaced within the chain and verified: %q", v)
			}
		}
		if rep.RequireFinal(FinalAll); rep.OK() {
			t.Fatalf("record %d of a chain closed with a final head replaced by %q and it verified under FinalAll", i, v)
		}
		var b bytes.Buffer
		_ = rep.WriteText(&b)
		_, _ = json.Marshal(rep)
	})
}

// FuzzSpoolRecover opens a spool whose segment holds arbitrary bytes.
// Invariants: no panic; every record peek returns has a valid checksum
// (it is what was framed), and the spool accepts appends afterwards.
func FuzzSpoolRecover(f *testing.F) {
	good := func(vs ...string) []byte {
		var b []byte
		dir := f.TempDir()
		s, err := openSpool(dir, 1<<20)
		if err != nil {
			f.Fatal(err)
		}
		var in [][]byte
		for _, v := range vs {
			in = append(in, []byte(v))
		}
		if err := s.append(in); err != nil {
			f.Fatal(err)
		}
		s.close()
		b, _ = os.ReadFile(s.segPath(0))
		return b
	}
	f.Add(good("a", "bb", "ccc"))
	f.Add(append(good("x"), 0, 0, 0, 9, 1))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, seg []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "0000000000000000.seg"), seg, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := openSpool(dir, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		defer s.close()
		for i := 0; i < 4 && !s.empty(); i++ {
			vs, next, err := s.peek(1<<30, 1<<30)
			if err != nil {
				t.Fatalf("recovered spool unreadable: %v", err)
			}
			_ = vs
			if err := s.advance(next); err != nil {
				t.Fatal(err)
			}
		}
		if !s.empty() {
			t.Fatal("spool did not drain")
		}
		if err := s.append([][]byte{[]byte("after")}); err != nil {
			t.Fatal(err)
		}
		vs, _, err := s.peek(1, 100)
		if err != nil || len(vs) != 1 || string(vs[0]) != "after" {
			t.Fatalf("append after recovery: %q %v", vs, err)
		}
	})
}
