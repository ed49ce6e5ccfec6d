package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// TestHubCommandLine: the README's walk-through with the real binaries: an
// embedded hub, three units registered with edx unit add, a document sent
// from A to B and C with edx send, fetched back with edx get and verified
// offline with its receipt.
func TestHubCommandLine(t *testing.T) {
	work := t.TempDir()
	h := startHub(t, filepath.Join(work, "edx-data"))
	for _, u := range []string{"000.01.00.H29", "000.02.00.H29", "000.03.00.H29"} {
		out := edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", u, "--name", "Đơn vị "+u)
		if !strings.Contains(out, "registered") {
			t.Fatalf("unit add: %s", out)
		}
	}
	if out := edx(t, work, 0, "unit", "list", "--data", h.data); strings.Count(out, "active") != 3 {
		t.Fatalf("unit list:\n%s", out)
	}
	meta := edx(t, work, 0, "template", "--from", "000.01.00.H29")
	var d map[string]any
	if err := json.Unmarshal([]byte(meta), &d); err != nil {
		t.Fatal(err)
	}
	d["to"] = []string{"000.02.00.H29", "000.03.00.H29"}
	b, _ := json.MarshalIndent(d, "", "  ")
	os.WriteFile(filepath.Join(work, "doc.json"), b, 0o644)
	os.WriteFile(filepath.Join(work, "quyet-dinh.pdf"), []byte("%PDF-1.7 quyết định"), 0o644)
	ua := filepath.Join("units", "000.01.00.H29")
	out := edx(t, work, 0, "send", "--nats", h.info.NATSURL, "--creds", filepath.Join(ua, "nats.creds"),
		"--key", filepath.Join(ua, "key.pem"), "--cert", filepath.Join(ua, "cert.pem"), "--meta", "doc.json", "quyet-dinh.pdf")
	if !strings.Contains(out, "accepted at") {
		t.Fatalf("send:\n%s", out)
	}
	id := d["id"].(string)
	edx(t, work, 0, "get", id, "-o", "got", "--data", h.data)
	rep := edx(t, work, 0, "verify", "--trust", h.info.TrustRoots, "--receipt", filepath.Join("got", id+".receipt.p7s"), filepath.Join("got", id+".asice"))
	if !strings.Contains(rep, "result      VALID") || !regexp.MustCompile(`receipt\s+accepted`).MatchString(rep) {
		t.Fatalf("verify:\n%s", rep)
	}
	checkEvidence(t, h, work, id) // write-once archive, CRLs archived, the receipt recipe
	// The receipt edx send saved is the one the archive holds.
	saved, _ := os.ReadFile(filepath.Join(work, id+".receipt.p7s"))
	got, _ := os.ReadFile(filepath.Join(work, "got", id+".receipt.p7s"))
	if len(saved) == 0 || string(saved) != string(got) {
		t.Error("the receipt from edx send differs from the archived one")
	}
	// A document to an unknown unit is rejected with its reason; exit 1.
	d["id"] = strings.Replace(id, id[len(id)-4:], "ZZZZ", 1)
	d["to"] = []string{"000.09.00.H29"}
	b, _ = json.MarshalIndent(d, "", "  ")
	os.WriteFile(filepath.Join(work, "bad.json"), b, 0o644)
	out = edx(t, work, 1, "send", "--nats", h.info.NATSURL, "--creds", filepath.Join(ua, "nats.creds"),
		"--key", filepath.Join(ua, "key.pem"), "--cert", filepath.Join(ua, "cert.pem"), "--meta", "bad.json", "quyet-dinh.pdf")
	if !strings.Contains(out, "recipient.unknown") {
		t.Fatalf("send to an unknown unit:\n%s", out)
	}
	// B reports 01 and 03; the hub records them.
	ub := connectAs(t, work, h.info.NATSURL, "000.02.00.H29")
	for i, code := range []document.StatusCode{document.StatusDelivered, document.StatusAccepted} {
		m, _ := protocol.StatusMsg(&document.Status{DocumentID: document.ID(id), Unit: ub.id,
			Time: time.Now().UTC().Add(time.Duration(i) * time.Millisecond), Code: code, Description: "Văn thư"})
		if _, err := ub.js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	history := func() int {
		var det struct {
			History []json.RawMessage `json:"history"`
		}
		body, err := apiGet(h, "/api/v1/documents/"+id)
		if err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(body, &det)
		return len(det.History)
	}
	for deadline := time.Now().Add(20 * time.Second); history() != 2; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the statuses were not recorded")
		}
	}
	h.stop()
	// The index rebuilds from the archive alone: units, the document, its
	// statuses and the rejected submission.
	os.RemoveAll(filepath.Join(h.data, "index"))
	cmdOut := runHub(t, "reindex", "--data", h.data, "--s3", "127.0.0.1:0")
	if !strings.Contains(cmdOut, "3 units, 1 documents, 2 statuses, 1 rejected") {
		t.Fatalf("reindex:\n%s", cmdOut)
	}
	h = startHub(t, h.data)
	if n := history(); n != 2 {
		t.Fatalf("after reindex the document has %d statuses, want 2", n)
	}
}

// apiGet reads a hub API path with the admin token.
func apiGet(h *hubProc, path string) ([]byte, error) {
	tok, err := os.ReadFile(h.info.AdminTokenFile)
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequest("GET", h.info.HTTP+path, nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return io.ReadAll(resp.Body)
}
