package authn

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// maxOAuthMsg bounds an OAUTHBEARER client message.
const maxOAuthMsg = maxTokenLen + 4096

// oauthVerifier checks bearer JWTs against a JWKS.
type oauthVerifier struct {
	cfg  OAuthBearerConfig
	p    *Provider
	algs map[string]bool
	keys atomic.Pointer[keySet]

	client    *http.Client
	fetchMu   sync.Mutex
	lastFetch time.Time
}

func newOAuthVerifier(cfg OAuthBearerConfig, p *Provider) *oauthVerifier {
	v := &oauthVerifier{cfg: cfg, p: p, algs: map[string]bool{}, client: &http.Client{Timeout: cfg.JWKSTimeout}}
	for _, a := range cfg.Algorithms {
		v.algs[a] = true
	}
	return v
}

func (v *oauthVerifier) loadJWKS(b []byte) error {
	ks, skipped, err := parseJWKS(b)
	if err != nil {
		return err
	}
	v.keys.Store(ks)
	v.p.log.Info("authn: JWKS loaded", zap.Int("keys", len(ks.keys)), zap.Int("skipped", skipped))
	return nil
}

// fetch downloads the JWKS URL and swaps it in. On error the previous key
// set keeps serving.
func (v *oauthVerifier) fetch() error {
	v.lastFetch = v.p.now()
	err := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), v.cfg.JWKSTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "application/json")
		resp, err := v.client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: status %s", v.cfg.JWKSURL, resp.Status)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxFileSize+1))
		if err != nil {
			return err
		}
		if len(b) > maxFileSize {
			return fmt.Errorf("GET %s: larger than %d bytes", v.cfg.JWKSURL, maxFileSize)
		}
		return v.loadJWKS(b)
	}()
	v.p.m.reload("jwks", err)
	return err
}

// refreshLoop refetches the JWKS URL every JWKSRefresh (every
// JWKSMinRefresh while it fails).
func (v *oauthVerifier) refreshLoop(stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	wait := v.cfg.JWKSRefresh
	if v.keys.Load() == nil {
		wait = v.cfg.JWKSMinRefresh
	}
	for {
		t := time.NewTimer(wait)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		v.fetchMu.Lock()
		err := v.fetch()
		v.fetchMu.Unlock()
		wait = v.cfg.JWKSRefresh
		if err != nil {
			v.p.log.Error("authn: JWKS refresh failed; keeping the previous keys", zap.String("url", v.cfg.JWKSURL), zap.Error(err))
			wait = max(v.cfg.JWKSMinRefresh, time.Second)
		}
	}
}

// refreshForUnknownKid refetches the JWKS URL when a token names a key id
// not in the set (key rotation), at most once per JWKSMinRefresh.
func (v *oauthVerifier) refreshForUnknownKid() {
	if v.cfg.JWKSURL == "" {
		return
	}
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	if !v.lastFetch.IsZero() && v.p.now().Sub(v.lastFetch) < v.cfg.JWKSMinRefresh {
		return
	}
	if err := v.fetch(); err != nil {
		v.p.log.Error("authn: JWKS refresh for an unknown key id failed", zap.String("url", v.cfg.JWKSURL), zap.Error(err))
	}
}

// verify checks a bearer token and maps its claims to a principal.
func (v *oauthVerifier) verify(tok string) (*filter.Principal, time.Time, *filter.AuthError) {
	t, aerr := parseJWT(tok)
	if aerr != nil {
		return nil, time.Time{}, aerr
	}
	alg := t.header.Alg
	if !v.algs[alg] {
		return nil, time.Time{}, authErr(ReasonBadAlgorithm, fmt.Sprintf("token algorithm %q is not accepted", truncate(alg, 16)))
	}
	if len(t.header.Crit) > 0 && string(t.header.Crit) != "null" {
		return nil, time.Time{}, malformed("token has critical header parameters")
	}
	cands, kidKnown := v.keys.Load().candidates(t.header.Kid, alg)
	if !kidKnown {
		v.refreshForUnknownKid()
		cands, kidKnown = v.keys.Load().candidates(t.header.Kid, alg)
	}
	if v.keys.Load() == nil {
		return nil, time.Time{}, authErr(ReasonUnavailable, "token signing keys are not available")
	}
	verified := false
	for _, k := range cands {
		if t.verifySig(k) {
			verified = true
			break
		}
	}
	if !verified {
		if !kidKnown {
			return nil, time.Time{}, authErr(ReasonBadSignature, "token signed by an unknown key")
		}
		return nil, time.Time{}, authErr(ReasonBadSignature, "token signature is invalid")
	}

	c := t.claims
	if iss, _ := c["iss"].(string); iss != v.cfg.Issuer {
		return nil, time.Time{}, authErr(ReasonBadIssuer, "token issuer is not accepted")
	}
	if !audienceHas(c["aud"], v.cfg.Audience) {
		return nil, time.Time{}, authErr(ReasonBadAudience, "token audience does not include this gateway")
	}
	now := v.p.now()
	skew := v.cfg.ClockSkew
	exp, ok, aerr := numericDate(c, "exp")
	if aerr != nil {
		return nil, time.Time{}, aerr
	}
	if !ok {
		return nil, time.Time{}, claimsErr("token has no exp claim")
	}
	if !now.Before(exp.Add(skew)) {
		return nil, time.Time{}, authErr(ReasonExpired, "token expired")
	}
	if nbf, ok, aerr := numericDate(c, "nbf"); aerr != nil {
		return nil, time.Time{}, aerr
	} else if ok && now.Add(skew).Before(nbf) {
		return nil, time.Time{}, authErr(ReasonNotYetValid, "token is not valid yet (nbf)")
	}
	if iat, ok, aerr := numericDate(c, "iat"); aerr != nil {
		return nil, time.Time{}, aerr
	} else if ok && now.Add(skew).Before(iat) {
		return nil, time.Time{}, authErr(ReasonNotYetValid, "token is issued in the future (iat)")
	}

	pr := &filter.Principal{Mechanism: MechOAuthBearer, Expires: exp}
	idv, ok := claimPath(c, v.cfg.PrincipalClaim)
	id, isStr := idv.(string)
	if !ok || !isStr || id == "" || len(id) > 255 {
		return nil, time.Time{}, claimsErr("token claim %s must be a non-empty string", v.cfg.PrincipalClaim)
	}
	pr.ID = id
	if v.cfg.OrgClaim != "" {
		ov, ok := claimPath(c, v.cfg.OrgClaim)
		org, isStr := ov.(string)
		if !ok || !isStr || org == "" {
			return nil, time.Time{}, claimsErr("token claim %s must be a non-empty string", v.cfg.OrgClaim)
		}
		pr.Org = org
	}
	if v.cfg.RolesClaim != "" {
		if rv, ok := claimPath(c, v.cfg.RolesClaim); ok {
			roles, ok := claimStrings(rv)
			if !ok {
				return nil, time.Time{}, claimsErr("token claim %s must be a string array or a space-separated string", v.cfg.RolesClaim)
			}
			pr.Roles = roles
		}
	}
	for attr, claim := range v.cfg.AttributeClaims {
		av, ok := claimPath(c, claim)
		if !ok {
			continue
		}
		s, ok := claimString(av)
		if !ok {
			return nil, time.Time{}, claimsErr("token claim %s must be a scalar or an array of scalars", claim)
		}
		if pr.Attributes == nil {
			pr.Attributes = make(map[string]string, len(v.cfg.AttributeClaims))
		}
		pr.Attributes[attr] = s
	}
	return pr, exp, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// oauthSession is SASL OAUTHBEARER (RFC 7628): one client message
// gs2-header %x01 auth=Bearer <token> %x01 [key=value %x01 ...] %x01.
// On failure it answers with an error at once rather than with RFC 7628's
// JSON error challenge; Kafka clients treat both as an authentication
// failure.
type oauthSession struct {
	v    *oauthVerifier
	name string
}

func (s *oauthSession) user() string { return s.name }

func (s *oauthSession) step(msg []byte) ([]byte, bool, *filter.Principal, time.Duration, *filter.AuthError) {
	if len(msg) > maxOAuthMsg {
		return nil, false, nil, 0, malformed("OAUTHBEARER message too long")
	}
	token, authzid, aerr := parseOAuthMessage(string(msg))
	if aerr != nil {
		return nil, false, nil, 0, aerr
	}
	pr, exp, aerr := s.v.verify(token)
	if aerr != nil {
		return nil, false, nil, 0, aerr
	}
	s.name = pr.ID
	if authzid != "" && authzid != pr.ID {
		return nil, false, nil, 0, authErr(ReasonBadAuthzid, "authorization id must be empty or equal to the token principal")
	}
	lifetime := exp.Sub(s.v.p.now())
	if lifetime < time.Second {
		// Inside the clock skew: accept, but make the client
		// re-authenticate right away.
		lifetime = time.Second
	}
	return nil, true, pr, lifetime, nil
}

// parseOAuthMessage extracts the bearer token and authzid from an
// OAUTHBEARER initial client response.
func parseOAuthMessage(msg string) (token, authzid string, err *filter.AuthError) {
	if msg == "\x01" {
		return "", "", malformed("OAUTHBEARER client aborted the exchange")
	}
	_, authzid, rest, aerr := parseGS2Header(msg)
	if aerr != nil {
		return "", "", aerr
	}
	if !strings.HasPrefix(rest, "\x01") || !strings.HasSuffix(rest, "\x01\x01") || len(rest) < 3 {
		return "", "", malformed("OAUTHBEARER message must be gs2-header ^A key=value ^A ... ^A")
	}
	seen := map[string]bool{}
	var auth string
	for _, kv := range strings.Split(rest[1:len(rest)-2], "\x01") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok || !isAlpha(k) {
			return "", "", malformed("OAUTHBEARER key=value pair is invalid")
		}
		if seen[k] {
			return "", "", malformed("OAUTHBEARER key repeated")
		}
		seen[k] = true
		for i := 0; i < len(val); i++ {
			if c := val[i]; (c < 0x20 || c > 0x7e) && c != '\t' && c != '\r' && c != '\n' {
				return "", "", malformed("OAUTHBEARER value has invalid characters")
			}
		}
		if k == "auth" {
			auth = val
		}
	}
	if !seen["auth"] {
		return "", "", malformed("OAUTHBEARER message has no auth=")
	}
	scheme, tok, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", "", malformed("OAUTHBEARER auth must be \"Bearer <token>\"")
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/=", c) >= 0) {
			return "", "", malformed("bearer token has invalid characters")
		}
	}
	return tok, authzid, nil
}

func isAlpha(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}
