package authn_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/sasl"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sluice-gw/sluice/proxy/authn"
	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/proxy/filter"
)

// Demo users shared by the tests.
var (
	alice = authntest.User{Name: "alice", Password: "alice-secret", Org: "acme", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}}
	bob   = authntest.User{Name: "bob,=odd", Password: "b0b pässword", Org: "globex"}
	carol = authntest.User{Name: "carol", Password: "carol-secret", NoSCRAM: true}
	dave  = authntest.User{Name: "dave", Password: "dave-secret", NoPlain: true}
)

type fixture struct {
	p        *authn.Provider
	reg      *prometheus.Registry
	credPath string
	dir      string
}

// newFixture writes a credentials file with users and builds a Provider
// polling it every 20ms. mod may adjust the config.
func newFixture(t testing.TB, mod func(*authn.Config), users ...authntest.User) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{dir: dir, credPath: filepath.Join(dir, "users.yaml"), reg: prometheus.NewRegistry()}
	if len(users) > 0 {
		if err := authntest.WriteCredentials(f.credPath, users...); err != nil {
			t.Fatal(err)
		}
	}
	cfg := authn.DefaultConfig()
	cfg.CredentialsFile = f.credPath
	cfg.ReloadInterval = 20 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	var log *zap.Logger
	if tt, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(tt)
	}
	p, err := authn.New(cfg, log, f.reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	f.p = p
	return f
}

func (f *fixture) auth(t testing.TB, mechs ...string) filter.Authenticator {
	t.Helper()
	a, err := f.p.ForListener(mechs)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// counter returns the value of a counter with the given labels, 0 if absent.
func (f *fixture) counter(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// drive runs a franz-go client mechanism against a server Session until
// both sides are done or one fails. It returns the server's result.
func drive(a filter.Authenticator, mech sasl.Mechanism) (*filter.Principal, time.Duration, error) {
	cs, msg, err := mech.Authenticate(context.Background(), "gateway:9092")
	if err != nil {
		return nil, 0, fmt.Errorf("client start: %w", err)
	}
	ss, err := a.Start(mech.Name(), &filter.Conn{ID: 7})
	if err != nil {
		return nil, 0, err
	}
	for range 5 {
		reply, done, p, lifetime, err := ss.Step(msg)
		if err != nil {
			return nil, 0, err
		}
		cdone, next, cerr := cs.Challenge(reply)
		if cerr != nil {
			return nil, 0, fmt.Errorf("client rejected the server: %w", cerr)
		}
		if done {
			if !cdone {
				return nil, 0, errors.New("server done but client not")
			}
			if p == nil {
				return nil, 0, errors.New("server done without a principal")
			}
			return p, lifetime, nil
		}
		if cdone {
			return nil, 0, errors.New("client done but server not")
		}
		msg = next
	}
	return nil, 0, errors.New("exchange did not finish in 5 steps")
}

// reasonOf returns the AuthError reason of err, or "" if err is not one.
func reasonOf(err error) string {
	var ae *filter.AuthError
	if errors.As(err, &ae) {
		return ae.Reason
	}
	return ""
}

// waitFor polls cond for up to 5s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeFile replaces path atomically, as an operator's tooling should.
func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := authntest.WriteFileAtomic(path, b); err != nil {
		t.Fatal(err)
	}
}
