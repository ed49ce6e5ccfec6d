package hub

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
)

// archivedCRLs lists the archive's crl/ objects and checks that each one's
// content has the digest its key names; it returns the digests.
func (r *running) archivedCRLs() map[string]bool {
	r.t.Helper()
	out := map[string]bool{}
	for o, err := range r.arch.List(r.t.Context(), "crl/") {
		if err != nil {
			r.t.Fatal(err)
		}
		b, _, err := r.arch.Get(r.t.Context(), o.Key)
		if err != nil {
			r.t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		d := hex.EncodeToString(sum[:])
		if o.Key != projection.CRLKey(d) {
			r.t.Fatalf("%s holds a CRL with SHA-256 %s", o.Key, d)
		}
		if _, err := x509.ParseRevocationList(b); err != nil {
			r.t.Fatalf("%s: %v", o.Key, err)
		}
		out[d] = true
	}
	return out
}

// TestDevCACRLDistributionPoint: the development CA's certificates name the
// hub's CRL URL, the hub serves the CA's CRL there, fetches it back as a
// distribution point once a chain names it, and archives every CRL in force
// once, under its SHA-256; a new CRL (a revocation) is archived beside the
// old; a restarted hub finds them there and writes nothing again.
func TestDevCACRLDistributionPoint(t *testing.T) {
	cfg := testConfig(t)
	cfg.S3.Archive.ObjectLock, cfg.S3.Archive.RetentionDays = true, 1 // as the embedded archive
	h := startHub(t, cfg)
	a, b := h.register(uA), h.register(uB)
	url := h.Info().HTTP + "/pki/crl.der"
	for _, s := range []*pki.Signer{a.signer, h.signer} {
		if dps := s.Cert().CRLDistributionPoints; len(dps) != 1 || dps[0] != url {
			t.Fatalf("%s: distribution points %v, want %s", s.Cert().Subject.CommonName, dps, url)
		}
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	pemCRL, _ := h.ca.CRL()
	p, _ := pem.Decode(pemCRL)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-crl" || string(served) != string(p.Bytes) {
		t.Fatalf("GET %s: %s %s, %d bytes", url, resp.Status, resp.Header.Get("Content-Type"), len(served))
	}

	id := a.send(a.signer, uB)
	if n := a.notice(); n.Type != protocol.NoticeAccepted || n.DocumentID != id {
		t.Fatalf("notice %s %v", n.Type, n.Reasons.Codes())
	}
	sum := sha256.Sum256(p.Bytes)
	first := hex.EncodeToString(sum[:])
	eventually(t, "the hub fetched its CRL from the distribution point", func() bool {
		for _, dp := range h.trust.DistributionPoints() {
			if dp.URL == url && dp.SHA256 == first {
				return true
			}
		}
		return false
	})
	if gauge(t, h.Registry(), "edx_hub_crl_fetches_total") < 1 {
		t.Error("no fetch counted")
	}
	eventually(t, "the CRL is archived", func() bool { return h.archivedCRLs()[first] })

	// A revocation (of a certificate no unit uses): a new CRL, archived
	// beside the first.
	if err := h.ca.Revoke(big.NewInt(0x5eed), time.Now()); err != nil {
		t.Fatal(err)
	}
	pemCRL, _ = h.ca.CRL()
	p, _ = pem.Decode(pemCRL)
	sum = sha256.Sum256(p.Bytes)
	second := hex.EncodeToString(sum[:])
	eventually(t, "the new CRL is archived", func() bool { return h.archivedCRLs()[second] })
	for range 5 { // more checks change nothing
		h.checkCRLs(t.Context(), time.Now())
	}
	got := h.archivedCRLs()
	if len(got) != 2 || !got[first] || !got[second] {
		t.Fatalf("archived CRLs %v, want %s and %s", got, first, second)
	}
	if n := gauge(t, h.Registry(), "edx_hub_crl_archived_total"); n != 2 {
		t.Fatalf("edx_hub_crl_archived_total = %v, want 2 (each CRL once)", n)
	}
	// What the pipeline will name beside a decision: the CRLs in force
	// for the chain, by digest.
	chain, rs := h.trust.Check(a.signer.Cert(), a.signer.Chain[1:], time.Now())
	if len(rs) != 0 {
		t.Fatal(rs)
	}
	for _, c := range h.trust.CRLsFor(chain, time.Now()) {
		if !got[c.SHA256] {
			t.Errorf("CRL in force %s (%s%s) is not archived", c.SHA256, c.Path, c.URL)
		}
	}

	// B reports a status: archived too. Every object the hub wrote, a
	// container, a receipt, a status, unit records and CRLs, carries its
	// COMPLIANCE retention.
	m, _ := protocol.StatusMsg(&document.Status{DocumentID: id, Unit: uB, Time: time.Now().UTC(), Code: document.StatusDelivered, Description: "Văn thư"})
	if _, err := b.js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	raw, err := minio.New(cfg.S3.Archive.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(cfg.S3.Archive.AccessKey, cfg.S3.Archive.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	kinds := func() map[string]int {
		k := map[string]int{}
		for o := range raw.ListObjects(t.Context(), cfg.S3.Archive.Bucket, minio.ListObjectsOptions{Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			switch {
			case strings.HasSuffix(o.Key, "/container.asice"):
				k["container"]++
			case strings.HasSuffix(o.Key, "/receipt.p7s"):
				k["receipt"]++
			case strings.Contains(o.Key, "/status/"):
				k["status"]++
			case strings.HasPrefix(o.Key, "units/"):
				k["unit"]++
			case strings.HasPrefix(o.Key, "crl/"):
				k["crl"]++
			default:
				k["other"]++
			}
			st, err := raw.StatObject(t.Context(), cfg.S3.Archive.Bucket, o.Key, minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if st.Metadata.Get("X-Amz-Object-Lock-Mode") != "COMPLIANCE" || st.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date") == "" {
				t.Errorf("%s is written without retention", o.Key)
			}
		}
		return k
	}
	eventually(t, "the status is archived", func() bool { return kinds()["status"] == 1 })
	if k := kinds(); k["container"] != 1 || k["receipt"] != 1 || k["unit"] < 2 || k["crl"] != 2 {
		t.Errorf("archived objects %v", k)
	}

	// A restarted hub archives nothing again.
	h.stop()
	h = startHub(t, cfg)
	h.checkCRLs(t.Context(), time.Now())
	if n := gauge(t, h.Registry(), "edx_hub_crl_archived_total"); n != 0 {
		t.Fatalf("a restarted hub archived %v CRLs again", n)
	}
	if got := h.archivedCRLs(); len(got) != 2 {
		t.Fatalf("after a restart: %v", got)
	}
}

// TestCRLFromDistributionPointOnly: with a city CA whose CRL the hub has
// no file of, only a distribution point in the certificates: the hub
// fetches it, and a unit revoked only in the CRL served there is revoked at
// the hub (state revoked, NATS credentials revoked), while another unit
// goes on; the CRL is archived. A distribution point that fails holds
// nothing up.
func TestCRLFromDistributionPointOnly(t *testing.T) {
	var (
		mu   sync.Mutex
		body []byte
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if body == nil {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	ca, err := pki.InitCAWith(t.TempDir(), pki.CAOptions{CRLURL: srv.URL + "/issuing.crl"})
	if err != nil {
		t.Fatal(err)
	}
	issKey, err := readIssuingKey(ca)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(next time.Time, revoked ...*big.Int) string {
		var entries []x509.RevocationListEntry
		for _, s := range revoked {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Second)})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()),
			ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: next, RevokedCertificateEntries: entries}, ca.Issuing, issKey)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		body = der
		mu.Unlock()
		sum := sha256.Sum256(der)
		return hex.EncodeToString(sum[:])
	}

	cfg := testConfig(t)
	cfg.PKI.Trust, cfg.PKI.HubKey, cfg.PKI.HubCert = ca.RootsPath(), ca.HubKeyPath(), ca.HubCertPath()
	cfg.PKI.CRLFetch.Retry = 100 * time.Millisecond
	h := startHub(t, cfg)
	a := h.registerWith(ca, uA)
	b := h.registerWith(ca, uB)
	eventually(t, "the failing distribution point is tried", func() bool { return gauge(t, h.Registry(), "edx_hub_crl_fetches_total") >= 1 })
	// It fails: documents go through all the same.
	id := a.send(a.signer, uB)
	if n := a.notice(); n.Type != protocol.NoticeAccepted || n.DocumentID != id {
		t.Fatalf("with the distribution point down: %s %v", n.Type, n.Reasons.Codes())
	}

	// The CA revokes A in the CRL it serves, with a nextUpdate soon so
	// that the hub comes back for the next one.
	sha := serve(time.Now().Add(time.Second), a.signer.Cert().SerialNumber)
	eventually(t, "A is revoked at the hub", func() bool { return h.unitView(uA).State == api.UnitRevoked })
	a.waitClosed("revoked by the fetched CRL")
	h.refused(a.creds, uA, "revoked by the fetched CRL")
	if _, rs := h.trust.Check(a.signer.Cert(), a.signer.Chain[1:], time.Now()); !strings.Contains(rs.Error(), "revoked") {
		t.Fatalf("A's certificate: %v", rs)
	}
	eventually(t, "the fetched CRL is archived", func() bool { return h.archivedCRLs()[sha] })
	// B goes on.
	id = b.send(b.signer, uA)
	if n := b.notice(); n.Type != protocol.NoticeAccepted || n.DocumentID != id {
		t.Fatalf("B after A's revocation: %s %v", n.Type, n.Reasons.Codes())
	}
}

func readIssuingKey(ca *pki.CA) (crypto.Signer, error) {
	b, err := os.ReadFile(filepath.Join(ca.Dir, "ca", "issuing.key.pem"))
	if err != nil {
		return nil, err
	}
	return pki.ParsePrivateKey(b)
}

// legacyHub replaces a development CA's hub key and certificate with what
// the CA issued before the hub signer profile: the hub's subject, no
// extended key usage.
func legacyHub(t *testing.T, ca *pki.CA) *pki.Signer {
	t.Helper()
	issKey, err := readIssuingKey(ca)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "edx hub — legacy", Organization: []string{"edx hub — legacy"},
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: pki.OIDOrganizationIdentifier, Value: pki.HubIdentifier}}},
		NotBefore: pki.HubProfileSince.AddDate(0, -1, 0), NotAfter: pki.HubProfileSince.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Issuing, key.Public(), issKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kb, _ := pki.EncodePrivateKey(key)
	if err := os.WriteFile(ca.HubKeyPath(), kb, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca.HubCertPath(), pki.EncodeCertificates(cert, ca.Issuing), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := pki.LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestHubSwitchesToTheProfile: a hub whose development CA gave it a
// subject-only certificate (before the profile) gets a certificate with the
// hub signer profile at start and retires the old one there: receipts the
// old one signed before stay valid, one it signed after the start is
// refused, and the hub's new receipts carry the profile. A hub configured
// with a certificate without the profile (its own PKI) refuses to start,
// saying why.
func TestHubSwitchesToTheProfile(t *testing.T) {
	cfg := testConfig(t)
	ca, err := pki.InitCAAt(filepath.Join(cfg.Data, "pki"), "", pki.HubProfileSince.AddDate(0, -2, 0))
	if err != nil {
		t.Fatal(err)
	}
	old := legacyHub(t, ca)
	sign := func(at time.Time) []byte {
		der, err := container.SignReceipt(&container.Receipt{DocumentID: document.NewID(at), From: uA, To: []document.UnitID{uB},
			ContainerSHA256: "ab", ArchiveKey: "k", AcceptedAt: at.UTC()}, old)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	before := sign(time.Now().Add(-time.Minute)) // signed by the hub before the upgrade

	h := startHub(t, cfg)
	if !pki.IsHubReceiptSigner(h.signer.Cert()) || h.signer.Cert().Equal(old.Cert()) {
		t.Fatal("the hub signs with a certificate without the profile")
	}
	if _, err := os.Stat(filepath.Join(ca.Dir, "hub-"+old.Cert().SerialNumber.Text(16)+".cert.pem")); err != nil {
		t.Fatal(err)
	}
	if r := container.VerifyReceipt(before, "ab", container.Options{Trust: h.trust}); !r.Valid || r.HubProfile != "legacy" {
		t.Fatalf("a receipt signed before the switch: %+v", r)
	}
	if r := container.VerifyReceipt(sign(time.Now()), "ab", container.Options{Trust: h.trust}); r.Valid {
		t.Fatal("a receipt the retired certificate signed after the switch verified")
	}
	a, _ := h.register(uA), h.register(uB)
	id := a.send(a.signer, uB)
	n := a.notice()
	if n.Type != protocol.NoticeAccepted || n.DocumentID != id {
		t.Fatalf("notice %s %v", n.Type, n.Reasons.Codes())
	}
	if r := container.VerifyReceipt(n.Receipt, "", container.Options{Trust: h.trust}); !r.Valid || r.HubProfile != "hub-signer" {
		t.Fatalf("the hub's new receipt: %+v", r)
	}
	h.stop()

	// Its own PKI, a certificate without the profile: refused at start.
	city, err := pki.InitCAAt(t.TempDir(), "", pki.HubProfileSince.AddDate(0, -2, 0))
	if err != nil {
		t.Fatal(err)
	}
	legacyHub(t, city)
	ext := testConfig(t)
	ext.PKI.Trust, ext.PKI.HubKey, ext.PKI.HubCert = city.RootsPath(), city.HubKeyPath(), city.HubCertPath()
	if hub, err := New(t.Context(), ext, testLog(t)); err == nil {
		hub.Close()
		t.Fatal("a hub started with a certificate without the hub signer profile")
	} else if !strings.Contains(err.Error(), pki.OIDExtKeyUsageHubSigner.String()) {
		t.Fatalf("error: %v", err)
	}
}
