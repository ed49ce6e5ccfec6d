package container

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

// openssl returns the path of the openssl binary; interop is a promise to
// auditors, so a missing binary fails the test rather than skipping it.
func openssl(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is required for the interoperability tests: ", err)
	}
	return p
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestOpenSSLVerifiesEdxContainer runs the auditor's recipe from the README
// on an edx container: unzip, openssl cms -verify over the manifest, and the
// manifest's digests against the files' SHA-256.
func TestOpenSSLVerifiesEdxContainer(t *testing.T) {
	ossl := openssl(t)
	for _, kt := range []pki.KeyType{pki.ECDSAP256, pki.RSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			dir := t.TempDir()
			s := signer(t, unitA, kt, nil)
			data := build(t, s, meta(t, unitA))
			c, err := Open(data, DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			// Extract as unzip would.
			files := map[string][]byte{ManifestPath: c.Manifest, SignaturePath: c.Signature}
			for _, e := range c.Entries {
				if files[e.Name], err = e.Bytes(); err != nil {
					t.Fatal(err)
				}
			}
			for name, b := range files {
				p := filepath.Join(dir, filepath.FromSlash(name))
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out := run(t, dir, ossl, "cms", "-verify", "-binary", "-inform", "DER",
				"-content", "META-INF/ASiCManifest.xml", "-in", "META-INF/signature001.p7s",
				"-CAfile", fx.ca.RootsPath(), "-out", os.DevNull)
			if !strings.Contains(out, "Verification successful") {
				t.Fatalf("openssl: %s", out)
			}
			// The digests in the manifest are those sha256sum prints.
			for _, ref := range c.Refs {
				sum := strings.Fields(run(t, dir, "sha256sum", filepath.FromSlash(ref.Name)))[0]
				if sum != hex.EncodeToString(ref.SHA256[:]) {
					t.Errorf("%s: sha256sum %s, manifest %x", ref.Name, sum, ref.SHA256)
				}
			}
			// A changed manifest fails openssl too.
			os.WriteFile(filepath.Join(dir, "META-INF/ASiCManifest.xml"), append(c.Manifest, ' '), 0o644)
			cmd := exec.Command(ossl, "cms", "-verify", "-binary", "-inform", "DER", "-content", "META-INF/ASiCManifest.xml",
				"-in", "META-INF/signature001.p7s", "-CAfile", fx.ca.RootsPath(), "-out", os.DevNull)
			cmd.Dir = dir
			if err := cmd.Run(); err == nil {
				t.Error("openssl accepted a changed manifest")
			}
		})
	}
}

// TestEdxVerifiesOpenSSLSignature: a container whose signature openssl cms
// -sign made with an edx-issued unit key passes edx's verification.
func TestEdxVerifiesOpenSSLSignature(t *testing.T) {
	ossl := openssl(t)
	dir := t.TempDir()
	unit := "000.04.00.H29"
	kp, cp, err := fx.ca.IssueUnit("000.04.00.H29", "Quận 1", pki.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	u, err := Prepare(meta(t, "000.04.00.H29"), payload(2000))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "manifest.xml"), u.Manifest, 0o644)
	os.WriteFile(filepath.Join(dir, "issuing.pem"), pki.EncodeCertificates(fx.ca.Issuing), 0o644)
	// openssl takes the leaf (the first certificate of the chain file) as
	// -signer and the issuing CA through -certfile.
	run(t, dir, ossl, "cms", "-sign", "-binary", "-in", "manifest.xml", "-signer", cp, "-inkey", kp,
		"-certfile", "issuing.pem", "-md", "sha256", "-outform", "DER", "-out", "sig.p7s")
	sig, err := os.ReadFile(filepath.Join(dir, "sig.p7s"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := u.Seal(sig)
	if err != nil {
		t.Fatal(err)
	}
	_, r := VerifyBytes(data, DefaultLimits, Options{Trust: fx.trust, At: time.Now()})
	if !r.Valid {
		t.Fatalf("edx rejects an openssl signature: %v", r.Reasons)
	}
	if string(r.SignerUnit) != unit {
		t.Errorf("signer unit %q", r.SignerUnit)
	}
	// And the CAdES variant with ESS signing-certificate-v2.
	run(t, dir, ossl, "cms", "-sign", "-cades", "-binary", "-in", "manifest.xml", "-signer", cp, "-inkey", kp,
		"-certfile", "issuing.pem", "-md", "sha256", "-outform", "DER", "-out", "sig2.p7s")
	sig2, _ := os.ReadFile(filepath.Join(dir, "sig2.p7s"))
	data2, _ := u.Seal(sig2)
	if _, r := VerifyBytes(data2, DefaultLimits, Options{Trust: fx.trust}); !r.Valid || !r.Signature.SigningCertRef {
		t.Fatalf("openssl -cades: valid=%v ref=%v %v", r.Valid, r.Signature.SigningCertRef, r.Reasons)
	}
}

// readmeBlock returns the shell block of the README that follows the line
// starting with marker: what the README tells auditors to run.
func readmeBlock(t *testing.T, marker string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n"+marker)
	if !ok {
		t.Fatalf("README.md has no %q", marker)
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	if !ok {
		t.Fatalf("README.md: no shell block after %q", marker)
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("README.md: unterminated block")
	}
	return block
}

// TestOpenSSLReceiptRecipe runs the README's OpenSSL receipt recipe, as
// written there, with sh -e: it accepts the hub's receipt for its
// container, and refuses a receipt for another container and receipts
// forged with a unit's key, under the unit's own certificate or one whose
// subject claims to be the hub's.
func TestOpenSSLReceiptRecipe(t *testing.T) {
	openssl(t)
	recipe := readmeBlock(t, "<!-- receipt-recipe")
	hub, err := pki.LoadSigner(fx.ca.HubKeyPath(), fx.ca.HubCertPath())
	if err != nil {
		t.Fatal(err)
	}
	container := []byte("the container's bytes")
	sum := sha256.Sum256(container)
	sign := func(s *pki.Signer, digest string) []byte {
		rc := &Receipt{DocumentID: document.NewID(time.Now()), From: unitA, To: []document.UnitID{unitB}, ContainerSHA256: digest,
			ArchiveKey: "2026/11/30/x/container.asice", AcceptedAt: time.Now().UTC()}
		der, err := SignReceipt(rc, s)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	now := time.Now()
	forged := rawSigner(t, fx.ca, &x509.Certificate{Subject: hubSubject(), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	roots, _ := os.ReadFile(fx.ca.RootsPath())
	for _, tc := range []struct {
		name    string
		receipt []byte
		ok      bool
	}{
		{"the hub's receipt", sign(hub, hex.EncodeToString(sum[:])), true},
		{"the hub's receipt for another container", sign(hub, strings.Repeat("0", 64)), false},
		{"forged with a unit's key", sign(signer(t, unitA, pki.ECDSAP256, nil), hex.EncodeToString(sum[:])), false},
		{"forged with a unit's key under the hub's subject", sign(forged, hex.EncodeToString(sum[:])), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, b := range map[string][]byte{"receipt.p7s": tc.receipt, "roots.pem": roots, "out.asice": container} {
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command("sh", "-e", "-c", recipe)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if tc.ok && err != nil {
				t.Fatalf("the recipe refuses the hub's receipt: %v\n%s", err, out)
			}
			if !tc.ok && err == nil {
				t.Fatalf("the recipe accepts it:\n%s", out)
			}
			if tc.ok && !strings.Contains(string(out), "Verification successful") {
				t.Fatalf("openssl said:\n%s", out)
			}
		})
	}
}
