package authn

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// principal maps the verified leaf certificate of a TLS connection. The
// principal gets the attributes "tls_subject" (RFC 2253 subject) and
// "tls_fingerprint_sha256" (hex of the DER certificate), and Expires is the
// certificate's NotAfter.
func (t *tlsMapper) principal(state tls.ConnectionState) (*filter.Principal, *filter.AuthError) {
	if len(state.VerifiedChains) == 0 || len(state.PeerCertificates) == 0 {
		return nil, authErr(ReasonBadCertificate, "client certificate was not verified")
	}
	cert := state.PeerCertificates[0]
	var id, matched string
	for _, v := range t.values(cert) {
		if v == "" {
			continue
		}
		if t.pattern == nil {
			id, matched = v, v
			break
		}
		m := t.pattern.FindStringSubmatch(v)
		if m == nil {
			continue
		}
		if id = m[t.idGroup]; id != "" {
			matched = v
			break
		}
	}
	if id == "" {
		return nil, authErr(ReasonBadCertificate, "client certificate does not map to a principal")
	}
	var org string
	switch t.orgFrom {
	case "subject_o":
		if len(cert.Subject.Organization) > 0 {
			org = cert.Subject.Organization[0]
		}
	case "subject_ou":
		if len(cert.Subject.OrganizationalUnit) > 0 {
			org = cert.Subject.OrganizationalUnit[0]
		}
	case "pattern":
		if m := t.orgPattern.FindStringSubmatch(matched); m != nil {
			org = m[t.orgGroup]
		}
	}
	if t.orgFrom != "none" && org == "" {
		return nil, authErr(ReasonBadCertificate, "client certificate names no organisation")
	}
	fp := sha256.Sum256(cert.Raw)
	return &filter.Principal{
		ID:        id,
		Org:       org,
		Mechanism: MechMTLS,
		Roles:     append([]string(nil), t.roles...),
		Attributes: map[string]string{
			"tls_subject":            cert.Subject.String(),
			"tls_fingerprint_sha256": hex.EncodeToString(fp[:]),
		},
		Expires: cert.NotAfter,
	}, nil
}

// values returns the certificate field values the principal may come from.
func (t *tlsMapper) values(cert *x509.Certificate) []string {
	switch t.from {
	case "subject_cn":
		return []string{cert.Subject.CommonName}
	case "subject":
		return []string{cert.Subject.String()}
	case "san_dns":
		return cert.DNSNames
	case "san_uri":
		out := make([]string, len(cert.URIs))
		for i, u := range cert.URIs {
			out[i] = u.String()
		}
		return out
	case "san_email":
		return cert.EmailAddresses
	}
	return nil
}
