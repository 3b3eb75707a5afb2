package policy

import (
	"errors"
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Config configures the policy engine.
type Config struct {
	// Dir is the directory holding the Rego modules (*.rego, searched
	// recursively). Files ending in _test.rego are Rego unit tests: they
	// are not part of the decision query but run by RunTests and, with
	// RunTestsOnLoad, before a revision is accepted. Required.
	Dir string `yaml:"dir"`
	// DataDir, if set, is a directory of data documents (*.json, *.yaml,
	// *.yml, not recursive). Each file is loaded under data.<file name
	// without extension>: topics.json becomes data.topics.
	DataDir string `yaml:"data_dir"`
	// DataFiles are more data documents, loaded the same way.
	DataFiles []string `yaml:"data_files"`
	// Query is the decision to evaluate. Default "data.sluice.authz.decision".
	Query string `yaml:"query"`
	// CacheSize bounds the decision cache (entries). Default 65536; 0
	// disables caching.
	CacheSize int `yaml:"cache_size"`
	// CacheTTL bounds how long a cached decision is reused even if the
	// policy gives no expiry, so time-dependent rules converge. Default 1m.
	CacheTTL time.Duration `yaml:"cache_ttl"`
	// EvalTimeout bounds one uncached evaluation; on timeout the decision
	// is a deny. Default 100ms.
	EvalTimeout time.Duration `yaml:"eval_timeout"`
	// RunTestsOnLoad runs the Rego tests of Dir (with the revision's data)
	// against every new revision, at start and on reload, and rejects the
	// revision if any fails; a directory without tests loads. Default true:
	// the example policy's tests take some 20 ms, off the hot path.
	RunTestsOnLoad bool `yaml:"run_tests_on_load"`
	// ReloadInterval is how often Watch polls the policy and data files
	// for changes. Default 1s.
	ReloadInterval time.Duration `yaml:"reload_interval"`
}

// DefaultConfig returns the defaults; Dir must still be set.
func DefaultConfig() Config {
	return Config{
		Query:          "data.sluice.authz.decision",
		CacheSize:      65536,
		CacheTTL:       time.Minute,
		EvalTimeout:    100 * time.Millisecond,
		RunTestsOnLoad: true,
		ReloadInterval: time.Second,
	}
}

// Validate reports the first problem in c.
func (c *Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("policy: dir is required"))
	}
	if c.Query == "" {
		errs = append(errs, errors.New("policy: query is required"))
	} else if _, err := ast.ParseRef(c.Query); err != nil {
		errs = append(errs, fmt.Errorf("policy: query %q is not a reference: %v", c.Query, err))
	}
	if c.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("policy: cache_size %d is negative", c.CacheSize))
	}
	if c.CacheTTL <= 0 {
		errs = append(errs, fmt.Errorf("policy: cache_ttl %v must be positive", c.CacheTTL))
	}
	if c.EvalTimeout <= 0 {
		errs = append(errs, fmt.Errorf("policy: eval_timeout %v must be positive", c.EvalTimeout))
	}
	if c.ReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("policy: reload_interval %v is negative", c.ReloadInterval))
	}
	return errors.Join(errs...)
}
