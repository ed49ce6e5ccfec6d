package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/pki"
)

// edx runs the command line in-process and returns its exit code and output.
func edx(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(t.Context(), &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb}, args)
	return code, out.String(), errb.String()
}

func must(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := edx(t, args...)
	if code != 0 {
		t.Fatalf("edx %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// TestOfflineFlow walks the auditor's and the operator's offline path: a
// development CA, a unit certificate, a template, pack, verify, tamper.
func TestOfflineFlow(t *testing.T) {
	dir := t.TempDir()
	pk := filepath.Join(dir, "pki")
	must(t, "pki", "init", "--dir", pk)
	must(t, "pki", "issue", "--dir", pk, "--unit", "000.01.00.H29", "--name", "Sở Tư pháp")
	key := filepath.Join(pk, "units", "000.01.00.H29.key.pem")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	meta := filepath.Join(dir, "doc.json")
	os.WriteFile(meta, []byte(must(t, "template", "--from", "000.01.00.H29")), 0o644)
	pdf := filepath.Join(dir, "quyết định.pdf")
	os.WriteFile(pdf, []byte("%PDF-1.7 ..."), 0o644)
	out := filepath.Join(dir, "out.asice")
	must(t, "pack", "--meta", meta, "--key", key, "--cert", filepath.Join(pk, "units", "000.01.00.H29.cert.pem"), "-o", out, pdf)

	roots := filepath.Join(pk, "roots.pem")
	rep := must(t, "verify", "--trust", roots, out)
	if !strings.Contains(rep, "result      VALID") || !strings.Contains(rep, "organizationIdentifier=000.01.00.H29") {
		t.Fatalf("report:\n%s", rep)
	}
	code, js, _ := edx(t, "verify", "--json", "--trust", roots, out)
	var res verifyResult
	if code != 0 || json.Unmarshal([]byte(js), &res) != nil || !res.Valid {
		t.Fatalf("json: exit %d\n%s", code, js)
	}
	if insp := must(t, "inspect", out); !strings.Contains(insp, "files/quyết định.pdf") {
		t.Errorf("inspect:\n%s", insp)
	}

	// Checked after the CRL's nextUpdate: whether the certificate is
	// revoked is unknown, and edx verify says so (exit 1).
	later := time.Now().Add(8 * 24 * time.Hour).Format(time.RFC3339)
	code, rep, _ = edx(t, "verify", "--trust", roots, "--crl", filepath.Join(pk, "crl.pem"), "--at", later, out)
	if code != 1 || !strings.Contains(rep, "signature.crl_stale") || strings.Contains(rep, "signature.revoked") {
		t.Errorf("stale CRL: exit %d\n%s", code, rep)
	}
	// The hub's certificate is replaced, with the hub signer profile.
	if out := must(t, "pki", "rotate-hub", "--dir", pk, "--days", "30"); !strings.Contains(out, "new hub certificate") ||
		!strings.Contains(out, pki.OIDExtKeyUsageHubSigner.String()) || strings.Contains(out, "retires") {
		t.Errorf("rotate-hub:\n%s", out)
	}
	if hub, err := pki.LoadSigner(filepath.Join(pk, "hub.key.pem"), filepath.Join(pk, "hub.cert.pem")); err != nil || !pki.IsHubReceiptSigner(hub.Cert()) {
		t.Errorf("rotated hub certificate without the hub signer profile (%v)", err)
	}

	// Revoked: exit 1 with the reason code.
	must(t, "pki", "revoke", "--dir", pk, "--cert", filepath.Join(pk, "units", "000.01.00.H29.cert.pem"))
	code, rep, _ = edx(t, "verify", "--trust", roots, "--crl", filepath.Join(pk, "crl.pem"), out)
	if code != 1 || !strings.Contains(rep, "signature.revoked") {
		t.Errorf("revoked: exit %d\n%s", code, rep)
	}
	// Not a container: exit 1, malformed.
	code, rep, _ = edx(t, "verify", "--trust", roots, meta)
	if code != 1 || !strings.Contains(rep, "container.malformed") {
		t.Errorf("not a container: exit %d\n%s", code, rep)
	}
	// Usage and I/O errors: exit 2.
	for _, args := range [][]string{
		{"verify", out},
		{"verify", "--trust", filepath.Join(dir, "missing.pem"), out},
		{"verify", "--trust", roots, filepath.Join(dir, "missing.asice")},
		{"nonsense"},
		{"pki", "issue", "--dir", pk, "--unit", "bad", "--name", "x"},
		{"pack", "--meta", meta},
	} {
		if code, _, _ := edx(t, args...); code != 2 {
			t.Errorf("edx %v: exit %d, want 2", args, code)
		}
	}
	if code, _, errs := edx(t, "verify", "-h"); code != 0 || !strings.Contains(errs, "--trust") {
		t.Errorf("verify -h: exit %d\n%s", code, errs)
	}
}

// TestVerifyAtAccepted: offline, --at accepted checks the signer's chain at
// the acceptance time in the hub's receipt: a certificate revoked since then
// was valid when the hub accepted the document. Without a receipt, or with
// one that does not verify, it says so (never a time parse error).
func TestVerifyAtAccepted(t *testing.T) {
	dir := t.TempDir()
	pk := filepath.Join(dir, "pki")
	must(t, "pki", "init", "--dir", pk)
	must(t, "pki", "issue", "--dir", pk, "--unit", "000.01.00.H29", "--name", "Sở Tư pháp")
	meta := filepath.Join(dir, "doc.json")
	os.WriteFile(meta, []byte(must(t, "template", "--from", "000.01.00.H29")), 0o644)
	pdf := filepath.Join(dir, "a.pdf")
	os.WriteFile(pdf, []byte("%PDF-1.7 ..."), 0o644)
	out := filepath.Join(dir, "out.asice")
	cert := filepath.Join(pk, "units", "000.01.00.H29.cert.pem")
	must(t, "pack", "--meta", meta, "--key", filepath.Join(pk, "units", "000.01.00.H29.key.pem"), "--cert", cert, "-o", out, pdf)

	// The hub's receipt, accepted ten minutes ago.
	data, _ := os.ReadFile(out)
	c, rep := container.VerifyBytes(data, container.DefaultLimits, container.Options{})
	if c == nil {
		t.Fatal(rep.Reasons)
	}
	hub, err := pki.LoadSigner(filepath.Join(pk, "hub.key.pem"), filepath.Join(pk, "hub.cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	acceptedAt := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)
	rb, err := container.SignReceipt(&container.Receipt{DocumentID: c.Meta.ID, From: c.Meta.From, To: c.Meta.To,
		ContainerSHA256: rep.ContainerSHA256, ContainerSize: int64(len(data)), ArchiveKey: "x/container.asice", AcceptedAt: acceptedAt}, hub)
	if err != nil {
		t.Fatal(err)
	}
	receipt := filepath.Join(dir, "r.p7s")
	os.WriteFile(receipt, rb, 0o644)

	// Revoked now.
	must(t, "pki", "revoke", "--dir", pk, "--cert", cert)
	roots, crl := filepath.Join(pk, "roots.pem"), filepath.Join(pk, "crl.pem")
	if code, rep, _ := edx(t, "verify", "--trust", roots, "--crl", crl, "--receipt", receipt, out); code != 1 || !strings.Contains(rep, "signature.revoked") {
		t.Fatalf("at now: exit %d\n%s", code, rep)
	}
	code, report, errs := edx(t, "verify", "--trust", roots, "--crl", crl, "--receipt", receipt, "--at", "accepted", out)
	if code != 0 || !strings.Contains(report, "result      VALID") || !strings.Contains(report, "checked at  "+showTime(acceptedAt)) {
		t.Fatalf("at accepted: exit %d\n%s%s", code, report, errs)
	}

	// No receipt: a usage error that says what is missing.
	code, _, errs = edx(t, "verify", "--trust", roots, "--at", "accepted", out)
	if code != exitUsage || !strings.Contains(errs, "--at accepted needs --receipt") || strings.Contains(errs, "parsing time") {
		t.Fatalf("without a receipt: exit %d\n%s", code, errs)
	}
	// A receipt for another container: its time is not used.
	other := filepath.Join(dir, "other.asice")
	must(t, "pack", "--meta", meta, "--key", filepath.Join(pk, "units", "000.01.00.H29.key.pem"), "--cert", cert, "-o", other, pdf)
	code, _, errs = edx(t, "verify", "--trust", roots, "--receipt", receipt, "--at", "accepted", other)
	if code != exitInvalid || !strings.Contains(errs, "does not verify") || !strings.Contains(errs, "receipt.invalid") {
		t.Fatalf("with another container's receipt: exit %d\n%s", code, errs)
	}
	// A time that is not one: the accepted forms are named.
	code, _, errs = edx(t, "verify", "--trust", roots, "--at", "yesterday", out)
	if code != exitUsage || !strings.Contains(errs, "want now, accepted") {
		t.Fatalf("bad --at: exit %d\n%s", code, errs)
	}
}

// TestPackFillsMissingID: a document.json without an id (or a sender) is
// signed with a new id, printed, and the certificate's unit.
func TestPackFillsMissingID(t *testing.T) {
	dir := t.TempDir()
	pk := filepath.Join(dir, "pki")
	must(t, "pki", "init", "--dir", pk)
	must(t, "pki", "issue", "--dir", pk, "--unit", "000.01.00.H29", "--name", "Sở Tư pháp")
	var d map[string]any
	json.Unmarshal([]byte(must(t, "template", "--from", "000.01.00.H29")), &d)
	delete(d, "id")
	delete(d, "from")
	b, _ := json.Marshal(d)
	meta := filepath.Join(dir, "doc.json")
	os.WriteFile(meta, b, 0o644)
	pdf := filepath.Join(dir, "a.pdf")
	os.WriteFile(pdf, []byte("%PDF-1.7 ..."), 0o644)
	out := filepath.Join(dir, "out.asice")
	got := must(t, "pack", "--meta", meta, "--key", filepath.Join(pk, "units", "000.01.00.H29.key.pem"),
		"--cert", filepath.Join(pk, "units", "000.01.00.H29.cert.pem"), "-o", out, pdf)
	data, _ := os.ReadFile(out)
	c, rep := container.VerifyBytes(data, container.DefaultLimits, container.Options{})
	if c == nil || c.Meta.ID == "" || c.Meta.From != "000.01.00.H29" || !strings.Contains(got, "document id "+string(c.Meta.ID)+" (filled in") {
		t.Fatalf("%s\n%v", got, rep.Reasons)
	}
}

// TestCPUProfile: EDX_CPUPROFILE's profile is written, in pprof's format
// (gzip), when the command ends.
func TestCPUProfile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "cpu.prof")
	stop, err := startCPUProfile(f)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	b, err := os.ReadFile(f)
	if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("profile %x: %v", b[:min(len(b), 4)], err)
	}
	if _, err := startCPUProfile(filepath.Join(t.TempDir(), "no", "such", "dir", "cpu.prof")); err == nil {
		t.Fatal("a profile file that cannot be made: no error")
	}
}
