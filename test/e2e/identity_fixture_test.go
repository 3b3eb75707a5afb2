package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/test/harness"
)

// Topics, groups and principals of the identity fixture. The partner
// organisation "e2e" is active with purpose analytics up to "internal"
// data; "rival" is not a known partner, so the example policy grants it
// nothing.
const (
	idInbound  = "inbound.e2e.orders" // e2e's own inbound topic: writable
	idGranted  = "granted.reports"    // readable by e2e with grant g-e2e-reports
	idSecret   = "secret.ledger"      // restricted: readable by no partner
	idIssuer   = "https://idp.e2e.test"
	idAudience = "sluice-e2e"
	idAdmin    = "e2e-admin"
	idAdminPw  = "admin-pw"
	idPartner  = "e2e-partner" // PLAIN/SCRAM user of org e2e
	idPartPw   = "partner-pw"
)

// grantReports is the grant that lets org e2e read idGranted.
const grantReports = `{"id": "g-e2e-reports", "org": "e2e", "topic": "granted.reports", "purpose": "analytics",
	"classification": "internal", "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2100-01-01T00:00:00Z"%s}`

// identityEnv is a gateway running the example policy (configs/policies)
// over test data, with PLAIN, SCRAM and OAUTHBEARER on the default
// listener and, if withMTLS, a second listener requiring client
// certificates mapped to principals (CN = id, O = organisation).
type identityEnv struct {
	cluster *harness.Cluster
	gw      *harness.Gateway
	dataDir string
	issuer  *authntest.Issuer
	pki     *authntest.PKI
	mtls    string // the mTLS listener's bootstrap address
	k       *kgoClient
}

func startIdentityEnv(t *testing.T, withMTLS bool, extra map[string]any) *identityEnv {
	t.Helper()
	dir := t.TempDir()
	env := &identityEnv{dataDir: filepath.Join(dir, "data"), k: &kgoClient{}}
	creds := filepath.Join(dir, "users.yaml")
	if err := authntest.WriteCredentials(creds,
		authntest.User{Name: idPartner, Password: idPartPw, Org: "e2e", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}},
		authntest.User{Name: idAdmin, Password: idAdminPw, Org: "sluice", Roles: []string{"admin"}},
	); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(env.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"partners.json": `{"e2e": {"name": "E2E Partner", "active": true, "purposes": ["analytics"], "max_classification": "internal"}}`,
		"topics.json":   `{"granted.reports": {"classification": "internal"}, "secret.ledger": {"classification": "restricted"}, "inbound.*": {"classification": "internal"}}`,
		"grants.json":   "[" + grantJSON("") + "]",
	} {
		if err := os.WriteFile(filepath.Join(env.dataDir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if env.issuer, err = authntest.NewIssuer(idIssuer, "ES256", "e2e-key-1"); err != nil {
		t.Fatal(err)
	}
	jwks := filepath.Join(dir, "jwks.json")
	if err := authntest.WriteJWKS(jwks, env.issuer); err != nil {
		t.Fatal(err)
	}
	authnCfg := map[string]any{
		"credentials_file": creds,
		"oauthbearer": map[string]any{
			"jwks_file":        jwks,
			"issuer":           idIssuer,
			"audience":         idAudience,
			"algorithms":       []string{"ES256"},
			"clock_skew":       "1s",
			"org_claim":        "org",
			"roles_claim":      "roles",
			"attribute_claims": map[string]string{"purpose": "purpose"},
		},
	}
	listeners := []any{map[string]any{"sasl": []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"}}}
	if withMTLS {
		if env.pki, err = authntest.NewPKI(filepath.Join(dir, "pki"), nil,
			authntest.CertSubject{Name: "partner", CommonName: "mtls-partner", Organization: []string{"e2e"}},
			authntest.CertSubject{Name: "rival", CommonName: "mtls-rival", Organization: []string{"rival"}},
			authntest.CertSubject{Name: "noorg", CommonName: "mtls-noorg"},
		); err != nil {
			t.Fatal(err)
		}
		env.mtls = harness.FreeAddr(t)
		listeners = append(listeners, map[string]any{
			"name":             "mtls",
			"listen":           env.mtls,
			"advertised_host":  "127.0.0.1",
			"broker_port_base": 0,
			"tls": map[string]any{
				"enabled": true, "cert_file": env.pki.Server.CertFile, "key_file": env.pki.Server.KeyFile,
				"client_ca_file": env.pki.CAFile, "client_auth": "require",
			},
		})
		authnCfg["tls"] = map[string]any{"from": "subject_cn", "org_from": "subject_o", "roles": []string{"partner"}}
	}
	env.cluster = harness.StartCluster(t, 3, kfake.SeedTopics(3, idInbound, idGranted, idSecret))
	env.gw = harness.StartGateway(t, env.cluster, harness.Merge(map[string]any{
		"listeners": listeners,
		"authn":     authnCfg,
		"policy": map[string]any{
			"dir":             filepath.Join(harness.ModuleRoot(), "configs", "policies"),
			"data_dir":        env.dataDir,
			"reload_interval": "200ms",
		},
	}, extra))
	return env
}

// grantJSON returns the reports grant with extra fields (", \"revoked\": true").
func grantJSON(extraFields string) string {
	return strings.Replace(grantReports, "%s", extraFields, 1)
}

// token signs an OAUTHBEARER token for sub of org, valid for ttl.
func (e *identityEnv) token(t *testing.T, sub, org string, ttl time.Duration) string {
	t.Helper()
	tok, err := e.issuer.Token(sub, idAudience, ttl, map[string]any{"org": org, "roles": []string{"partner"}, "purpose": "analytics"})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// oauthMech returns a franz-go OAUTHBEARER mechanism serving tok, counting
// how often franz-go asked for a token (once per authentication).
func oauthMech(tok func() string, calls *atomic.Int64) sasl.Mechanism {
	return oauth.Oauth(func(context.Context) (oauth.Auth, error) {
		if calls != nil {
			calls.Add(1)
		}
		return oauth.Auth{Token: tok()}, nil
	})
}

// admin returns a franz-go client of the admin (PLAIN), which may do
// anything.
func (e *identityEnv) admin(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	return e.k.newClient(t, e.gw.Bootstrap, append([]kgo.Opt{kgo.SASL(plain.Auth{User: idAdmin, Pass: idAdminPw}.AsMechanism())}, opts...)...)
}

// seed produces values to topic as the admin.
func (e *identityEnv) seed(ctx context.Context, t *testing.T, topic string, vals ...string) {
	t.Helper()
	cl := e.admin(t)
	defer cl.Close()
	for _, v := range vals {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("admin produce to %s: %v", topic, err)
		}
	}
}

// metadataTopics asks for metadata (all topics if names is empty) and
// returns topic -> error code.
func metadataTopics(ctx context.Context, t *testing.T, cl *kgo.Client, names ...string) map[string]int16 {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	if len(names) > 0 {
		for _, n := range names {
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(n)
			req.Topics = append(req.Topics, rt)
		}
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("metadata %v: %v", names, err)
	}
	out := map[string]int16{}
	for _, tp := range resp.Topics {
		if tp.Topic != nil {
			out[*tp.Topic] = tp.ErrorCode
		}
	}
	return out
}

// listGroups lists groups on every broker.
func listGroups(ctx context.Context, t *testing.T, cl *kgo.Client) []string {
	t.Helper()
	var out []string
	for _, sh := range cl.RequestSharded(ctx, kmsg.NewPtrListGroupsRequest()) {
		if sh.Err != nil {
			t.Fatalf("ListGroups on broker %d: %v", sh.Meta.NodeID, sh.Err)
		}
		resp := sh.Resp.(*kmsg.ListGroupsResponse)
		if resp.ErrorCode != 0 {
			t.Fatalf("ListGroups on broker %d: %v", sh.Meta.NodeID, kerr.ErrorForCode(resp.ErrorCode))
		}
		for _, g := range resp.Groups {
			out = append(out, g.Group)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// pollFor polls cl until it has n records or an error, or d passes.
// It returns the records and the partition errors seen.
func pollFor(ctx context.Context, cl *kgo.Client, d time.Duration, n int) ([]*kgo.Record, []error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var recs []*kgo.Record
	var errs []error
	for ctx.Err() == nil && (n <= 0 || len(recs) < n) {
		fs := cl.PollFetches(ctx)
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				errs = append(errs, err)
			}
		})
		recs = append(recs, fs.Records()...)
		if n > 0 && len(errs) > 0 {
			break
		}
	}
	return recs, errs
}

// hasErr reports whether any of errs is want.
func hasErr(errs []error, want error) bool {
	for _, err := range errs {
		if errors.Is(err, want) {
			return true
		}
	}
	return false
}
