package authn

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Mechanism names, as sent in SaslHandshake and used as metric labels.
const (
	MechPlain       = "PLAIN"
	MechScramSHA256 = "SCRAM-SHA-256"
	MechScramSHA512 = "SCRAM-SHA-512"
	MechOAuthBearer = "OAUTHBEARER"
	// MechMTLS is the pseudo-mechanism of principals taken from a verified
	// client certificate. Listing it in ForListener enables TLSPrincipal.
	MechMTLS = "mtls"
)

// Config configures client authentication. The zero value authenticates
// nothing; each mechanism needs its section: PLAIN and SCRAM need
// credentials_file, OAUTHBEARER needs oauthbearer, mtls needs tls.
type Config struct {
	// CredentialsFile is a YAML file of users (see CredentialsFile). It is
	// polled every ReloadInterval and reloaded when its content changes.
	CredentialsFile string `yaml:"credentials_file"`
	// ReloadInterval is how often the credentials and JWKS files are
	// polled for changes. Default 2s.
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// SessionLifetime, if non-zero, bounds every SASL session (KIP-368):
	// clients must re-authenticate before it passes. OAUTHBEARER sessions
	// are bounded by the token's expiry in any case. Default 0 (PLAIN and
	// SCRAM sessions do not expire).
	SessionLifetime time.Duration `yaml:"session_lifetime"`
	// MaxConcurrentVerifications bounds how many password hashes (bcrypt,
	// argon2id) are verified at once, so a burst of PLAIN logins (or an
	// attacker's) cannot starve the proxy: further logins wait. Default
	// half of GOMAXPROCS, at least 1.
	MaxConcurrentVerifications int `yaml:"max_concurrent_verifications"`

	OAuthBearer *OAuthBearerConfig `yaml:"oauthbearer"`
	TLS         *TLSMapping        `yaml:"tls"`
}

// OAuthBearerConfig configures OAUTHBEARER (RFC 7628) with JWT bearer tokens.
type OAuthBearerConfig struct {
	// JWKSFile is a JSON Web Key Set file, polled for changes. Exactly one
	// of JWKSFile and JWKSURL is required.
	JWKSFile string `yaml:"jwks_file"`
	// JWKSURL is fetched at start and every JWKSRefresh, and at most once
	// per JWKSMinRefresh when a token names an unknown key id.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSRefresh is the JWKS URL refresh interval. Default 5m.
	JWKSRefresh time.Duration `yaml:"jwks_refresh"`
	// JWKSMinRefresh rate-limits refreshes triggered by unknown key ids.
	// Default 30s.
	JWKSMinRefresh time.Duration `yaml:"jwks_min_refresh"`
	// JWKSTimeout bounds one JWKS fetch. Default 10s.
	JWKSTimeout time.Duration `yaml:"jwks_timeout"`

	// Issuer must equal the token's "iss". Required.
	Issuer string `yaml:"issuer"`
	// Audience must be the token's "aud" or one of its elements. Required.
	Audience string `yaml:"audience"`
	// Algorithms are the accepted JWS algorithms. Default [RS256, ES256,
	// EdDSA]. Supported: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384
	// ES512 EdDSA; "none" and HMAC algorithms are refused.
	Algorithms []string `yaml:"algorithms"`
	// ClockSkew is tolerated on exp, nbf and iat. Default 30s.
	ClockSkew time.Duration `yaml:"clock_skew"`

	// PrincipalClaim names the claim holding the principal id. Default
	// "sub". Claim names may be dotted paths into nested objects
	// ("realm_access.roles").
	PrincipalClaim string `yaml:"principal_claim"`
	// OrgClaim, if set, names the claim holding the organisation; a token
	// without it is refused.
	OrgClaim string `yaml:"org_claim"`
	// RolesClaim, if set, names a claim holding roles: an array of strings
	// or a space-separated string.
	RolesClaim string `yaml:"roles_claim"`
	// AttributeClaims maps principal attribute names to claim names.
	// Missing claims are left out; arrays are joined with ",".
	AttributeClaims map[string]string `yaml:"attribute_claims"`
}

// TLSMapping maps a verified client certificate to a principal.
type TLSMapping struct {
	// From selects the certificate field the principal id is taken from:
	// subject_cn, subject (the RFC 2253 distinguished name), san_dns,
	// san_uri or san_email. For SANs, the first value matching Pattern
	// wins.
	From string `yaml:"from"`
	// Pattern, if set, must match the field; the principal id is the
	// capture group named "id", else the first capture group, else the
	// whole match. A certificate whose field does not match is refused.
	Pattern string `yaml:"pattern"`
	// OrgFrom selects the organisation: subject_o, subject_ou, pattern (the
	// capture group named "org" in Pattern, or the first group of
	// OrgPattern applied to the same field) or none. Default none.
	OrgFrom string `yaml:"org_from"`
	// OrgPattern is a regex with one capture group applied to the From
	// field when OrgFrom is "pattern" and Pattern has no "org" group.
	OrgPattern string `yaml:"org_pattern"`
	// Roles are given to every certificate principal.
	Roles []string `yaml:"roles"`
}

// DefaultConfig returns a config with defaults filled and no mechanism
// configured.
func DefaultConfig() Config {
	return Config{ReloadInterval: 2 * time.Second, MaxConcurrentVerifications: max(1, runtime.GOMAXPROCS(0)/2)}
}

// DefaultOAuthBearerConfig returns the OAUTHBEARER defaults; Issuer, Audience
// and a JWKS source must still be set.
func DefaultOAuthBearerConfig() OAuthBearerConfig {
	return OAuthBearerConfig{
		JWKSRefresh:    5 * time.Minute,
		JWKSMinRefresh: 30 * time.Second,
		JWKSTimeout:    10 * time.Second,
		Algorithms:     []string{"RS256", "ES256", "EdDSA"},
		ClockSkew:      30 * time.Second,
		PrincipalClaim: "sub",
	}
}

// DecodeConfig decodes YAML strictly (unknown keys are errors) over
// DefaultConfig and validates the result.
func DecodeConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("authn: decode config: %w", err)
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// applyDefaults fills zero fields; New calls it so a hand-built Config
// works too.
func (c *Config) applyDefaults() {
	d := DefaultConfig()
	if c.ReloadInterval == 0 {
		c.ReloadInterval = d.ReloadInterval
	}
	if c.MaxConcurrentVerifications == 0 {
		c.MaxConcurrentVerifications = d.MaxConcurrentVerifications
	}
	if o := c.OAuthBearer; o != nil {
		od := DefaultOAuthBearerConfig()
		if o.JWKSRefresh == 0 {
			o.JWKSRefresh = od.JWKSRefresh
		}
		if o.JWKSMinRefresh == 0 {
			o.JWKSMinRefresh = od.JWKSMinRefresh
		}
		if o.JWKSTimeout == 0 {
			o.JWKSTimeout = od.JWKSTimeout
		}
		if len(o.Algorithms) == 0 {
			o.Algorithms = od.Algorithms
		}
		if o.ClockSkew == 0 {
			o.ClockSkew = od.ClockSkew
		}
		if o.PrincipalClaim == "" {
			o.PrincipalClaim = od.PrincipalClaim
		}
	}
}

// Validate reports the first invalid key and what is wrong with it.
func (c *Config) Validate() error {
	if c.ReloadInterval < 0 {
		return errors.New("authn: reload_interval: must not be negative")
	}
	if c.SessionLifetime < 0 {
		return errors.New("authn: session_lifetime: must not be negative")
	}
	if c.SessionLifetime > 0 && c.SessionLifetime < time.Second {
		return fmt.Errorf("authn: session_lifetime: %s is shorter than 1s", c.SessionLifetime)
	}
	if c.MaxConcurrentVerifications < 0 {
		return errors.New("authn: max_concurrent_verifications: must not be negative")
	}
	if o := c.OAuthBearer; o != nil {
		if err := o.validate(); err != nil {
			return err
		}
	}
	if m := c.TLS; m != nil {
		if _, err := compileTLSMapping(*m); err != nil {
			return err
		}
	}
	return nil
}

var supportedAlgs = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

func (o *OAuthBearerConfig) validate() error {
	const p = "authn: oauthbearer."
	switch {
	case o.JWKSFile == "" && o.JWKSURL == "":
		return errors.New(p + "jwks_file: one of jwks_file and jwks_url is required")
	case o.JWKSFile != "" && o.JWKSURL != "":
		return errors.New(p + "jwks_url: set only one of jwks_file and jwks_url")
	}
	if o.JWKSURL != "" {
		u, err := url.Parse(o.JWKSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf(p+"jwks_url: %q is not an http(s) URL", o.JWKSURL)
		}
	}
	if o.JWKSRefresh < time.Second && o.JWKSRefresh != 0 {
		return fmt.Errorf(p+"jwks_refresh: %s is shorter than 1s", o.JWKSRefresh)
	}
	if o.JWKSMinRefresh < 0 || o.JWKSTimeout < 0 || o.JWKSRefresh < 0 {
		return errors.New(p + "jwks_refresh, jwks_min_refresh, jwks_timeout: must not be negative")
	}
	if o.Issuer == "" {
		return errors.New(p + "issuer: required (tokens from any issuer would be accepted)")
	}
	if o.Audience == "" {
		return errors.New(p + "audience: required (tokens meant for other services would be accepted)")
	}
	for _, a := range o.Algorithms {
		if !supportedAlgs[a] {
			return fmt.Errorf(p+"algorithms: %q is not supported (use RS256..RS512, PS256..PS512, ES256..ES512 or EdDSA)", a)
		}
	}
	if o.ClockSkew < 0 || o.ClockSkew > 10*time.Minute {
		return fmt.Errorf(p+"clock_skew: %s is outside [0, 10m]", o.ClockSkew)
	}
	for _, k := range []struct{ key, v string }{
		{"principal_claim", o.PrincipalClaim}, {"org_claim", o.OrgClaim}, {"roles_claim", o.RolesClaim},
	} {
		if err := validClaimPath(k.v); err != nil {
			return fmt.Errorf(p+"%s: %w", k.key, err)
		}
	}
	for attr, claim := range o.AttributeClaims {
		if attr == "" {
			return errors.New(p + "attribute_claims: empty attribute name")
		}
		if claim == "" {
			return fmt.Errorf(p+"attribute_claims.%s: empty claim name", attr)
		}
		if err := validClaimPath(claim); err != nil {
			return fmt.Errorf(p+"attribute_claims.%s: %w", attr, err)
		}
	}
	return nil
}

func validClaimPath(s string) error {
	if s == "" {
		return nil
	}
	for _, part := range strings.Split(s, ".") {
		if part == "" {
			return fmt.Errorf("claim path %q has an empty segment", s)
		}
	}
	return nil
}

// tlsMapper is a compiled TLSMapping.
type tlsMapper struct {
	from       string
	pattern    *regexp.Regexp
	idGroup    int // 0 = whole match
	orgFrom    string
	orgPattern *regexp.Regexp
	orgGroup   int
	roles      []string
}

func compileTLSMapping(m TLSMapping) (*tlsMapper, error) {
	const p = "authn: tls."
	t := &tlsMapper{from: m.From, orgFrom: m.OrgFrom, roles: m.Roles}
	switch m.From {
	case "subject_cn", "subject", "san_dns", "san_uri", "san_email":
	case "":
		return nil, errors.New(p + "from: required (subject_cn, subject, san_dns, san_uri or san_email)")
	default:
		return nil, fmt.Errorf(p+"from: %q is not one of subject_cn, subject, san_dns, san_uri, san_email", m.From)
	}
	if m.Pattern != "" {
		re, err := regexp.Compile(m.Pattern)
		if err != nil {
			return nil, fmt.Errorf(p+"pattern: %w", err)
		}
		t.pattern = re
		if i := re.SubexpIndex("id"); i > 0 {
			t.idGroup = i
		} else if re.NumSubexp() > 0 {
			t.idGroup = 1
		}
	}
	switch m.OrgFrom {
	case "", "none":
		t.orgFrom = "none"
		if m.OrgPattern != "" {
			return nil, errors.New(p + "org_pattern: set but org_from is not \"pattern\"")
		}
	case "subject_o", "subject_ou":
		if m.OrgPattern != "" {
			return nil, errors.New(p + "org_pattern: set but org_from is not \"pattern\"")
		}
	case "pattern":
		switch {
		case m.OrgPattern != "":
			re, err := regexp.Compile(m.OrgPattern)
			if err != nil {
				return nil, fmt.Errorf(p+"org_pattern: %w", err)
			}
			if re.NumSubexp() < 1 {
				return nil, errors.New(p + "org_pattern: needs a capture group for the organisation")
			}
			t.orgPattern, t.orgGroup = re, 1
			if i := re.SubexpIndex("org"); i > 0 {
				t.orgGroup = i
			}
		case t.pattern != nil && t.pattern.SubexpIndex("org") > 0:
			t.orgPattern, t.orgGroup = t.pattern, t.pattern.SubexpIndex("org")
		default:
			return nil, errors.New(p + "org_pattern: org_from is \"pattern\" but neither org_pattern nor a (?P<org>...) group in pattern is set")
		}
	default:
		return nil, fmt.Errorf(p+"org_from: %q is not one of subject_o, subject_ou, pattern, none", m.OrgFrom)
	}
	for i, r := range m.Roles {
		if r == "" {
			return nil, fmt.Errorf(p+"roles[%d]: empty role", i)
		}
	}
	return t, nil
}
