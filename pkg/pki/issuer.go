package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"reflect"
)

// Issuer is an issuing CA held as its certificate (with the chain above it)
// and its key: the development CA's, or the city's CA whose files a hub is
// configured with (pki.issuing_ca), from which it issues the certificates of
// units registered without one.
type Issuer struct {
	// Cert is the issuing CA's certificate; Chain is Cert followed by the
	// certificates above it that its file holds (roots are not needed).
	Cert  *x509.Certificate
	Chain []*x509.Certificate
	key   crypto.Signer
	// dps gives the CRL distribution points written into what it issues
	// (the development CA's; none for a CA read from files).
	dps func() []string
}

// LoadIssuer reads an issuing CA's certificate file (PEM: the CA first, then
// any intermediates) and its private key file, and checks that they match.
func LoadIssuer(certPath, keyPath string) (*Issuer, error) {
	if certPath == "" || keyPath == "" {
		return nil, errors.New("pki: issuing CA: both cert and key are required")
	}
	b, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("pki: issuing CA: %w", err)
	}
	chain, err := ParseCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("pki: issuing CA %s: %w", certPath, err)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: issuing CA: %w", err)
	}
	if !publicKeysEqual(key.Public(), chain[0].PublicKey) {
		return nil, fmt.Errorf("pki: issuing CA: the key %s is not the key of the certificate %s", keyPath, certPath)
	}
	return &Issuer{Cert: chain[0], Chain: chain, key: key}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	if k, ok := a.(interface{ Equal(crypto.PublicKey) bool }); ok {
		return k.Equal(b)
	}
	return reflect.DeepEqual(a, b)
}

// Issuer returns the development CA's issuing CA.
func (ca *CA) Issuer() *Issuer {
	return &Issuer{Cert: ca.Issuing, Chain: []*x509.Certificate{ca.Issuing}, key: ca.issuingKey, dps: ca.distributionPoints}
}

// Issue signs an end-entity certificate (IssueRequest's defaults apply).
func (i *Issuer) Issue(r IssueRequest) (*x509.Certificate, error) {
	var dps []string
	if i.dps != nil {
		dps = i.dps()
	}
	return issue(i.Cert, i.key, dps, r)
}
