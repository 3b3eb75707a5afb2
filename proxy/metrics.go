package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a request, the "outcome" label of sluice_proxy_requests_total.
const (
	outcomeForwarded = iota // answered by the upstream
	outcomeLocal            // answered by the gateway (ApiVersions, SASL, filter)
	outcomeDenied           // refused by a filter with a Kafka error code
	outcomeError            // connection closed on a bad or failed request
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"forwarded", "local", "denied", "error"}

// metrics are the proxy core's Prometheus series. Label values are bounded:
// API names come from kmsg, listener names from configuration.
type metrics struct {
	connsOpen      *prometheus.GaugeVec
	connsTotal     *prometheus.CounterVec
	connsRefused   *prometheus.CounterVec
	connsIdle      *prometheus.CounterVec
	requests       *prometheus.CounterVec
	bytesIn        prometheus.Counter
	bytesOut       prometheus.Counter
	gatewayLatency *prometheus.HistogramVec
	upstreamLat    *prometheus.HistogramVec
	upstreamErrors *prometheus.CounterVec
	ready          prometheus.Gauge
	brokers        prometheus.Gauge
	streamed       *prometheus.CounterVec
	panics         prometheus.Counter

	// Per-key children, resolved once so the hot path does no label
	// lookups.
	reqByKey  [][numOutcomes]prometheus.Counter
	gwByKey   []prometheus.Observer
	upByKey   []prometheus.Observer
	strByKey  []prometheus.Counter
	unknownGw prometheus.Observer
}

func newMetrics(reg prometheus.Registerer) *metrics {
	// Latency buckets from 50us to ~3s.
	buckets := prometheus.ExponentialBuckets(50e-6, 2.5, 13)
	m := &metrics{
		connsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_proxy_connections_open",
			Help: "Client connections currently open, by listener group.",
		}, []string{"listener"}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_proxy_connections_refused_total",
			Help: "Client connections closed as they were accepted, by listener and the bound they were over (max_connections, max_connections_per_ip).",
		}, []string{"listener", "reason"}),
		connsIdle: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_proxy_connections_idle_closed_total",
			Help: "Client connections the gateway closed after connections_max_idle without a request or an answer owed, by listener.",
		}, []string{"listener"}),
		connsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_proxy_connections_total",
			Help: "Client connections accepted, by listener group.",
		}, []string{"listener"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_proxy_requests_total",
			Help: "Requests by API and outcome (forwarded, local, denied, error).",
		}, []string{"api", "outcome"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_proxy_client_received_bytes_total",
			Help: "Bytes of request frames received from clients.",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_proxy_client_sent_bytes_total",
			Help: "Bytes of response frames sent to clients.",
		}),
		gatewayLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_proxy_gateway_duration_seconds",
			Help:    "Time a request spends in the gateway itself (decode, filters, rewrite, encode), excluding the upstream.",
			Buckets: buckets,
		}, []string{"api"}),
		upstreamLat: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_proxy_upstream_duration_seconds",
			Help:    "Time from forwarding a request to the first byte of the upstream's response.",
			Buckets: buckets,
		}, []string{"api"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_proxy_upstream_errors_total",
			Help: "Upstream failures by kind (dial, auth, io, metadata, protocol).",
		}, []string{"kind"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_proxy_ready",
			Help: "1 once upstream metadata is loaded.",
		}),
		brokers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_proxy_upstream_brokers",
			Help: "Upstream brokers known from metadata.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_proxy_connection_panics_total",
			Help: "Connections closed after a panic in the gateway (a bug; the log has its stack). Alert on any.",
		}),
		streamed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_proxy_streamed_total",
			Help: "Requests and responses relayed as they arrived instead of read whole first (large requests cut through, Fetch responses streamed), by API.",
		}, []string{"api"}),
	}
	spliced := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sluice_proxy_spliced_bytes_total",
		Help: "Bytes handed from one socket to the other by the kernel (splice) instead of copied through a buffer; plain TCP on both sides only (TLS always copies). Counts the whole process.",
	}, func() float64 { return float64(splicedBytes.Load()) })
	reg.MustRegister(m.connsOpen, m.connsTotal, m.connsRefused, m.connsIdle, m.requests, m.bytesIn, m.bytesOut,
		m.gatewayLatency, m.upstreamLat, m.upstreamErrors, m.ready, m.brokers, m.streamed, m.panics, spliced)

	m.reqByKey = make([][numOutcomes]prometheus.Counter, maxKey)
	m.gwByKey = make([]prometheus.Observer, maxKey)
	m.upByKey = make([]prometheus.Observer, maxKey)
	m.strByKey = make([]prometheus.Counter, maxKey)
	for k := int16(0); k < maxKey; k++ {
		if !apis[k].known {
			continue
		}
		name := apis[k].name
		for o := 0; o < numOutcomes; o++ {
			m.reqByKey[k][o] = m.requests.WithLabelValues(name, outcomeNames[o])
		}
		m.gwByKey[k] = m.gatewayLatency.WithLabelValues(name)
		m.upByKey[k] = m.upstreamLat.WithLabelValues(name)
		m.strByKey[k] = m.streamed.WithLabelValues(name)
	}
	m.unknownGw = m.gatewayLatency.WithLabelValues("Unknown")
	return m
}

func (m *metrics) request(key int16, outcome int) {
	if key >= 0 && key < maxKey && apis[key].known {
		m.reqByKey[key][outcome].Inc()
		return
	}
	m.requests.WithLabelValues("Unknown", outcomeNames[outcome]).Inc()
}

func (m *metrics) gateway(key int16, seconds float64) {
	if key >= 0 && key < maxKey && apis[key].known {
		m.gwByKey[key].Observe(seconds)
		return
	}
	m.unknownGw.Observe(seconds)
}

func (m *metrics) upstream(key int16, seconds float64) {
	if key >= 0 && key < maxKey && apis[key].known {
		m.upByKey[key].Observe(seconds)
	}
}

// stream counts a request or response of key relayed as it arrived.
func (m *metrics) stream(key int16) {
	if key >= 0 && key < maxKey && apis[key].known {
		m.strByKey[key].Inc()
	}
}
