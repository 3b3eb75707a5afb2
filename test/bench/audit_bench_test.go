package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluice-gw/sluice/audit"
	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/test/harness"
)

// The policy and audit rows (issue 4: audit on against policy only; the
// audit sink is off the request path, so throughput should stay within 3%
// and round trips should not grow). Both gateways authenticate the bench
// client with SASL SCRAM-SHA-512 and decide every request with the example
// policy (configs/policies) over one partner's data; the client has role
// admin, so that it may create and delete the bench topics. The second also
// records every decision to the audit topic on the same cluster, signed,
// with the default fold window.
func init() {
	variants = append(variants,
		variant{name: "policy", setup: policySetup(false)},
		variant{name: "policy+audit", setup: policySetup(true)},
	)
}

const (
	benchUser = "bench-admin"
	benchPass = "bench-admin-secret"
)

func policySetup(withAudit bool) func(b *testing.B) (string, []kgo.Opt) {
	return func(b *testing.B) (string, []kgo.Opt) {
		dir := b.TempDir()
		creds := filepath.Join(dir, "users.yaml")
		if err := authntest.WriteCredentials(creds, authntest.User{Name: benchUser, Password: benchPass, Org: "sluice", Roles: []string{"admin"}}); err != nil {
			b.Fatal(err)
		}
		// The example data's grants mask Avro topics, which would need a
		// schema registry and keys; the bench brings its own data.
		data := filepath.Join(dir, "data")
		if err := os.Mkdir(data, 0o700); err != nil {
			b.Fatal(err)
		}
		for name, body := range map[string]string{
			"partners.json": `{"acme": {"active": true, "purposes": ["analytics"], "max_classification": "internal"}}`,
			"topics.json":   `{"_sluice_audit": {"classification": "restricted"}, "bench-*": {"classification": "internal"}}`,
			"grants.json": `[{"id": "g-acme-bench", "org": "acme", "pattern": "bench-*", "purpose": "analytics",
				"classification": "internal", "mask": []}]`,
		} {
			if err := os.WriteFile(filepath.Join(data, name), []byte(body), 0o600); err != nil {
				b.Fatal(err)
			}
		}
		extra := fmt.Sprintf(`listeners: [{sasl: [SCRAM-SHA-512]}]
authn: {credentials_file: %q}
policy: {dir: %q, data_dir: %q}
`, creds, filepath.Join(harness.ModuleRoot(), "configs", "policies"), data)
		if withAudit {
			key := filepath.Join(dir, "audit.key")
			if _, err := audit.GenerateKey(key); err != nil {
				b.Fatal(err)
			}
			extra += fmt.Sprintf(`audit:
  enabled: true
  topic: _sluice_audit_bench
  instance_id: bench
  spool: {dir: %q}
  signing: {key_file: %q, interval: 10s}
`, filepath.Join(dir, "spool"), key)
		}
		return extra, []kgo.Opt{kgo.SASL(scram.Auth{User: benchUser, Pass: benchPass}.AsSha512Mechanism())}
	}
}
