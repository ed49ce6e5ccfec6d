package container

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

// bothReadings checks der (over content, when detached) as checkCMS does
// with parseCMSDER and with pkcs7 alone. A signature either calls valid
// the other must call valid too, with the same signer, content and details.
// Of a malformed one they may say different things (pkcs7 rewrites what it
// reads as BER and overlooks its own parse errors, the DER reading takes the
// bytes as they are): both must refuse it.
func bothReadings(t testing.TB, der, content []byte, at time.Time) (fast bool, valid bool) {
	t.Helper()
	_, fast = parseCMSDER(der)
	leaf1, c1, info1, rs1 := checkCMS(der, content, fx.trust, at, false)
	cmsFastPath = false
	leaf2, c2, info2, rs2 := checkCMS(der, content, fx.trust, at, false)
	cmsFastPath = true
	if (len(rs1) == 0) != (len(rs2) == 0) {
		t.Fatalf("valid: DER reading %v (%v), pkcs7 %v (%v)", len(rs1) == 0, rs1, len(rs2) == 0, rs2)
	}
	if len(rs1) != 0 {
		return fast, false
	}
	if (leaf1 == nil) != (leaf2 == nil) || (leaf1 != nil && !leaf1.Equal(leaf2)) {
		t.Fatalf("signer: DER reading %v, pkcs7 %v", leafName(leaf1), leafName(leaf2))
	}
	if string(c1) != string(c2) || (c1 == nil) != (c2 == nil) {
		t.Fatalf("content: DER reading %d bytes (nil %v), pkcs7 %d (nil %v)", len(c1), c1 == nil, len(c2), c2 == nil)
	}
	if !reflect.DeepEqual(info1, info2) {
		t.Fatalf("info:\nDER reading %+v\npkcs7       %+v", info1, info2)
	}
	if a, b := rs1.Codes(), rs2.Codes(); !reflect.DeepEqual(a, b) {
		t.Fatalf("reasons: DER reading %v (%v), pkcs7 %v (%v)", a, rs1, b, rs2)
	}
	return fast, len(rs1) == 0
}

// cmsSamples returns signatures of every shape edx meets: its own (ECDSA
// and RSA, detached and attached: documents, statuses, receipts) and
// OpenSSL's (plain and CAdES).
func cmsSamples(t testing.TB) (sigs [][]byte, contents [][]byte) {
	sA, sB := signer(t, unitA, pki.ECDSAP256, nil), signer(t, unitB, pki.RSA2048, nil)
	manifest := []byte("<manifest/>")
	for _, s := range []*pki.Signer{sA, sB} {
		d, err := SignDetached(manifest, s)
		if err != nil {
			t.Fatal(err)
		}
		unit, err := pki.UnitOf(s.Cert())
		if err != nil {
			t.Fatal(err)
		}
		st, err := SignStatus(status01(unit), sha, s)
		if err != nil {
			t.Fatal(err)
		}
		sigs, contents = append(sigs, d, st), append(contents, manifest, nil)
	}
	if o, ok := t.(*testing.T); ok {
		ossl := openssl(o)
		dir := o.TempDir()
		os.WriteFile(filepath.Join(dir, "m.xml"), manifest, 0o644)
		os.WriteFile(filepath.Join(dir, "issuing.pem"), pki.EncodeCertificates(fx.ca.Issuing), 0o644)
		for unit, kt := range map[document.UnitID]pki.KeyType{"000.05.00.H29": pki.ECDSAP256, "000.06.00.H29": pki.RSA2048} {
			kp, cp, err := fx.ca.IssueUnit(unit, "Quận 3", kt)
			if err != nil {
				t.Fatal(err)
			}
			for i, extra := range [][]string{nil, {"-cades"}, {"-nodetach"}} {
				out := filepath.Join(dir, "s.p7s")
				args := append([]string{"cms", "-sign"}, extra...)
				args = append(args, "-binary", "-in", "m.xml", "-signer", cp, "-inkey", kp, "-certfile", "issuing.pem",
					"-md", "sha256", "-outform", "DER", "-out", out)
				run(o, dir, ossl, args...)
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				c := manifest
				if i == 2 {
					c = nil
				}
				sigs, contents = append(sigs, b), append(contents, c)
			}
		}
	}
	return sigs, contents
}

// TestCMSDERAgreesWithPKCS7: for every shape of signature edx meets, and
// for each of them with any one byte changed, reading it as DER gives
// checkCMS the same answer as reading it with pkcs7: the same signer,
// content, details and reasons. The signatures edx and OpenSSL make are
// read the fast way, and valid.
func TestCMSDERAgreesWithPKCS7(t *testing.T) {
	sigs, contents := cmsSamples(t)
	now := time.Now()
	for i, der := range sigs {
		fast, valid := bothReadings(t, der, contents[i], now)
		if !fast || !valid {
			t.Fatalf("signature %d: read as DER %v, valid %v", i, fast, valid)
		}
		// Checked when the signer had expired, the same again.
		bothReadings(t, der, contents[i], now.AddDate(20, 0, 0))
		var declined, accepted int
		for j := range der {
			for _, x := range []byte{0x01, 0x80} {
				b := append([]byte{}, der...)
				b[j] ^= x
				fast, valid := bothReadings(t, b, contents[i], now)
				if !fast {
					declined++
				}
				if valid {
					accepted++
				}
			}
		}
		t.Logf("signature %d (%d bytes): %d of %d changed bytes declined by the DER reading, %d still valid", i, len(der),
			declined, 2*len(der), accepted)
	}
}

// FuzzCMSDER: whatever the bytes, both readings agree (seeded with the
// signatures of TestCMSDERAgreesWithPKCS7).
func FuzzCMSDER(f *testing.F) {
	sA := signer(f, unitA, pki.ECDSAP256, nil)
	d, err := SignDetached([]byte("<manifest/>"), sA)
	if err != nil {
		f.Fatal(err)
	}
	st, err := SignStatus(status01(unitA), sha, sA)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(d, true)
	f.Add(st, false)
	now := time.Now()
	f.Fuzz(func(t *testing.T, der []byte, detached bool) {
		var content []byte
		if detached {
			content = []byte("<manifest/>")
		}
		bothReadings(t, der, content, now)
	})
}

// BenchmarkCheckCMS: a status's signature checked, read as DER and with
// pkcs7.
func BenchmarkCheckCMS(b *testing.B) {
	sA := signer(b, unitA, pki.ECDSAP256, nil)
	der, err := SignStatus(status01(unitA), sha, sA)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for _, fast := range []bool{true, false} {
		name := map[bool]string{true: "der", false: "pkcs7"}[fast]
		b.Run(name, func(b *testing.B) {
			cmsFastPath = fast
			defer func() { cmsFastPath = true }()
			for b.Loop() {
				if _, _, _, rs := checkCMS(der, nil, fx.trust, now, false); len(rs) != 0 {
					b.Fatal(rs)
				}
			}
		})
	}
}

func leafName(c *x509.Certificate) string {
	if c == nil {
		return "none"
	}
	return c.Subject.String() + " " + c.SerialNumber.String()
}

// TestParsedCertsBounded: the parsed certificates kept are bounded in
// number and size whatever certificates signatures carry.
func TestParsedCertsBounded(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(i int, extra int) []byte {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i) + 1), Subject: pkix.Name{CommonName: strings.Repeat("x", extra)},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	for i := range maxParsedCerts + 10 {
		if _, err := parsedCert(mk(i, 0)); err != nil {
			t.Fatal(err)
		}
		parsedCertsMu.Lock()
		n := len(parsedCerts)
		parsedCertsMu.Unlock()
		if n > maxParsedCerts {
			t.Fatalf("%d certificates kept, at most %d", n, maxParsedCerts)
		}
	}
	large := mk(0, maxParsedCertSize)
	if _, err := parsedCert(large); err != nil {
		t.Fatal(err)
	}
	parsedCertsMu.Lock()
	_, kept := parsedCerts[string(large)]
	parsedCertsMu.Unlock()
	if kept {
		t.Fatalf("a %d-byte certificate was kept", len(large))
	}
}
