package audit

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Filter selects events for Tail. Empty fields match everything.
type Filter struct {
	// Principal matches the principal id, or "id@org".
	Principal string
	// Topic matches the resource name of events on topics.
	Topic string
	// Decision matches Data.Decision: allow, deny, success, failure.
	Decision string
	// Since and Until bound the event time (Until exclusive).
	Since, Until time.Time
	// Follow keeps reading new events until ctx is done; otherwise Tail
	// returns at the end of the topic.
	Follow bool
}

// Match reports whether e passes the filter.
func (f *Filter) Match(e *Envelope) bool {
	d := &e.Data
	if f.Principal != "" {
		if d.Principal == nil {
			return false
		}
		if f.Principal != d.Principal.ID && f.Principal != d.Principal.ID+"@"+d.Principal.Org {
			return false
		}
	}
	if f.Topic != "" && (d.Resource != f.Topic || (d.ResourceType != "" && d.ResourceType != "topic")) {
		return false
	}
	if f.Decision != "" && !strings.EqualFold(d.Decision, f.Decision) {
		return false
	}
	if !f.Since.IsZero() || !f.Until.IsZero() {
		t, err := e.EventTime()
		if err != nil {
			return false
		}
		if !f.Since.IsZero() && t.Before(f.Since) {
			return false
		}
		if !f.Until.IsZero() && !t.Before(f.Until) {
			return false
		}
	}
	return true
}

// Tail prints the events of topic that pass f, one line each (see
// FormatEvent); records that are not audit events are printed as such.
func Tail(ctx context.Context, opts []kgo.Opt, topic string, f Filter, w io.Writer) error {
	var werr error
	err := consume(ctx, opts, topic, kgo.NewOffset().AtStart(), !f.Follow, func(r *kgo.Record) {
		if werr != nil {
			return
		}
		e, _, err := ParseEvent(r.Value)
		var line string
		switch {
		case err != nil:
			line = fmt.Sprintf("partition %d offset %d: not an audit event: %v", r.Partition, r.Offset, err)
		case !f.Match(e):
			return
		default:
			line = FormatEvent(e)
		}
		_, werr = io.WriteString(w, line+"\n")
	})
	if err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("audit: tail: %w", werr)
	}
	return nil
}

// FormatEvent renders an event on one line:
//
//	<time> <instance>#<seq> <kind> <decision> principal=... api=... <resource_type>=<resource> ...
func FormatEvent(e *Envelope) string {
	d := &e.Data
	var b strings.Builder
	b.WriteString(e.Time)
	b.WriteString(" ")
	b.WriteString(d.Instance)
	b.WriteString("#")
	b.WriteString(e.Sequence)
	b.WriteString(" ")
	b.WriteString(d.Kind)
	if d.Decision != "" {
		b.WriteString(" " + strings.ToUpper(d.Decision))
	}
	kv := func(k, v string) {
		if v != "" {
			b.WriteString(" " + k + "=" + quote(v))
		}
	}
	if p := d.Principal; p != nil {
		id := p.ID
		if p.Org != "" {
			id += "@" + p.Org
		}
		kv("principal", id)
	}
	if d.API != nil {
		kv("api", d.API.Name+"/v"+strconv.Itoa(int(d.API.Version)))
	}
	kv("action", d.Action)
	if d.Resource != "" {
		rt := d.ResourceType
		if rt == "" {
			rt = "resource"
		}
		kv(rt, d.Resource)
	}
	if len(d.Partitions) > 0 {
		kv("partitions", strings.Trim(fmt.Sprint(d.Partitions), "[]"))
	}
	kv("grant", d.GrantID)
	kv("purpose", d.Purpose)
	if d.Count > 1 {
		kv("count", strconv.FormatInt(d.Count, 10))
	}
	if d.Records > 0 || d.Bytes > 0 {
		kv("records", strconv.FormatInt(d.Records, 10))
		kv("bytes", strconv.FormatInt(d.Bytes, 10))
	}
	if o := d.Obligations; o != nil {
		kv("masked", strings.Join(o.MaskedFields, ","))
		kv("row_filter", o.RowFilter)
	}
	kv("mechanism", d.Mechanism)
	kv("reason", d.Reason)
	kv("error", d.Error)
	kv("policy", d.PolicyRevision)
	if c := d.Client; c != nil {
		kv("client", c.Address)
		kv("client_id", c.ClientID)
	}
	if h := d.Head; h != nil {
		kv("signed_through", strconv.FormatUint(h.SignedSequence, 10))
		kv("key", h.KeyID)
		if h.Final {
			b.WriteString(" final")
		}
	}
	return b.String()
}

func quote(s string) string {
	if strings.ContainsAny(s, " \"=\t\n") || s == "" {
		return strconv.Quote(s)
	}
	return s
}
