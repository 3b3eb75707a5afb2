package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Problem kinds; any problem fails verification.
const (
	ProblemMalformed      = "malformed"       // record is not an audit event
	ProblemGap            = "gap"             // sequences missing (deleted events)
	ProblemChanged        = "changed"         // bytes differ from what the chain recorded
	ProblemReordered      = "reordered"       // topic order differs from chain order
	ProblemBadSignature   = "bad_signature"   // chain head signature does not verify
	ProblemTruncatedStart = "truncated_start" // chain does not start at sequence 0
	ProblemUnfinished     = "unfinished"      // chain required to end in a final head does not (RequireFinal)
	ProblemAfterFinal     = "after_final"     // events follow a chain's verified final head (appended by someone else)
)

// Problem is one verification failure and where it is.
type Problem struct {
	Kind      string `json:"kind"`
	Instance  string `json:"instance,omitempty"`
	Chain     string `json:"chain,omitempty"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Sequence  uint64 `json:"sequence"`
	Detail    string `json:"detail"`
}

func (p Problem) String() string {
	return fmt.Sprintf("%s: instance %s chain %s partition %d offset %d sequence %d: %s",
		p.Kind, p.Instance, p.Chain, p.Partition, p.Offset, p.Sequence, p.Detail)
}

// ChainReport summarises one chain (one run of one gateway instance).
type ChainReport struct {
	Instance   string  `json:"instance"`
	Chain      string  `json:"chain"`
	Partitions []int32 `json:"partitions"`
	Events     int     `json:"events"`
	FirstSeq   uint64  `json:"first_sequence"`
	LastSeq    uint64  `json:"last_sequence"`
	// SignedHeads is the number of chain heads whose signature verified;
	// SignedThrough the sequence of the last of them (-1 if none).
	SignedHeads   int   `json:"signed_heads"`
	SignedThrough int64 `json:"signed_through"`
	// UnsignedTail counts events after the last verified head: chained,
	// but their deletion from the end cannot be detected.
	UnsignedTail int `json:"unsigned_tail"`
	// Final is true when the chain ends with the head written on clean
	// shutdown.
	Final bool `json:"final"`
	// LastPartition and LastOffset place the chain's last event.
	LastPartition int32 `json:"last_partition"`
	LastOffset    int64 `json:"last_offset"`
	// Duplicates counts byte-identical re-deliveries (a write that timed
	// out but landed, then replayed from the spool); they are not
	// problems.
	Duplicates int  `json:"duplicates"`
	OK         bool `json:"ok"`
}

// Report is the result of a verification.
type Report struct {
	Topic             string        `json:"topic,omitempty"`
	Records           int           `json:"records"`
	SignaturesChecked bool          `json:"signatures_checked"`
	Chains            []ChainReport `json:"chains"`
	Problems          []Problem     `json:"problems"`
}

// Finality says which chains must end in the final head an instance signs
// on clean shutdown (RequireFinal).
type Finality int

const (
	// FinalNone requires nothing: whether a chain ended is only reported.
	FinalNone Finality = iota
	// FinalEnded requires it of every chain of an instance but its latest:
	// a run that another run of the same instance followed has ended, and
	// without its final head it either crashed or had events cut from its
	// end. The latest chain may still be running. Chains are ordered by
	// where their first event sits, so this holds with the default
	// partitioning, which keeps an instance's events in one partition.
	FinalEnded
	// FinalAll requires it of every chain: the instances are stopped (an
	// archive, or a copy taken after shutdown).
	FinalAll
)

// ParseFinality reads "none", "ended" or "all".
func ParseFinality(s string) (Finality, error) {
	switch s {
	case "", "none":
		return FinalNone, nil
	case "ended":
		return FinalEnded, nil
	case "all":
		return FinalAll, nil
	}
	return FinalNone, fmt.Errorf("audit: require-final %q: want none, ended or all", s)
}

// RequireFinal adds an unfinished problem for every chain f covers that does
// not end in a final head. It closes the gap a hash chain leaves at its end:
// events after the last signed head, or the final head itself, can be cut
// without breaking any link, but not without the chain ending unfinished.
func (r *Report) RequireFinal(f Finality) {
	if f == FinalNone {
		return
	}
	for i := range r.Chains {
		c := &r.Chains[i]
		latest := i == len(r.Chains)-1 || r.Chains[i+1].Instance != c.Instance
		if c.Final || (f == FinalEnded && latest) {
			continue
		}
		why := "the chain does not end in a final head: its run crashed, is still running, or events were cut from its end"
		if f == FinalEnded {
			why = "the chain does not end in a final head although a later run of the instance followed: its run crashed or events were cut from its end"
		}
		r.Problems = append(r.Problems, Problem{Kind: ProblemUnfinished, Instance: c.Instance, Chain: c.Chain,
			Partition: c.LastPartition, Offset: c.LastOffset, Sequence: c.LastSeq,
			Detail: fmt.Sprintf("%s (%d unsigned events after the last signed head)", why, c.UnsignedTail)})
		c.OK = false
	}
}

// OK reports whether verification found no problem.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Err is nil when OK, else an error naming the first problem.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	return fmt.Errorf("audit: verify failed: %d problem(s), first: %s", len(r.Problems), r.Problems[0])
}

// WriteText writes the report for humans.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	topic := r.Topic
	if topic == "" {
		topic = "(copy)"
	}
	fmt.Fprintf(&b, "audit verify: topic %s: %d records, %d chains\n", topic, r.Records, len(r.Chains))
	if r.Records == 0 {
		b.WriteString("warning: the topic holds no audit events\n")
	}
	if !r.SignaturesChecked {
		b.WriteString("warning: no public key given; chain head signatures not checked\n")
	}
	for _, c := range r.Chains {
		status := "OK"
		if !c.OK {
			status = "FAILED"
		}
		signed := "none"
		if c.SignedThrough >= 0 {
			signed = fmt.Sprintf("through sequence %d", c.SignedThrough)
		}
		fmt.Fprintf(&b, "instance %s chain %s partitions %v: %d events (sequence %d..%d), %d signed heads (%s), unsigned tail %d, final %t, duplicates %d: %s\n",
			c.Instance, c.Chain, c.Partitions, c.Events, c.FirstSeq, c.LastSeq, c.SignedHeads, signed, c.UnsignedTail, c.Final, c.Duplicates, status)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "PROBLEM %s\n", p)
	}
	if r.OK() {
		b.WriteString("verify: OK\n")
	} else {
		fmt.Fprintf(&b, "verify: FAILED (%d problems)\n", len(r.Problems))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Verify reads the whole audit topic and verifies every chain in it,
// writing the report as text to w (if not nil). The error is for failing
// to read the topic; a verification failure is !Report.OK().
// A nil pubKey skips signature checks (reported). Memory is about 150
// bytes per event: record values are checked as they arrive and not kept.
func Verify(ctx context.Context, opts []kgo.Opt, topic string, pubKey ed25519.PublicKey, w io.Writer) (Report, error) {
	v := newCollector(pubKey)
	err := consume(ctx, opts, topic, kgo.NewOffset().AtStart(), true, func(r *kgo.Record) {
		v.add(r.Partition, r.Offset, r.Value)
	})
	if err != nil {
		return Report{Topic: topic}, err
	}
	rep := v.report()
	rep.Topic = topic
	if w != nil {
		if err := rep.WriteText(w); err != nil {
			return rep, fmt.Errorf("audit: verify: %w", err)
		}
	}
	return rep, nil
}

// VerifyReader verifies a copy written by WriteRecords.
func VerifyReader(r io.Reader, pubKey ed25519.PublicKey, w io.Writer) (Report, error) {
	recs, err := ReadRecords(r)
	if err != nil {
		return Report{}, err
	}
	rep := VerifyRecords(recs, pubKey)
	if w != nil {
		if err := rep.WriteText(w); err != nil {
			return rep, fmt.Errorf("audit: verify: %w", err)
		}
	}
	return rep, nil
}

// VerifyRecords verifies records (any order; topic order is taken from
// their partitions and offsets).
func VerifyRecords(recs []Record, pubKey ed25519.PublicKey) Report {
	v := newCollector(pubKey)
	for i := range recs {
		v.add(recs[i].Partition, recs[i].Offset, recs[i].Value)
	}
	return v.report()
}

// ventry is what verification keeps of one event.
type ventry struct {
	part      int32
	off       int64
	seq       uint64
	hash      [32]byte
	prev      [32]byte
	badSource string // non-empty: instance/source inconsistent
	head      bool
	final     bool
	headErr   error // chain head check result (nil: verified or not checked)
	dup       bool
}

type collector struct {
	pub       ed25519.PublicKey
	records   int
	problems  []Problem
	chains    map[string][]*ventry
	instances map[string]string // chain id -> instance
}

func newCollector(pub ed25519.PublicKey) *collector {
	return &collector{pub: pub, chains: map[string][]*ventry{}, instances: map[string]string{}}
}

// chainFields is the part of an event the chain checks need; decoding
// only it is much cheaper than the whole event.
type chainFields struct {
	SpecVersion string `json:"specversion"`
	Source      string `json:"source"`
	Sequence    string `json:"sequence"`
	PrevHash    string `json:"prevhash"`
	ChainID     string `json:"chainid"`
	Data        struct {
		Kind     string `json:"kind"`
		Instance string `json:"instance"`
	} `json:"data"`
}

func parseChainFields(value []byte) (*chainFields, uint64, error) {
	var c chainFields
	if err := json.Unmarshal(value, &c); err != nil {
		return nil, 0, fmt.Errorf("audit: parse event: %w", err)
	}
	if c.SpecVersion != SpecVersion {
		return nil, 0, fmt.Errorf("audit: parse event: specversion %q", c.SpecVersion)
	}
	seq, err := strconv.ParseUint(c.Sequence, 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("audit: parse event: sequence %q", c.Sequence)
	}
	if c.ChainID == "" || len(c.PrevHash) != 2*sha256.Size {
		return nil, 0, fmt.Errorf("audit: parse event: missing chain attributes")
	}
	return &c, seq, nil
}

func (v *collector) add(part int32, off int64, value []byte) {
	v.records++
	env, seq, err := parseChainFields(value)
	if err != nil {
		v.problems = append(v.problems, Problem{Kind: ProblemMalformed, Partition: part, Offset: off, Detail: err.Error()})
		return
	}
	e := &ventry{part: part, off: off, seq: seq, hash: sha256.Sum256(value)}
	if b, err := hex.DecodeString(env.PrevHash); err == nil && len(b) == 32 {
		copy(e.prev[:], b)
	} else {
		e.badSource = "prevhash is not 64 hex digits"
	}
	inst, ok := v.instances[env.ChainID]
	if !ok {
		inst = env.Data.Instance
		v.instances[env.ChainID] = inst
	}
	if env.Data.Instance != inst || env.Source != "sluice/"+inst {
		e.badSource = fmt.Sprintf("instance %q / source %q differ from the chain's instance", env.Data.Instance, env.Source)
	}
	if env.Data.Kind == KindChainHead {
		e.head = true
		full, _, err := ParseEvent(value)
		switch {
		case err != nil:
			e.headErr = err
		default:
			e.final = full.Data.Head != nil && full.Data.Head.Final
			if v.pub != nil {
				e.headErr = checkHead(full, seq, value, v.pub)
			}
		}
	}
	v.chains[env.ChainID] = append(v.chains[env.ChainID], e)
}

func (v *collector) report() Report {
	rep := Report{Records: v.records, SignaturesChecked: v.pub != nil, Problems: v.problems}
	ids := make([]string, 0, len(v.chains))
	for id := range v.chains {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		a, b := v.instances[ids[i]], v.instances[ids[j]]
		if a != b {
			return a < b
		}
		ea, eb := v.chains[ids[i]][0], v.chains[ids[j]][0]
		if ea.part != eb.part {
			return ea.part < eb.part
		}
		return ea.off < eb.off
	})
	for _, id := range ids {
		cr, probs := verifyChain(v.instances[id], id, v.chains[id], v.pub != nil)
		rep.Chains = append(rep.Chains, cr)
		rep.Problems = append(rep.Problems, probs...)
	}
	return rep
}

func verifyChain(instance, id string, es []*ventry, checkSigs bool) (ChainReport, []Problem) {
	cr := ChainReport{Instance: instance, Chain: id, SignedThrough: -1}
	var probs []Problem
	add := func(kind string, e *ventry, format string, args ...any) {
		probs = append(probs, Problem{Kind: kind, Instance: cr.Instance, Chain: cr.Chain, Partition: e.part,
			Offset: e.off, Sequence: e.seq, Detail: fmt.Sprintf(format, args...)})
	}
	// Topic order: within a partition, sequences must increase with offsets.
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].part != es[j].part {
			return es[i].part < es[j].part
		}
		return es[i].off < es[j].off
	})
	for _, e := range es {
		if e.badSource != "" {
			add(ProblemChanged, e, "%s", e.badSource)
		}
	}
	seen := map[uint64][32]byte{}
	var prevE *ventry
	for _, e := range es {
		if n := len(cr.Partitions); n == 0 || cr.Partitions[n-1] != e.part {
			cr.Partitions = append(cr.Partitions, e.part)
			prevE = nil
			clear(seen)
		}
		if h, ok := seen[e.seq]; ok && h == e.hash {
			e.dup = true
			continue
		}
		seen[e.seq] = e.hash
		if prevE != nil && e.seq < prevE.seq {
			add(ProblemReordered, e, "sequence %d comes after sequence %d (offset %d)", e.seq, prevE.seq, prevE.off)
		}
		prevE = e
	}

	// Chain order.
	sort.SliceStable(es, func(i, j int) bool { return es[i].seq < es[j].seq })
	chain := make([]*ventry, 0, len(es))
	for _, e := range es {
		if e.dup {
			cr.Duplicates++
			continue
		}
		if n := len(chain); n > 0 && chain[n-1].seq == e.seq {
			if chain[n-1].hash == e.hash {
				cr.Duplicates++
				continue
			}
			add(ProblemChanged, e, "two different events with sequence %d (other at partition %d offset %d)", e.seq, chain[n-1].part, chain[n-1].off)
			continue
		}
		chain = append(chain, e)
	}
	cr.Events = len(chain)
	cr.FirstSeq, cr.LastSeq = chain[0].seq, chain[len(chain)-1].seq
	if chain[0].seq != 0 {
		add(ProblemTruncatedStart, chain[0], "chain starts at sequence %d; events 0..%d are missing", chain[0].seq, chain[0].seq-1)
	} else if chain[0].prev != [32]byte{} {
		add(ProblemChanged, chain[0], "first event's prevhash is not the zero hash")
	}
	lastSigned, final := -1, -1
	for i, e := range chain {
		if final >= 0 {
			// A verified final head ends its run: the gateway never
			// writes after it, so whatever follows was appended by
			// someone else, however well it links.
			add(ProblemAfterFinal, e, "event after the final signed head at sequence %d", chain[final].seq)
		}
		if i > 0 {
			prev := chain[i-1]
			switch {
			case e.seq != prev.seq+1:
				add(ProblemGap, e, "sequences %d..%d missing between offset %d and offset %d", prev.seq+1, e.seq-1, prev.off, e.off)
			case e.prev != prev.hash:
				add(ProblemChanged, prev, "event does not match the prevhash recorded by sequence %d (partition %d offset %d): it or that link was altered",
					e.seq, e.part, e.off)
			}
		}
		if !e.head || !checkSigs {
			continue
		}
		if e.headErr != nil {
			add(ProblemBadSignature, e, "chain head: %v", e.headErr)
			continue
		}
		cr.SignedHeads++
		cr.SignedThrough = int64(e.seq)
		lastSigned = i
		if e.final && final < 0 {
			final = i
		}
	}
	cr.UnsignedTail = len(chain) - 1 - lastSigned
	last := chain[len(chain)-1]
	cr.Final = last.head && last.final
	cr.LastPartition, cr.LastOffset = last.part, last.off
	cr.OK = len(probs) == 0
	return cr, probs
}

func checkHead(env *Envelope, seq uint64, value []byte, pub ed25519.PublicKey) error {
	h := env.Data.Head
	if h == nil {
		return errors.New("no chain_head data")
	}
	if seq == 0 || h.SignedSequence != seq-1 || h.SignedHash != env.PrevHash || h.Events != seq {
		return errors.New("signed link does not match the head's sequence and prevhash")
	}
	// The signature covers the re-encoding; require the stored bytes to
	// be exactly that encoding so nothing outside it can be changed.
	canon, err := json.Marshal(env)
	if err != nil || !bytes.Equal(canon, value) {
		return errors.New("record bytes are not the canonical encoding of the signed event")
	}
	return verifyEvent(env, pub)
}
