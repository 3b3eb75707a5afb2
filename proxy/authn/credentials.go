package authn

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// maxFileSize bounds the credentials and JWKS files read from disk.
const maxFileSize = 16 << 20

// CredentialsFile is the YAML document of a credentials file:
//
//	users:
//	  - name: acme-analyst
//	    org: acme
//	    roles: [partner]
//	    attributes: {purpose: analytics}
//	    plain: "bcrypt:$2a$12$..."         # or "argon2id:$argon2id$v=19$..."
//	    scram_sha_256: {salt: ..., iterations: 8192, stored_key: ..., server_key: ...}
//	    scram_sha_512: {...}
//
// A user may log in with PLAIN only if it has a plain entry and with a SCRAM
// mechanism only if it has that mechanism's entry.
type CredentialsFile struct {
	Users []UserEntry `yaml:"users" json:"users"`
}

// UserEntry is one user of a credentials file.
type UserEntry struct {
	Name        string            `yaml:"name" json:"name"`
	Org         string            `yaml:"org,omitempty" json:"org,omitempty"`
	Roles       []string          `yaml:"roles,omitempty" json:"roles,omitempty"`
	Attributes  map[string]string `yaml:"attributes,omitempty" json:"attributes,omitempty"`
	Plain       string            `yaml:"plain,omitempty" json:"plain,omitempty"`
	ScramSHA256 *SCRAMCredential  `yaml:"scram_sha_256,omitempty" json:"scram_sha_256,omitempty"`
	ScramSHA512 *SCRAMCredential  `yaml:"scram_sha_512,omitempty" json:"scram_sha_512,omitempty"`
}

// MarshalCredentials encodes a credentials file as YAML.
func MarshalCredentials(f CredentialsFile) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("authn: encode credentials: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("authn: encode credentials: %w", err)
	}
	return b.Bytes(), nil
}

// user is a validated UserEntry.
type user struct {
	name       string
	org        string
	roles      []string
	attributes map[string]string
	plain      passwordVerifier
	scram      map[string]*scramKeys // by mechanism
}

// credStore is one immutable revision of the credentials file.
type credStore struct {
	users map[string]*user
	// decoy is verified when a PLAIN user is unknown, so that the answer
	// takes about as long as for a known user.
	decoy passwordVerifier
	// decoyKey derives the salts shown to unknown SCRAM users. It comes
	// from the file content, so every gateway instance serving the same
	// file, before and after a restart, shows an unknown user the same
	// salt, as it would a real one.
	decoyKey []byte
	// decoyIters is the SCRAM iteration count shown to unknown users per
	// mechanism: the most common count among known users, so that it does
	// not single them out.
	decoyIters map[string]int
}

// decoyIterations returns the iteration count for unknown SCRAM users.
func (s *credStore) decoyIterations(mech string) int {
	if n := s.decoyIters[mech]; n > 0 {
		return n
	}
	return DefaultSCRAMIterations
}

// parseCredentials decodes and validates a credentials file strictly.
func parseCredentials(data []byte) (*credStore, error) {
	var f CredentialsFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty file")
		}
		return nil, err
	}
	key := sha256.Sum256(append([]byte("sluice authn scram decoy\x00"), data...))
	s := &credStore{users: make(map[string]*user, len(f.Users)), decoyIters: map[string]int{}, decoyKey: key[:]}
	counts := map[string]map[int]int{}
	for i, e := range f.Users {
		u, err := e.validate()
		if err != nil {
			return nil, fmt.Errorf("users[%d] (%q): %w", i, e.Name, err)
		}
		if _, dup := s.users[u.name]; dup {
			return nil, fmt.Errorf("users[%d]: duplicate name %q", i, u.name)
		}
		s.users[u.name] = u
		if s.decoy == nil && u.plain != nil {
			s.decoy = u.plain
		}
		for mech, k := range u.scram {
			if counts[mech] == nil {
				counts[mech] = map[int]int{}
			}
			counts[mech][k.iterations]++
		}
	}
	for mech, byIters := range counts {
		best, bestN := 0, 0
		for iters, n := range byIters {
			if n > bestN || (n == bestN && iters < best) {
				best, bestN = iters, n
			}
		}
		s.decoyIters[mech] = best
	}
	return s, nil
}

func (e UserEntry) validate() (*user, error) {
	if e.Name == "" {
		return nil, errors.New("name: required")
	}
	if !utf8.ValidString(e.Name) || len(e.Name) > 255 {
		return nil, errors.New("name: must be valid UTF-8 of at most 255 bytes")
	}
	for _, r := range e.Name {
		if r < 0x20 || r == 0x7f {
			return nil, errors.New("name: control characters are not allowed")
		}
	}
	u := &user{name: e.Name, org: e.Org, roles: slices.Clone(e.Roles), attributes: maps.Clone(e.Attributes), scram: map[string]*scramKeys{}}
	for i, r := range e.Roles {
		if r == "" {
			return nil, fmt.Errorf("roles[%d]: empty role", i)
		}
	}
	if e.Plain != "" {
		v, err := parsePasswordHash(e.Plain)
		if err != nil {
			return nil, fmt.Errorf("plain: %w", err)
		}
		u.plain = v
	}
	for _, c := range []struct {
		key, mech string
		cred      *SCRAMCredential
	}{{"scram_sha_256", MechScramSHA256, e.ScramSHA256}, {"scram_sha_512", MechScramSHA512, e.ScramSHA512}} {
		if c.cred == nil {
			continue
		}
		k, err := c.cred.decode(c.mech)
		if err != nil {
			return nil, fmt.Errorf("%s.%w", c.key, err)
		}
		u.scram[c.mech] = k
	}
	if u.plain == nil && len(u.scram) == 0 {
		return nil, errors.New("no credential: set plain, scram_sha_256 or scram_sha_512")
	}
	return u, nil
}

// readBounded reads a whole file of at most maxFileSize bytes.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxFileSize)
	}
	return b, nil
}
