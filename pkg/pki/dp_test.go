package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/reason"
)

// crlServer serves whatever it was last given at /crl.der.
type crlServer struct {
	*httptest.Server
	mu   sync.Mutex
	body []byte
	hits int
}

func newCRLServer(t *testing.T) *crlServer {
	s := &crlServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.hits++
		if r.URL.Path != "/crl.der" || s.body == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Write(s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *crlServer) serve(b []byte) {
	s.mu.Lock()
	s.body = b
	s.mu.Unlock()
}

func (s *crlServer) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

// signCRL signs a CRL as issuer with key, revoking serials a minute before
// its thisUpdate.
func signCRL(t *testing.T, issuer *x509.Certificate, key crypto.Signer, number int64, next time.Time, exts []pkix.Extension, serials ...*big.Int) []byte {
	t.Helper()
	this := time.Now().Add(-time.Minute)
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: this.Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: this,
		NextUpdate: next, RevokedCertificateEntries: entries, ExtraExtensions: exts}, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// testFetch is a fetch configuration with a settable clock.
func testFetch(now *time.Time) FetchConfig {
	c := FetchConfig{Retry: time.Minute, Now: func() time.Time { return *now }}
	c.SetDefaults()
	return c
}

// TestDistributionPointCRL: a Trust learns the distribution point of a
// chain it verified, fetches it when asked, verifies the CRL against the
// certificate's issuer and applies it: a certificate revoked only in the
// fetched CRL is refused. A CRL whose signature does not verify is
// refused, and so are delta CRLs, older CRLs, oversized answers and errors;
// each failure is reported and waits Retry; the CRL in force stays.
func TestDistributionPointCRL(t *testing.T) {
	srv := newCRLServer(t)
	url := srv.URL + "/crl.der"
	ca, err := InitCAWith(t.TempDir(), CAOptions{CRLURL: url})
	if err != nil {
		t.Fatal(err)
	}
	trust, _ := LoadTrust(ca.RootsPath()) // no CRL file at all
	unit := newUnit(t, ca, "000.01.00.H29")
	other := newUnit(t, ca, "000.02.00.H29")
	if got := unit.Cert().CRLDistributionPoints; len(got) != 1 || got[0] != url {
		t.Fatalf("unit certificate distribution points %v", got)
	}
	now := time.Now()
	cfg := testFetch(&now)
	if rs := trust.FetchCRLs(t.Context(), cfg); len(rs) != 0 {
		t.Fatalf("fetched before any chain named a URL: %+v", rs)
	}
	chain, rs := trust.Check(unit.Cert(), unit.Chain[1:], now)
	if len(rs) != 0 {
		t.Fatal(rs)
	}
	if dps := trust.DistributionPoints(); len(dps) != 1 || dps[0].URL != url {
		t.Fatalf("distribution points learned: %+v", dps)
	}

	// Not served yet: a failure, reported, and the check goes on.
	res := trust.FetchCRLs(t.Context(), cfg)
	if len(res) != 1 || res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "404") {
		t.Fatalf("fetch of a missing CRL: %+v", res)
	}
	if rs := trust.FetchCRLs(t.Context(), cfg); len(rs) != 0 {
		t.Fatalf("retried before Retry: %+v", rs)
	}
	if _, rs := trust.Check(unit.Cert(), unit.Chain[1:], now); len(rs) != 0 {
		t.Fatalf("a failed fetch blocks checks: %v", rs)
	}

	// The CA revokes the unit in the CRL it serves (not in any file).
	if err := ca.Revoke(unit.Cert().SerialNumber, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	pemCRL, _ := ca.CRL()
	p, _ := pem.Decode(pemCRL)
	srv.serve(p.Bytes)
	now = now.Add(2 * time.Minute)
	res = trust.FetchCRLs(t.Context(), cfg)
	want := sha256.Sum256(p.Bytes)
	if len(res) != 1 || res[0].Err != nil || !res[0].Changed || res[0].SHA256 != hex.EncodeToString(want[:]) {
		t.Fatalf("fetch: %+v", res)
	}
	if _, rs := trust.Check(unit.Cert(), unit.Chain[1:], now); !rs.Has(reason.SignatureRevoked) {
		t.Fatalf("revoked in the fetched CRL only: %v", rs)
	}
	if _, rs := trust.Check(other.Cert(), other.Chain[1:], now); len(rs) != 0 {
		t.Fatalf("another unit under the fetched CRL: %v", rs)
	}
	// The CRLs in force for the chain, with their digests.
	used := trust.CRLsFor(chain, now)
	if len(used) != 1 || used[0].SHA256 != hex.EncodeToString(want[:]) || used[0].URL != url || string(used[0].DER) != string(p.Bytes) {
		t.Fatalf("CRLsFor: %+v", used)
	}
	// Cached until its nextUpdate: nothing is fetched before.
	hits := srv.requests()
	now = now.Add(CRLValidity / 2)
	if rs := trust.FetchCRLs(t.Context(), cfg); len(rs) != 0 || srv.requests() != hits {
		t.Fatalf("fetched before nextUpdate: %+v", rs)
	}

	// Past nextUpdate: fetched again. Each bad answer is refused and the
	// CRL in force stays.
	forger, _ := GenerateKey(ECDSAP256)
	impostor, err := createCert(&x509.Certificate{Subject: ca.Issuing.Subject, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageCRLSign | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}, nil, forger.Public(), forger)
	if err != nil {
		t.Fatal(err)
	}
	deltaExt, _ := asn1.Marshal(big.NewInt(1))
	for _, bad := range []struct {
		name, want string
		body       []byte
	}{
		// Same issuer name, another key: it would un-revoke the unit and
		// revoke the other.
		{"bad signature", "verifies against no issuer", signCRL(t, impostor, forger, 99, now.Add(CRLValidity*2), nil, other.Cert().SerialNumber)},
		{"garbage", "crl", []byte("not a CRL")},
		{"delta", "delta CRL", signCRL(t, ca.Issuing, ca.issuingKey, 100, now.Add(CRLValidity*2),
			[]pkix.Extension{{Id: oidDeltaCRLIndicator, Critical: true, Value: deltaExt}})},
		{"older", "older", signCRL(t, ca.Issuing, ca.issuingKey, 1, now.Add(CRLValidity*2), nil)},
		{"oversized", "allowed", make([]byte, cfg.MaxBytes+1)},
	} {
		now = now.Add(CRLValidity)
		srv.serve(bad.body)
		res := trust.FetchCRLs(t.Context(), cfg)
		if len(res) != 1 || res[0].Err == nil || !strings.Contains(res[0].Err.Error(), bad.want) || res[0].Changed {
			t.Fatalf("%s: %+v", bad.name, res)
		}
		trust.SetCRLGrace(100 * CRLValidity) // the CRL in force is old by now: keep it current for the checks
		if _, rs := trust.Check(unit.Cert(), unit.Chain[1:], now); !rs.Has(reason.SignatureRevoked) {
			t.Fatalf("%s: the revocation was dropped: %v", bad.name, rs)
		}
		if _, rs := trust.Check(other.Cert(), other.Chain[1:], now); len(rs) != 0 {
			t.Fatalf("%s: the refused CRL applies: %v", bad.name, rs)
		}
		if dp := trust.DistributionPoints()[0]; dp.Error == "" || dp.SHA256 != hex.EncodeToString(want[:]) {
			t.Fatalf("%s: distribution point %+v", bad.name, dp)
		}
	}

	// Only http and https URLs, from verified chains, are learned.
	key, _ := GenerateKey(ECDSAP256)
	ldap, err := createCert(&x509.Certificate{Subject: subjectFor("x", "000.05.00.H29"), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		CRLDistributionPoints: []string{"ldap://dir.example/cn=crl", "file:///etc/passwd"}}, ca.Issuing, key.Public(), ca.issuingKey)
	if err != nil {
		t.Fatal(err)
	}
	trust.Check(ldap, []*x509.Certificate{ca.Issuing}, now)
	untrusted, _ := createCert(&x509.Certificate{Subject: subjectFor("x", "000.06.00.H29"), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		CRLDistributionPoints: []string{"http://attacker.example/crl"}}, impostor, key.Public(), forger)
	trust.Check(untrusted, []*x509.Certificate{impostor}, now)
	if dps := trust.DistributionPoints(); len(dps) != 1 {
		t.Fatalf("distribution points: %+v", dps)
	}
}

// TestBundleDistributionPoints: the distribution points of the trust
// bundle's own CA certificates are learned when it is loaded, and their
// CRLs verify against a CA of the bundle.
func TestBundleDistributionPoints(t *testing.T) {
	srv := newCRLServer(t)
	ca, err := InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	// A second intermediate under the root, naming the root's CRL.
	key, _ := GenerateKey(ECDSAP256)
	now := time.Now()
	inter, err := createCert(&x509.Certificate{Subject: pkix.Name{CommonName: "second issuing CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.AddDate(1, 0, 0), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
		CRLDistributionPoints: []string{srv.URL + "/crl.der"}}, ca.Root, key.Public(), ca.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := NewTrust(EncodeCertificates(ca.Root, inter))
	if err != nil {
		t.Fatal(err)
	}
	if dps := trust.DistributionPoints(); len(dps) != 1 {
		t.Fatalf("bundle distribution points: %+v", dps)
	}
	srv.serve(signCRL(t, ca.Root, ca.rootKey, 1, now.Add(time.Hour), nil, inter.SerialNumber))
	cfg := testFetch(&now)
	if res := trust.FetchCRLs(t.Context(), cfg); len(res) != 1 || res[0].Err != nil || !res[0].Changed {
		t.Fatalf("fetch: %+v", res)
	}
	leafKey, _ := GenerateKey(ECDSAP256)
	leaf, _ := createCert(&x509.Certificate{Subject: subjectFor("x", "000.07.00.H29"), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true}, inter, leafKey.Public(), key)
	chain, rs := trust.Check(leaf, nil, now)
	if !rs.Has(reason.SignatureRevoked) || len(chain) != 3 {
		t.Fatalf("leaf under a revoked intermediate: %v", rs)
	}
	if used := trust.CRLsFor(chain, now); len(used) != 1 || used[0].Revoked != 1 {
		t.Fatalf("CRLsFor: %+v", used)
	}
}

// TestCRLsFor: the CRLs in force for a chain are those its issuers signed,
// each once, with the SHA-256 of its DER; another CA's are not.
func TestCRLsFor(t *testing.T) {
	ca, err := InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	other, err := InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	trust, _ := LoadTrust(ca.RootsPath())
	if err := trust.LoadCRL(ca.CRLPath()); err != nil {
		t.Fatal(err)
	}
	pemCRL, _ := ca.CRL()
	p, _ := pem.Decode(pemCRL)
	if err := trust.AddCRL(p.Bytes); err != nil { // the same CRL twice: listed once
		t.Fatal(err)
	}
	rootCRL := signCRL(t, ca.Root, ca.rootKey, 1, time.Now().Add(time.Hour), nil)
	if err := trust.AddCRL(rootCRL); err != nil {
		t.Fatal(err)
	}
	otherPEM, _ := other.CRL()
	if err := trust.AddCRL(otherPEM); err != nil {
		t.Fatal(err)
	}
	s := newUnit(t, ca, "000.01.00.H29")
	chain, rs := trust.Check(s.Cert(), s.Chain[1:], time.Now())
	if len(rs) != 0 {
		t.Fatal(rs)
	}
	got := map[string]bool{}
	for _, c := range trust.CRLsFor(chain, time.Now()) {
		if got[c.SHA256] {
			t.Errorf("%s listed twice", c.SHA256)
		}
		got[c.SHA256] = true
	}
	a, b := sha256.Sum256(p.Bytes), sha256.Sum256(rootCRL)
	if len(got) != 2 || !got[hex.EncodeToString(a[:])] || !got[hex.EncodeToString(b[:])] {
		t.Fatalf("CRLsFor = %v, want the issuing CA's %x and the root's %x", got, a, b)
	}
	if all := trust.CRLs(time.Now()); len(all) != 4 {
		t.Fatalf("CRLs in force: %d", len(all))
	}
}
