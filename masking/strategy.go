package masking

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// Strategy names, as they appear in filter.MaskRule.Strategy.
const (
	StrategyRedact   = "redact"
	StrategyPartial  = "partial"
	StrategyHash     = "hash"
	StrategyTokenize = "tokenize"
	StrategyNull     = "null"
	StrategyDefault  = "default"

	// strategyExtract is internal: row filters compile their field with it.
	strategyExtract = "extract"
)

// Defaults of the strategy parameters.
const (
	DefaultReplacement = "REDACTED"
	DefaultMaskChar    = "*"
	DefaultKeepLast    = 4
	// TokenPrefix starts every token.
	TokenPrefix = "tok_"
	// DefaultHashKey and DefaultTokenKey name the keys used when a rule
	// has no "key" parameter.
	DefaultHashKey  = "hash"
	DefaultTokenKey = "tokenize"
)

// rule is a parsed filter.MaskRule.
type rule struct {
	raw      filter.MaskRule
	path     []step
	strategy string

	replacement    string
	hasReplacement bool
	keepFirst      int
	keepLast       int
	maskChar       string
	key            *keyedHash
}

var allowedParams = map[string][]string{
	StrategyRedact:   {"replacement"},
	StrategyPartial:  {"keep_first", "keep_last", "mask_char"},
	StrategyHash:     {"key"},
	StrategyTokenize: {"key"},
	StrategyNull:     nil,
	StrategyDefault:  nil,
}

// parseRule checks a rule's strategy and parameters and resolves its key.
// The path is resolved against a schema later.
func parseRule(r filter.MaskRule, keys *Keys) (*rule, error) {
	allowed, ok := allowedParams[r.Strategy]
	if !ok {
		return nil, fmt.Errorf("masking: rule %q: unknown strategy %q", r.Field, r.Strategy)
	}
	for k := range r.Params {
		if !slices.Contains(allowed, k) {
			return nil, fmt.Errorf("masking: rule %q: strategy %s has no parameter %q", r.Field, r.Strategy, k)
		}
	}
	if r.Target != "" && r.Target != "value" && r.Target != "key" {
		return nil, fmt.Errorf("masking: rule %q: target %q is neither value nor key", r.Field, r.Target)
	}
	path, err := parsePath(r.Field)
	if err != nil {
		return nil, err
	}
	out := &rule{raw: r, path: path, strategy: r.Strategy}
	switch r.Strategy {
	case StrategyRedact:
		out.replacement, out.hasReplacement = r.Params["replacement"]
		if !out.hasReplacement {
			out.replacement = DefaultReplacement
		}
	case StrategyPartial:
		out.maskChar = DefaultMaskChar
		if mc, ok := r.Params["mask_char"]; ok {
			if utf8.RuneCountInString(mc) != 1 {
				return nil, fmt.Errorf("masking: rule %q: mask_char must be one character", r.Field)
			}
			out.maskChar = mc
		}
		kf, hasF := r.Params["keep_first"]
		kl, hasL := r.Params["keep_last"]
		if !hasF && !hasL {
			out.keepLast = DefaultKeepLast
		}
		if hasF {
			if out.keepFirst, err = strconv.Atoi(kf); err != nil || out.keepFirst < 0 || out.keepFirst > 64 {
				return nil, fmt.Errorf("masking: rule %q: keep_first must be an integer in [0, 64]", r.Field)
			}
		}
		if hasL {
			if out.keepLast, err = strconv.Atoi(kl); err != nil || out.keepLast < 0 || out.keepLast > 64 {
				return nil, fmt.Errorf("masking: rule %q: keep_last must be an integer in [0, 64]", r.Field)
			}
		}
	case StrategyHash, StrategyTokenize:
		name := r.Params["key"]
		if name == "" {
			name = DefaultHashKey
			if r.Strategy == StrategyTokenize {
				name = DefaultTokenKey
			}
		}
		out.key = keys.get(name)
		if out.key == nil {
			return nil, fmt.Errorf("masking: rule %q: no %s key named %q is configured", r.Field, r.Strategy, name)
		}
	}
	return out, nil
}

// Keys holds the secret keys of the hash and tokenize strategies by name.
type Keys struct {
	m map[string]*keyedHash
}

// NewKeys builds a key set from raw key bytes by name. Keys must be at least
// 16 bytes.
func NewKeys(raw map[string][]byte) (*Keys, error) {
	k := &Keys{m: make(map[string]*keyedHash, len(raw))}
	for name, b := range raw {
		if len(b) < 16 {
			return nil, fmt.Errorf("masking: key %q is shorter than 16 bytes", name)
		}
		k.m[name] = newKeyedHash(b)
	}
	return k, nil
}

func (k *Keys) get(name string) *keyedHash {
	if k == nil {
		return nil
	}
	return k.m[name]
}

// keyedHash computes HMAC-SHA-256 under one key with pooled state so the hot
// path does not allocate.
type keyedHash struct {
	pool sync.Pool
}

type hmacState struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

func newKeyedHash(key []byte) *keyedHash {
	key = slices.Clone(key)
	k := &keyedHash{}
	k.pool.New = func() any { return &hmacState{h: hmac.New(sha256.New, key)} }
	return k
}

func (k *keyedHash) sum(data []byte) *hmacState {
	st := k.pool.Get().(*hmacState)
	st.h.Reset()
	st.h.Write(data)
	st.h.Sum(st.sum[:0])
	return st
}

// HashHexLen is the length of a hash strategy output.
const HashHexLen = 2 * sha256.Size

// appendHex appends the lowercase hex HMAC-SHA-256 of data.
func (k *keyedHash) appendHex(dst, data []byte) []byte {
	st := k.sum(data)
	dst = hex.AppendEncode(dst, st.sum[:])
	k.pool.Put(st)
	return dst
}

var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// tokenBytes of the HMAC make a token: 15 bytes = 120 bits = 24 base32
// characters, no padding.
const tokenBytes = 15

// TokenLen is the length of a tokenize strategy output.
const TokenLen = len(TokenPrefix) + tokenBytes*8/5

// appendToken appends "tok_" and the base32 of the first 15 bytes of the
// HMAC-SHA-256 of data.
func (k *keyedHash) appendToken(dst, data []byte) []byte {
	st := k.sum(data)
	dst = append(dst, TokenPrefix...)
	dst = tokenEncoding.AppendEncode(dst, st.sum[:tokenBytes])
	k.pool.Put(st)
	return dst
}

// partialLen returns the byte length of partial's output for s.
func isASCII(s []byte) bool {
	for len(s) >= 8 { // eight bytes at a time: no byte with its top bit set
		if binary.LittleEndian.Uint64(s)&0x8080808080808080 != 0 {
			return false
		}
		s = s[8:]
	}
	for _, c := range s {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func partialLen(s []byte, keepFirst, keepLast int, maskChar string) int {
	if isASCII(s) {
		if len(s) <= keepFirst+keepLast {
			return len(s) * len(maskChar)
		}
		return keepFirst + keepLast + (len(s)-keepFirst-keepLast)*len(maskChar)
	}
	n := utf8.RuneCount(s)
	if n <= keepFirst+keepLast {
		return n * len(maskChar)
	}
	first := runePrefixLen(s, keepFirst)
	last := runeSuffixLen(s, keepLast)
	return first + last + (n-keepFirst-keepLast)*len(maskChar)
}

// appendPartial appends s with every character except the first keepFirst
// and the last keepLast replaced by maskChar. When s has no more characters
// than are kept, every character is masked, so a short value is never shown
// whole.
func appendPartial(dst, s []byte, keepFirst, keepLast int, maskChar string) []byte {
	if len(maskChar) == 1 && isASCII(s) {
		return appendPartialASCII(dst, s, keepFirst, keepLast, maskChar[0])
	}
	n := utf8.RuneCount(s)
	if n <= keepFirst+keepLast {
		for range n {
			dst = append(dst, maskChar...)
		}
		return dst
	}
	first := runePrefixLen(s, keepFirst)
	last := runeSuffixLen(s, keepLast)
	dst = append(dst, s[:first]...)
	for range n - keepFirst - keepLast {
		dst = append(dst, maskChar...)
	}
	return append(dst, s[len(s)-last:]...)
}

func runePrefixLen(s []byte, n int) int {
	i := 0
	for ; n > 0 && i < len(s); n-- {
		_, sz := utf8.DecodeRune(s[i:])
		i += sz
	}
	return i
}

func runeSuffixLen(s []byte, n int) int {
	i := len(s)
	for ; n > 0 && i > 0; n-- {
		_, sz := utf8.DecodeLastRune(s[:i])
		i -= sz
	}
	return len(s) - i
}

// appendPartialASCII is appendPartial for ASCII s and a one-byte mask.
func appendPartialASCII(dst, s []byte, keepFirst, keepLast int, mask byte) []byte {
	if len(s) <= keepFirst+keepLast {
		keepFirst, keepLast = 0, 0
	}
	start := len(dst)
	dst = append(dst, s...)
	masked := dst[start+keepFirst : len(dst)-keepLast]
	for i := range masked {
		masked[i] = mask
	}
	return dst
}
