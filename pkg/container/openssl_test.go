package container

import (
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
