package pki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

func newUnit(t *testing.T, ca *CA, unit document.UnitID) *Signer {
	t.Helper()
	kp, cp, err := ca.IssueUnit(unit, "Sở "+string(unit), ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(kp, cp)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeCRLAt signs a CRL of the issuing CA with the given times and number
// and writes it to path.
func writeCRLAt(t *testing.T, ca *CA, path string, number int64, this, next time.Time, revoked ...*big.Int) {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: this.Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: this, NextUpdate: next,
		RevokedCertificateEntries: entries}, ca.Issuing, ca.issuingKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCRLReload: a Trust that loaded the CA's CRL file sees a revocation
// made after it was loaded once Refresh (what Watch runs) notices the file
// changed, and Reload reads it in any case.
func TestCRLReload(t *testing.T) {
	ca, err := InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	s := newUnit(t, ca, "000.01.00.H29")
	trust, err := LoadTrust(ca.RootsPath())
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.LoadCRL(ca.CRLPath()); err != nil {
		t.Fatal(err)
	}
	if _, rs := trust.Check(s.Cert(), s.Chain[1:], time.Now()); len(rs) != 0 {
		t.Fatalf("before revocation: %v", rs)
	}
	if changed, err := trust.Refresh(); changed || err != nil {
		t.Fatalf("Refresh of an unchanged file: %v, %v", changed, err)
	}
	if err := ca.Revoke(s.Cert().SerialNumber, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	changed, err := trust.Refresh()
	if !changed || err != nil {
		t.Fatalf("Refresh after a revocation: %v, %v", changed, err)
	}
	if _, rs := trust.Check(s.Cert(), s.Chain[1:], time.Now()); !rs.Has(reason.SignatureRevoked) {
		t.Fatalf("after the revocation: %v, want signature.revoked", rs)
	}

	// A broken file keeps the CRL in force, and says so.
	os.WriteFile(ca.CRLPath(), []byte("not a CRL"), 0o644)
	if _, err := trust.Refresh(); err == nil {
		t.Fatal("a broken CRL file reported no error")
	}
	if _, rs := trust.Check(s.Cert(), s.Chain[1:], time.Now()); !rs.Has(reason.SignatureRevoked) {
		t.Fatalf("a broken CRL file dropped the revocation: %v", rs)
	}
	// An older CRL (a lower number) does not replace a newer one.
	writeCRLAt(t, ca, ca.CRLPath(), 1, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err := trust.Reload(); err == nil {
		t.Fatal("an older CRL replaced a newer one without an error")
	}
	if _, rs := trust.Check(s.Cert(), s.Chain[1:], time.Now()); !rs.Has(reason.SignatureRevoked) {
		t.Fatalf("an older CRL dropped the revocation: %v", rs)
	}
}

// TestCRLStale: a CRL past its nextUpdate (and the grace) makes every check
// of a certificate under its issuer fail with signature.crl_stale, until a
// current CRL is loaded; a check at a time the CRL was current still passes.
func TestCRLStale(t *testing.T) {
	ca, err := InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	s := newUnit(t, ca, "000.01.00.H29")
	now := time.Now()
	crlPath := filepath.Join(t.TempDir(), "crl.pem")
	writeCRLAt(t, ca, crlPath, 10, now.Add(-48*time.Hour), now.Add(-30*time.Minute))
	trust, _ := LoadTrust(ca.RootsPath())
	if err := trust.LoadCRL(crlPath); err != nil {
		t.Fatal(err)
	}
	if _, rs := trust.Check(s.Cert(), s.Chain[1:], now); !rs.Has(reason.SignatureCRLStale) || !rs[0].Code.Transient() {
		t.Fatalf("stale CRL: %v, want signature.crl_stale", rs)
	}
	if st := trust.StaleCRLs(now); len(st) != 1 || st[0].Path != crlPath {
		t.Fatalf("StaleCRLs = %+v", st)
	}
	if _, rs := trust.Check(s.Cert(), s.Chain[1:], now.Add(-45*time.Minute)); len(rs) != 0 {
		t.Fatalf("at a time the CRL was current: %v", rs)
	}
	trust.SetCRLGrace(time.Hour)
	if _, rs := trust.Check(s.Cert(), s.Chain[1:], now); len(rs) != 0 {
		t.Fatalf("within the grace: %v", rs)
	}
	trust.SetCRLGrace(0)
	writeCRLAt(t, ca, crlPath, 11, now.Add(-time.Minute), now.Add(24*time.Hour))
	if changed, err := trust.Refresh(); !changed || err != nil {
		t.Fatalf("Refresh: %v, %v", changed, err)
	}
	if _, rs := trust.Check(s.Cert(), s.Chain[1:], now); len(rs) != 0 {
		t.Fatalf("after a current CRL: %v", rs)
	}
	// The hub certificate is under the same issuer: a stale CRL stops
	// receipts being checked too.
	writeCRLAt(t, ca, crlPath, 12, now.Add(-48*time.Hour), now.Add(-time.Hour))
	trust.Reload()
	hub, _ := LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	if _, rs := trust.Check(hub.Cert(), hub.Chain[1:], now); !rs.Has(reason.SignatureCRLStale) {
		t.Fatalf("hub certificate under a stale CRL: %v", rs)
	}
}

// TestDevCACRLRefresh: the development CA's CRL is re-signed, same entries,
// when less than the asked time is left; Revoke signs a new one with a new
// number.
func TestDevCACRLRefresh(t *testing.T) {
	ca, err := InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	s := newUnit(t, ca, "000.01.00.H29")
	if err := ca.Revoke(s.Cert().SerialNumber, time.Now()); err != nil {
		t.Fatal(err)
	}
	first, _ := ca.currentCRL()
	if left := time.Until(first.NextUpdate); left < CRLValidity-time.Hour || left > CRLValidity {
		t.Fatalf("nextUpdate in %s, want about %s", left, CRLValidity)
	}
	if did, err := ca.RefreshCRL(time.Now(), CRLValidity/2); did || err != nil {
		t.Fatalf("a fresh CRL was re-signed: %v %v", did, err)
	}
	if did, err := ca.RefreshCRL(time.Now().Add(CRLValidity-time.Hour), CRLValidity/2); !did || err != nil {
		t.Fatalf("an old CRL was not re-signed: %v %v", did, err)
	}
	second, _ := ca.currentCRL()
	if second.Number.Cmp(first.Number) <= 0 || len(second.RevokedCertificateEntries) != 1 {
		t.Fatalf("re-signed CRL: number %s after %s, %d entries", second.Number, first.Number, len(second.RevokedCertificateEntries))
	}
}

// TestRotateHub: the dev hub certificate lives HubValidity; a rotated one
// has a new key, and the old certificate is kept.
func TestRotateHub(t *testing.T) {
	ca, err := InitCA(t.TempDir(), "Hà Nội")
	if err != nil {
		t.Fatal(err)
	}
	old, _ := LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	if life := old.Cert().NotAfter.Sub(old.Cert().NotBefore); life < HubValidity-24*time.Hour {
		t.Fatalf("hub certificate lives %s, want about %s", life, HubValidity)
	}
	cert, err := ca.RotateHub(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now, _ := LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	if !now.Cert().Equal(cert) || now.Cert().Equal(old.Cert()) || !IsHub(cert) || cert.Subject.CommonName != old.Cert().Subject.CommonName {
		t.Fatalf("rotated hub certificate %s (serial %s)", cert.Subject, cert.SerialNumber.Text(16))
	}
	if _, err := os.Stat(filepath.Join(ca.Dir, "hub-"+old.Cert().SerialNumber.Text(16)+".cert.pem")); err != nil {
		t.Fatal(err)
	}
}
