package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/edxhub/edx/pkg/pki"
)

// checkEvidence checks, on a running embedded hub that accepted document
// id (fetched into work/got by edx get), what issue #11 asks of the
// archive and the hub's certificates: with the hub's own S3 credentials the
// container can be neither deleted nor overwritten (COMPLIANCE retention of
// ten years), the CRLs in force are archived under their SHA-256, the
// unit's certificate names the hub's CRL URL, and the README's OpenSSL
// recipe accepts the archived receipt.
func checkEvidence(t *testing.T, h *hubProc, work, id string) {
	t.Helper()
	var info struct {
		S3Endpoint string `json:"s3_endpoint"`
		Bucket     string `json:"bucket"`
	}
	b, err := os.ReadFile(filepath.Join(h.data, "hub.json"))
	if err != nil || json.Unmarshal(b, &info) != nil {
		t.Fatalf("hub.json: %v", err)
	}
	secret, err := os.ReadFile(filepath.Join(h.data, "s3", "secret.key"))
	if err != nil {
		t.Fatal(err)
	}
	s3, err := minio.New(info.S3Endpoint, &minio.Options{Creds: credentials.NewStaticV4("edx-hub", strings.TrimSpace(string(secret)), ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var key string
	crls := 0
	for o := range s3.ListObjects(ctx, info.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		switch {
		case strings.HasSuffix(o.Key, id+"/container.asice"):
			key = o.Key
		case strings.HasPrefix(o.Key, "crl/"):
			obj, err := s3.GetObject(ctx, info.Bucket, o.Key, minio.GetObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			buf.ReadFrom(obj)
			obj.Close()
			sum := sha256.Sum256(buf.Bytes())
			if o.Key != "crl/"+hex.EncodeToString(sum[:])+".crl" {
				t.Errorf("%s holds a CRL with SHA-256 %x", o.Key, sum)
			}
			crls++
		}
	}
	if key == "" || crls == 0 {
		t.Fatalf("archive: container key %q, %d CRLs", key, crls)
	}
	original, err := os.ReadFile(filepath.Join(work, "got", id+".asice"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := s3.StatObject(ctx, info.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	until, _ := time.Parse(time.RFC3339, st.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"))
	if st.Metadata.Get("X-Amz-Object-Lock-Mode") != "COMPLIANCE" || until.Before(time.Now().AddDate(9, 11, 0)) {
		t.Errorf("container retention %q until %v, want COMPLIANCE for ten years", st.Metadata.Get("X-Amz-Object-Lock-Mode"), until)
	}
	if err := s3.RemoveObject(ctx, info.Bucket, key, minio.RemoveObjectOptions{}); err == nil {
		t.Error("the hub's S3 credentials deleted an archived container")
	}
	forged := []byte("forged")
	if _, err := s3.PutObject(ctx, info.Bucket, key, bytes.NewReader(forged), int64(len(forged)), minio.PutObjectOptions{}); err == nil {
		t.Error("the hub's S3 credentials overwrote an archived container")
	}
	obj, err := s3.GetObject(ctx, info.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	got.ReadFrom(obj)
	obj.Close()
	if !bytes.Equal(got.Bytes(), original) {
		t.Fatal("the archived container changed")
	}

	// The unit's certificate names the hub's CRL URL.
	cb, _ := os.ReadFile(filepath.Join(work, "units", "000.01.00.H29", "cert.pem"))
	certs, err := pki.ParseCertificates(cb)
	if err != nil {
		t.Fatal(err)
	}
	if dps := certs[0].CRLDistributionPoints; len(dps) != 1 || dps[0] != h.info.HTTP+"/pki/crl.der" {
		t.Errorf("unit certificate distribution points %v, want %s/pki/crl.der", dps, h.info.HTTP)
	}

	// The README's receipt recipe, as written, on the archived receipt.
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(readme), "\n<!-- receipt-recipe")
	_, rest, _ = strings.Cut(rest, "```sh\n")
	recipe, _, _ := strings.Cut(rest, "```")
	dir := t.TempDir()
	rb, _ := os.ReadFile(filepath.Join(work, "got", id+".receipt.p7s"))
	roots, _ := os.ReadFile(h.info.TrustRoots)
	for name, b := range map[string][]byte{"receipt.p7s": rb, "out.asice": original, "roots.pem": roots} {
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	cmd := exec.Command("sh", "-e", "-c", recipe)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || recipe == "" {
		t.Fatalf("the README's OpenSSL receipt recipe on the hub's receipt: %v\n%s", err, out)
	}
}
