package container

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

// rawSigner issues tmpl (a key is made for it) with ca's issuing key as any
// careless CA could: no profile rules applied.
func rawSigner(tb testing.TB, ca *pki.CA, tmpl *x509.Certificate) *pki.Signer {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(ca.Dir, "ca", "issuing.key.pem"))
	if err != nil {
		tb.Fatal(err)
	}
	issKey, err := pki.ParsePrivateKey(b)
	if err != nil {
		tb.Fatal(err)
	}
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	tmpl.SerialNumber, _ = rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.BasicConstraintsValid = true
	if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Issuing, key.Public(), issKey)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	s, err := pki.NewSignerFromKey(key, []*x509.Certificate{cert, ca.Issuing})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// hubSubject is the hub's subject, which anyone's CA might write.
func hubSubject() pkix.Name {
	return pkix.Name{Country: []string{"VN"}, CommonName: "edx hub", Organization: []string{"edx hub"},
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: pki.OIDOrganizationIdentifier, Value: pki.HubIdentifier}}}
}

func signedReceipt(t *testing.T, s *pki.Signer, at time.Time) []byte {
	t.Helper()
	rc := &Receipt{DocumentID: document.NewID(at), From: unitA, To: []document.UnitID{unitB}, ContainerSHA256: "ab",
		ArchiveKey: "2026/11/30/x/container.asice", AcceptedAt: at.UTC()}
	der, err := SignReceipt(rc, s)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestReceiptHubProfile: a receipt is the hub's when its signer carries the
// hub signer extended key usage; a unit's key is refused even under a
// certificate whose subject says EDX-HUB, and the hub's key signs no
// document.
func TestReceiptHubProfile(t *testing.T) {
	hub, err := pki.LoadSigner(fx.ca.HubKeyPath(), fx.ca.HubCertPath())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if r := VerifyReceipt(signedReceipt(t, hub, now), "ab", Options{Trust: fx.trust}); !r.Valid || r.HubProfile != "hub-signer" {
		t.Fatalf("the hub's receipt: %+v", r)
	}
	for name, s := range map[string]*pki.Signer{
		"unit key":                         signer(t, unitA, pki.ECDSAP256, nil),
		"hub subject, no usage":            rawSigner(t, fx.ca, &x509.Certificate{Subject: hubSubject(), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}),
		"hub subject, emailProtection":     rawSigner(t, fx.ca, &x509.Certificate{Subject: hubSubject(), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}),
		"hub subject, anyExtendedKeyUsage": rawSigner(t, fx.ca, &x509.Certificate{Subject: hubSubject(), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}),
	} {
		r := VerifyReceipt(signedReceipt(t, s, now), "ab", Options{Trust: fx.trust})
		if r.Valid || r.HubProfile != "" || !r.Reasons.Has(reason.ReceiptInvalid) || !strings.Contains(r.Reasons.Error(), pki.OIDExtKeyUsageHubSigner.String()) {
			t.Errorf("%s: %+v", name, r)
		}
		if r := VerifyReceipt(signedReceipt(t, s, now), "ab", Options{}); r.Valid {
			t.Errorf("%s without trust: valid", name)
		}
	}
	// The hub's key signs no document, even one "from" the hub.
	data, err := Build(meta(t, unitA), payload(1), hub)
	if err != nil {
		t.Fatal(err)
	}
	if _, r := VerifyBytes(data, DefaultLimits, Options{Trust: fx.trust}); r.Valid || !r.Reasons.Has(reason.SignatureKeyUsage) {
		t.Fatalf("a container signed by the hub's key: %v", r.Reasons)
	}
	// A unit certificate that carries the hub's usage (a CA that ignored
	// the profile) signs neither.
	both := rawSigner(t, fx.ca, &x509.Certificate{Subject: pkix.Name{CommonName: "x",
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: pki.OIDOrganizationIdentifier, Value: string(unitA)}}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), UnknownExtKeyUsage: []asn1.ObjectIdentifier{pki.OIDExtKeyUsageHubSigner}})
	data, _ = Build(meta(t, unitA), payload(1), both)
	if _, r := VerifyBytes(data, DefaultLimits, Options{Trust: fx.trust}); r.Valid || !r.Reasons.Has(reason.SignatureKeyUsage) {
		t.Fatalf("a unit certificate with the hub's usage signs documents: %v", r.Reasons)
	}
}

// TestLegacyReceipts: receipts a subject-only hub certificate (what the
// development CA issued before the profile) signed before the hub switched
// stay valid, checked as of their acceptance; once the switch retired that
// certificate, what it signs after the cut-over is refused.
func TestLegacyReceipts(t *testing.T) {
	ca, err := pki.InitCAAt(t.TempDir(), "", pki.HubProfileSince.AddDate(0, -2, 0))
	if err != nil {
		t.Fatal(err)
	}
	trust, _ := pki.LoadTrust(ca.RootsPath())
	if err := trust.LoadCRL(ca.CRLPath()); err != nil {
		t.Fatal(err)
	}
	old := rawSigner(t, ca, &x509.Certificate{Subject: hubSubject(), NotBefore: pki.HubProfileSince.AddDate(0, -1, 0), NotAfter: pki.HubProfileSince.AddDate(10, 0, 0)})
	before := signedReceipt(t, old, time.Now().Add(-time.Minute))
	if r := VerifyReceipt(before, "ab", Options{Trust: trust}); !r.Valid || r.HubProfile != "legacy" {
		t.Fatalf("legacy receipt before the switch: %+v", r)
	}
	// The hub's switch: old becomes hub-<serial>.cert.pem and is retired.
	if err := os.WriteFile(filepath.Join(ca.Dir, "hub-"+old.Cert().SerialNumber.Text(16)+".cert.pem"), pki.EncodeCertificates(old.Chain...), 0o644); err != nil {
		t.Fatal(err)
	}
	cutover := time.Now()
	if _, retired, err := ca.EnsureHubProfile(cutover); err != nil || len(retired) != 1 {
		t.Fatalf("EnsureHubProfile: %d retired, %v", len(retired), err)
	}
	if err := trust.Reload(); err != nil {
		t.Fatal(err)
	}
	if r := VerifyReceipt(before, "ab", Options{Trust: trust, At: time.Now().AddDate(20, 0, 0)}); !r.Valid {
		t.Fatalf("legacy receipt from before the cut-over, years later: %v", r.Reasons)
	}
	after := signedReceipt(t, old, cutover.Add(2*time.Second))
	if r := VerifyReceipt(after, "ab", Options{Trust: trust, At: cutover.Add(time.Minute)}); r.Valid || !r.Reasons.Has(reason.ReceiptInvalid) {
		t.Fatalf("legacy receipt after the cut-over: %+v", r)
	}
}
