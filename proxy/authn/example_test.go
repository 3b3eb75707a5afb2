package authn_test

import (
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/proxy/authn"
	"github.com/sluice-gw/sluice/proxy/authn/authntest"
)

// TestExampleFiles checks that the shipped example config decodes and that
// the demo users log in with the passwords docs/authn.md publishes.
func TestExampleFiles(t *testing.T) {
	b, err := os.ReadFile("../../configs/credentials/authn.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authn.DecodeConfig(b); err != nil {
		t.Fatalf("authn.example.yaml: %v", err)
	}
	docs, err := os.ReadFile("../../docs/authn.md")
	if err != nil {
		t.Fatal(err)
	}
	p, err := authn.New(authn.Config{CredentialsFile: "../../configs/credentials/users.yaml"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a, err := p.ForListener([]string{"PLAIN", "SCRAM-SHA-512"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range authntest.DemoUsers() {
		if !containsAll(string(docs), u.Name, u.Password) {
			t.Errorf("docs/authn.md does not publish %s / %s", u.Name, u.Password)
		}
		for _, m := range []string{authn.MechPlain, authn.MechScramSHA512} {
			mech := plainMech("", u.Name, u.Password)
			if m != authn.MechPlain {
				mech = scramMech(m, "", u.Name, u.Password)
			}
			pr, _, err := drive(a, mech)
			if err != nil || pr.Org != u.Org || !slices.Equal(pr.Roles, u.Roles) || !maps.Equal(pr.Attributes, u.Attributes) {
				t.Errorf("%s %s: %v %+v", m, u.Name, err, pr)
			}
		}
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
