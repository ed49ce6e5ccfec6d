package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/pki"
)

// TestRevocationCommandLine: the unit lifecycle with the real binaries.
// edx unit list shows each unit's state and certificate; a certificate
// revoked with edx pki revoke while the hub runs is refused within seconds
// (edx verify ID says revoked, the unit list says revoked, the unit's NATS
// credentials no longer connect); edx unit rotate --cert gives the unit a new
// certificate and credentials, and a document signed with the revoked one is
// rejected signature.revoked; edx unit disable refuses documents to the unit
// (recipient.disabled) and edx unit enable lets them through again.
func TestRevocationCommandLine(t *testing.T) {
	work := t.TempDir()
	h := startHub(t, filepath.Join(work, "edx-data"))
	a, b := "000.01.00.H29", "000.02.00.H29"
	for _, u := range []string{a, b} {
		if out := edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", u, "--name", "Đơn vị "+u); !strings.Contains(out, "NATS credentials expire") {
			t.Fatalf("unit add: %s", out)
		}
	}
	ua := filepath.Join(work, "units", a)
	certA, err := pki.LoadSigner(filepath.Join(ua, "key.pem"), filepath.Join(ua, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	serial := certA.Cert().SerialNumber.Text(16)
	list := edx(t, work, 0, "unit", "list", "--data", h.data)
	if !regexp.MustCompile(a + `.*active\s+` + serial + `\s+` + certA.Cert().NotAfter.UTC().Format(time.DateOnly)).MatchString(list) {
		t.Fatalf("unit list before revocation:\n%s", list)
	}

	// Keep A's first key, certificate and credentials.
	old := filepath.Join(work, "old-a")
	os.MkdirAll(old, 0o700)
	for _, f := range []string{"key.pem", "cert.pem", "nats.creds"} {
		b, _ := os.ReadFile(filepath.Join(ua, f))
		os.WriteFile(filepath.Join(old, f), b, 0o600)
	}
	send := func(want int, dir, creds, meta string) string {
		t.Helper()
		return edx(t, work, want, "send", "--nats", h.info.NATSURL, "--creds", creds,
			"--key", filepath.Join(dir, "key.pem"), "--cert", filepath.Join(dir, "cert.pem"), "--meta", meta, "van-ban.pdf")
	}
	os.WriteFile(filepath.Join(work, "van-ban.pdf"), []byte("%PDF-1.7 văn bản"), 0o644)
	docTo := func(name string, to string) (string, string) {
		meta := edx(t, work, 0, "template", "--from", a)
		var d map[string]any
		json.Unmarshal([]byte(meta), &d)
		d["to"] = []string{to}
		bs, _ := json.MarshalIndent(d, "", "  ")
		os.WriteFile(filepath.Join(work, name), bs, 0o644)
		return name, d["id"].(string)
	}
	m1, id1 := docTo("d1.json", b)
	if out := send(0, ua, filepath.Join(ua, "nats.creds"), m1); !strings.Contains(out, "accepted at") {
		t.Fatalf("first document:\n%s", out)
	}

	// Revoked while the hub runs.
	edx(t, work, 0, "pki", "revoke", "--dir", filepath.Join(h.data, "pki"), "--cert", filepath.Join(ua, "cert.pem"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out := runEdx(t, work, "verify", id1, "--data", h.data)
		if code == 1 && strings.Contains(out, "signature.revoked") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edx verify ID after the revocation:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	list = edx(t, work, 0, "unit", "list", "--data", h.data)
	if !regexp.MustCompile(a+`.*revoked\s+`+serial).MatchString(list) || !regexp.MustCompile(b+`.*active`).MatchString(list) {
		t.Fatalf("unit list after revocation:\n%s", list)
	}
	m2, _ := docTo("d2.json", b)
	if code, out := sendCode(t, work, h, old, m2); code == 0 || strings.Contains(out, "accepted at") {
		t.Fatalf("the revoked unit's credentials still send:\n%s", out)
	}

	// A new certificate and credentials; the revoked certificate is refused.
	if out := edx(t, work, 0, "unit", "rotate", a, "--cert", "--data", h.data); !strings.Contains(out, "rotated") || !strings.Contains(out, "key.pem") {
		t.Fatalf("unit rotate --cert:\n%s", out)
	}
	if out := send(1, old, filepath.Join(ua, "nats.creds"), m2); !strings.Contains(out, "signature.revoked") {
		t.Fatalf("document signed with the revoked certificate:\n%s", out)
	}
	m3, _ := docTo("d3.json", b)
	if out := send(0, ua, filepath.Join(ua, "nats.creds"), m3); !strings.Contains(out, "accepted at") {
		t.Fatalf("document signed with the new certificate:\n%s", out)
	}

	// Disabled, then enabled.
	edx(t, work, 0, "unit", "disable", b, "--data", h.data)
	if list = edx(t, work, 0, "unit", "list", "--data", h.data); !regexp.MustCompile(b+`.*disabled`).MatchString(list) ||
		!regexp.MustCompile(a+`.*active`).MatchString(list) {
		t.Fatalf("unit list after disable:\n%s", list)
	}
	m4, _ := docTo("d4.json", b)
	if out := send(1, ua, filepath.Join(ua, "nats.creds"), m4); !strings.Contains(out, "recipient.disabled") {
		t.Fatalf("document to a disabled unit:\n%s", out)
	}
	if out := edx(t, work, 0, "unit", "enable", b, "--data", h.data); !strings.Contains(out, "enabled") {
		t.Fatalf("unit enable:\n%s", out)
	}
	m5, _ := docTo("d5.json", b)
	if out := send(0, ua, filepath.Join(ua, "nats.creds"), m5); !strings.Contains(out, "accepted at") {
		t.Fatalf("document to the enabled unit:\n%s", out)
	}
}

// sendCode runs edx send with the files in dir and returns its exit code
// and output, whatever they are.
func sendCode(t *testing.T, work string, h *hubProc, dir, meta string) (int, string) {
	t.Helper()
	return runEdx(t, work, "send", "--nats", h.info.NATSURL, "--creds", filepath.Join(dir, "nats.creds"), "--timeout", "10s",
		"--key", filepath.Join(dir, "key.pem"), "--cert", filepath.Join(dir, "cert.pem"), "--meta", meta, "van-ban.pdf")
}

// runEdx runs the command line and returns its exit code and output.
func runEdx(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "edx"), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("edx %s: %v", strings.Join(args, " "), err)
	}
	return 0, string(out)
}
