package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
)

// TestSignedDelivery: the real hub, edx and two agents. B's agent signs
// its 01 (delivered) when the document arrives, and its 03 when its
// document system reports it; the sender's agent shows both signed and
// serves the signatures; edx statuses fetches them from the hub and checks
// them; and an auditor verifies B's signed 01 with openssl cms -verify
// alone, reading in it the digest of the very container A sent.
func TestSignedDelivery(t *testing.T) {
	work := t.TempDir()
	h := startHub(t, filepath.Join(work, "edx-data"))
	for _, u := range []document.UnitID{uA, uB} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(u), "--name", "Đơn vị "+string(u))
	}
	a := newAgent(t, work, h.info.NATSURL, uA).start()
	b := newAgent(t, work, h.info.NATSURL, uB).start()

	code, id, body := a.post(uB)
	if code != 202 {
		t.Fatalf("post: %d %s", code, body)
	}
	eventually(t, "B's 01 at A", 60*time.Second, func() bool { return hasStatus(a.document(id), uB, "01") }, a, b)
	if code, body := b.do("POST", "/v1/inbox/"+string(id)+"/status", "application/json", []byte(`{"code":"03","description":"Vào sổ số 125"}`)); code != 202 {
		t.Fatalf("status 03: %d %s", code, body)
	}
	eventually(t, "B's 03 at A", 30*time.Second, func() bool { return hasStatus(a.document(id), uB, "03") }, a, b)

	// The sender's agent: both signed, the signatures good, served.
	var one *spool.Status
	for _, st := range a.document(id).History {
		if !st.Signed || st.SignatureProblems != "" {
			t.Fatalf("at A: %+v", st)
		}
		if st.Code == document.StatusDelivered {
			one = &st
		}
	}
	code, fromAgent := a.do("GET", fmt.Sprintf("/v1/documents/%s/statuses/%d/signature", id, one.Seq), "", nil)
	if code != 200 {
		t.Fatalf("A's agent: the signature of B's 01: %d %s", code, fromAgent)
	}
	// B's inbox says what it signed.
	for _, st := range b.inbox()[0].Statuses {
		if !st.Signed || st.ContainerSHA256 == "" {
			t.Fatalf("at B: %+v", st)
		}
	}

	// The hub: edx statuses fetches and checks every signature.
	out := filepath.Join(work, "statuses")
	got := edx(t, work, 0, "statuses", string(id), "-o", out, "--data", h.data)
	if strings.Count(got, "valid") != 2 || strings.Contains(got, "INVALID") || strings.Contains(got, "unsigned") {
		t.Fatalf("edx statuses:\n%s", got)
	}
	files, _ := filepath.Glob(filepath.Join(out, string(id)+".status-"+string(uB)+"-01-*.p7s"))
	if len(files) != 1 {
		t.Fatalf("files %v", files)
	}
	fromHub, _ := os.ReadFile(files[0])
	if !bytes.Equal(fromHub, fromAgent) {
		t.Fatal("the hub and the sender's agent hold different signatures of B's 01")
	}

	// The auditor: the container as A sent it (edx get), B's signed 01,
	// the city's roots, and OpenSSL.
	edx(t, work, 0, "get", string(id), "-o", filepath.Join(work, "got"), "--data", h.data)
	c, err := os.ReadFile(filepath.Join(work, "got", string(id)+".asice"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "status-01.p7s"), fromHub, 0o644)
	cmd := exec.Command("openssl", "cms", "-verify", "-in", "status-01.p7s", "-inform", "DER", "-CAfile", h.info.TrustRoots, "-purpose", "any", "-out", "statement.json")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Verification successful") {
		t.Fatalf("openssl cms -verify: %v\n%s", err, out)
	}
	var stmt container.StatusStatement
	b2, _ := os.ReadFile(filepath.Join(dir, "statement.json"))
	if err := json.Unmarshal(b2, &stmt); err != nil {
		t.Fatal(err)
	}
	if stmt.Type != container.TypeStatus || stmt.DocumentID != id || stmt.Unit != uB || stmt.Code != document.StatusDelivered ||
		stmt.ContainerSHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("the signed statement %+v; the container's SHA-256 is %x", stmt, sum)
	}
	// And the signer is B's certificate: OpenSSL prints it.
	cmd = exec.Command("openssl", "cms", "-cmsout", "-print", "-in", "status-01.p7s", "-inform", "DER")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), string(uB)) {
		t.Fatalf("openssl cms -cmsout -print: %v (unit %s not named)", err, uB)
	}

	// The README's recipe, as written.
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(readme), "\n<!-- status-recipe")
	_, rest, _ = strings.Cut(rest, "```sh\n")
	recipe, _, _ := strings.Cut(rest, "```")
	roots, _ := os.ReadFile(h.info.TrustRoots)
	os.WriteFile(filepath.Join(dir, "roots.pem"), roots, 0o644)
	os.WriteFile(filepath.Join(dir, "ID.status-"+string(uB)+"-01-1.p7s"), fromHub, 0o644)
	cmd = exec.Command("sh", "-e", "-c", recipe)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || recipe == "" || !strings.Contains(string(out), "Verification successful") ||
		!strings.Contains(string(out), `"container_sha256":"`+hex.EncodeToString(sum[:])) {
		t.Fatalf("the README's recipe: %v\n%s", err, out)
	}
}
