package pki

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

func TestDevCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := InitCA(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitCA(dir, ""); err == nil {
		t.Fatal("InitCA overwrote an existing CA")
	}
	ca, err = OpenCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := LoadTrust(ca.RootsPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, kt := range []KeyType{ECDSAP256, RSA2048} {
		unit := document.UnitID("000.01.00.H29")
		if kt == RSA2048 {
			unit = "000.02.00.H29"
		}
		kp, cp, err := ca.IssueUnit(unit, "Sở Tài chính", kt)
		if err != nil {
			t.Fatal(err)
		}
		s, err := LoadSigner(kp, cp)
		if err != nil {
			t.Fatal(err)
		}
		if u, err := UnitOf(s.Cert()); err != nil || u != unit {
			t.Fatalf("UnitOf = %q, %v", u, err)
		}
		chain, rs := trust.Check(s.Cert(), s.Chain[1:], time.Now())
		if len(rs) != 0 || len(chain) != 3 {
			t.Fatalf("Check: chain %d, reasons %v", len(chain), rs)
		}
		if _, rs := trust.Check(s.Cert(), s.Chain[1:], time.Now().AddDate(3, 0, 0)); !rs.Has(reason.SignatureExpired) {
			t.Errorf("3 years on: %v, want expired", rs)
		}
		fresh, _ := LoadTrust(ca.RootsPath()) // no chain cached yet
		if _, rs := fresh.Check(s.Cert(), nil, time.Now()); !rs.Has(reason.SignatureUntrustedRoot) {
			t.Errorf("without the intermediate: %v", rs)
		}
		if err := ca.Revoke(s.Cert().SerialNumber, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		t2, _ := LoadTrust(ca.RootsPath())
		if err := t2.LoadCRL(ca.CRLPath()); err != nil {
			t.Fatal(err)
		}
		if _, rs := t2.Check(s.Cert(), s.Chain[1:], time.Now()); !rs.Has(reason.SignatureRevoked) {
			t.Errorf("revoked: %v", rs)
		}
		if _, rs := t2.Check(s.Cert(), s.Chain[1:], time.Now().Add(-time.Hour)); len(rs) != 0 {
			t.Errorf("before its revocation: %v", rs)
		}
	}
	hub, err := LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	if err != nil {
		t.Fatal(err)
	}
	if !IsHub(hub.Cert()) {
		t.Error("hub certificate not recognised")
	}
	if _, err := UnitOf(hub.Cert()); err == nil {
		t.Error("hub certificate bound to a unit")
	}
}

func TestKeyUsage(t *testing.T) {
	ca, err := InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	trust, _ := LoadTrust(ca.RootsPath())
	key, _ := GenerateKey(ECDSAP256)
	c, err := ca.Issue(IssueRequest{Identifier: "000.03.00.H29", Name: "x", Key: key.Public(), KeyUsage: x509.KeyUsageKeyEncipherment})
	if err != nil {
		t.Fatal(err)
	}
	if _, rs := trust.Check(c, []*x509.Certificate{ca.Issuing}, time.Now()); !rs.Has(reason.SignatureKeyUsage) {
		t.Errorf("encipherment-only certificate: %v", rs)
	}
}

func TestTrustRejectsLeaf(t *testing.T) {
	ca, err := InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := readCert(ca.HubCertPath())
	if _, err := NewTrust(EncodeCertificates(b)); err == nil {
		t.Error("a leaf accepted as trust root")
	}
}
