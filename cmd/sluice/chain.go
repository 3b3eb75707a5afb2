package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/audit"
	"github.com/sluice-gw/sluice/masking"
	"github.com/sluice-gw/sluice/policy"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/authn"
	"github.com/sluice-gw/sluice/proxy/filter"
	"github.com/sluice-gw/sluice/schema"
)

// features are the pluggable parts of the request path, built from the
// configuration. The ORDER of the filter chain is decided here and only
// here, because ordering mistakes are security bugs:
//
//	authn (in the proxy, before any filter: SASL/mTLS)
//	request:  audit -> policy -> mask -> forward
//	response: mask -> policy -> audit  (reverse)  -> address rewrite (proxy)
//
// audit comes first on requests so that a gateway that cannot audit refuses
// work before anything else happens (fail closed), and therefore last on
// responses, where it records every decision, including those the policy
// makes on the response side (Fetch re-checks), with the records and bytes
// the mask filter counted. policy precedes mask on requests, so that only
// allowed partitions are masked or contract-checked and the obligations it
// attaches reach the mask filter, which on responses rewrites batches before
// policy's response-side check removes any partition revoked meanwhile.
type features struct {
	authn    *authn.Provider
	engine   *policy.Engine
	auditor  *audit.Auditor
	registry *schema.Registry
	mask     *masking.Filter
	filters  []filter.Filter
	onAuth   func(c *filter.Conn, mechanism string, p *filter.Principal, err error)
	refuses  func(key int16) bool
	// onRefused records requests the proxy refuses before any filter.
	onRefused func(c *filter.Conn, key, version int16, reason string)
}

func buildFeatures(ctx context.Context, cfg Config, log *zap.Logger, reg prometheus.Registerer) (*features, error) {
	f := &features{}
	ok := false
	defer func() {
		if !ok {
			f.close(context.Background(), log)
		}
	}()
	var err error
	if cfg.Authn != nil {
		if f.authn, err = authn.New(*cfg.Authn, log.Named("authn"), reg); err != nil {
			return nil, err
		}
	}
	var upstreamOpts []kgo.Opt
	if cfg.Audit != nil && cfg.Audit.Enabled {
		if upstreamOpts, err = cfg.Upstream.KgoOpts(); err != nil {
			return nil, err
		}
		if f.auditor, err = audit.New(*cfg.Audit, upstreamOpts, reg, log.Named("audit")); err != nil {
			return nil, err
		}
	}
	f.onAuth = func(c *filter.Conn, mech string, p *filter.Principal, err error) {
		var ae *filter.AuthError
		if f.authn != nil && errors.As(err, &ae) && ae.Gateway {
			f.authn.CountFailure(mech, ae.Reason)
		}
		if f.auditor != nil {
			f.auditor.Auth(c, mech, p, err)
		}
	}
	if f.auditor != nil {
		f.onRefused = f.auditor.Refused
	}
	if cfg.SchemaRegistry != nil {
		if f.registry, err = schema.New(*cfg.SchemaRegistry, log.Named("schema")); err != nil {
			return nil, fmt.Errorf("schema_registry: %w", err)
		}
	}
	if cfg.Masking != nil || cfg.Policy != nil {
		mc := masking.DefaultConfig()
		if cfg.Masking != nil {
			mc = *cfg.Masking
		}
		if f.mask, err = masking.NewFilter(mc, f.registry, log.Named("masking"), reg); err != nil {
			return nil, err
		}
	}
	if cfg.Policy != nil {
		opts := policy.Options{Logger: log.Named("policy"), Registerer: reg}
		if f.mask != nil {
			planner := f.mask.Planner()
			opts.Validate = func(topic string, o *filter.Obligations) error {
				return planner.ValidateObligations(ctx, topic, o)
			}
		}
		if f.auditor != nil {
			opts.OnReload = f.auditor.PolicyReload
		}
		if f.engine, err = policy.New(ctx, *cfg.Policy, opts); err != nil {
			return nil, err
		}
		go func() {
			if err := f.engine.Watch(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("policy watcher stopped", zap.Error(err))
			}
		}()
	}

	if f.auditor != nil {
		f.filters = append(f.filters, audit.NewFilter(f.auditor))
	}
	if f.engine != nil {
		f.filters = append(f.filters, policy.NewFilter(f.engine, log.Named("policy"), reg))
		f.refuses = policy.Refuses
	}
	if f.mask != nil {
		if f.auditor != nil {
			f.mask.OnFailure(f.auditor.MaskFailure)
		}
		f.filters = append(f.filters, f.mask)
	}
	ok = true
	return f, nil
}

// authenticator gives each listener group its authenticator.
func (f *features) authenticator(l proxy.ListenerConfig) (filter.Authenticator, error) {
	if f.authn == nil {
		return nil, errors.New("client authentication is configured on the listener but the authn section is missing")
	}
	mechs := append([]string{}, l.SASL...)
	if l.TLS.Enabled && l.TLS.ClientCAFile != "" && f.authn.HasTLSMapping() {
		mechs = append(mechs, "mtls")
	}
	return f.authn.ForListener(mechs)
}

func (f *features) close(ctx context.Context, log *zap.Logger) {
	if f.auditor != nil {
		if err := f.auditor.Close(ctx); err != nil {
			log.Error("audit flush at shutdown failed", zap.Error(err))
		}
	}
	if f.authn != nil {
		_ = f.authn.Close()
	}
}
