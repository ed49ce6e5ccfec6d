package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// Signer is a private key (software or token) with its certificate chain,
// leaf first.
type Signer struct {
	Key   crypto.Signer
	Chain []*x509.Certificate
}

// Cert returns the signing certificate.
func (s *Signer) Cert() *x509.Certificate { return s.Chain[0] }

// ParsePrivateKey decodes a PEM private key (PKCS#8, PKCS#1 or SEC 1).
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	for {
		var p *pem.Block
		p, data = pem.Decode(data)
		if p == nil {
			return nil, errors.New("no private key in PEM data")
		}
		switch p.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(p.Bytes)
			if err != nil {
				return nil, err
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("key type %T cannot sign", k)
			}
			return s, nil
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(p.Bytes)
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(p.Bytes)
		}
	}
}

// EncodePrivateKey returns key as PKCS#8 PEM.
func EncodePrivateKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// LoadSigner reads a PEM key file and a PEM certificate file (leaf first,
// then its chain) and checks that they belong together.
func LoadSigner(keyPath, certPath string) (*Signer, error) {
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return NewSigner(kb, cb)
}

// NewSigner builds a Signer from PEM key and certificate-chain bytes.
func NewSigner(keyPEM, chainPEM []byte) (*Signer, error) {
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: key: %w", err)
	}
	chain, err := ParseCertificates(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: certificate: %w", err)
	}
	return NewSignerFromKey(key, chain)
}

// NewSignerFromKey pairs any crypto.Signer (a token's too) with its chain.
func NewSignerFromKey(key crypto.Signer, chain []*x509.Certificate) (*Signer, error) {
	if len(chain) == 0 {
		return nil, errors.New("pki: no certificate")
	}
	if !samePublicKey(key.Public(), chain[0].PublicKey) {
		return nil, errors.New("pki: the key does not match the certificate")
	}
	return &Signer{Key: key, Chain: chain}, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	switch k := a.(type) {
	case *rsa.PublicKey:
		return k.Equal(b)
	case *ecdsa.PublicKey:
		return k.Equal(b)
	case equaler:
		return k.Equal(b)
	}
	return false
}
