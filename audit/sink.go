package audit

import (
	"context"
	"errors"
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

// ship is the only goroutine writing records and touching the spool. The
// invariant that keeps the chain in order on the topic: a record goes to
// the topic directly only while the spool is empty and nothing is held;
// otherwise it goes behind them, and the spool is replayed oldest first.
func (a *Auditor) ship() {
	defer close(a.shipDone)
	a.ensureTopic()
	var held [][]byte // records that fit neither topic nor spool
	var lastTry time.Time
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		if a.spool.empty() && len(held) == 0 {
			if a.out == nil { // closed while degraded, now drained
				return
			}
			b, ok := <-a.out
			if !ok {
				return
			}
			batch := a.drainOut([][]byte{b})
			written, failed := a.produce(a.writeCtx(), batch)
			a.m.written.Add(float64(written))
			if len(failed) > 0 {
				held = a.toSpool(held, failed)
				lastTry = time.Now()
			}
			continue
		}

		// Degraded: the spool (or memory) holds older records.
		if len(held) > 0 {
			held = a.toSpool(held[:0:0], held)
		}
		stopping := a.stopping()
		if time.Since(lastTry) >= a.cfg.RetryInterval || stopping {
			lastTry = time.Now()
			if a.replay() {
				lastTry = time.Time{} // progress: keep draining
				continue
			}
		}
		if stopping && a.stopExpired() {
			a.finalSpool(held)
			return
		}
		outC := a.out
		if len(held) >= a.cfg.QueueSize {
			outC = nil // backpressure: stop taking records until the spool drains
		}
		wait := a.cfg.RetryInterval - time.Since(lastTry)
		retry.Reset(max(wait, time.Millisecond))
		select {
		case b, ok := <-outC:
			if !ok {
				a.out = nil // closed: stop selecting it, keep draining the spool until the deadline
				if a.spool.empty() && len(held) == 0 {
					return
				}
				continue
			}
			batch := a.drainOut([][]byte{b})
			held = a.toSpool(held, batch)
		case <-retry.C:
		case <-a.stopDone():
		}
		if !retry.Stop() {
			select {
			case <-retry.C:
			default:
			}
		}
	}
}

// drainOut adds whatever else is ready, up to maxBatch records.
func (a *Auditor) drainOut(batch [][]byte) [][]byte {
	for len(batch) < maxBatch {
		select {
		case b, ok := <-a.out:
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

// toSpool spools batch behind held (keeping order) and returns what still
// could not be spooled, updating health.
func (a *Auditor) toSpool(held, batch [][]byte) [][]byte {
	reason := "spool full"
	if len(held) == 0 {
		err := a.spool.append(batch)
		if err != nil && !errors.Is(err, errSpoolFull) {
			reason = "spool not writable: " + err.Error()
		}
		if err == nil {
			a.m.spooled.Add(float64(len(batch)))
			a.spoolBytes.Store(a.spool.pending())
			a.setHealth(nil)
			return nil
		}
		a.log.Warn("audit spool cannot take events", zap.Error(err), zap.Int("events", len(batch)))
		held = batch
	} else {
		held = append(held, batch...)
	}
	if a.cfg.OnSpoolFull == FailOpen {
		a.m.dropped.Add(float64(len(held)))
		return nil
	}
	msg := "audit: unavailable: " + reason
	if le := a.lastErr.Load(); le != nil {
		msg += "; topic write failed: " + *le
	}
	a.setHealth(&msg)
	return held
}

func (a *Auditor) setHealth(msg *string) {
	if msg == nil {
		if a.health.Swap(nil) != nil {
			a.m.failingClose.Set(0)
			a.log.Info("audit recovered: serving requests again")
		}
		return
	}
	if a.health.Swap(msg) == nil {
		a.m.failingClose.Set(1)
		a.log.Error("audit failing closed: denying new requests", zap.String("reason", *msg))
	}
}

// replay writes the oldest spooled records to the topic and reports
// whether it made progress.
func (a *Auditor) replay() bool {
	vals, next, err := a.spool.peek(maxBatch, maxBatchBytes)
	if err != nil && len(vals) == 0 {
		a.log.Error("audit spool record unreadable; skipping the rest of its segment", zap.Error(err))
		a.m.dropped.Inc()
		if err := a.spool.skipCorrupt(); err != nil {
			a.log.Error("audit spool", zap.Error(err))
		}
		a.spoolBytes.Store(a.spool.pending())
		return true
	}
	if len(vals) == 0 {
		return false
	}
	written, failed := a.produce(a.writeCtx(), vals)
	if written == 0 {
		return false
	}
	off := next
	if len(failed) > 0 {
		// Release only the written prefix.
		off = a.spool.roff
		for _, v := range vals[:len(vals)-len(failed)] {
			off += spoolHeader + int64(len(v))
		}
	}
	if err := a.spool.advance(off); err != nil {
		a.log.Error("audit spool", zap.Error(err))
	}
	a.m.replayed.Add(float64(written))
	a.spoolBytes.Store(a.spool.pending())
	if a.spool.empty() {
		a.log.Info("audit spool drained")
	}
	return len(failed) == 0
}

// produce writes records in order and returns how many were written and
// the failed ones, in order. A failure followed by a success (the topic
// order then differs from the chain order, which Verify reports) is
// logged; the failed records are still returned for spooling.
func (a *Auditor) produce(ctx context.Context, vals [][]byte) (int, [][]byte) {
	recs := make([]*kgo.Record, len(vals))
	for i, v := range vals {
		recs[i] = &kgo.Record{Key: a.key, Value: v}
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.ProduceTimeout+time.Second)
	defer cancel()
	res := a.client.ProduceSync(ctx, recs...)
	var failed [][]byte
	var firstErr error
	written := 0
	for i, r := range res {
		if r.Err != nil {
			if firstErr == nil {
				firstErr = r.Err
			}
			failed = append(failed, vals[i])
			continue
		}
		written++
		if firstErr != nil {
			a.log.Error("audit record written after an earlier one failed; topic order differs from chain order")
		}
	}
	if firstErr != nil {
		a.m.produceErrs.Inc()
		s := firstErr.Error()
		a.lastErr.Store(&s)
		a.log.Warn("audit topic write failed; spooling", zap.Error(firstErr), zap.Int("events", len(failed)))
	} else {
		a.lastErr.Store(nil)
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

func (a *Auditor) stopping() bool { return a.stopCtx.Load() != nil }

func (a *Auditor) stopExpired() bool { return a.writeCtx().Err() != nil }

func (a *Auditor) stopDone() <-chan struct{} {
	if p := a.stopCtx.Load(); p != nil {
		return (*p).Done()
	}
	return a.closing
}

// finalSpool spools what is left in memory when Close's deadline passes.
func (a *Auditor) finalSpool(held [][]byte) {
	rest := held
	if a.out != nil {
		for b := range a.out {
			rest = append(rest, b)
		}
	}
	if len(rest) == 0 {
		return
	}
	if err := a.spool.append(rest); err != nil {
		a.m.dropped.Add(float64(len(rest)))
		a.log.Error("audit events lost at shutdown", zap.Int("events", len(rest)), zap.Error(err))
		return
	}
	a.m.spooled.Add(float64(len(rest)))
	a.spoolBytes.Store(a.spool.pending())
}

// ensureTopic creates the audit topic with one partition if it does not
// exist (best effort: the upstream principal may lack the right).
func (a *Auditor) ensureTopic() {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ProduceTimeout)
	defer cancel()
	req := kmsg.NewPtrCreateTopicsRequest()
	t := kmsg.NewCreateTopicsRequestTopic()
	t.Topic = a.cfg.Topic
	t.NumPartitions = 1
	t.ReplicationFactor = -1
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
