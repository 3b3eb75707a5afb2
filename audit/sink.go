package audit

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

const (
	maxBatch      = 4096    // records per write
	maxBatchBytes = 4 << 20 // bytes per replay read
)

// ship is the only goroutine taking records from the sequencer. The
// invariant that keeps the chain in order on the topic: a record goes to
// the topic directly only while the spool is empty and nothing is held in
// memory; otherwise it goes behind them, and the replayer goroutine writes
// the spool to the topic oldest first. Replays never block shipping, so a
// slow or dead cluster does not back up the queue while the spool has
// room.
func (a *Auditor) ship() {
	defer close(a.shipDone)
	a.ensureTopic()
	stop, replayDone := make(chan struct{}), make(chan struct{})
	go a.replayer(stop, replayDone)
	defer func() { close(stop); <-replayDone }()

	var held [][]byte // records that fit neither topic nor spool (fail_closed)
	tick := time.NewTicker(a.cfg.RetryInterval)
	defer tick.Stop()
	out := a.out
	for out != nil {
		outC := out
		if len(held) >= a.cfg.QueueSize {
			outC = nil // backpressure until the spool has room again
		}
		select {
		case b, ok := <-outC:
			if !ok {
				out = nil
				break
			}
			batch := drainOut(out, [][]byte{b})
			a.shipping.Store(int64(len(held) + len(batch)))
			held = a.deliver(held, batch)
			a.shipping.Store(int64(len(held)))
		case <-tick.C:
			if len(held) > 0 {
				held = a.deliver(held, nil)
				a.shipping.Store(int64(len(held)))
			}
		case <-a.deadlineDone(): // nil until Close
			// Close's deadline passed with the queue not yet closed:
			// held events kept the loop from reading it (the topic
			// and the spool both refusing), so the sequencer could not
			// finish. Take what is ready, spool what fits, count the
			// rest dropped, and stop; what the sequencer emits after
			// this is counted dropped too (emit sees shipDone).
			for batch := drainOut(out, nil); len(batch) > 0; batch = drainOut(out, nil) {
				held = append(held, batch...)
			}
			a.finalSpool(held)
			a.shipping.Store(0)
			return
		}
	}
	// Closed: wait for the spool to drain until Close's deadline.
	defer a.shipping.Store(0) // spooled or counted dropped by then
	for {
		if len(held) > 0 {
			held = a.deliver(held, nil)
			a.shipping.Store(int64(len(held)))
		}
		a.spoolMu.Lock()
		empty := a.spool.empty()
		a.spoolMu.Unlock()
		if len(held) == 0 && empty {
			return
		}
		if a.stopExpired() {
			a.finalSpool(held)
			return
		}
		select {
		case <-tick.C:
		case <-a.stopDone():
		}
	}
}

// drainOut adds whatever else is ready, up to maxBatch records.
func drainOut(out chan []byte, batch [][]byte) [][]byte {
	for len(batch) < maxBatch {
		select {
		case b, ok := <-out:
			if !ok {
				return batch
			}
			batch = append(batch, b)
		default:
			return batch
		}
	}
	return batch
}

// deliver writes held (the oldest records, which the spool could not take)
// and then batch to the topic if nothing is spooled, else (or if the write
// fails) behind the spool, spooling as much as fits, and returns what still
// could not be spooled, updating health.
func (a *Auditor) deliver(held, batch [][]byte) [][]byte {
	a.spoolMu.Lock()
	direct := a.spool.empty()
	a.spoolMu.Unlock()
	if direct && len(held)+len(batch) > 0 {
		// Nothing older waits in the spool: held and batch go to the
		// topic in order.
		recs := append(held, batch...)
		t := time.NewTimer(a.cfg.ProduceTimeout)
		written, failed := a.produce(recs, t.C, a.deadlineDone())
		t.Stop()
		a.m.written.Add(float64(written))
		held, batch = nil, failed
		if len(failed) == 0 {
			a.setHealth(nil)
			return nil
		}
	}
	a.spoolMu.Lock()
	defer a.spoolMu.Unlock()
	var err error
	if len(held) > 0 {
		var n int
		n, err = a.spool.appendFit(held)
		a.m.spooled.Add(float64(n))
		held = held[n:]
	}
	if len(batch) > 0 {
		if len(held) == 0 {
			var n int
			n, err = a.spool.appendFit(batch)
			a.m.spooled.Add(float64(n))
			batch = batch[n:]
		}
		held = append(held, batch...)
	}
	a.spoolBytes.Store(a.spool.pending())
	select {
	case a.kick <- struct{}{}:
	default:
	}
	if len(held) == 0 {
		a.setHealth(nil)
		return nil
	}
	if a.cfg.OnSpoolFull == FailOpen {
		a.m.dropped.Add(float64(len(held)))
		a.log.Error("audit events dropped: spool cannot take them (fail_open)", zap.Int("events", len(held)), zap.Error(err))
		return nil
	}
	reason := "spool full"
	if err != nil && !errors.Is(err, errSpoolFull) {
		reason = "spool not writable: " + err.Error()
	}
	if le := a.lastErr.Load(); le != nil {
		reason += "; topic write failed: " + *le
	}
	a.setHealth(&reason)
	return held
}

func (a *Auditor) setHealth(reason *string) {
	if reason == nil {
		if a.health.Swap(nil) != nil {
			a.m.failingClose.Set(0)
			a.log.Info("audit recovered: serving requests again")
		}
		return
	}
	if a.health.Swap(reason) == nil {
		a.m.failingClose.Set(1)
		a.log.Error("audit failing closed: denying new requests", zap.String("reason", *reason))
	}
}

// replayer writes the spool to the topic, oldest first, whenever it is not
// empty; after a failed attempt it waits RetryInterval.
func (a *Auditor) replayer(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTimer(a.cfg.RetryInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-a.kick:
		case <-t.C:
		}
		for a.replay(stop) {
			select {
			case <-stop:
				return
			default:
			}
		}
		// Back off before the next attempt, whatever kicks arrive.
		t.Reset(a.cfg.RetryInterval)
		select {
		case <-stop:
			return
		case <-t.C:
		}
		t.Reset(a.cfg.RetryInterval)
	}
}

// replay writes the oldest spooled records to the topic and reports
// whether all of them were written and more may be waiting.
func (a *Auditor) replay(stop <-chan struct{}) bool {
	a.spoolMu.Lock()
	vals, next, err := a.spool.peek(maxBatch, maxBatchBytes)
	roff := a.spool.roff
	if err != nil && len(vals) == 0 {
		a.log.Error("audit spool record unreadable; skipping the rest of its segment", zap.Error(err))
		a.m.dropped.Inc()
		if err := a.spool.skipCorrupt(); err != nil {
			a.log.Error("audit spool", zap.Error(err))
		}
		a.spoolBytes.Store(a.spool.pending())
		a.spoolMu.Unlock()
		return true
	}
	a.spoolMu.Unlock()
	if len(vals) == 0 {
		return false
	}
	// No time limit: replays wait behind whatever the client still holds
	// for the partition; shipping goes on meanwhile.
	written, failed := a.produce(vals, nil, stop)
	if written == 0 {
		return false
	}
	off := next
	if len(failed) > 0 {
		// Release only the written prefix.
		off = roff
		for _, v := range vals[:len(vals)-len(failed)] {
			off += spoolHeader + int64(len(v))
		}
	}
	a.spoolMu.Lock()
	if err := a.spool.advance(off); err != nil {
		a.log.Error("audit spool", zap.Error(err))
	}
	a.spoolBytes.Store(a.spool.pending())
	empty := a.spool.empty()
	a.spoolMu.Unlock()
	a.m.replayed.Add(float64(written))
	if empty {
		a.log.Info("audit spool drained")
	}
	return len(failed) == 0 && !empty
}

// errNoAck is the failure of a batch not acknowledged in time. Its records
// may still be written later by the client; they are spooled anyway, and
// the replayed copies queue behind them in the same partition, so the
// topic keeps chain order and at worst holds byte-identical duplicates,
// which Verify accepts.
var errNoAck = errors.New("audit: no acknowledgement within produce_timeout")

// produce writes records in order and returns how many were written and
// the failed ones, in order. It waits at most until timeout fires (nil:
// no limit) or stop closes; then every record counts as failed. A
// failure followed by a success (the client fails every later record of
// a partition after a failure, so this is not expected) is logged.
func (a *Auditor) produce(vals [][]byte, timeout <-chan time.Time, stop <-chan struct{}) (int, [][]byte) {
	errs := make([]error, len(vals))
	var wg sync.WaitGroup
	wg.Add(len(vals))
	for i, v := range vals {
		r := &kgo.Record{Key: a.keyOf(v), Value: v}
		a.client.TryProduce(context.Background(), r, func(_ *kgo.Record, err error) {
			errs[i] = err
			wg.Done()
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var failed [][]byte
	var firstErr error
	written := 0
	select {
	case <-done:
		for i, err := range errs {
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				failed = append(failed, vals[i])
				continue
			}
			written++
			if firstErr != nil {
				a.log.Error("audit record written after an earlier one failed; topic order differs from chain order")
			}
		}
	case <-timeout:
		firstErr, failed = errNoAck, vals
	case <-stop:
		firstErr, failed = errors.New("audit: stopped waiting for acknowledgement"), vals
	}
	if firstErr != nil {
		a.m.produceErrs.Inc()
		s := firstErr.Error()
		if a.lastErr.Swap(&s) == nil {
			a.log.Warn("audit topic write failed; spooling until it recovers", zap.Error(firstErr), zap.Int("events", len(failed)))
		}
	} else if a.lastErr.Swap(nil) != nil {
		a.log.Info("audit topic writable again")
	}
	return written, failed
}

// writeCtx is cancelled when a Close deadline passes.
func (a *Auditor) writeCtx() context.Context {
	if p := a.stopCtx.Load(); p != nil {
		return *p
	}
	return context.Background()
}

func (a *Auditor) stopExpired() bool { return a.writeCtx().Err() != nil }

// deadlineDone is closed when Close's deadline passes; nil before Close.
func (a *Auditor) deadlineDone() <-chan struct{} {
	if p := a.stopCtx.Load(); p != nil {
		return (*p).Done()
	}
	return nil
}

func (a *Auditor) stopDone() <-chan struct{} {
	if p := a.stopCtx.Load(); p != nil {
		return (*p).Done()
	}
	return a.closing
}

// finalSpool spools what is left in memory when Close's deadline passes.
func (a *Auditor) finalSpool(rest [][]byte) {
	if len(rest) == 0 {
		return
	}
	a.spoolMu.Lock()
	defer a.spoolMu.Unlock()
	n, err := a.spool.appendFit(rest)
	a.m.spooled.Add(float64(n))
	a.spoolBytes.Store(a.spool.pending())
	if err != nil {
		a.m.dropped.Add(float64(len(rest) - n))
		a.log.Error("audit events lost at shutdown", zap.Int("events", len(rest)-n), zap.Error(err))
	}
}

// ensureTopic creates the audit topic if it does not exist (best effort:
// the upstream principal may lack the right): one partition, the
// cluster's default replication, unlimited retention (a chain whose start
// was deleted no longer verifies from sequence 0).
func (a *Auditor) ensureTopic() {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ProduceTimeout)
	defer cancel()
	req := kmsg.NewPtrCreateTopicsRequest()
	t := kmsg.NewCreateTopicsRequestTopic()
	t.Topic = a.cfg.Topic
	t.NumPartitions = 1
	t.ReplicationFactor = -1
	for k, v := range map[string]string{"retention.ms": "-1", "cleanup.policy": "delete"} {
		c := kmsg.NewCreateTopicsRequestTopicConfig()
		c.Name, c.Value = k, kmsg.StringPtr(v)
		t.Configs = append(t.Configs, c)
	}
	req.Topics = append(req.Topics, t)
	req.TimeoutMillis = int32(a.cfg.ProduceTimeout.Milliseconds())
	resp, err := req.RequestWith(ctx, a.client)
	if err != nil {
		a.log.Warn("audit topic: create request failed", zap.Error(err))
		return
	}
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			a.log.Warn("audit topic: not created", zap.String("topic", a.cfg.Topic), zap.Error(err))
		}
	}
}

var sourcePrefix = []byte(`"source":"sluice/`)

// keyOf is the record key of an encoded event: its instance id, so that a
// chain replayed from a previous run's spool stays in its partition.
func (a *Auditor) keyOf(v []byte) []byte {
	i := bytes.Index(v, sourcePrefix)
	if i < 0 {
		return a.key
	}
	rest := v[i+len(sourcePrefix):]
	j := bytes.IndexByte(rest, '"')
	if j <= 0 || bytes.IndexByte(rest[:j], '\\') >= 0 {
		return a.key
	}
	if string(rest[:j]) == a.instance {
		return a.key
	}
	return rest[:j:j]
}
