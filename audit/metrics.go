package audit

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	decisions    prometheus.Counter
	written      prometheus.Counter
	folded       prometheus.Counter
	spooled      prometheus.Counter
	replayed     prometheus.Counter
	dropped      prometheus.Counter
	produceErrs  prometheus.Counter
	deniedReqs   prometheus.Counter
	heads        prometheus.Counter
	failingClose prometheus.Gauge
	registered   []prometheus.Collector
	reg          prometheus.Registerer
}

// unregister removes the metrics again (New failed after registering).
func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
}

func newMetrics(reg prometheus.Registerer, a *Auditor) (*metrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "sluice", Subsystem: "audit", Name: name, Help: help})
	}
	m := &metrics{
		decisions:   c("decisions_total", "Decisions handed to audit by the filter (before folding); equals the sum of count over decision events."),
		written:     c("events_written_total", "Audit events written to the audit topic directly (replays are counted in events_replayed_total)."),
		folded:      c("events_folded_total", "Allow decisions folded into an earlier event of the same window."),
		spooled:     c("events_spooled_total", "Audit events written to the local spool because the topic could not be written."),
		replayed:    c("events_replayed_total", "Spooled audit events written to the topic on recovery."),
		dropped:     c("events_dropped_total", "Audit events lost: spool full under fail_open, or unrecoverable at shutdown."),
		produceErrs: c("produce_errors_total", "Failed writes of a batch to the audit topic."),
		deniedReqs:  c("requests_denied_total", "Requests denied because audit is failing closed."),
		heads:       c("chain_heads_total", "Signed chain heads written."),
		failingClose: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "sluice", Subsystem: "audit", Name: "failing_closed",
			Help: "1 while new requests are denied because audit events cannot be recorded (alert on it)."}),
	}
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "sluice", Subsystem: "audit", Name: "queue_depth_events",
		Help: "Events and encoded records in memory, in neither topic nor spool: queued, being written, or held while the spool cannot take them."}, func() float64 { return float64(a.QueueDepth()) })
	spool := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "sluice", Subsystem: "audit", Name: "spool_bytes",
		Help: "Bytes in the local spool not yet replayed to the topic."}, func() float64 { return float64(a.spoolBytes.Load()) })
	m.reg = reg
	if reg != nil {
		for _, col := range []prometheus.Collector{m.decisions, m.written, m.folded, m.spooled, m.replayed, m.dropped, m.produceErrs, m.deniedReqs, m.heads, m.failingClose, queue, spool} {
			if err := reg.Register(col); err != nil {
				m.unregister()
				return nil, fmt.Errorf("audit: metrics: %w", err)
			}
			m.registered = append(m.registered, col)
		}
	}
	return m, nil
}
