package pki

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEvidenceProfiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := InitCA(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	tsaKey, _ := GenerateKey(ECDSAP256)
	tsaCert, err := ca.IssueTSA("edx development TSA", tsaKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	hubKey, _ := GenerateKey(ECDSAP256)
	hubCert, err := ca.IssueHubSigner("edx hub receipts", hubKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	logPub, _, _ := ed25519.GenerateKey(rand.Reader)
	logCert, err := ca.IssueHubSigner("edx hub log", logPub)
	if err != nil {
		t.Fatal(err)
	}
	_, unitCertPath, err := ca.IssueUnit("000.00.00.H29", "Sở Nội vụ", ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	unitCerts, err := readCerts(unitCertPath)
	if err != nil {
		t.Fatal(err)
	}
	hubSubjectOnly := legacyHubCert(t, ca, HubProfileSince.Add(-24*time.Hour), time.Now().AddDate(1, 0, 0))

	for _, tc := range []struct {
		name     string
		cert     *x509.Certificate
		hub, tsa bool
	}{
		{"tsa", tsaCert, false, true},
		{"hub receipt signer", hubCert, true, false},
		{"hub log signer (ed25519)", logCert, true, false},
		{"unit", unitCerts[0], false, false},
		{"hub by subject only", hubSubjectOnly, false, false},
		{"issuing CA", ca.Issuing, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsHubReceiptSigner(tc.cert); got != tc.hub {
				t.Errorf("IsHubReceiptSigner = %v, want %v", got, tc.hub)
			}
			if got := IsTimeStamping(tc.cert); got != tc.tsa {
				t.Errorf("IsTimeStamping = %v, want %v", got, tc.tsa)
			}
		})
	}
	if !IsHub(hubCert) || !IsHub(logCert) {
		t.Error("a hub signer certificate does not carry the hub's subject identifier")
	}
	// Both chain to the roots with their own usages.
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root)
	inter := x509.NewCertPool()
	inter.AddCert(ca.Issuing)
	if _, err := tsaCert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping}}); err != nil {
		t.Errorf("tsa chain: %v", err)
	}
	if _, err := tsaCert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}); err == nil {
		t.Error("a TSA certificate verified for email protection")
	}
	if _, err := hubCert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("hub signer chain: %v", err)
	}

	// OpenSSL agrees that the TSA certificate is fit for time stamping and
	// that the EKU extension is critical.
	p := filepath.Join(dir, "tsa-check.pem")
	if err := os.WriteFile(p, EncodeCertificates(tsaCert), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "x509", "-in", p, "-noout", "-purpose", "-text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl x509: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Time Stamp signing : Yes") {
		t.Errorf("openssl does not see a time-stamping certificate:\n%s", out)
	}
	if !strings.Contains(string(out), "X509v3 Extended Key Usage: critical") {
		t.Errorf("the extended key usage is not critical:\n%s", out)
	}
}

func TestEnsureTSA(t *testing.T) {
	ca, err := InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	k1, c1, err := ca.EnsureTSA("edx development TSA")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(c1)
	k2, c2, err := ca.EnsureTSA("edx development TSA")
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(c2)
	if k1 != k2 || c1 != c2 || string(before) != string(after) {
		t.Fatal("EnsureTSA replaced an existing TSA")
	}
	s, err := LoadSigner(k1, c1)
	if err != nil {
		t.Fatal(err)
	}
	if !IsTimeStamping(s.Cert()) || len(s.Chain) != 2 {
		t.Fatalf("EnsureTSA wrote %d certificates, time stamping %v", len(s.Chain), IsTimeStamping(s.Cert()))
	}
	if fi, err := os.Stat(k1); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("tsa key mode: %v %v", fi.Mode(), err)
	}
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseCertificates(b)
}
