package main

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/hub/service/servicetest"
)

// TestHubCommands: edx user, search, get and verify ID against the hub's
// API on real records, with the admin token and with users' tokens.
func TestHubCommands(t *testing.T) {
	f := servicetest.New(t)
	srv := httptest.NewServer(api.Handler(api.Deps{Service: f.Service, Auth: f.Auth, AdminToken: f.AdminToken, Log: f.Log}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	adminFile := filepath.Join(dir, "admin.token")
	os.WriteFile(adminFile, []byte(f.AdminToken+"\n"), 0o600)
	hub := []string{"--hub", srv.URL, "--token-file", adminFile}

	// Accounts, as an operator with the admin token.
	out := must(t, append([]string{"user", "add", "--role", "staff", "--unit", string(servicetest.UnitA), "--display-name", "Văn thư Sở Nội vụ", "--token", "cli", "van-thu-a"}, hub...)...)
	m := regexp.MustCompile(`token \w+: (edx_\S+)`).FindStringSubmatch(out)
	if !strings.Contains(out, "user van-thu-a created: staff of unit 000.01.00.H29") || !strings.Contains(out, "password: ") || m == nil {
		t.Fatalf("user add:\n%s", out)
	}
	staffFile := filepath.Join(dir, "staff.token")
	os.WriteFile(staffFile, []byte(m[1]), 0o600)
	staff := []string{"--hub", srv.URL, "--token-file", staffFile}
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("một mật khẩu đủ dài\n"), 0o600)
	must(t, append([]string{"user", "add", "--role", "auditor", "--password-file", pw, "kiem-toan"}, hub...)...)
	out = must(t, append([]string{"user", "token", "kiem-toan", "--name", "audit", "--ttl", "24h"}, hub...)...)
	m = regexp.MustCompile(`: (edx_\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("user token:\n%s", out)
	}
	auditorFile := filepath.Join(dir, "auditor.token")
	os.WriteFile(auditorFile, []byte(m[1]), 0o600)
	auditor := []string{"--hub", srv.URL, "--token-file", auditorFile}
	if _, err := f.Auth.Authenticate(t.Context(), "kiem-toan", "một mật khẩu đủ dài"); err != nil {
		t.Fatalf("password from file: %v", err)
	}
	if code, _, errs := edx(t, append([]string{"user", "add", "--role", "staff", "nobody"}, hub...)...); code != exitUsage || !strings.Contains(errs, "unit") {
		t.Fatalf("staff without unit: %d %s", code, errs)
	}
	if code, _, errs := edx(t, append([]string{"user", "list"}, staff...)...); code != exitUsage || !strings.Contains(errs, "403") {
		t.Fatalf("staff lists users: %d %s", code, errs)
	}
	out = must(t, append([]string{"user", "list"}, hub...)...)
	if !strings.Contains(out, "van-thu-a") || !strings.Contains(out, "kiem-toan") {
		t.Fatalf("user list:\n%s", out)
	}

	// Search: folding, the staff's unit only, filters, JSON and --all.
	out = must(t, append([]string{"search", "quyet", "dinh"}, staff...)...)
	if !strings.Contains(out, "Quyết định phê duyệt kế hoạch sử dụng đất đai") || strings.Contains(out, "Ban chỉ đạo") || !strings.Contains(out, "1 of 1 documents") {
		t.Fatalf("staff search:\n%s", out)
	}
	// EDX_TOKEN beats the admin token of a local hub's data directory.
	data := filepath.Join(dir, "edx-data")
	os.MkdirAll(data, 0o755)
	os.WriteFile(filepath.Join(data, "hub.json"), []byte(`{"http": "`+srv.URL+`", "admin_token_file": "`+adminFile+`"}`), 0o644)
	t.Setenv("EDX_TOKEN", strings.TrimSpace(readFile(t, staffFile)))
	if out := must(t, "search", "--data", data, "quyet", "dinh"); !strings.Contains(out, "1 of 1 documents") {
		t.Fatalf("EDX_TOKEN with --data:\n%s", out)
	}
	os.Unsetenv("EDX_TOKEN")
	if out := must(t, "search", "--data", data, "quyet", "dinh"); !strings.Contains(out, "2 of 2 documents") {
		t.Fatalf("admin token from --data:\n%s", out)
	}
	out = must(t, append([]string{"search", "quyet", "dinh"}, auditor...)...)
	if !strings.Contains(out, "Ban chỉ đạo") || !strings.Contains(out, "2 of 2 documents") {
		t.Fatalf("auditor search:\n%s", out)
	}
	out = must(t, append([]string{"search", "--from", string(servicetest.UnitB), "--limit", "10", "--json", "--all", "thong", "bao"}, auditor...)...)
	var p index.Page
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.Total != 25 || len(p.Items) != 25 || p.NextCursor != "" {
		t.Fatalf("search --all --json: %v %d %d", err, p.Total, len(p.Items))
	}
	out = must(t, append([]string{"search", "--limit", "10", "thong", "bao"}, auditor...)...)
	if !strings.Contains(out, "10 of 25 documents") || !strings.Contains(out, "next page: --cursor ") {
		t.Fatalf("first page:\n%s", out)
	}
	out = must(t, append([]string{"search", "--since", "2026-02-10", "--until", "2026-02-28", "dat", "dai"}, auditor...)...)
	if !strings.Contains(out, "1 of 1 documents") || !strings.Contains(out, "102/CV-UBND") {
		t.Fatalf("date range:\n%s", out)
	}
	// Times: one convention, the display zone with its offset.
	if !strings.Contains(out, "2026-02-10 10:00:00 +07:00") {
		t.Fatalf("accepted time not in the display convention:\n%s", out)
	}
	t.Setenv("EDX_TIME_ZONE", "UTC")
	if out := must(t, append([]string{"search", "--since", "2026-02-10", "--until", "2026-02-28", "dat", "dai"}, auditor...)...); !strings.Contains(out, "2026-02-10 03:00:00 +00:00") {
		t.Fatalf("EDX_TIME_ZONE=UTC:\n%s", out)
	}
	t.Setenv("EDX_TIME_ZONE", "Mars/Olympus_Mons")
	if code, _, errs := edx(t, append([]string{"search", "dat"}, auditor...)...); code != exitUsage || !strings.Contains(errs, "EDX_TIME_ZONE") {
		t.Fatalf("a bad EDX_TIME_ZONE: %d %s", code, errs)
	}
	os.Unsetenv("EDX_TIME_ZONE")
	if out := must(t, append([]string{"user", "list"}, hub...)...); !regexp.MustCompile(`kiem-toan .* \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+07:00`).MatchString(out) {
		t.Fatalf("user list's last sign-in:\n%s", out)
	}
	if code, _, errs := edx(t, append([]string{"search", "--status", "99"}, auditor...)...); code != exitUsage || !strings.Contains(errs, "400") {
		t.Fatalf("bad status: %d %s", code, errs)
	}

	// verify ID: the hub re-verifies; an auditor may, staff of A may not see B → C.
	bc := string(f.Docs["qd-bc"])
	out = must(t, append([]string{"verify", bc}, auditor...)...)
	if !regexp.MustCompile(`re-verified by the hub at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+07:00\)`).MatchString(out) ||
		!regexp.MustCompile(`checked at  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+07:00\n`).MatchString(out) {
		t.Fatalf("verify ID's times:\n%s", out)
	}
	if !strings.Contains(out, "result      VALID") || !strings.Contains(out, "matches the container accepted") ||
		!strings.Contains(out, "organizationIdentifier=000.02.00.H29") || !regexp.MustCompile(`receipt\s+accepted`).MatchString(out) {
		t.Fatalf("verify ID:\n%s", out)
	}
	code, js, _ := edx(t, append([]string{"verify", "--json", bc}, auditor...)...)
	var v service.Verification
	if code != 0 || json.Unmarshal([]byte(js), &v) != nil || !v.Valid || !v.Archive.Matches {
		t.Fatalf("verify ID --json: %d\n%s", code, js)
	}
	// As of acceptance the corpus predates the test CA's certificates: exit 1.
	if code, out, _ := edx(t, append([]string{"verify", bc, "--at", "accepted"}, auditor...)...); code != exitInvalid || !strings.Contains(out, "signature.expired") {
		t.Fatalf("verify ID --at accepted: %d\n%s", code, out)
	}
	if code, _, errs := edx(t, append([]string{"verify", bc}, staff...)...); code != exitUsage || !strings.Contains(errs, "404") {
		t.Fatalf("staff A verifies B → C: %d %s", code, errs)
	}
	if code, _, errs := edx(t, append([]string{"verify", "--trust", "roots.pem", bc}, auditor...)...); code != exitUsage || !strings.Contains(errs, "verify a file") {
		t.Fatalf("verify ID with --trust: %d %s", code, errs)
	}
	// edx get: the staff's own documents, not B → C.
	got := filepath.Join(dir, "got")
	qd := string(f.Docs["qd-dat-dai"])
	must(t, append([]string{"get", qd, "-o", got}, staff...)...)
	if code, _, errs := edx(t, append([]string{"get", bc, "-o", got}, staff...)...); code != exitUsage || !strings.Contains(errs, "404") {
		t.Fatalf("staff A gets B → C: %d %s", code, errs)
	}
	// The file it fetched verifies offline, unchanged path of edx verify FILE.
	out = must(t, "verify", "--trust", f.CA.RootsPath(), "--receipt", filepath.Join(got, qd+".receipt.p7s"), filepath.Join(got, qd+".asice"))
	if !strings.Contains(out, "result      VALID") {
		t.Fatalf("offline verify:\n%s", out)
	}
	// A file named like an id is a file.
	os.WriteFile(filepath.Join(dir, bc), []byte("not a container"), 0o644)
	t.Chdir(dir)
	code, out, _ = edx(t, "verify", "--trust", f.CA.RootsPath(), bc)
	if code != exitInvalid || !strings.Contains(out, "container.malformed") {
		t.Fatalf("a file named like an id: %d\n%s", code, out)
	}
	// Disable and enable: the token ended for good; a new one works.
	must(t, append([]string{"user", "disable", "van-thu-a"}, hub...)...)
	if code, _, errs := edx(t, append([]string{"search", "x"}, staff...)...); code != exitUsage || !strings.Contains(errs, "401") {
		t.Fatalf("disabled: %d %s", code, errs)
	}
	must(t, append([]string{"user", "enable", "van-thu-a"}, hub...)...)
	if code, _, errs := edx(t, append([]string{"search", "x"}, staff...)...); code != exitUsage || !strings.Contains(errs, "401") {
		t.Fatalf("enabled again, the old token: %d %s", code, errs)
	}
	out = must(t, append([]string{"user", "token", "van-thu-a", "--name", "again"}, hub...)...)
	m = regexp.MustCompile(`: (edx_\S+)\n\(expires \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+07:00;`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("user token:\n%s", out)
	}
	os.WriteFile(staffFile, []byte(m[1]), 0o600)
	must(t, append([]string{"search", "x"}, staff...)...)
	// An admin's reset ends the account's tokens.
	out = must(t, append([]string{"user", "passwd", "van-thu-a"}, hub...)...)
	if !strings.Contains(out, "password: ") || !strings.Contains(out, "API tokens ended") {
		t.Fatalf("passwd:\n%s", out)
	}
	if code, _, errs := edx(t, append([]string{"search", "x"}, staff...)...); code != exitUsage || !strings.Contains(errs, "401") {
		t.Fatalf("after a reset, the token: %d %s", code, errs)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
