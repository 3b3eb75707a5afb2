// Package authntest builds authentication fixtures for tests and demos: a
// CA with server and client certificates, credentials files with bcrypt and
// SCRAM entries, and a JWKS with a token signer. Nothing here is meant for
// production secrets: keys are written unencrypted and bcrypt uses its
// minimum cost.
package authntest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// CertSubject describes a certificate to issue.
type CertSubject struct {
	// Name is the file name stem ("<Name>.crt", "<Name>.key") and the
	// key of PKI.Clients. Required.
	Name               string
	CommonName         string
	Organization       []string
	OrganizationalUnit []string
	DNSNames           []string
	IPs                []net.IP
	URIs               []string
	Emails             []string
	// Validity defaults to 24h from an hour ago.
	Validity time.Duration
}

// CertFiles are the PEM files of one issued certificate.
type CertFiles struct {
	CertFile string
	KeyFile  string
}

// PKI is a test CA and the certificates it issued, as PEM files in Dir.
type PKI struct {
	Dir     string
	CAFile  string
	Server  CertFiles
	Clients map[string]CertFiles

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	pool  *x509.CertPool
}

// NewPKI writes a CA ("ca.crt"), a server certificate ("server.crt",
// "server.key") valid for serverHosts (DNS names or IPs; default
// "localhost" and 127.0.0.1) and one client certificate per subject into
// dir.
func NewPKI(dir string, serverHosts []string, clients ...CertSubject) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("authntest: %w", err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("authntest: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "sluice test CA", Organization: []string{"sluice test"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("authntest: create CA: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("authntest: %w", err)
	}
	p := &PKI{Dir: dir, CAFile: filepath.Join(dir, "ca.crt"), Clients: map[string]CertFiles{}, ca: ca, caKey: caKey, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	if err := writePEM(p.CAFile, "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	if len(serverHosts) == 0 {
		serverHosts = []string{"localhost", "127.0.0.1"}
	}
	srv := CertSubject{Name: "server", CommonName: serverHosts[0]}
	for _, h := range serverHosts {
		if ip := net.ParseIP(h); ip != nil {
			srv.IPs = append(srv.IPs, ip)
		} else {
			srv.DNSNames = append(srv.DNSNames, h)
		}
	}
	if p.Server, err = p.issue(srv, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	for _, c := range clients {
		if _, err := p.IssueClient(c); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// IssueClient issues one more client certificate into Dir.
func (p *PKI) IssueClient(s CertSubject) (CertFiles, error) {
	if s.Name == "" || s.Name == "server" || s.Name == "ca" {
		return CertFiles{}, fmt.Errorf("authntest: client certificate name %q is empty or reserved", s.Name)
	}
	f, err := p.issue(s, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return CertFiles{}, err
	}
	p.Clients[s.Name] = f
	return f, nil
}

func (p *PKI) issue(s CertSubject, usage x509.ExtKeyUsage) (CertFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertFiles{}, fmt.Errorf("authntest: %w", err)
	}
	validity := s.Validity
	if validity == 0 {
		validity = 24 * time.Hour
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject: pkix.Name{
			CommonName:         s.CommonName,
			Organization:       s.Organization,
			OrganizationalUnit: s.OrganizationalUnit,
		},
		NotBefore:      now.Add(-time.Hour),
		NotAfter:       now.Add(validity),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{usage},
		DNSNames:       s.DNSNames,
		IPAddresses:    s.IPs,
		EmailAddresses: s.Emails,
	}
	for _, raw := range s.URIs {
		u, err := url.Parse(raw)
		if err != nil {
			return CertFiles{}, fmt.Errorf("authntest: URI SAN %q: %w", raw, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		return CertFiles{}, fmt.Errorf("authntest: issue %s: %w", s.Name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return CertFiles{}, fmt.Errorf("authntest: %w", err)
	}
	f := CertFiles{CertFile: filepath.Join(p.Dir, s.Name+".crt"), KeyFile: filepath.Join(p.Dir, s.Name+".key")}
	if err := writePEM(f.CertFile, "CERTIFICATE", der, 0o644); err != nil {
		return CertFiles{}, err
	}
	if err := writePEM(f.KeyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return CertFiles{}, err
	}
	return f, nil
}

// CertPool returns a pool holding the test CA.
func (p *PKI) CertPool() *x509.CertPool { return p.pool }

// ServerTLSConfig returns a server config with the server certificate that
// verifies client certificates against the CA when clients present one
// (VerifyClientCertIfGiven); set ClientAuth to RequireAndVerifyClientCert
// for mandatory mTLS.
func (p *PKI) ServerTLSConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(p.Server.CertFile, p.Server.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("authntest: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    p.pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// ClientTLSConfig returns a client config trusting the CA, presenting the
// named client certificate ("" for none).
func (p *PKI) ClientTLSConfig(name string) (*tls.Config, error) {
	cfg := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS12, ServerName: p.serverName()}
	if name == "" {
		return cfg, nil
	}
	f, ok := p.Clients[name]
	if !ok {
		return nil, fmt.Errorf("authntest: no client certificate %q", name)
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("authntest: %w", err)
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, nil
}

func (p *PKI) serverName() string {
	b, err := os.ReadFile(p.Server.CertFile)
	if err != nil {
		return ""
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return ""
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return ""
	}
	return c.Subject.CommonName
}

// VerifiedState returns a tls.ConnectionState as a server would see it after
// verifying the named client certificate, for unit tests of certificate
// mapping without a handshake.
func (p *PKI) VerifiedState(name string) (tls.ConnectionState, error) {
	f, ok := p.Clients[name]
	if !ok {
		return tls.ConnectionState{}, fmt.Errorf("authntest: no client certificate %q", name)
	}
	b, err := os.ReadFile(f.CertFile)
	if err != nil {
		return tls.ConnectionState{}, fmt.Errorf("authntest: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return tls.ConnectionState{}, errors.New("authntest: bad PEM")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return tls.ConnectionState{}, fmt.Errorf("authntest: %w", err)
	}
	chains, err := c.Verify(x509.VerifyOptions{Roots: p.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return tls.ConnectionState{}, fmt.Errorf("authntest: verify %s: %w", name, err)
	}
	return tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{c}, VerifiedChains: chains}, nil
}

// serial returns a random positive 127-bit serial number. crypto/rand.Read
// does not fail (Go 1.24+).
func serial() *big.Int {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[0] &= 0x7f
	b[0] |= 0x40
	return new(big.Int).SetBytes(b)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("authntest: %w", err)
	}
	return nil
}
