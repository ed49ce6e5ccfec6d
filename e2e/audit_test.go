package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/hub/s3embed"
	"github.com/edxhub/edx/pkg/audit"
	"github.com/edxhub/edx/pkg/document"
)

// opensslTSA is a time-stamping authority made with nothing but OpenSSL
// (its own root, a certificate with the critical timeStamping usage, and
// `openssl ts -reply` behind HTTP); it returns its URL and root (PEM path).
func opensslTSA(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "root.key", "-out", "root.pem",
		"-days", "30", "-subj", "/C=VN/O=Independent TSA/CN=Independent TSA Root",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", "/C=VN/O=Independent TSA/CN=Independent TSA")
	os.WriteFile(filepath.Join(dir, "ext.cnf"), []byte("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\nextendedKeyUsage=critical,timeStamping\n"), 0o644)
	run("x509", "-req", "-in", "tsa.csr", "-CA", "root.pem", "-CAkey", "root.key", "-set_serial", "7", "-days", "30", "-sha256", "-extfile", "ext.cnf", "-out", "tsa.pem")
	os.WriteFile(filepath.Join(dir, "serial"), []byte("01\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "ts.cnf"), []byte("[ tsa ]\ndefault_tsa = tsa1\n[ tsa1 ]\ndir = "+dir+"\n"+
		"serial = $dir/serial\ncrypto_device = builtin\nsigner_cert = $dir/tsa.pem\nsigner_key = $dir/tsa.key\n"+
		"signer_digest = sha256\ndefault_policy = 1.2.3.4.1\ndigests = sha256, sha384, sha512\n"+
		"accuracy = secs:1\nordering = no\ntsa_name = yes\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n"), 0o644)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := os.CreateTemp(dir, "q-*.tsq")
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer os.Remove(q.Name())
		if _, err := q.ReadFrom(http.MaxBytesReader(w, r.Body, 1<<14)); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		q.Close()
		out := q.Name() + ".tsr"
		defer os.Remove(out)
		if b, err := exec.Command("openssl", "ts", "-reply", "-config", filepath.Join(dir, "ts.cnf"), "-queryfile", q.Name(), "-out", out).CombinedOutput(); err != nil {
			http.Error(w, string(b), 500)
			return
		}
		resp, err := os.ReadFile(out)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/timestamp-reply")
		w.Write(resp)
	}))
	t.Cleanup(hs.Close)
	return hs.URL, filepath.Join(dir, "root.pem")
}

// edxCode runs the command line and returns its output and exit code.
func edxCode(t *testing.T, dir string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "edx"), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("edx %s: %v", strings.Join(args, " "), err)
	}
	return string(out), 0
}

// TestAuditCommandLine is issue #11's "done when" with the real programs: an
// edx-hub on an S3 store (without object lock, so that the test can delete
// an object) time-stamping its log with an independent TSA (OpenSSL's
// `ts -reply` over HTTP); a document sent with edx send; `edx proof` checks
// its entry; `edx audit bundle` fetches its bundle, `edx audit verify`
// checks it offline, and again with its clock in 2036; the README's OpenSSL
// recipe runs on it as written; the sender's certificate revoked after
// acceptance (edx pki revoke) leaves it valid, and the next document it signs
// is rejected; a container deleted from the archive is reported by `edx
// audit archive`, which found the archive and the log in agreement before.
func TestAuditCommandLine(t *testing.T) {
	work := t.TempDir()
	data := filepath.Join(work, "edx-data")
	tsaURL, tsaRoot := opensslTSA(t)
	endpoint, ak, sk := s3embed.ForTest(t)
	os.WriteFile(filepath.Join(work, "s3.access"), []byte(ak), 0o600)
	os.WriteFile(filepath.Join(work, "s3.secret"), []byte(sk), 0o600)
	bucket := fmt.Sprintf("e2e-audit-%d", time.Now().UnixNano()%1e9)
	cfg := fmt.Sprintf(`s3:
  endpoint: %s
  access_key_file: %s
  secret_key_file: %s
  bucket: %s
pki:
  crl_poll: 100ms
tlog:
  timestamp_interval: 1s
  checkpoint_interval: 200ms
tsa:
  urls: [%s]
  roots: %s
`, endpoint, filepath.Join(work, "s3.access"), filepath.Join(work, "s3.secret"), bucket, tsaURL, tsaRoot)
	os.WriteFile(filepath.Join(work, "hub.yaml"), []byte(cfg), 0o644)
	h := startHubNATS(t, data, "127.0.0.1:-1", "--config", filepath.Join(work, "hub.yaml"))
	for _, u := range []string{"000.01.00.H29", "000.02.00.H29"} {
		edx(t, work, 0, "unit", "add", "--data", data, "--unit", u, "--name", "Đơn vị "+u)
	}
	send := func(ua string, want int) (string, string) {
		meta := edx(t, work, 0, "template", "--from", "000.01.00.H29")
		var d map[string]any
		json.Unmarshal([]byte(meta), &d)
		d["to"] = []string{"000.02.00.H29"}
		b, _ := json.MarshalIndent(d, "", "  ")
		os.WriteFile(filepath.Join(work, "doc.json"), b, 0o644)
		os.WriteFile(filepath.Join(work, "quyet-dinh.pdf"), []byte("%PDF-1.7 quyết định "+d["id"].(string)), 0o644)
		out := edx(t, work, want, "send", "--nats", h.info.NATSURL, "--creds", filepath.Join(ua, "nats.creds"),
			"--key", filepath.Join(ua, "key.pem"), "--cert", filepath.Join(ua, "cert.pem"), "--meta", "doc.json", "quyet-dinh.pdf")
		return d["id"].(string), out
	}
	ua := filepath.Join("units", "000.01.00.H29")
	id, out := send(ua, 0)
	if !strings.Contains(out, "accepted at") {
		t.Fatalf("send:\n%s", out)
	}
	if out := edx(t, work, 0, "proof", id, "--data", data); !strings.Contains(out, "VALID") || !strings.Contains(out, "entry") {
		t.Fatalf("edx proof:\n%s", out)
	}
	var bundleOut string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		var code int
		if bundleOut, code = edxCode(t, work, "audit", "bundle", id, "-o", "bundle.zip", "--data", data); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edx audit bundle:\n%s", bundleOut)
		}
	}
	if out := edx(t, work, 0, "proof", id, "--data", data); !strings.Contains(out, "logged before") && !strings.Contains(out, "logged after") {
		t.Fatalf("edx proof once time-stamped:\n%s", out)
	}
	cp := func(src, dst string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(work, dst), b, 0o644)
	}
	cp(h.info.TrustRoots, "roots.pem")
	cp(tsaRoot, "tsa-roots.pem")
	cp(filepath.Join(data, "tlog.pub"), "hub-log.vkey")
	verify := []string{"audit", "verify", "bundle.zip", "--trust", "roots.pem", "--tsa-roots", "tsa-roots.pem", "--log-key", "hub-log.vkey"}
	out = edx(t, work, 0, verify...)
	for _, want := range []string{"ok   log", "ok   timestamp", "ok   entry", "ok   container", "ok   receipt", "ok   crls", "VALID"} {
		if !strings.Contains(out, want) {
			t.Fatalf("edx audit verify says nothing of %q:\n%s", want, out)
		}
	}
	// 2036: past every certificate's end. The container on its own no
	// longer verifies then; the bundle does, from its time-stamp.
	unzip(t, work, "bundle.zip", "unzipped")
	if out, code := edxCode(t, work, "verify", "--trust", "roots.pem", "--at", "2036-01-01T00:00:00Z", filepath.Join("unzipped", "container.asice")); code != 1 {
		t.Fatalf("the container alone verifies in 2036 (exit %d): the test proves nothing\n%s", code, out)
	}
	if out := edx(t, work, 0, append(verify, "--now", "2036-01-01T00:00:00Z")...); !strings.Contains(out, "VALID") {
		t.Fatalf("in 2036:\n%s", out)
	}
	// The token is the independent TSA's: against the city's roots alone
	// it does not verify.
	if out, code := edxCode(t, work, "audit", "verify", "bundle.zip", "--trust", "roots.pem", "--log-key", "hub-log.vkey"); code != 1 || !strings.Contains(out, "FAIL timestamp") {
		t.Fatalf("verified against the city's roots as TSA roots (exit %d):\n%s", code, out)
	}

	// The README's OpenSSL recipe, as written, on this bundle.
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(readme), "\n<!-- audit-recipe")
	_, rest, _ = strings.Cut(rest, "```sh\n")
	recipe, _, _ := strings.Cut(rest, "```")
	if recipe == "" || recipe != audit.OpenSSLRecipe {
		t.Fatalf("the README's recipe is not audit.OpenSSLRecipe (what every bundle's README.txt says):\n%s", recipe)
	}
	cmd := exec.Command("sh", "-e", "-c", recipe)
	cmd.Dir = work
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Time stamp:") {
		t.Fatalf("the README's OpenSSL audit recipe: %v\n%s", err, out)
	}

	// Revoked after acceptance: still valid with the new CRL. The hub revokes
	// the unit's NATS credentials; with new ones, a document signed with the
	// revoked certificate is rejected.
	edx(t, work, 0, "pki", "revoke", "--dir", filepath.Join(data, "pki"), "--cert", filepath.Join(ua, "cert.pem"))
	if out := edx(t, work, 0, append(verify, "--crl", filepath.Join(data, "pki", "crl.pem"))...); !strings.Contains(out, "VALID") {
		t.Fatalf("revoked after acceptance:\n%s", out)
	}
	// The hub, checking now, says revoked (once it has read the new CRL);
	// the bundle, as of acceptance, stays valid.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, code := edxCode(t, work, "verify", id, "--data", data)
		if code == 1 && strings.Contains(out, "signature.revoked") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edx verify ID after the revocation (exit %d):\n%s", code, out)
		}
	}
	os.Rename(filepath.Join(work, ua), filepath.Join(work, "old-a"))
	edx(t, work, 0, "unit", "rotate", "000.01.00.H29", "--cert", "--data", data, "--out", filepath.Join(work, "new-a"))
	os.MkdirAll(filepath.Join(work, ua), 0o755)
	cp(filepath.Join(work, "new-a", "nats.creds"), filepath.Join(ua, "nats.creds"))
	cp(filepath.Join(work, "old-a", "key.pem"), filepath.Join(ua, "key.pem"))
	cp(filepath.Join(work, "old-a", "cert.pem"), filepath.Join(ua, "cert.pem"))
	if _, out := send(ua, 1); !strings.Contains(out, "signature.revoked") {
		t.Fatalf("a document signed with the revoked certificate:\n%s", out)
	}

	// The archive and the log agree; then a container is deleted.
	archiveArgs := []string{"audit", "archive", "--s3-endpoint", endpoint, "--bucket", bucket, "--access-key-file", "s3.access",
		"--secret-key-file", "s3.secret", "--log", h.info.HTTP + "/log/", "--log-key", "hub-log.vkey"}
	if out := edx(t, work, 0, archiveArgs...); !strings.Contains(out, "the archive and the logs agree") {
		t.Fatalf("edx audit archive:\n%s", out)
	}
	s3, err := minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4(ak, sk, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s3.RemoveObject(t.Context(), bucket, projection.ContainerKey(document.ID(id)), minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	out = edx(t, work, 1, archiveArgs...)
	if !strings.Contains(out, "MISSING  "+id+" container") {
		t.Fatalf("edx audit archive after the deletion:\n%s", out)
	}
	// Read from the archive's mirror of the log instead of the hub.
	out, code := edxCode(t, work, "audit", "archive", "--s3-endpoint", endpoint, "--bucket", bucket, "--access-key-file", "s3.access",
		"--secret-key-file", "s3.secret", "--log-key", "hub-log.vkey")
	if code != 1 || !strings.Contains(out, "MISSING  "+id+" container") || !strings.Contains(out, "archive tlog/") {
		t.Fatalf("edx audit archive from the mirror (exit %d):\n%s", code, out)
	}
}

func unzip(t *testing.T, dir, zip, to string) {
	t.Helper()
	if out, err := exec.Command("unzip", "-oq", filepath.Join(dir, zip), "-d", filepath.Join(dir, to)).CombinedOutput(); err != nil {
		t.Fatalf("unzip: %v\n%s", err, out)
	}
}
