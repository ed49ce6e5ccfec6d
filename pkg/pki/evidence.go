package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Certificate profiles for the hub's evidence (issue #11): a time-stamping
// authority, and the hub's own signing keys (receipts, log checkpoints).
//
// OIDExtKeyUsageHubSigner is the extended key usage that marks a certificate
// as speaking for the hub: it signs receipts and the transparency log's
// checkpoints. A unit's certificate never carries it, so a unit cannot pass
// for the hub whatever its subject says.
//
// The arc. edx has no IANA Private Enterprise Number yet. The natural
// registration-free arc, 2.25.<UUID> (ITU-T X.667), does not fit: Go's
// crypto/x509 reads extended key usages as asn1.ObjectIdentifier, whose
// components are int, and a 128-bit UUID component makes the certificate
// unparsable. So the development profile uses the documentation arc
// 1.3.6.1.4.1.32473 (RFC 5612, "Example Enterprise Number for Documentation
// Use"), which no one can own, under it 7001 for edx:
//
//	1.3.6.1.4.1.32473.7001          edx
//	1.3.6.1.4.1.32473.7001.3        edx extended key usages
//	1.3.6.1.4.1.32473.7001.3.1      id-kp-edxHubSigner: hub receipts and log checkpoints
//
// A city that runs edx in production registers its own PEN (free, from IANA)
// or uses an arc under its national CA, sets OIDExtKeyUsageHubSigner to it at
// start-up (one value for the hub, its agents and the CLI), and has its CA
// issue the hub's certificates with it.
var OIDExtKeyUsageHubSigner = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7001, 3, 1}

var (
	oidExtensionExtKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidKPTimeStamping       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 8}
)

// Paths of the development TSA's key and certificate chain in a CA directory.
func (ca *CA) TSAKeyPath() string  { return filepath.Join(ca.Dir, "tsa.key.pem") }
func (ca *CA) TSACertPath() string { return filepath.Join(ca.Dir, "tsa.cert.pem") }

// IssueTSA signs a time-stamping authority's certificate: digitalSignature,
// and the extended key usage timeStamping alone and critical, as RFC 3161
// section 2.3 requires (OpenSSL's ts commands refuse anything else).
func (ca *CA) IssueTSA(name string, key crypto.PublicKey) (*x509.Certificate, error) {
	if name == "" {
		return nil, errors.New("pki: issue tsa: a name is required")
	}
	ext, err := ekuExtension(oidKPTimeStamping)
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	return createCert(&x509.Certificate{
		Subject:               pkix.Name{Country: []string{"VN"}, Organization: []string{name}, CommonName: name},
		NotBefore:             now,
		NotAfter:              now.AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true,
		CRLDistributionPoints: ca.distributionPoints(),
		ExtraExtensions:       []pkix.Extension{ext},
	}, ca.Issuing, key, ca.issuingKey)
}

// IssueHubSigner signs a certificate for one of the hub's signing keys
// (receipts, log checkpoints): the subject is the hub's (organizationIdentifier
// EDX-HUB), the extended key usage is OIDExtKeyUsageHubSigner alone and
// critical, valid two years. Any key type x509 supports is accepted, Ed25519
// included (the log's checkpoint key).
func (ca *CA) IssueHubSigner(name string, key crypto.PublicKey) (*x509.Certificate, error) {
	if name == "" {
		return nil, errors.New("pki: issue hub signer: a name is required")
	}
	return ca.Issue(IssueRequest{Identifier: HubIdentifier, Name: name, Key: key})
}

// EnsureTSA makes the development TSA's key and certificate in the CA
// directory (tsa.key.pem, 0600; tsa.cert.pem, leaf then issuing CA) unless
// they exist, and returns their paths. The embedded hub runs its
// development TSA with them.
func (ca *CA) EnsureTSA(name string) (keyPath, certPath string, err error) {
	keyPath, certPath = ca.TSAKeyPath(), ca.TSACertPath()
	if _, err := os.Stat(keyPath); err == nil {
		if _, err := os.Stat(certPath); err == nil {
			return keyPath, certPath, nil
		}
		return "", "", fmt.Errorf("pki: %s exists without %s", keyPath, certPath)
	}
	key, err := GenerateKey(ECDSAP256)
	if err != nil {
		return "", "", err
	}
	cert, err := ca.IssueTSA(name, key.Public())
	if err != nil {
		return "", "", err
	}
	if err := writeKey(keyPath, key); err != nil {
		return "", "", err
	}
	if err := writeFile(certPath, EncodeCertificates(cert, ca.Issuing), 0o644); err != nil {
		return "", "", err
	}
	return keyPath, certPath, nil
}

// IsHubReceiptSigner reports whether cert carries the hub signer's extended
// key usage (OIDExtKeyUsageHubSigner) and is not a CA. It checks the profile
// only: the chain, validity and revocation are Trust.Check's work.
func IsHubReceiptSigner(cert *x509.Certificate) bool {
	if cert == nil || cert.IsCA {
		return false
	}
	for _, u := range cert.UnknownExtKeyUsage {
		if u.Equal(OIDExtKeyUsageHubSigner) {
			return true
		}
	}
	return false
}

// HubProfileSince is when edx began issuing hub certificates with the hub
// signer profile. A hub certificate issued before it, with the hub's subject
// and no extended key usage at all (the subject convention edx used
// before), is a legacy hub signer: receipts it signed stay valid, checked as
// of their acceptance like any receipt, until the certificate is retired
// (EnsureHubProfile revokes it, reason superseded, when the hub switches to
// the profile: the cut-over). A subject-only certificate issued after it
// speaks for no hub, whatever its subject says.
var HubProfileSince = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// LegacyHubSigner reports whether cert is a legacy hub signer: the hub's
// subject (organizationIdentifier EDX-HUB), no extended key usage, not a CA,
// issued before HubProfileSince. Like IsHubReceiptSigner it checks the
// profile only.
func LegacyHubSigner(cert *x509.Certificate) bool {
	return cert != nil && !cert.IsCA && IsHub(cert) && len(cert.ExtKeyUsage) == 0 && len(cert.UnknownExtKeyUsage) == 0 &&
		cert.NotBefore.Before(HubProfileSince)
}

// EnsureHubProfile moves the development CA's hub to the hub signer
// profile: when hub.cert.pem lacks it, the hub gets a new key and
// certificate (RotateHub, the old one kept as hub-<serial>.cert.pem); then
// every subject-only hub certificate in the directory (hub.cert.pem as it
// was, hub-<serial>.cert.pem) that the CRL does not list yet is retired:
// revoked at time at, reason superseded. Receipts the old certificate
// signed before at stay valid; anything it signs after is refused. Call it
// when the hub starts, before it signs anything: at must be later than
// every receipt the old key signed. It returns the certificate issued (nil
// when hub.cert.pem had the profile) and the certificates retired.
func (ca *CA) EnsureHubProfile(at time.Time) (issued *x509.Certificate, retired []*x509.Certificate, err error) {
	cur, err := readCert(ca.HubCertPath())
	if err != nil {
		return nil, nil, err
	}
	if !IsHubReceiptSigner(cur) {
		if issued, err = ca.RotateHub(0); err != nil {
			return nil, nil, err
		}
	}
	old, err := filepath.Glob(filepath.Join(ca.Dir, "hub-*.cert.pem"))
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	crl, err := ca.currentCRL()
	if err != nil {
		return nil, nil, err
	}
	listed := map[string]bool{}
	for _, e := range crl.RevokedCertificateEntries {
		listed[e.SerialNumber.String()] = true
	}
	for _, p := range old {
		c, err := readCert(p)
		if err != nil {
			return issued, retired, err
		}
		if IsHubReceiptSigner(c) || !IsHub(c) || !bytes.Equal(c.RawIssuer, ca.Issuing.RawSubject) || listed[c.SerialNumber.String()] {
			continue
		}
		if err := ca.revoke(c.SerialNumber, at, ReasonSuperseded); err != nil {
			return issued, retired, err
		}
		listed[c.SerialNumber.String()] = true
		retired = append(retired, c)
	}
	return issued, retired, nil
}

// IsTimeStamping reports whether cert has the profile RFC 3161 requires of a
// TSA: one extended key usage, timeStamping, in a critical extension.
func IsTimeStamping(cert *x509.Certificate) bool {
	if cert == nil || cert.IsCA {
		return false
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageTimeStamping || len(cert.UnknownExtKeyUsage) != 0 {
		return false
	}
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidExtensionExtKeyUsage) {
			return e.Critical
		}
	}
	return false
}

// ekuExtension is a critical extended key usage extension holding one usage.
func ekuExtension(oid asn1.ObjectIdentifier) (pkix.Extension, error) {
	v, err := asn1.Marshal([]asn1.ObjectIdentifier{oid})
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("pki: extended key usage: %w", err)
	}
	return pkix.Extension{Id: oidExtensionExtKeyUsage, Critical: true, Value: v}, nil
}
