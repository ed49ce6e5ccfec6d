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
)

// archiveHub is a real edx-hub with three units, a document between each
// pair sent with edx send, and accounts made with edx user add: records
// staff of A (with an API token and a password) and an auditor.
type archiveHub struct {
	*hubProc
	work       string
	docs       map[string]string // id by name: ab (A → B), bc (B → C), ca (C → A)
	staffToken string            // file holding staff A's API token
	auditToken string            // file holding the auditor's API token
	staffPass  string
}

const (
	e2eUnitA = "000.01.00.H29"
	e2eUnitB = "000.02.00.H29"
	e2eUnitC = "000.03.00.H29"
)

func newArchiveHub(t *testing.T) *archiveHub {
	t.Helper()
	work := t.TempDir()
	a := &archiveHub{hubProc: startHub(t, filepath.Join(work, "edx-data")), work: work, docs: map[string]string{}}
	names := map[string]string{e2eUnitA: "Sở Nội vụ", e2eUnitB: "Sở Tài nguyên và Môi trường", e2eUnitC: "Ủy ban nhân dân Quận 1"}
	for _, u := range []string{e2eUnitA, e2eUnitB, e2eUnitC} {
		edx(t, work, 0, "unit", "add", "--data", a.data, "--unit", u, "--name", names[u])
	}
	send := func(name, from, to, typ, number, subject, file string) {
		var d map[string]any
		if err := json.Unmarshal([]byte(edx(t, work, 0, "template", "--from", from)), &d); err != nil {
			t.Fatal(err)
		}
		d["to"], d["type"], d["type_name"], d["number"], d["notation"], d["subject"] = []string{to}, typ, "", number, typ+"-UBND", subject
		d["from_name"] = names[from]
		b, _ := json.MarshalIndent(d, "", "  ")
		meta := filepath.Join(work, name+".json")
		os.WriteFile(meta, b, 0o644)
		pdf := filepath.Join(work, file)
		os.WriteFile(pdf, minimalPDF(typ+" "+number+"/"+typ+"-UBND", name), 0o644)
		u := filepath.Join("units", from)
		out := edx(t, work, 0, "send", "--nats", a.info.NATSURL, "--creds", filepath.Join(u, "nats.creds"),
			"--key", filepath.Join(u, "key.pem"), "--cert", filepath.Join(u, "cert.pem"), "--meta", meta, pdf)
		if !strings.Contains(out, "accepted at") {
			t.Fatalf("send %s:\n%s", name, out)
		}
		a.docs[name] = d["id"].(string)
	}
	send("ab", e2eUnitA, e2eUnitB, "QĐ", "15", "Quyết định phê duyệt kế hoạch sử dụng đất đai năm 2027", "quyet-dinh.pdf")
	send("bc", e2eUnitB, e2eUnitC, "CV", "55", "Công văn về việc triển khai chuyển đổi số", "cong-van.pdf")
	send("ca", e2eUnitC, e2eUnitA, "BC", "7", "Báo cáo tình hình thực hiện nhiệm vụ quý IV", "bao-cao.pdf")

	a.staffPass = filepath.Join(work, "staff.password")
	os.WriteFile(a.staffPass, []byte("mật khẩu của văn thư\n"), 0o600)
	tok := regexp.MustCompile(`token \w+: (edx_\S+)`)
	out := edx(t, work, 0, "user", "add", "--data", a.data, "--role", "staff", "--unit", e2eUnitA, "--display-name", "Nguyễn Thị Lan",
		"--password-file", a.staffPass, "--token", "scripts", "van-thu-a")
	m := tok.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("user add:\n%s", out)
	}
	a.staffToken = filepath.Join(work, "staff.token")
	os.WriteFile(a.staffToken, []byte(m[1]+"\n"), 0o600)
	out = edx(t, work, 0, "user", "add", "--data", a.data, "--role", "auditor", "--token", "audit", "kiem-toan")
	if m = tok.FindStringSubmatch(out); m == nil {
		t.Fatalf("user add:\n%s", out)
	}
	a.auditToken = filepath.Join(work, "audit.token")
	os.WriteFile(a.auditToken, []byte(m[1]+"\n"), 0o600)
	return a
}

// minimalPDF is a one-page PDF showing two lines of ASCII text, so that a
// browser has something to render.
func minimalPDF(line1, line2 string) []byte {
	content := fmt.Sprintf("BT /F1 20 Tf 72 760 Td (%s) Tj 0 -30 Td (%s) Tj ET", line1, line2)
	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", len(content), content),
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
	}
	var b strings.Builder
	b.WriteString("%PDF-1.4\n")
	offsets := make([]int, len(objs))
	for i, o := range objs {
		offsets[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, xref)
	return []byte(b.String())
}

// get fetches an API path with the token in file tokenFile.
func (a *archiveHub) get(t *testing.T, tokenFile, path string) (*http.Response, []byte) {
	t.Helper()
	tok, _ := os.ReadFile(tokenFile)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", a.info.HTTP+path, nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestArchiveAPI: the records staff's and the auditor's command line and API
// on a real hub: documents sent through NATS, searched with Vietnamese
// folding, kept from other units, fetched and re-verified with tokens.
func TestArchiveAPI(t *testing.T) {
	a := newArchiveHub(t)
	staff := []string{"--data", a.data, "--token-file", a.staffToken}
	auditor := []string{"--data", a.data, "--token-file", a.auditToken}

	// The hub made a first admin and said where its password is.
	if pw, err := os.ReadFile(filepath.Join(a.data, "auth", "admin.password")); err != nil || len(strings.TrimSpace(string(pw))) < 20 {
		t.Fatalf("first admin password: %v", err)
	}
	if log, _ := os.ReadFile(filepath.Join(a.data, "hub.log")); !strings.Contains(string(log), "first admin account created") {
		t.Error("the hub did not say how to sign in")
	}

	// Folding: 'quyet dinh' finds 'Quyết định', 'dat dai' finds 'đất đai'.
	for _, q := range [][]string{{"quyet", "dinh"}, {"dat", "dai"}, {"ĐẤT", "ĐAI"}} {
		out := edx(t, a.work, 0, append(append([]string{"search"}, q...), staff...)...)
		if !strings.Contains(out, a.docs["ab"]) || !strings.Contains(out, "1 of 1 documents") {
			t.Errorf("search %v:\n%s", q, out)
		}
	}
	// Staff of A: A's two documents, never B → C.
	out := edx(t, a.work, 0, append([]string{"search"}, staff...)...)
	if !strings.Contains(out, "2 of 2 documents") || strings.Contains(out, a.docs["bc"]) {
		t.Fatalf("staff A, everything:\n%s", out)
	}
	for _, args := range [][]string{{"chuyen", "doi", "so"}, {"--from", e2eUnitB}, {"--to", e2eUnitC}, {"--unit", e2eUnitB}, {"--number", "55"}} {
		if out := edx(t, a.work, 0, append(append([]string{"search"}, args...), staff...)...); strings.Contains(out, a.docs["bc"]) || !strings.Contains(out, "0 of 0") {
			t.Errorf("staff A, %v:\n%s", args, out)
		}
	}
	bc := a.docs["bc"]
	for _, path := range []string{"", "/container", "/receipt", "/files/cong-van.pdf"} {
		if resp, b := a.get(t, a.staffToken, "/api/v1/documents/"+bc+path); resp.StatusCode != 404 {
			t.Errorf("staff A GET %s: %d %s", path, resp.StatusCode, b)
		}
	}
	if out := edx(t, a.work, 2, append([]string{"get", bc, "-o", "x"}, staff...)...); !strings.Contains(out, "404") {
		t.Errorf("staff A, edx get B → C:\n%s", out)
	}
	if out := edx(t, a.work, 2, append([]string{"verify", bc}, staff...)...); !strings.Contains(out, "404") {
		t.Errorf("staff A, edx verify B → C:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(a.work, "x", bc+".asice")); err == nil {
		t.Error("the container was written")
	}

	// The auditor sees B → C, re-verifies it on the hub, cannot download it.
	out = edx(t, a.work, 0, append([]string{"search", "chuyen", "doi", "so"}, auditor...)...)
	if !strings.Contains(out, bc) {
		t.Fatalf("auditor search:\n%s", out)
	}
	out = edx(t, a.work, 0, append([]string{"verify", bc}, auditor...)...)
	if !strings.Contains(out, "result      VALID") || !strings.Contains(out, "matches the container accepted") || !regexp.MustCompile(`receipt\s+accepted`).MatchString(out) {
		t.Fatalf("auditor edx verify ID:\n%s", out)
	}
	if out := edx(t, a.work, 2, append([]string{"get", bc, "-o", "y"}, auditor...)...); !strings.Contains(out, "403") {
		t.Errorf("auditor edx get:\n%s", out)
	}

	// Staff A fetches A → B with the token and verifies it offline.
	ab := a.docs["ab"]
	edx(t, a.work, 0, append([]string{"get", ab, "-o", "got"}, staff...)...)
	rep := edx(t, a.work, 0, "verify", "--trust", a.info.TrustRoots, "--receipt", filepath.Join("got", ab+".receipt.p7s"), filepath.Join("got", ab+".asice"))
	if !strings.Contains(rep, "result      VALID") {
		t.Fatalf("offline verify:\n%s", rep)
	}
	// The PDF, inline, with its name.
	resp, b := a.get(t, a.staffToken, "/api/v1/documents/"+ab+"/files/quyet-dinh.pdf")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pdf" ||
		resp.Header.Get("Content-Disposition") != "inline; filename=quyet-dinh.pdf" || !strings.HasPrefix(string(b), "%PDF-") {
		t.Fatalf("PDF: %d %v", resp.StatusCode, resp.Header)
	}
	// The detail. No agent runs here: B's copy is routed, not yet delivered.
	var d struct {
		Document   map[string]any   `json:"document"`
		Recipients []map[string]any `json:"recipients"`
		Signature  map[string]any   `json:"signature"`
	}
	resp, b = a.get(t, a.staffToken, "/api/v1/documents/"+ab)
	if resp.StatusCode != 200 || json.Unmarshal(b, &d) != nil || d.Document["subject"] != "Quyết định phê duyệt kế hoạch sử dụng đất đai năm 2027" ||
		len(d.Recipients) != 1 || d.Recipients[0]["state"] != "routed" || d.Signature["unit"] != e2eUnitA || d.Signature["unit_name"] != "Sở Nội vụ" {
		t.Fatalf("detail: %d %s", resp.StatusCode, b)
	}
	// Counters of A.
	var u struct {
		Counters map[string]int `json:"counters"`
	}
	resp, b = a.get(t, a.staffToken, "/api/v1/units/"+e2eUnitA)
	if resp.StatusCode != 200 || json.Unmarshal(b, &u) != nil || u.Counters["sent"] != 1 || u.Counters["received"] != 1 || u.Counters["pending"] != 1 {
		t.Fatalf("unit A: %d %s", resp.StatusCode, b)
	}
	if resp, _ := a.get(t, a.staffToken, "/api/v1/units/"+e2eUnitB); resp.StatusCode != 403 {
		t.Fatalf("staff A, unit B: %d", resp.StatusCode)
	}
	// The admin token still registers units and lists them (edx unit add/list).
	if out := edx(t, a.work, 0, "unit", "list", "--data", a.data); strings.Count(out, "active") != 3 {
		t.Fatalf("unit list:\n%s", out)
	}
	if out := edx(t, a.work, 0, "user", "list", "--data", a.data); !strings.Contains(out, "van-thu-a") || !strings.Contains(out, "admin") {
		t.Fatalf("user list:\n%s", out)
	}
}
