package container

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

// fixture is a development CA with signers, shared by the tests of this package.
type fixture struct {
	ca    *pki.CA
	trust *pki.Trust
	dir   string
}

var fx *fixture

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edx-container-test")
	if err != nil {
		panic(err)
	}
	ca, err := pki.InitCA(dir, "")
	if err != nil {
		panic(err)
	}
	trust, err := pki.LoadTrust(ca.RootsPath())
	if err != nil {
		panic(err)
	}
	fx = &fixture{ca: ca, trust: trust, dir: dir}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const unitA, unitB, unitC = document.UnitID("000.01.00.H29"), document.UnitID("000.02.00.H29"), document.UnitID("000.03.00.H29")

// signer issues a fresh signer for unit with key type kt and optional tweaks.
func signer(tb testing.TB, unit document.UnitID, kt pki.KeyType, tweak func(*pki.IssueRequest)) *pki.Signer {
	tb.Helper()
	key, err := pki.GenerateKey(kt)
	if err != nil {
		tb.Fatal(err)
	}
	req := pki.IssueRequest{Identifier: string(unit), Name: "Sở Tài nguyên và Môi trường", Key: key.Public()}
	if tweak != nil {
		tweak(&req)
	}
	cert, err := fx.ca.Issue(req)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := pki.NewSignerFromKey(key, []*x509.Certificate{cert, fx.ca.Issuing})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func meta(tb testing.TB, from document.UnitID) []byte {
	tb.Helper()
	d := document.Template(time.Now())
	d.From = from
	d.To = []document.UnitID{unitB, unitC}
	if from == unitB {
		d.To = []document.UnitID{unitA, unitC}
	}
	d.Subject = "Về việc thu hồi đất đai tại phường Bến Nghé, Quận 1 — “hỏa tốc”"
	b, err := d.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func payload(n int) []File {
	data := make([]byte, n)
	rand.Read(data)
	return []File{{Name: "Quyết định 1234.pdf", Data: data}, {Name: "phụ lục.docx", Data: []byte("phụ lục")}}
}

func build(tb testing.TB, s *pki.Signer, m []byte) []byte {
	tb.Helper()
	b, err := Build(m, payload(4096), s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func verify(data []byte) *Report {
	_, r := VerifyBytes(data, DefaultLimits, Options{Trust: fx.trust, At: time.Now()})
	return r
}

func TestRoundTrip(t *testing.T) {
	for _, kt := range []pki.KeyType{pki.RSA2048, pki.RSA3072, pki.ECDSAP256} {
		t.Run(string(kt), func(t *testing.T) {
			s := signer(t, unitA, kt, nil)
			m := meta(t, unitA)
			files := payload(10000)
			data, err := Build(m, files, s)
			if err != nil {
				t.Fatal(err)
			}
			c, r := VerifyBytes(data, DefaultLimits, Options{Trust: fx.trust})
			if !r.Valid {
				t.Fatalf("not valid: %v", r.Reasons)
			}
			if !bytes.Equal(c.MetaRaw, m) {
				t.Errorf("document.json changed:\n%s\n%s", c.MetaRaw, m)
			}
			if c.Meta.Subject != "Về việc thu hồi đất đai tại phường Bến Nghé, Quận 1 — “hỏa tốc”" {
				t.Errorf("subject = %q", c.Meta.Subject)
			}
			got := c.Files()
			if len(got) != 2 || got[0].Name != "files/Quyết định 1234.pdf" {
				t.Fatalf("files = %v", got)
			}
			if b, err := got[0].Bytes(); err != nil || !bytes.Equal(b, files[0].Data) || got[0].Size != int64(len(b)) {
				t.Fatalf("file content: %v", err)
			}
			if got[0].MediaType != "application/pdf" {
				t.Errorf("media type = %q", got[0].MediaType)
			}
			if r.SignerUnit != unitA || r.Signature.SigningTime == nil || !r.Signature.SigningCertRef || len(r.Signature.Chain) != 3 {
				t.Errorf("report: %+v %+v", r, r.Signature)
			}
			// Reproducible bytes except the signature.
			u, _ := Prepare(m, files)
			if !bytes.Equal(u.Manifest, c.Manifest) {
				t.Error("manifest not deterministic")
			}
		})
	}
}

// rezip writes entries in order, with mimetype stored, for tampering tests.
type entry struct {
	name   string
	data   []byte
	method uint16
}

func entries(t *testing.T, data []byte) []entry {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var out []entry
	for _, f := range zr.File {
		rc, _ := f.Open()
		var b bytes.Buffer
		b.ReadFrom(rc)
		rc.Close()
		out = append(out, entry{f.Name, b.Bytes(), f.Method})
	}
	return out
}

func rezip(t *testing.T, es []entry) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range es {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: e.method})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e.data)
	}
	zw.Close()
	return buf.Bytes()
}

func modify(t *testing.T, data []byte, f func([]entry) []entry) []byte {
	return rezip(t, f(entries(t, data)))
}

func find(es []entry, name string) int {
	for i, e := range es {
		if e.name == name {
			return i
		}
	}
	return -1
}

func TestRejections(t *testing.T) {
	sA := signer(t, unitA, pki.ECDSAP256, nil)
	good := build(t, sA, meta(t, unitA))
	if r := verify(good); !r.Valid {
		t.Fatalf("good container invalid: %v", r.Reasons)
	}

	// Another CA, not trusted.
	otherCA, err := pki.InitCA(t.TempDir(), "Elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	okey, _ := pki.GenerateKey(pki.ECDSAP256)
	ocert, _ := otherCA.Issue(pki.IssueRequest{Identifier: string(unitA), Name: "impostor", Key: okey.Public()})
	sOther, _ := pki.NewSignerFromKey(okey, []*x509.Certificate{ocert, otherCA.Issuing})

	// Revoked.
	sRevoked := signer(t, unitA, pki.ECDSAP256, nil)
	revTrust, _ := pki.LoadTrust(fx.ca.RootsPath())
	if err := fx.ca.Revoke(sRevoked.Cert().SerialNumber, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := revTrust.LoadCRL(fx.ca.CRLPath()); err != nil {
		t.Fatal(err)
	}

	zeros := make([]byte, 64<<20)
	hugeSmallZip := func(t *testing.T) []byte {
		return modify(t, good, func(es []entry) []entry {
			return append(es, entry{"files/bomb.bin", zeros, zip.Deflate})
		})
	}

	for _, tc := range []struct {
		name  string
		data  func(t *testing.T) []byte
		trust *pki.Trust
		at    time.Time
		want  reason.Code
	}{
		{"changed file", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry {
				i := find(es, "files/Quyết định 1234.pdf")
				es[i].data = append([]byte{}, es[i].data...)
				es[i].data[10] ^= 1
				return es
			})
		}, nil, time.Time{}, reason.ContainerDigestMismatch},
		{"changed metadata", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry {
				i := find(es, MetadataPath)
				es[i].data = bytes.Replace(es[i].data, []byte("1234"), []byte("1235"), 1)
				return es
			})
		}, nil, time.Time{}, reason.ContainerDigestMismatch},
		{"changed manifest", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry {
				i := find(es, ManifestPath)
				es[i].data = bytes.Replace(es[i].data, []byte(`MimeType="application/pdf"`), []byte(`MimeType="application/xml"`), 1)
				return es
			})
		}, nil, time.Time{}, reason.SignatureInvalid},
		{"changed signature", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry {
				i := find(es, SignaturePath)
				es[i].data = append([]byte{}, es[i].data...)
				es[i].data[len(es[i].data)-5] ^= 0x40
				return es
			})
		}, nil, time.Time{}, reason.SignatureInvalid},
		{"garbage signature", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry {
				es[find(es, SignaturePath)].data = []byte("not cms")
				return es
			})
		}, nil, time.Time{}, reason.SignatureMalformed},
		{"untrusted CA", func(t *testing.T) []byte { return build(t, sOther, meta(t, unitA)) }, nil, time.Time{}, reason.SignatureUntrustedRoot},
		{"expired signer", func(t *testing.T) []byte {
			s := signer(t, unitA, pki.ECDSAP256, func(r *pki.IssueRequest) {
				r.NotBefore, r.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
			})
			return build(t, s, meta(t, unitA))
		}, nil, time.Now().Add(48 * time.Hour), reason.SignatureExpired},
		{"revoked signer", func(t *testing.T) []byte { return build(t, sRevoked, meta(t, unitA)) }, revTrust, time.Time{}, reason.SignatureRevoked},
		{"no signing key usage", func(t *testing.T) []byte {
			s := signer(t, unitA, pki.ECDSAP256, func(r *pki.IssueRequest) { r.KeyUsage = x509.KeyUsageKeyAgreement })
			return build(t, s, meta(t, unitA))
		}, nil, time.Time{}, reason.SignatureKeyUsage},
		{"unit A's certificate on unit B's document", func(t *testing.T) []byte { return build(t, sA, meta(t, unitB)) }, nil, time.Time{}, reason.SignatureUnitMismatch},
		{"zip bomb by ratio", hugeSmallZip, nil, time.Time{}, reason.ContainerZipBomb},
		{"zip bomb by total", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry {
				for i := 0; i < 5; i++ {
					rnd := make([]byte, 1<<20)
					rand.Read(rnd)
					es = append(es, entry{fmt.Sprintf("files/x%d", i), rnd, zip.Store})
				}
				return es
			})
		}, nil, time.Time{}, reason.ContainerZipBomb},
		{"path traversal", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry { return append(es, entry{"files/../../etc/passwd", []byte("x"), zip.Deflate}) })
		}, nil, time.Time{}, reason.ContainerBadPath},
		{"absolute path", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry { return append(es, entry{"/etc/passwd", []byte("x"), zip.Deflate}) })
		}, nil, time.Time{}, reason.ContainerBadPath},
		{"duplicate entry", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry { return append(es, es[find(es, MetadataPath)]) })
		}, nil, time.Time{}, reason.ContainerDuplicateEntry},
		{"file missing from the container", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry {
				i := find(es, "files/phụ lục.docx")
				return append(es[:i], es[i+1:]...)
			})
		}, nil, time.Time{}, reason.ContainerMissingFile},
		{"extra file not in the manifest", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry { return append(es, entry{"files/extra.pdf", []byte("x"), zip.Deflate}) })
		}, nil, time.Time{}, reason.ContainerUnlistedFile},
		{"mimetype not first", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry { return append(es[1:], es[0]) })
		}, nil, time.Time{}, reason.ContainerMimetype},
		{"mimetype compressed", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry { es[0].method = zip.Deflate; return es })
		}, nil, time.Time{}, reason.ContainerMimetype},
		{"no signature", func(t *testing.T) []byte {
			return modify(t, good, func(es []entry) []entry {
				i := find(es, SignaturePath)
				return append(es[:i], es[i+1:]...)
			})
		}, nil, time.Time{}, reason.ContainerNoSignature},
		{"random bytes", func(t *testing.T) []byte {
			b := make([]byte, 5000)
			rand.Read(b)
			return b
		}, nil, time.Time{}, reason.ContainerMalformed},
		{"too large", func(t *testing.T) []byte { return make([]byte, DefaultLimits.MaxSize+1) }, nil, time.Time{}, reason.ContainerTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trust := fx.trust
			if tc.trust != nil {
				trust = tc.trust
			}
			lim := DefaultLimits
			if tc.name == "zip bomb by total" {
				lim.MaxUncompressed = 4 << 20
			}
			_, r := VerifyBytes(tc.data(t), lim, Options{Trust: trust, At: tc.at})
			if r.Valid {
				t.Fatal("accepted")
			}
			if !r.Reasons.Has(tc.want) {
				t.Fatalf("reasons %v, want %s", r.Reasons.Codes(), tc.want)
			}
		})
	}
}

// TestForgedSigningTime shows the trap the design warns of: the PKCS#7
// library's VerifyWithChain checks the chain at the signer's own
// signing-time claim, so an expired signer passes it; edx checks at the
// verifier's time and rejects.
func TestForgedSigningTime(t *testing.T) {
	s := signer(t, unitA, pki.ECDSAP256, func(r *pki.IssueRequest) {
		r.NotBefore, r.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	})
	data := build(t, s, meta(t, unitA))
	c, err := Open(data, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(30 * 24 * time.Hour) // the certificate has expired by then
	p7, err := pkcs7.Parse(c.Signature)
	if err != nil {
		t.Fatal(err)
	}
	p7.Content = c.Manifest
	p7.Certificates = append(p7.Certificates, fx.ca.Issuing)
	pool := x509.NewCertPool()
	pool.AddCert(fx.ca.Root)
	if err := p7.VerifyWithChain(pool); err != nil {
		t.Logf("library VerifyWithChain: %v", err)
	} else {
		t.Log("library VerifyWithChain accepts the signature at its own signing-time claim")
	}
	r := Verify(c, Options{Trust: fx.trust, At: later})
	if r.Valid || !r.Reasons.Has(reason.SignatureExpired) {
		t.Fatalf("expired signer accepted at %v: %v", later, r.Reasons)
	}
}

func TestOpenErrorsAreReasons(t *testing.T) {
	_, err := Open([]byte("PK\x03\x04junk"), DefaultLimits)
	var rs reason.List
	if !errors.As(err, &rs) || !rs.Has(reason.ContainerMalformed) {
		t.Fatalf("err = %v", err)
	}
}

func TestPrepareRejectsBadInput(t *testing.T) {
	m := meta(t, unitA)
	for name, files := range map[string][]File{
		"no files":   nil,
		"slash":      {{Name: "a/b.pdf", Data: []byte("x")}},
		"dotdot":     {{Name: "..", Data: []byte("x")}},
		"duplicate":  {{Name: "a.pdf", Data: []byte("x")}, {Name: "A.pdf", Data: []byte("y")}},
		"control":    {{Name: "a\n.pdf", Data: []byte("x")}},
		"empty name": {{Name: "", Data: []byte("x")}},
	} {
		if _, err := Prepare(m, files); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Prepare([]byte(`{"id":"x"}`), payload(1)); err == nil {
		t.Error("invalid metadata accepted")
	}
}

func TestReceipt(t *testing.T) {
	hub, err := pki.LoadSigner(fx.ca.HubKeyPath(), fx.ca.HubCertPath())
	if err != nil {
		t.Fatal(err)
	}
	rc := &Receipt{DocumentID: document.NewID(time.Now()), From: unitA, To: []document.UnitID{unitB}, ContainerSHA256: "ab", ArchiveKey: "2026/11/25/x/container.asice", AcceptedAt: time.Now().UTC()}
	der, err := SignReceipt(rc, hub)
	if err != nil {
		t.Fatal(err)
	}
	r := VerifyReceipt(der, "ab", Options{Trust: fx.trust})
	if !r.Valid || r.Receipt.DocumentID != rc.DocumentID || r.Receipt.Version != ReceiptVersion {
		t.Fatalf("receipt: %+v", r)
	}
	if r := VerifyReceipt(der, "cd", Options{Trust: fx.trust}); r.Valid {
		t.Error("receipt accepted for another container")
	}
	// A unit cannot issue receipts.
	der2, _ := SignReceipt(rc, signer(t, unitA, pki.ECDSAP256, nil))
	if r := VerifyReceipt(der2, "ab", Options{Trust: fx.trust}); r.Valid {
		t.Error("receipt signed by a unit accepted")
	}
	if r := VerifyReceipt([]byte("junk"), "", Options{Trust: fx.trust}); r.Valid {
		t.Error("junk receipt accepted")
	}
}

func FuzzOpen(f *testing.F) {
	dir, _ := os.MkdirTemp("", "fuzz")
	defer os.RemoveAll(dir)
	s := signer(f, unitA, pki.ECDSAP256, nil)
	good, _ := Build(meta(f, unitA), []File{{Name: "a.pdf", Data: []byte("%PDF-1.7")}}, s)
	f.Add(good)
	f.Add(append([]byte("prepended "), good...))
	f.Add([]byte("PK\x05\x06" + string(make([]byte, 18))))
	seeds, _ := filepath.Glob("testdata/*.asice")
	for _, p := range seeds {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	lim := Limits{MaxSize: 1 << 20, MaxEntries: 50, MaxUncompressed: 4 << 20, MaxRatio: 100}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, r := VerifyBytes(data, lim, Options{Trust: fx.trust})
		if c == nil && r.Valid {
			t.Fatal("valid report without a container")
		}
		// The count Open checks before zip.NewReader is an upper bound of
		// what NewReader reads.
		if zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data))); err == nil {
			if n, _ := centralRecords(data, 1<<30); n < len(zr.File) {
				t.Fatalf("centralRecords %d, zip.NewReader read %d", n, len(zr.File))
			}
		}
	})
}

func benchSizes() []int { return []int{1 << 10, 100 << 10, 10 << 20} }

func BenchmarkBuild(b *testing.B) {
	s := signer(b, unitA, pki.ECDSAP256, nil)
	m := meta(b, unitA)
	for _, n := range benchSizes() {
		files := payload(n)[:1]
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := Build(m, files, s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	s := signer(b, unitA, pki.ECDSAP256, nil)
	m := meta(b, unitA)
	for _, n := range benchSizes() {
		data, err := Build(m, payload(n)[:1], s)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, r := VerifyBytes(data, DefaultLimits, Options{Trust: fx.trust}); !r.Valid {
					b.Fatal(r.Reasons)
				}
			}
		})
	}
}

// hubSigner issues a hub certificate valid from nb to na.
func hubSigner(tb testing.TB, nb, na time.Time) *pki.Signer {
	tb.Helper()
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	cert, err := fx.ca.Issue(pki.IssueRequest{Identifier: pki.HubIdentifier, Name: "edx hub", Key: key.Public(), NotBefore: nb, NotAfter: na})
	if err != nil {
		tb.Fatal(err)
	}
	s, err := pki.NewSignerFromKey(key, []*x509.Certificate{cert, fx.ca.Issuing})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// TestReceiptAsOfAcceptance: a receipt is checked as of its accepted_at:
// valid after the hub's certificate has expired (the verifier's clock moved
// past it), invalid when accepted_at lies outside the certificate's life
// or in the verifier's future, and invalid when the hub certificate was
// revoked before the acceptance (valid when revoked after).
func TestReceiptAsOfAcceptance(t *testing.T) {
	now := time.Now()
	hub := hubSigner(t, now.Add(-time.Hour), now.Add(time.Hour)) // short-lived
	sign := func(at time.Time) []byte {
		rc := &Receipt{DocumentID: document.NewID(at), From: unitA, To: []document.UnitID{unitB}, ContainerSHA256: "ab",
			ArchiveKey: "k", AcceptedAt: at.UTC()}
		der, err := SignReceipt(rc, hub)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	der := sign(now)
	later := now.Add(30 * 24 * time.Hour) // the hub certificate expired long ago
	if r := VerifyReceipt(der, "ab", Options{Trust: fx.trust, At: later}); !r.Valid || r.Signature.CheckedAt.Sub(now).Abs() > time.Millisecond {
		t.Fatalf("receipt after the hub certificate expired: %+v", r.Reasons)
	}
	if r := VerifyReceipt(sign(now.Add(2*time.Hour)), "ab", Options{Trust: fx.trust, At: later}); r.Valid || !r.Reasons.Has(reason.ReceiptInvalid) {
		t.Fatal("a receipt accepted after the hub certificate's end verified")
	}
	if r := VerifyReceipt(sign(now.Add(30*time.Minute)), "ab", Options{Trust: fx.trust, At: now}); r.Valid {
		t.Fatal("a receipt accepted in the verifier's future verified")
	}
	// Revoked: receipts before the revocation stay valid, those after not.
	dir := t.TempDir()
	ca, err := pki.InitCA(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	trust, _ := pki.LoadTrust(ca.RootsPath())
	h2, _ := pki.LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	before := &Receipt{DocumentID: document.NewID(now), ContainerSHA256: "ab", AcceptedAt: now.Add(-10 * time.Minute).UTC()}
	after := &Receipt{DocumentID: document.NewID(now), ContainerSHA256: "ab", AcceptedAt: now.UTC()}
	db, _ := SignReceipt(before, h2)
	da, _ := SignReceipt(after, h2)
	if err := ca.Revoke(h2.Cert().SerialNumber, now.Add(-5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := trust.LoadCRL(ca.CRLPath()); err != nil {
		t.Fatal(err)
	}
	if r := VerifyReceipt(db, "ab", Options{Trust: trust}); !r.Valid {
		t.Fatalf("receipt before the hub certificate's revocation: %v", r.Reasons)
	}
	if r := VerifyReceipt(da, "ab", Options{Trust: trust}); r.Valid {
		t.Fatal("receipt after the hub certificate's revocation verified")
	}
}
