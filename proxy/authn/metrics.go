package authn

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	attempts *prometheus.CounterVec
	failures *prometheus.CounterVec
	reloads  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_authn_attempts_total",
			Help: "Client authentication attempts by mechanism and result (success, failure).",
		}, []string{"mechanism", "result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_authn_failures_total",
			Help: "Failed client authentications by mechanism and bounded reason.",
		}, []string{"mechanism", "reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_authn_reloads_total",
			Help: "Reloads of the credentials file and JWKS by source (credentials, jwks) and result (success, failure).",
		}, []string{"source", "result"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.attempts, err = register(reg, m.attempts); err != nil {
		return nil, err
	}
	if m.failures, err = register(reg, m.failures); err != nil {
		return nil, err
	}
	if m.reloads, err = register(reg, m.reloads); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// the same name (a Provider rebuilt on config reload shares the counters).
func register(reg prometheus.Registerer, c *prometheus.CounterVec) (*prometheus.CounterVec, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return nil, err
	}
	return c, nil
}

// metricMechanism bounds the mechanism label.
func metricMechanism(mech string) string {
	switch mech {
	case MechPlain, MechScramSHA256, MechScramSHA512, MechOAuthBearer, MechMTLS:
		return mech
	case "none": // a request before any SASL handshake
		return mech
	}
	return "unknown"
}

func (m *metrics) success(mech string) {
	m.attempts.WithLabelValues(metricMechanism(mech), "success").Inc()
}

func (m *metrics) failure(mech, reason string) {
	mech = metricMechanism(mech)
	m.attempts.WithLabelValues(mech, "failure").Inc()
	m.failures.WithLabelValues(mech, reason).Inc()
}

func (m *metrics) reload(source string, err error) {
	if err != nil {
		m.reloads.WithLabelValues(source, "failure").Inc()
		return
	}
	m.reloads.WithLabelValues(source, "success").Inc()
}
