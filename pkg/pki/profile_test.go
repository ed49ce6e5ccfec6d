package pki

import (
	"crypto/x509"
	"encoding/asn1"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/reason"
)

// legacyHubCert issues what the development CA issued to the hub before the
// hub signer profile: the hub's subject and no extended key usage.
func legacyHubCert(t *testing.T, ca *CA, nb, na time.Time) *x509.Certificate {
	t.Helper()
	key, _ := GenerateKey(ECDSAP256)
	c, err := createCert(&x509.Certificate{Subject: subjectFor("edx hub — legacy", HubIdentifier), NotBefore: nb, NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment, BasicConstraintsValid: true},
		ca.Issuing, key.Public(), ca.issuingKey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeLegacyHub replaces the CA's hub key and certificate with a legacy
// (subject-only) pair, as a CA made before the profile has.
func writeLegacyHub(t *testing.T, ca *CA, nb, na time.Time) *Signer {
	t.Helper()
	key, _ := GenerateKey(ECDSAP256)
	c, err := createCert(&x509.Certificate{Subject: subjectFor("edx hub — legacy", HubIdentifier), NotBefore: nb, NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment, BasicConstraintsValid: true},
		ca.Issuing, key.Public(), ca.issuingKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeKey(ca.HubKeyPath(), key); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(ca.HubCertPath(), EncodeCertificates(c, ca.Issuing), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestHubProfile: the hub's certificate carries the hub signer extended key
// usage, critical; a unit's can never: the CA refuses to issue it, and a
// certificate that has it is no document signer, while only such a
// certificate (or a legacy one) signs for the hub, whatever the subject.
func TestHubProfile(t *testing.T) {
	ca, err := InitCAWith(t.TempDir(), CAOptions{CRLURL: "http://hub.example:8080/pki/crl.der"})
	if err != nil {
		t.Fatal(err)
	}
	trust, _ := LoadTrust(ca.RootsPath())
	hub, err := LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	if err != nil {
		t.Fatal(err)
	}
	if !IsHubReceiptSigner(hub.Cert()) || LegacyHubSigner(hub.Cert()) {
		t.Fatal("the development hub certificate lacks the hub signer profile")
	}
	var critical bool
	for _, e := range hub.Cert().Extensions {
		if e.Id.Equal(oidExtensionExtKeyUsage) {
			critical = e.Critical
		}
	}
	if !critical || len(hub.Cert().UnknownExtKeyUsage) != 1 || len(hub.Cert().ExtKeyUsage) != 0 {
		t.Errorf("hub extended key usage: critical %v, %v %v", critical, hub.Cert().UnknownExtKeyUsage, hub.Cert().ExtKeyUsage)
	}
	if got := hub.Cert().CRLDistributionPoints; len(got) != 1 || got[0] != "http://hub.example:8080/pki/crl.der" {
		t.Errorf("hub certificate distribution points %v", got)
	}
	if _, rs := trust.CheckHub(hub.Cert(), hub.Chain[1:], time.Now()); len(rs) != 0 {
		t.Fatalf("CheckHub(hub): %v", rs)
	}
	if _, rs := trust.Check(hub.Cert(), hub.Chain[1:], time.Now()); !rs.Has(reason.SignatureKeyUsage) ||
		!strings.Contains(rs.Error(), "speaks for the hub") {
		t.Fatalf("the hub certificate as a document signer: %v", rs)
	}

	// The CA refuses the usage to a unit, and gives a unit no usage it
	// does not ask for.
	key, _ := GenerateKey(ECDSAP256)
	if _, err := ca.Issue(IssueRequest{Identifier: "000.01.00.H29", Name: "x", Key: key.Public(),
		ExtKeyUsage: []asn1.ObjectIdentifier{oidDocumentSigning, OIDExtKeyUsageHubSigner}}); err == nil || !strings.Contains(err.Error(), "hub's alone") {
		t.Fatalf("unit certificate with the hub signer usage: %v", err)
	}
	docSigner, err := ca.Issue(IssueRequest{Identifier: "000.01.00.H29", Name: "x", Key: key.Public(), ExtKeyUsage: []asn1.ObjectIdentifier{oidDocumentSigning}})
	if err != nil {
		t.Fatal(err)
	}
	if _, rs := trust.Check(docSigner, []*x509.Certificate{ca.Issuing}, time.Now()); len(rs) != 0 {
		t.Fatalf("documentSigning unit certificate: %v", rs)
	}
	unit := newUnit(t, ca, "000.02.00.H29")
	if IsHubReceiptSigner(unit.Cert()) || len(unit.Cert().UnknownExtKeyUsage)+len(unit.Cert().ExtKeyUsage) != 0 {
		t.Fatal("a unit certificate has an extended key usage")
	}
	if _, rs := trust.CheckHub(unit.Cert(), unit.Chain[1:], time.Now()); !rs.Has(reason.SignatureKeyUsage) {
		t.Fatalf("a unit certificate signs for the hub: %v", rs)
	}

	// A certificate another CA (or a careless one) issued with the hub's
	// subject: no usage, or one a unit may have, is no hub signer, and the
	// hub's usage beside a unit's makes no document signer.
	now := time.Now()
	for name, tmpl := range map[string]*x509.Certificate{
		"hub subject, no usage":         {},
		"hub subject, emailProtection":  {ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}},
		"hub subject, documentSigning":  {UnknownExtKeyUsage: []asn1.ObjectIdentifier{oidDocumentSigning}},
		"hub subject, anyExtendedUsage": {ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}},
	} {
		tmpl.Subject = subjectFor("forged", HubIdentifier)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.BasicConstraintsValid = true
		k, _ := GenerateKey(ECDSAP256)
		c, err := createCert(tmpl, ca.Issuing, k.Public(), ca.issuingKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, rs := trust.CheckHub(c, []*x509.Certificate{ca.Issuing}, now); !rs.Has(reason.SignatureKeyUsage) {
			t.Errorf("%s: signs for the hub: %v", name, rs)
		}
	}
	both, err := createCert(&x509.Certificate{Subject: subjectFor("x", "000.03.00.H29"), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDExtKeyUsageHubSigner}}, ca.Issuing, key.Public(), ca.issuingKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, rs := trust.Check(both, []*x509.Certificate{ca.Issuing}, now); !rs.Has(reason.SignatureKeyUsage) {
		t.Errorf("a unit certificate with the hub's usage beside anyExtendedKeyUsage signs documents: %v", rs)
	}
}

// TestHubProfileTransition: a CA made before the profile has a subject-only
// hub certificate. EnsureHubProfile (what the hub runs at start) gives the
// hub a certificate with the profile and retires the old one (revoked,
// superseded) at the cut-over: receipts the old one signed before it stay
// valid, checked as of their acceptance; after it they are refused. A
// subject-only certificate issued after HubProfileSince never signs for the
// hub.
func TestHubProfileTransition(t *testing.T) {
	ca, err := InitCAAt(t.TempDir(), "", HubProfileSince.AddDate(0, -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	old := writeLegacyHub(t, ca, HubProfileSince.AddDate(0, -1, 0), HubProfileSince.AddDate(10, 0, 0))
	if !LegacyHubSigner(old.Cert()) || IsHubReceiptSigner(old.Cert()) {
		t.Fatal("not a legacy hub certificate")
	}
	trust, _ := LoadTrust(ca.RootsPath())
	if err := trust.LoadCRL(ca.CRLPath()); err != nil {
		t.Fatal(err)
	}
	signedAt := time.Now().Add(-time.Minute) // a receipt the old hub signed before the switch
	if _, rs := trust.CheckHub(old.Cert(), old.Chain[1:], signedAt); len(rs) != 0 {
		t.Fatalf("legacy hub certificate before the switch: %v", rs)
	}

	cutover := time.Now()
	issued, retired, err := ca.EnsureHubProfile(cutover)
	if err != nil {
		t.Fatal(err)
	}
	if issued == nil || !IsHubReceiptSigner(issued) || len(retired) != 1 || !retired[0].Equal(old.Cert()) {
		t.Fatalf("EnsureHubProfile: issued %v, retired %d", issued != nil, len(retired))
	}
	cur, _ := LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	if !cur.Cert().Equal(issued) {
		t.Fatal("hub.cert.pem is not the certificate issued")
	}
	if _, err := os.Stat(filepath.Join(ca.Dir, "hub-"+old.Cert().SerialNumber.Text(16)+".cert.pem")); err != nil {
		t.Fatal(err)
	}
	crl, _ := ca.currentCRL()
	var entry *x509.RevocationListEntry
	for i, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(old.Cert().SerialNumber) == 0 {
			entry = &crl.RevokedCertificateEntries[i]
		}
	}
	if entry == nil || entry.ReasonCode != ReasonSuperseded || !entry.RevocationTime.Equal(cutover.Truncate(time.Second)) {
		t.Fatalf("retirement entry %+v", entry)
	}
	// Again: nothing to do.
	if issued, retired, err := ca.EnsureHubProfile(time.Now()); issued != nil || len(retired) != 0 || err != nil {
		t.Fatalf("EnsureHubProfile again: %v %d %v", issued, len(retired), err)
	}
	trust.Reload()
	if _, rs := trust.CheckHub(old.Cert(), old.Chain[1:], signedAt); len(rs) != 0 {
		t.Fatalf("legacy receipt signed before the cut-over: %v", rs)
	}
	if _, rs := trust.CheckHub(old.Cert(), old.Chain[1:], cutover.Add(time.Second)); !rs.Has(reason.SignatureRevoked) {
		t.Fatalf("legacy receipt signed after the cut-over: %v", rs)
	}
	if _, rs := trust.CheckHub(cur.Cert(), cur.Chain[1:], time.Now()); len(rs) != 0 {
		t.Fatalf("new hub certificate: %v", rs)
	}

	// A subject-only hub certificate issued after the profile began.
	late := legacyHubCert(t, ca, HubProfileSince.Add(time.Hour), time.Now().AddDate(1, 0, 0))
	if LegacyHubSigner(late) {
		t.Fatal("a subject-only certificate issued after HubProfileSince counts as legacy")
	}
	if _, rs := trust.CheckHub(late, []*x509.Certificate{ca.Issuing}, time.Now()); !rs.Has(reason.SignatureKeyUsage) {
		t.Fatalf("late subject-only certificate: %v", rs)
	}

	// RotateHub from the profile keeps the profile and retires nothing:
	// that certificate's receipts are not cut off.
	prev := cur.Cert()
	next, err := ca.RotateHub(0)
	if err != nil || !IsHubReceiptSigner(next) {
		t.Fatalf("RotateHub: %v", err)
	}
	if _, retired, err := ca.EnsureHubProfile(time.Now()); len(retired) != 0 || err != nil {
		t.Fatalf("a profile certificate retired: %d %v", len(retired), err)
	}
	trust.Reload()
	if _, rs := trust.CheckHub(prev, []*x509.Certificate{ca.Issuing}, time.Now()); len(rs) != 0 {
		t.Fatalf("rotated profile certificate: %v", rs)
	}
}
