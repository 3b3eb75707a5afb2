package authntest

import (
	"fmt"
	"os"

	"golang.org/x/crypto/bcrypt"

	"github.com/sluice-gw/sluice/proxy/authn"
)

// User is a user to put in a credentials file, with its clear password.
type User struct {
	Name       string
	Password   string
	Org        string
	Roles      []string
	Attributes map[string]string
	// NoPlain, NoSCRAM leave out the PLAIN hash or the SCRAM entries.
	NoPlain bool
	NoSCRAM bool
}

// Entry hashes u into a credentials file entry: bcrypt at minimum cost
// (fast for tests) and SCRAM-SHA-256 and SCRAM-SHA-512 with 4096 iterations.
func Entry(u User) (authn.UserEntry, error) {
	e := authn.UserEntry{Name: u.Name, Org: u.Org, Roles: u.Roles, Attributes: u.Attributes}
	if !u.NoPlain {
		h, err := authn.HashPasswordBcryptCost(u.Password, bcrypt.MinCost)
		if err != nil {
			return e, fmt.Errorf("authntest: user %s: %w", u.Name, err)
		}
		e.Plain = h
	}
	if !u.NoSCRAM {
		for _, mech := range []string{authn.MechScramSHA256, authn.MechScramSHA512} {
			c, err := authn.NewSCRAMCredential(mech, u.Password, authn.MinSCRAMIterations)
			if err != nil {
				return e, fmt.Errorf("authntest: user %s: %w", u.Name, err)
			}
			if mech == authn.MechScramSHA256 {
				e.ScramSHA256 = &c
			} else {
				e.ScramSHA512 = &c
			}
		}
	}
	return e, nil
}

// WriteCredentials writes a credentials file for users to path. Write to a
// temporary file and rename it over path to replace a file a Provider
// watches in one step; WriteCredentials does that.
func WriteCredentials(path string, users ...User) error {
	var f authn.CredentialsFile
	for _, u := range users {
		e, err := Entry(u)
		if err != nil {
			return err
		}
		f.Users = append(f.Users, e)
	}
	b, err := authn.MarshalCredentials(f)
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, b)
}

// WriteFileAtomic writes b to a temporary file next to path and renames it
// over path, so a poller never reads half a file.
func WriteFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("authntest: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("authntest: %w", err)
	}
	return nil
}

// DemoUsers returns the demo principals of configs/credentials/users.yaml,
// with the clear passwords docs/authn.md publishes. DEMO ONLY: for `sluice
// dev` and tests; never for a deployment.
func DemoUsers() []User {
	return []User{
		{Name: "acme-analyst", Password: "acme-analyst-demo", Org: "acme", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}},
		{Name: "globex-analyst", Password: "globex-analyst-demo", Org: "globex", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}},
		{Name: "auditor", Password: "auditor-demo", Org: "sluice", Roles: []string{"auditor"}},
	}
}
