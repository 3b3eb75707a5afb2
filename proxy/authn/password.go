package authn

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Password hash kinds accepted by HashPassword and in the credentials file
// (as the prefix of a user's "plain" entry).
const (
	HashBcrypt   = "bcrypt"
	HashArgon2id = "argon2id"
)

// Defaults used by HashPassword. bcrypt cost 12; argon2id after the OWASP
// password storage recommendation (19 MiB, 2 passes, 1 lane).
const (
	DefaultBcryptCost     = 12
	defaultArgonMemoryKiB = 19 * 1024
	defaultArgonTime      = 2
	defaultArgonThreads   = 1
	argonSaltLen          = 16
	argonKeyLen           = 32
	// Bounds on argon2id parameters read from a credentials file, so a
	// typo cannot make every login allocate gigabytes.
	maxArgonMemoryKiB = 1 << 20 // 1 GiB
	maxArgonTime      = 64
	maxPasswordLen    = 1024
)

// HashPassword hashes a password for the "plain" entry of a credentials
// file. kind is "bcrypt" or "argon2id"; the result carries its kind as a
// prefix ("bcrypt:$2a$12$...", "argon2id:$argon2id$v=19$m=...").
func HashPassword(password, kind string) (string, error) {
	if password == "" {
		return "", errors.New("authn: hash password: empty password")
	}
	if len(password) > maxPasswordLen {
		return "", fmt.Errorf("authn: hash password: longer than %d bytes", maxPasswordLen)
	}
	switch kind {
	case HashBcrypt:
		return hashBcrypt(password, DefaultBcryptCost)
	case HashArgon2id:
		salt := make([]byte, argonSaltLen)
		if _, err := rand.Read(salt); err != nil {
			return "", fmt.Errorf("authn: hash password: %w", err)
		}
		key := argon2.IDKey([]byte(password), salt, defaultArgonTime, defaultArgonMemoryKiB, defaultArgonThreads, argonKeyLen)
		return fmt.Sprintf("argon2id:$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version,
			defaultArgonMemoryKiB, defaultArgonTime, defaultArgonThreads,
			base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
	default:
		return "", fmt.Errorf("authn: hash password: unknown kind %q (use bcrypt or argon2id)", kind)
	}
}

// HashPasswordBcryptCost hashes with bcrypt at the given cost. Test helpers
// use a low cost to stay fast; operators should use HashPassword.
func HashPasswordBcryptCost(password string, cost int) (string, error) {
	if password == "" {
		return "", errors.New("authn: hash password: empty password")
	}
	return hashBcrypt(password, cost)
}

func hashBcrypt(password string, cost int) (string, error) {
	if len(password) > 72 {
		return "", errors.New("authn: hash password: bcrypt takes at most 72 bytes; use argon2id")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return "", fmt.Errorf("authn: hash password: %w", err)
	}
	return "bcrypt:" + string(h), nil
}

// passwordVerifier checks a clear password against one stored hash.
type passwordVerifier interface {
	verify(password []byte) bool
}

type bcryptVerifier struct{ hash []byte }

func (v bcryptVerifier) verify(pw []byte) bool {
	if len(pw) > 72 { // never produced by HashPassword; bcrypt would truncate
		return false
	}
	return bcrypt.CompareHashAndPassword(v.hash, pw) == nil
}

type argon2Verifier struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

func (v argon2Verifier) verify(pw []byte) bool {
	got := argon2.IDKey(pw, v.salt, v.time, v.memory, v.threads, uint32(len(v.key)))
	return subtle.ConstantTimeCompare(got, v.key) == 1
}

// parsePasswordHash parses a "bcrypt:..." or "argon2id:..." entry.
func parsePasswordHash(s string) (passwordVerifier, error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok {
		return nil, errors.New(`missing kind prefix ("bcrypt:" or "argon2id:")`)
	}
	switch kind {
	case HashBcrypt:
		if _, err := bcrypt.Cost([]byte(rest)); err != nil {
			return nil, fmt.Errorf("bad bcrypt hash: %v", err)
		}
		return bcryptVerifier{hash: []byte(rest)}, nil
	case HashArgon2id:
		return parseArgon2id(rest)
	default:
		return nil, fmt.Errorf("unknown hash kind %q (use bcrypt or argon2id; clear-text passwords are not accepted)", kind)
	}
}

// parseArgon2id parses the PHC string "$argon2id$v=19$m=..,t=..,p=..$salt$hash"
// with unpadded standard base64 salt and hash.
func parseArgon2id(s string) (passwordVerifier, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return nil, errors.New("bad argon2id hash: want $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return nil, fmt.Errorf("bad argon2id hash: version %q, want v=%d", parts[2], argon2.Version)
	}
	var v argon2Verifier
	seen := map[string]bool{}
	for _, kv := range strings.Split(parts[3], ",") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok || seen[k] {
			return nil, fmt.Errorf("bad argon2id hash: parameter %q", kv)
		}
		seen[k] = true
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("bad argon2id hash: parameter %q", kv)
		}
		switch k {
		case "m":
			if n > maxArgonMemoryKiB {
				return nil, fmt.Errorf("bad argon2id hash: m=%d exceeds %d KiB", n, maxArgonMemoryKiB)
			}
			v.memory = uint32(n)
		case "t":
			if n > maxArgonTime {
				return nil, fmt.Errorf("bad argon2id hash: t=%d exceeds %d", n, maxArgonTime)
			}
			v.time = uint32(n)
		case "p":
			if n > 255 {
				return nil, fmt.Errorf("bad argon2id hash: p=%d exceeds 255", n)
			}
			v.threads = uint8(n)
		default:
			return nil, fmt.Errorf("bad argon2id hash: unknown parameter %q", k)
		}
	}
	if v.memory == 0 || v.time == 0 || v.threads == 0 {
		return nil, errors.New("bad argon2id hash: m, t and p are required")
	}
	if v.memory < 8*uint32(v.threads) {
		return nil, errors.New("bad argon2id hash: m must be at least 8*p KiB")
	}
	var err error
	if v.salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil || len(v.salt) < 8 {
		return nil, errors.New("bad argon2id hash: salt must be unpadded base64 of at least 8 bytes")
	}
	if v.key, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(v.key) < 16 {
		return nil, errors.New("bad argon2id hash: hash must be unpadded base64 of at least 16 bytes")
	}
	return v, nil
}
