package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// GenerateKey writes a new Ed25519 private key to path (PEM PKCS#8, mode
// 0600, refusing to overwrite) and its public key to path+".pub" (PEM
// PKIX), and returns the public key.
func GenerateKey(path string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("audit: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("audit: generate key: %w", err)
	}
	pder, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("audit: generate key: %w", err)
	}
	if err := writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(path+".pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), 0o644); err != nil {
		return nil, err
	}
	return pub, nil
}

func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("audit: write key: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("audit: write key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("audit: write key: %w", err)
	}
	return f.Close()
}

// LoadPrivateKey reads a PEM PKCS#8 Ed25519 private key.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit: load private key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("audit: load private key %s: no PEM PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("audit: load private key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("audit: load private key %s: not an Ed25519 key", path)
	}
	return ek, nil
}

// LoadPublicKey reads a PEM PKIX Ed25519 public key (the ".pub" file of
// GenerateKey); it also accepts the private key file and derives it.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit: load public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("audit: load public key %s: no PEM block", path)
	}
	switch blk.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("audit: load public key %s: %w", path, err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("audit: load public key %s: not an Ed25519 key", path)
		}
		return ek, nil
	case "PRIVATE KEY":
		priv, err := LoadPrivateKey(path)
		if err != nil {
			return nil, err
		}
		return priv.Public().(ed25519.PublicKey), nil
	}
	return nil, fmt.Errorf("audit: load public key %s: unexpected PEM block %q", path, blk.Type)
}

// KeyID is the hex of the first 8 bytes of SHA-256 of the public key.
func KeyID(pub ed25519.PublicKey) string {
	s := sha256.Sum256(pub)
	return hex.EncodeToString(s[:8])
}

// signEvent fills e.Data.Head.Signature and returns the final encoding.
func signEvent(e *Envelope, priv ed25519.PrivateKey) ([]byte, error) {
	e.Data.Head.Signature = ""
	unsigned, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	e.Data.Head.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, unsigned))
	return json.Marshal(e)
}

// verifyEvent checks the signature of a parsed chain_head event.
func verifyEvent(e *Envelope, pub ed25519.PublicKey) error {
	h := e.Data.Head
	if h == nil {
		return errors.New("no chain_head data")
	}
	sig, err := base64.StdEncoding.DecodeString(h.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return errors.New("malformed signature")
	}
	if h.KeyID != KeyID(pub) {
		return fmt.Errorf("signed by key %s, verifying with key %s", h.KeyID, KeyID(pub))
	}
	c := *e
	hc := *h
	hc.Signature = ""
	c.Data.Head = &hc
	unsigned, err := json.Marshal(&c)
	if err != nil {
		return err
	}
	if !ed25519.Verify(pub, unsigned, sig) {
		return errors.New("signature does not verify")
	}
	return nil
}
