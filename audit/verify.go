package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
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
// A nil pubKey skips signature checks (reported).
func Verify(ctx context.Context, opts []kgo.Opt, topic string, pubKey ed25519.PublicKey, w io.Writer) (Report, error) {
	recs, err := ReadTopic(ctx, opts, topic)
	if err != nil {
		return Report{Topic: topic}, err
	}
	rep := VerifyRecords(recs, pubKey)
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

type ventry struct {
	rec  *Record
	env  *Envelope
	seq  uint64
	hash string
	dup  bool
}

// VerifyRecords verifies records in topic order (partition, then offset).
func VerifyRecords(recs []Record, pubKey ed25519.PublicKey) Report {
	rep := Report{Records: len(recs), SignaturesChecked: pubKey != nil}
	chains := map[string][]*ventry{}
	var order []string
	for i := range recs {
		r := &recs[i]
		env, seq, err := ParseEvent(r.Value)
		if err != nil {
			rep.Problems = append(rep.Problems, Problem{Kind: ProblemMalformed, Partition: r.Partition, Offset: r.Offset,
				Detail: err.Error()})
			continue
		}
		if _, ok := chains[env.ChainID]; !ok {
			order = append(order, env.ChainID)
		}
		chains[env.ChainID] = append(chains[env.ChainID], &ventry{rec: r, env: env, seq: seq, hash: HashRecord(r.Value)})
	}
	for _, id := range order {
		cr, probs := verifyChain(chains[id], pubKey)
		rep.Chains = append(rep.Chains, cr)
		rep.Problems = append(rep.Problems, probs...)
	}
	sort.SliceStable(rep.Chains, func(i, j int) bool {
		if rep.Chains[i].Instance != rep.Chains[j].Instance {
			return rep.Chains[i].Instance < rep.Chains[j].Instance
		}
		return false
	})
	return rep
}

func verifyChain(es []*ventry, pub ed25519.PublicKey) (ChainReport, []Problem) {
	first := es[0]
	cr := ChainReport{Instance: first.env.Data.Instance, Chain: first.env.ChainID, SignedThrough: -1}
	var probs []Problem
	add := func(kind string, e *ventry, format string, args ...any) {
		probs = append(probs, Problem{Kind: kind, Instance: cr.Instance, Chain: cr.Chain, Partition: e.rec.Partition,
			Offset: e.rec.Offset, Sequence: e.seq, Detail: fmt.Sprintf(format, args...)})
	}
	for _, e := range es {
		if e.env.Data.Instance != cr.Instance || e.env.Source != "sluice/"+cr.Instance {
			add(ProblemChanged, e, "instance %q / source %q differ from the chain's instance", e.env.Data.Instance, e.env.Source)
		}
	}

	// Topic order: within a partition, sequences must increase with offsets.
	byPart := map[int32][]*ventry{}
	for _, e := range es {
		byPart[e.rec.Partition] = append(byPart[e.rec.Partition], e)
	}
	for p, pes := range byPart {
		cr.Partitions = append(cr.Partitions, p)
		sort.SliceStable(pes, func(i, j int) bool { return pes[i].rec.Offset < pes[j].rec.Offset })
		seen := map[uint64]string{}
		var prevE *ventry
		for _, e := range pes {
			if h, ok := seen[e.seq]; ok && h == e.hash {
				e.dup = true
				continue
			}
			seen[e.seq] = e.hash
			if prevE != nil && e.seq < prevE.seq {
				add(ProblemReordered, e, "sequence %d comes after sequence %d (offset %d)", e.seq, prevE.seq, prevE.rec.Offset)
			}
			prevE = e
		}
	}
	sort.Slice(cr.Partitions, func(i, j int) bool { return cr.Partitions[i] < cr.Partitions[j] })

	// Chain order.
	sort.SliceStable(es, func(i, j int) bool { return es[i].seq < es[j].seq })
	var chain []*ventry
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
			add(ProblemChanged, e, "two different events with sequence %d (other at partition %d offset %d)", e.seq, chain[n-1].rec.Partition, chain[n-1].rec.Offset)
			continue
		}
		chain = append(chain, e)
	}
	cr.Events = len(chain)
	cr.FirstSeq, cr.LastSeq = chain[0].seq, chain[len(chain)-1].seq
	if chain[0].seq != 0 {
		add(ProblemTruncatedStart, chain[0], "chain starts at sequence %d; events 0..%d are missing", chain[0].seq, chain[0].seq-1)
	} else if chain[0].env.PrevHash != zeroHash {
		add(ProblemChanged, chain[0], "first event's prevhash is not the zero hash")
	}
	lastSigned := -1
	for i, e := range chain {
		if i > 0 {
			prev := chain[i-1]
			switch {
			case e.seq != prev.seq+1:
				add(ProblemGap, e, "sequences %d..%d missing between offset %d and offset %d", prev.seq+1, e.seq-1, prev.rec.Offset, e.rec.Offset)
			case e.env.PrevHash != prev.hash:
				add(ProblemChanged, prev, "event does not match the prevhash recorded by sequence %d (partition %d offset %d): it or that link was altered",
					e.seq, e.rec.Partition, e.rec.Offset)
			}
		}
		if e.env.Data.Kind != KindChainHead {
			continue
		}
		if pub == nil {
			continue
		}
		if err := checkHead(e, pub); err != nil {
			add(ProblemBadSignature, e, "chain head: %v", err)
			continue
		}
		cr.SignedHeads++
		cr.SignedThrough = int64(e.seq)
		lastSigned = i
	}
	cr.UnsignedTail = len(chain) - 1 - lastSigned
	last := chain[len(chain)-1]
	cr.Final = last.env.Data.Kind == KindChainHead && last.env.Data.Head != nil && last.env.Data.Head.Final
	cr.OK = len(probs) == 0
	return cr, probs
}

func checkHead(e *ventry, pub ed25519.PublicKey) error {
	h := e.env.Data.Head
	if h == nil {
		return errors.New("no chain_head data")
	}
	if e.seq == 0 || h.SignedSequence != e.seq-1 || h.SignedHash != e.env.PrevHash || h.Events != e.seq {
		return errors.New("signed link does not match the head's sequence and prevhash")
	}
	// The signature covers the re-encoding; require the stored bytes to
	// be exactly that encoding so nothing outside it can be changed.
	canon, err := json.Marshal(e.env)
	if err != nil || !bytes.Equal(canon, e.rec.Value) {
		return errors.New("record bytes are not the canonical encoding of the signed event")
	}
	return verifyEvent(e.env, pub)
}
