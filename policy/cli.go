package policy

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// RunTests runs the Rego unit tests (*_test.rego) under dir against the
// policies there and any data documents directly in dir, writing a report to
// w. ok is false if a test failed or none was found; err is for policies
// that do not parse or compile. It backs `sluice policy test DIR`.
func RunTests(ctx context.Context, dir string, w io.Writer) (ok bool, err error) {
	cfg := DefaultConfig()
	cfg.Dir = dir
	if st, err := os.Stat(dir); err != nil {
		return false, fmt.Errorf("policy: %w", err)
	} else if !st.IsDir() {
		return false, fmt.Errorf("policy: %s is not a directory", dir)
	}
	cfg.DataDir = dir
	src, err := readSources(&cfg)
	if err != nil {
		return false, err
	}
	return runTestsOn(ctx, src, w)
}

// EvalInput is the file format of `sluice policy eval --input FILE`: the
// documented input document (see docs/policy.md). resource.labels are
// looked up in the data as the gateway would; labels in the file are
// ignored.
type EvalInput struct {
	Principal filter.Principal `json:"principal"`
	Action    string           `json:"action"`
	Resource  struct {
		Type   string         `json:"type"`
		Name   string         `json:"name"`
		Labels map[string]any `json:"labels,omitempty"`
	} `json:"resource"`
	Request struct {
		APIKey        int16  `json:"api_key"`
		APIName       string `json:"api_name,omitempty"`
		APIVersion    int16  `json:"api_version"`
		ClientID      string `json:"client_id"`
		SourceAddress string `json:"source_address"`
		Listener      string `json:"listener"`
	} `json:"request"`
	Time struct {
		RFC3339 string `json:"rfc3339"`
		NS      int64  `json:"ns,omitempty"`
	} `json:"time"`
}

// Query converts the file's input into a Query.
func (in *EvalInput) Query() (*Query, error) {
	a, ok := ParseAction(in.Action)
	if !ok {
		return nil, fmt.Errorf("policy: input: unknown action %q", in.Action)
	}
	rt, ok := ParseResourceType(in.Resource.Type)
	if !ok {
		return nil, fmt.Errorf("policy: input: unknown resource type %q", in.Resource.Type)
	}
	p := in.Principal
	q := &Query{
		Principal: &p, Action: a, Resource: rt, Name: in.Resource.Name,
		APIKey: in.Request.APIKey, APIVersion: in.Request.APIVersion,
		ClientID: in.Request.ClientID, Listener: in.Request.Listener,
	}
	if rt == ResourceCluster && q.Name == "" {
		q.Name = ClusterName
	}
	if s := in.Request.SourceAddress; s != "" {
		addr, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("policy: input: source_address: %w", err)
		}
		q.Source = netip.AddrPortFrom(addr, 0)
	}
	switch {
	case in.Time.RFC3339 != "":
		t, err := time.Parse(time.RFC3339Nano, in.Time.RFC3339)
		if err != nil {
			return nil, fmt.Errorf("policy: input: time.rfc3339: %w", err)
		}
		q.Now = t
	case in.Time.NS != 0:
		q.Now = time.Unix(0, in.Time.NS)
	default:
		q.Now = time.Now()
	}
	return q, nil
}

// EvalFile loads the policy of cfg and decides the input in inputPath (JSON
// or YAML in the EvalInput format). It backs `sluice policy eval --input
// FILE`. Evaluation failures are a deny with Decision.Error set, as in the
// gateway; err is for unreadable input or a policy that does not load.
func EvalFile(ctx context.Context, cfg Config, inputPath string) (Decision, error) {
	b, err := os.ReadFile(inputPath)
	if err != nil {
		return Decision{}, fmt.Errorf("policy: %w", err)
	}
	var in EvalInput
	if err := decodeStrict(b, &in); err != nil {
		return Decision{}, fmt.Errorf("policy: input %s: %w", inputPath, err)
	}
	q, err := in.Query()
	if err != nil {
		return Decision{}, err
	}
	cfg.CacheSize = 0
	cfg.ReloadInterval = 0
	// Deciding one input is for investigating a policy, failing tests
	// included: `sluice policy test` runs them.
	cfg.RunTestsOnLoad = false
	e, err := New(ctx, cfg, Options{})
	if err != nil {
		return Decision{}, err
	}
	return e.Decide(ctx, q), nil
}
