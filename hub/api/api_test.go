package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/hub/service/servicetest"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

const (
	unitA = servicetest.UnitA
	unitB = servicetest.UnitB
	unitC = servicetest.UnitC
)

// fixture serves the API over a fixture's records.
type fixture struct {
	*servicetest.Fixture
	t   *testing.T
	srv *httptest.Server
	// shorthands
	ix      *index.Index
	ca      *pki.CA
	trust   *pki.Trust
	signers map[document.UnitID]*pki.Signer
	auth    *auth.Store
	admin   string
	docs    map[string]document.ID
}

// newFixture serves a fixture's service through the API; edit changes the
// service's dependencies first.
func newFixture(t *testing.T, edit ...func(*service.Deps)) *fixture {
	a := servicetest.New(t)
	for _, e := range edit {
		a.Reconfigure(e)
	}
	f := &fixture{Fixture: a, t: t, ix: a.Index, ca: a.CA, trust: a.Trust, signers: a.Signers, auth: a.Auth, admin: a.AdminToken, docs: a.Docs}
	f.srv = httptest.NewServer(api.Handler(api.Deps{Service: a.Service, Auth: a.Auth, AdminToken: a.AdminToken, Log: a.Log}))
	t.Cleanup(f.srv.Close)
	return f
}

func day(month, d int) time.Time { return servicetest.Day(month, d) }

type docSpec = servicetest.DocSpec

func (f *fixture) accept(s docSpec) document.ID { return f.Accept(s) }

func (f *fixture) user(name string, role auth.Role, unit document.UnitID) string {
	return f.User(name, role, unit)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) do(token, method, path, ctype string, body []byte) (*http.Response, []byte) {
	f.t.Helper()
	req, err := http.NewRequestWithContext(f.t.Context(), method, f.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (f *fixture) get(token, path string) (*http.Response, []byte) {
	return f.do(token, "GET", path, "", nil)
}

// getJSON GETs path, checks the status and decodes the answer.
func (f *fixture) getJSON(token, path string, want int, v any) {
	f.t.Helper()
	resp, b := f.get(token, path)
	if resp.StatusCode != want {
		f.t.Fatalf("GET %s: %d, want %d: %s", path, resp.StatusCode, want, b)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			f.t.Fatalf("GET %s: %v: %s", path, err, b)
		}
	}
}

func (f *fixture) search(token string, params url.Values) index.Page {
	f.t.Helper()
	var p index.Page
	f.getJSON(token, "/api/v1/documents?"+params.Encode(), 200, &p)
	return p
}

func subjects(p index.Page) []string {
	var out []string
	for _, s := range p.Items {
		out = append(out, s.Subject)
	}
	return out
}

// TestSearch: Vietnamese folding, every filter, sort and pagination, as an
// archivist who sees everything.
func TestSearch(t *testing.T) {
	f := newFixture(t)
	tok := f.user("luu-tru", auth.RoleArchivist, "")
	tests := []struct {
		name   string
		params url.Values
		want   []string // document names, in order; nil: check total only
		total  int
	}{
		{"quyet dinh finds Quyết định", url.Values{"q": {"quyet dinh"}}, []string{"qd-bc", "qd-dat-dai"}, 2},
		{"dat dai finds đất đai", url.Values{"q": {"dat dai"}}, []string{"cv-dat-dai", "qd-dat-dai"}, 2},
		{"marks in the query too", url.Values{"q": {"ĐẤT ĐAI"}}, []string{"cv-dat-dai", "qd-dat-dai"}, 2},
		{"prefixes", url.Values{"q": {"quyet di"}}, []string{"qd-bc", "qd-dat-dai"}, 2},
		{"sender", url.Values{"from": {string(unitA)}}, []string{"cv-dat-dai", "qd-dat-dai"}, 2},
		{"recipient", url.Values{"to": {string(unitA)}}, []string{"bc-cchc"}, 1},
		{"unit, either side", url.Values{"unit": {string(unitA)}}, []string{"bc-cchc", "cv-dat-dai", "qd-dat-dai"}, 3},
		{"type", url.Values{"type": {"QĐ"}}, []string{"qd-bc", "qd-dat-dai"}, 2},
		{"number", url.Values{"number": {"102"}}, []string{"cv-dat-dai"}, 1},
		{"signer", url.Values{"signer": {"tran thi binh"}}, []string{"qd-bc"}, 1},
		{"status of a recipient", url.Values{"status": {"03"}}, []string{"qd-dat-dai"}, 1},
		{"finished", url.Values{"status": {"06"}}, []string{"bc-cchc"}, 1},
		{"date range (days included)", url.Values{"since": {"2026-02-10"}, "until": {"2026-03-05"}}, []string{"bc-cchc", "qd-bc", "cv-dat-dai"}, 3},
		{"RFC 3339 range", url.Values{"since": {"2026-02-01T00:00:00+07:00"}, "until": {"2026-02-20T10:00:00+07:00"}}, []string{"cv-dat-dai"}, 1},
		{"keyword + unit + range", url.Values{"q": {"dat dai"}, "unit": {string(unitA)}, "since": {"2026-02-01"}, "until": {"2026-02-28"}}, []string{"cv-dat-dai"}, 1},
		{"oldest first", url.Values{"unit": {string(unitA)}, "sort": {"accepted_asc"}}, []string{"qd-dat-dai", "cv-dat-dai", "bc-cchc"}, 3},
		{"everything", url.Values{}, nil, 29},
		{"nothing", url.Values{"q": {"khong co tu nay"}}, []string{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := f.search(tok, tt.params)
			if p.Total != tt.total {
				t.Errorf("total %d, want %d: %v", p.Total, tt.total, subjects(p))
			}
			if tt.want == nil {
				return
			}
			var got []string
			for _, s := range p.Items {
				name := "?"
				for n, id := range f.docs {
					if id == s.ID {
						name = n
					}
				}
				got = append(got, name)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("pagination", func(t *testing.T) {
		seen := map[document.ID]bool{}
		params := url.Values{"q": {"thong bao"}, "limit": {"10"}}
		var pages, last int
		var prev time.Time
		for {
			p := f.search(tok, params)
			if p.Total != 25 {
				t.Fatalf("total %d on page %d", p.Total, pages)
			}
			for _, s := range p.Items {
				if seen[s.ID] {
					t.Fatalf("%s twice", s.ID)
				}
				if !prev.IsZero() && !s.AcceptedAt.Before(prev) {
					t.Fatalf("not newest first: %v after %v", s.AcceptedAt, prev)
				}
				seen[s.ID], prev = true, s.AcceptedAt
			}
			pages++
			last = len(p.Items)
			if p.NextCursor == "" {
				break
			}
			params.Set("cursor", p.NextCursor)
		}
		if len(seen) != 25 || pages != 3 || last != 5 {
			t.Fatalf("%d documents in %d pages (last %d)", len(seen), pages, last)
		}
	})
	for _, bad := range []url.Values{
		{"from": {"H29"}}, {"status": {"99"}}, {"since": {"25/11/2026"}}, {"limit": {"-1"}}, {"sort": {"random"}}, {"cursor": {"!!"}},
	} {
		if resp, b := f.get(tok, "/api/v1/documents?"+bad.Encode()); resp.StatusCode != 400 {
			t.Errorf("%v: %d %s", bad, resp.StatusCode, b)
		}
	}
}

// TestAccess: records staff of unit A see only what A sent or received:
// never a document between B and C, in search, detail, downloads or
// verification; auditors see metadata and reports but not content.
func TestAccess(t *testing.T) {
	f := newFixture(t)
	staffA := f.user("van-thu-a", auth.RoleStaff, unitA)
	staffC := f.user("van-thu-c", auth.RoleStaff, unitC)
	auditor := f.user("kiem-toan", auth.RoleAuditor, "")
	secret := f.docs["qd-bc"] // B → C

	// Search: A's documents only, whatever the filters say.
	all := f.search(staffA, url.Values{"limit": {"100"}})
	if all.Total != 3 {
		t.Fatalf("staff A sees %d documents: %v", all.Total, subjects(all))
	}
	for _, s := range all.Items {
		if s.ID == secret {
			t.Fatal("staff A found the B → C document")
		}
	}
	for _, params := range []url.Values{
		{"q": {"quyet dinh"}}, {"from": {string(unitB)}}, {"to": {string(unitC)}}, {"unit": {string(unitB)}},
		{"number": {"201"}}, {"signer": {"binh"}}, {"q": {"chuyen doi so"}},
	} {
		p := f.search(staffA, params)
		for _, s := range p.Items {
			if s.ID == secret {
				t.Errorf("%v: staff A found the B → C document", params)
			}
		}
		if params.Get("unit") == string(unitB) && p.Total != 0 {
			t.Errorf("staff A searching unit B: %d", p.Total)
		}
	}
	if p := f.search(staffA, url.Values{"q": {"quyet dinh"}}); p.Total != 1 || p.Items[0].ID != f.docs["qd-dat-dai"] {
		t.Errorf("staff A, quyet dinh: %v", subjects(p))
	}
	// Detail, downloads, files and verification: 404, as if it did not exist.
	for _, p := range []string{"", "/container", "/receipt", "/files/quyết-định.pdf"} {
		if resp, b := f.get(staffA, "/api/v1/documents/"+string(secret)+p); resp.StatusCode != 404 {
			t.Errorf("staff A GET %s: %d %s", p, resp.StatusCode, b)
		}
		if resp, _ := f.get(staffC, "/api/v1/documents/"+string(secret)+p); resp.StatusCode != 200 {
			t.Errorf("staff C (the recipient) GET %s: %d", p, resp.StatusCode)
		}
	}
	if resp, _ := f.do(staffA, "POST", "/api/v1/documents/"+string(secret)+"/verify", "", nil); resp.StatusCode != 404 {
		t.Errorf("staff A verify: %d", resp.StatusCode)
	}
	// Unknown documents answer the same.
	if resp, _ := f.get(staffA, "/api/v1/documents/"+string(document.NewID(time.Now()))); resp.StatusCode != 404 {
		t.Error("unknown document")
	}
	// A's own documents are all there.
	for _, n := range []string{"qd-dat-dai", "cv-dat-dai", "bc-cchc"} {
		if resp, _ := f.get(staffA, "/api/v1/documents/"+string(f.docs[n])+"/container"); resp.StatusCode != 200 {
			t.Errorf("staff A, own %s: %d", n, resp.StatusCode)
		}
	}
	// Units: A's counters only.
	f.getJSON(staffA, "/api/v1/units/"+string(unitA), 200, nil)
	f.getJSON(staffA, "/api/v1/units/"+string(unitB), 403, nil)
	f.getJSON(staffA, "/api/v1/units/"+string(unitB)+"/overdue", 403, nil)
	var units []service.UnitView
	f.getJSON(staffA, "/api/v1/units?counters=true", 200, &units)
	for _, u := range units {
		if (u.Counters != nil) != (u.ID == unitA) {
			t.Errorf("staff A: counters of %s: %v", u.ID, u.Counters)
		}
	}
	// Auditors: every document's metadata, receipt and report; no content.
	f.getJSON(auditor, "/api/v1/documents/"+string(secret), 200, nil)
	f.getJSON(auditor, "/api/v1/documents/"+string(secret)+"/receipt", 200, nil)
	f.getJSON(auditor, "/api/v1/documents/"+string(secret)+"/container", 403, nil)
	f.getJSON(auditor, "/api/v1/documents/"+string(secret)+"/files/quyết-định.pdf", 403, nil)
	if resp, b := f.do(auditor, "POST", "/api/v1/documents/"+string(secret)+"/verify", "", nil); resp.StatusCode != 200 {
		t.Errorf("auditor verify: %d %s", resp.StatusCode, b)
	}
	if p := f.search(auditor, url.Values{}); p.Total != 29 {
		t.Errorf("auditor sees %d", p.Total)
	}
	// Administration is for admins.
	for _, tok := range []string{staffA, auditor} {
		f.getJSON(tok, "/api/v1/users", 403, nil)
		if resp, _ := f.do(tok, "POST", "/api/v1/units", "application/json", []byte(`{"id":"000.09.00.H29","name":"x"}`)); resp.StatusCode != 403 {
			t.Errorf("non-admin registers a unit: %d", resp.StatusCode)
		}
		if resp, _ := f.do(tok, "POST", "/api/v1/users", "application/json", []byte(`{"name":"evil","role":"admin"}`)); resp.StatusCode != 403 {
			t.Errorf("non-admin creates a user: %d", resp.StatusCode)
		}
	}
	// No credentials, wrong ones, a disabled account.
	for _, tok := range []string{"", "edx_wrong_token", "Basic x"} {
		resp, _ := f.get(tok, "/api/v1/documents")
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("token %q: %d", tok, resp.StatusCode)
		}
	}
	f.auth.UpdateUser(t.Context(), "van-thu-a", auth.Change{Disabled: new(true)})
	if resp, _ := f.get(staffA, "/api/v1/documents"); resp.StatusCode != 401 {
		t.Errorf("disabled account: %d", resp.StatusCode)
	}
}

// TestDetailAndDownloads: the detail's parts, and each download's bytes,
// content type and disposition.
func TestDetailAndDownloads(t *testing.T) {
	f := newFixture(t)
	tok := f.user("luu-tru", auth.RoleArchivist, "")
	id := f.docs["qd-dat-dai"]
	var d struct {
		Document   document.Document        `json:"document"`
		Files      []index.File             `json:"files"`
		Recipients []index.Recipient        `json:"recipients"`
		History    []index.StatusEntry      `json:"history"`
		Signature  service.SignatureSummary `json:"signature"`
		Signer     index.SignerInfo         `json:"signer"`
		SHA        string                   `json:"container_sha256"`
		Accepted   time.Time                `json:"accepted_at"`
	}
	f.getJSON(tok, "/api/v1/documents/"+string(id), 200, &d)
	if d.Document.Subject != "Quyết định phê duyệt kế hoạch sử dụng đất đai năm 2026" || d.Document.From != unitA {
		t.Fatalf("metadata: %+v", d.Document)
	}
	if len(d.Files) != 1 || d.Files[0].Name != "van-ban.pdf" || d.Files[0].MediaType != "application/pdf" {
		t.Errorf("files: %+v", d.Files)
	}
	if len(d.Recipients) != 1 || d.Recipients[0].State != index.StateDelivered || d.Recipients[0].LastCode != "03" {
		t.Errorf("recipients: %+v", d.Recipients)
	}
	if len(d.History) != 2 || d.History[1].Code != "03" || d.History[1].Officer == nil || d.History[1].Officer.Name != "Đỗ Văn Em" {
		t.Errorf("history: %+v", d.History)
	}
	s := d.Signature
	if s.Officer != "Nguyễn Văn An" || s.Unit != unitA || s.UnitName != "Sở Nội vụ" || s.CertSerial == "" || !s.VerifiedOnAcceptance ||
		!s.AcceptedAt.Equal(day(1, 15)) || s.SigningTime.IsZero() {
		t.Errorf("signature summary: %+v", s)
	}

	// Downloads.
	resp, b := f.get(tok, "/api/v1/documents/"+string(id)+"/container")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != api.MediaContainer ||
		resp.Header.Get("Content-Disposition") != `attachment; filename=`+string(id)+`.asice` {
		t.Fatalf("container: %d %v", resp.StatusCode, resp.Header)
	}
	if _, rep := container.VerifyBytes(b, container.DefaultLimits, container.Options{Trust: f.trust}); !rep.Valid || rep.ContainerSHA256 != d.SHA {
		t.Fatalf("downloaded container: %+v", rep)
	}
	resp, b = f.get(tok, "/api/v1/documents/"+string(id)+"/receipt")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != api.MediaReceipt || !strings.Contains(resp.Header.Get("Content-Disposition"), ".receipt.p7s") {
		t.Fatalf("receipt: %d %v", resp.StatusCode, resp.Header)
	}
	if rr := container.VerifyReceipt(b, d.SHA, container.Options{Trust: f.trust}); !rr.Valid {
		t.Fatalf("downloaded receipt: %v", rr.Reasons)
	}

	// Files of the B → C decision: a PDF inline, the rest as attachments.
	bc := string(f.docs["qd-bc"])
	for _, tc := range []struct {
		path, ctype, disp string
		body              string
		sandbox           bool
	}{
		{"/files/" + url.PathEscape("quyết-định.pdf"), "application/pdf", `inline; filename*=utf-8''quy%E1%BA%BFt-%C4%91%E1%BB%8Bnh.pdf`, "%PDF-1.7\nQuyết định\n%%EOF\n", false},
		{"/files/quy%E1%BA%BFt-%C4%91%E1%BB%8Bnh.pdf?inline=0", "application/pdf", `attachment; filename*=utf-8''quy%E1%BA%BFt-%C4%91%E1%BB%8Bnh.pdf`, "", true},
		{"/files/phu-luc.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", `attachment; filename=phu-luc.docx`, "PK\x03\x04 docx", true},
		{"/files/trang.html", "text/html", `attachment; filename=trang.html`, "<script>alert(1)</script>", true},
	} {
		resp, b := f.get(tok, "/api/v1/documents/"+bc+tc.path)
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", tc.path, resp.StatusCode, b)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
			t.Errorf("%s: content type %q", tc.path, ct)
		}
		if cd := resp.Header.Get("Content-Disposition"); cd != tc.disp {
			t.Errorf("%s: disposition %q, want %q", tc.path, cd, tc.disp)
		}
		if tc.body != "" && string(b) != tc.body {
			t.Errorf("%s: body %q", tc.path, b)
		}
		if sb := strings.Contains(resp.Header.Get("Content-Security-Policy"), "sandbox"); sb != tc.sandbox {
			t.Errorf("%s: sandbox %v", tc.path, sb)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: sniffable", tc.path)
		}
	}
	for _, p := range []string{"/files/nope.pdf", "/files/..%2Fdocument.json", "/files/document.json"} {
		if resp, _ := f.get(tok, "/api/v1/documents/"+bc+p); resp.StatusCode != 404 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
	if resp, _ := f.get(tok, "/api/v1/documents/not-an-id"); resp.StatusCode != 400 {
		t.Errorf("malformed id: %d", resp.StatusCode)
	}
}

type verification struct {
	Valid     bool                     `json:"valid"`
	Container *container.Report        `json:"container"`
	Receipt   *container.ReceiptReport `json:"receipt"`
	Archive   *service.ArchiveCheck    `json:"archive"`
}

// TestVerify: re-verification of archived containers now and as of
// acceptance, after a revocation, and of uploaded ones.
func TestVerify(t *testing.T) {
	f := newFixture(t)
	tok := f.user("kiem-toan", auth.RoleAuditor, "")
	id := string(f.docs["qd-bc"])
	verify := func(path string) verification {
		t.Helper()
		resp, b := f.do(tok, "POST", path, "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		var v verification
		must(t, json.Unmarshal(b, &v))
		return v
	}
	v := verify("/api/v1/documents/" + id + "/verify")
	if !v.Valid || !v.Container.Valid || !v.Receipt.Valid || !v.Archive.Matches || v.Container.SignerUnit != unitB ||
		len(v.Container.Signature.Chain) < 2 || len(v.Container.Files) != 4 {
		t.Fatalf("verify: %+v %+v %+v", v, v.Container, v.Archive)
	}
	// The corpus is dated before the test CA's certificates were issued:
	// checked as of acceptance, its chain is not yet valid.
	v = verify("/api/v1/documents/" + id + "/verify?at=accepted")
	if v.Valid || !v.Container.Reasons.Has("signature.expired") || !v.Container.Signature.CheckedAt.Equal(day(2, 20)) {
		t.Fatalf("as of acceptance, before the certificates: %+v %v", v, v.Container.Reasons)
	}
	// A document accepted ten minutes ago, then B's certificate revoked:
	// checked now it is invalid, checked as of its acceptance it is not.
	accepted := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	recent := string(f.accept(docSpec{Subject: "Kế hoạch kiểm tra công vụ", Type: "KH", Number: "9", Signer: "Ngô Văn Giang",
		From: unitB, To: []document.UnitID{unitC}, Accepted: accepted}))
	if v := verify("/api/v1/documents/" + recent + "/verify"); !v.Valid {
		t.Fatalf("recent: %v", v.Container.Reasons)
	}
	must(t, f.ca.Revoke(f.signers[unitB].Cert().SerialNumber, time.Now()))
	must(t, f.trust.LoadCRL(f.ca.CRLPath()))
	v = verify("/api/v1/documents/" + recent + "/verify")
	if v.Valid || !v.Container.Reasons.Has("signature.revoked") || !v.Receipt.Valid {
		t.Fatalf("after revocation: %+v %v", v, v.Container.Reasons)
	}
	v = verify("/api/v1/documents/" + recent + "/verify?at=accepted")
	if !v.Valid || !v.Container.Signature.CheckedAt.Equal(accepted) {
		t.Fatalf("as of acceptance: valid %v, checked at %v: %v", v.Valid, v.Container.Signature.CheckedAt, v.Container.Reasons)
	}
	if resp, _ := f.do(tok, "POST", "/api/v1/documents/"+id+"/verify?at=yesterday", "", nil); resp.StatusCode != 400 {
		t.Errorf("bad at: %d", resp.StatusCode)
	}

	// Uploads: the container with its receipt, alone, tampered with.
	arch := f.user("luu-tru", auth.RoleArchivist, "")
	qd := string(f.accept(docSpec{Subject: "Quyết định kiểm tra", Type: "QĐ", Number: "10", Signer: "Ngô Văn Giang",
		From: unitA, To: []document.UnitID{unitC}, Accepted: accepted}))
	_, data := f.get(arch, "/api/v1/documents/"+qd+"/container")
	_, receipt := f.get(arch, "/api/v1/documents/"+qd+"/receipt")
	upload := func(parts map[string][]byte, query string) (int, verification) {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		for name, b := range parts {
			w, _ := mw.CreateFormFile(name, name+".bin")
			w.Write(b)
		}
		mw.Close()
		resp, b := f.do(tok, "POST", "/api/v1/verify"+query, mw.FormDataContentType(), body.Bytes())
		var v verification
		if resp.StatusCode == 200 {
			must(t, json.Unmarshal(b, &v))
		}
		return resp.StatusCode, v
	}
	if code, v := upload(map[string][]byte{"container": data, "receipt": receipt}, ""); code != 200 || !v.Valid || v.Receipt == nil || !v.Receipt.Valid || v.Archive != nil {
		t.Fatalf("upload with receipt: %d %+v", code, v)
	}
	if code, v := upload(map[string][]byte{"container": data, "receipt": receipt}, "?at=accepted"); code != 200 || !v.Valid ||
		!v.Container.Signature.CheckedAt.Equal(accepted) {
		t.Fatalf("upload as of acceptance: %d %+v", code, v)
	}
	if code, v := upload(map[string][]byte{"container": data, "receipt": receipt[:len(receipt)-10]}, ""); code != 200 || v.Valid || v.Receipt.Valid {
		t.Fatalf("upload with a broken receipt: %d %+v", code, v)
	}
	if code, _ := upload(map[string][]byte{"receipt": receipt}, ""); code != 400 {
		t.Fatalf("upload without container: %d", code)
	}
	// The raw body form, and a container with one byte of a file changed
	// (the ZIP's own checksum or the manifest's digest catches it).
	resp, b := f.do(tok, "POST", "/api/v1/verify", api.MediaContainer, data)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"valid": true`) {
		t.Fatalf("raw upload: %d %s", resp.StatusCode, b)
	}
	bad := bytes.Replace(data, []byte("%PDF-1.7\nQuy"), []byte("%PDF-1.7\nXuy"), 1)
	if bytes.Equal(bad, data) {
		t.Fatal("the PDF is not stored uncompressed; cannot tamper with it")
	}
	if code, v := upload(map[string][]byte{"container": bad, "receipt": receipt}, ""); code != 200 || v.Valid ||
		!(v.Container.Reasons.Has("container.digest_mismatch") || v.Container.Reasons.Has("container.malformed")) || !v.Receipt.Reasons.Has("receipt.invalid") {
		t.Fatalf("tampered upload: %d %+v %+v", code, v.Container, v.Receipt)
	}
	if code, v := upload(map[string][]byte{"container": []byte("not a zip")}, ""); code != 200 || v.Valid || !v.Container.Reasons.Has("container.malformed") {
		t.Fatalf("garbage upload: %d %+v", code, v)
	}
}

// TestUnits: the unit list, counters, overdue and pending lists.
func TestUnits(t *testing.T) {
	f := newFixture(t)
	tok := f.user("van-thu-a", auth.RoleStaff, unitA)
	var u service.UnitView
	f.getJSON(tok, "/api/v1/units/"+string(unitA), 200, &u)
	want := index.Counters{Sent: 2, Received: 1, Pending: 1, Overdue: 1, Undelivered: 1}
	if u.Name != "Sở Nội vụ" || u.Counters == nil || *u.Counters != want {
		t.Fatalf("unit A: %+v %+v", u, u.Counters)
	}
	var list []index.Summary
	f.getJSON(tok, "/api/v1/units/"+string(unitA)+"/overdue", 200, &list)
	if len(list) != 1 || list[0].ID != f.docs["bc-cchc"] {
		t.Fatalf("overdue: %+v", list)
	}
	f.getJSON(tok, "/api/v1/units/"+string(unitA)+"/pending", 200, &list)
	if len(list) != 1 || list[0].ID != f.docs["bc-cchc"] {
		t.Fatalf("pending: %+v", list)
	}
	adm := f.user("quan-tri", auth.RoleAdmin, "")
	f.getJSON(adm, "/api/v1/units/"+string(unitB)+"/pending", 200, &list)
	if len(list) != 1 || list[0].ID != f.docs["qd-dat-dai"] { // B finished the report, not the decision
		t.Fatalf("B pending: %+v", list)
	}
	var all []service.UnitView
	f.getJSON(adm, "/api/v1/units?counters=true", 200, &all)
	if len(all) != 3 || all[2].Counters == nil || all[2].Counters.Received != 27 {
		t.Fatalf("units: %+v", all)
	}
	// The plain list (edx unit list) has no counters.
	var plain []service.UnitView
	f.getJSON(f.admin, "/api/v1/units", 200, &plain)
	if len(plain) != 3 || plain[0].Counters != nil {
		t.Fatalf("plain units: %+v", plain)
	}
	f.getJSON(tok, "/api/v1/units/000.09.00.H29", 404, nil)
	f.getJSON(tok, "/api/v1/units/H29", 400, nil)
}

// TestUsersAndTokens: accounts and tokens through the API, as the admin
// token (edx user add) and as users.
func TestUsersAndTokens(t *testing.T) {
	f := newFixture(t)
	post := func(tok, path string, body any, want int, out any) {
		t.Helper()
		b, _ := json.Marshal(body)
		resp, rb := f.do(tok, "POST", path, "application/json", b)
		if resp.StatusCode != want {
			t.Fatalf("POST %s: %d, want %d: %s", path, resp.StatusCode, want, rb)
		}
		if out != nil {
			must(t, json.Unmarshal(rb, out))
		}
	}
	var res service.NewUserResult
	post(f.admin, "/api/v1/users", map[string]any{"name": "van-thu-b", "display_name": "Văn thư Sở TN&MT", "role": "staff", "unit": unitB}, 201, &res)
	if res.Password == "" || res.User.Unit != unitB {
		t.Fatalf("created: %+v", res)
	}
	post(f.admin, "/api/v1/users", map[string]any{"name": "van-thu-b", "role": "auditor", "password": "long enough pw"}, 409, nil)
	post(f.admin, "/api/v1/users", map[string]any{"name": "x1", "role": "staff", "unit": "000.09.00.H29"}, 400, nil)
	post(f.admin, "/api/v1/users", map[string]any{"name": "x2", "role": "staff"}, 400, nil)
	post(f.admin, "/api/v1/users", map[string]any{"name": "x3", "role": "root"}, 400, nil)
	post(f.admin, "/api/v1/users", map[string]any{"name": "x4", "role": "auditor", "extra": 1}, 400, nil)
	// A token for that user, made by the admin; then the user's own.
	var tr service.NewTokenResult
	post(f.admin, "/api/v1/tokens", map[string]any{"name": "script", "user": "van-thu-b", "ttl": "720h"}, 201, &tr)
	if !strings.HasPrefix(tr.Secret, "edx_") || tr.Token.Expires.IsZero() {
		t.Fatalf("token: %+v", tr)
	}
	post(f.admin, "/api/v1/tokens", map[string]any{"name": "mine"}, 400, nil) // the admin token owns none
	var me auth.Identity
	f.getJSON(tr.Secret, "/api/v1/me", 200, &me)
	if me.User.Name != "van-thu-b" || me.Via != auth.ViaToken {
		t.Fatalf("me: %+v", me)
	}
	// A token makes no tokens (an admin makes the second).
	post(tr.Secret, "/api/v1/tokens", map[string]any{"name": "second"}, 403, nil)
	var tr2 service.NewTokenResult
	post(f.admin, "/api/v1/tokens", map[string]any{"name": "second", "user": "van-thu-b"}, 201, &tr2)
	post(tr.Secret, "/api/v1/tokens", map[string]any{"name": "for someone", "user": "admin"}, 403, nil)
	var ts []auth.Token
	f.getJSON(tr.Secret, "/api/v1/tokens", 200, &ts)
	if len(ts) != 2 {
		t.Fatalf("tokens: %+v", ts)
	}
	f.getJSON(tr.Secret, "/api/v1/tokens?user=admin", 403, nil)
	// Users change their own password, not their role.
	patch := func(tok, name string, body any) int {
		b, _ := json.Marshal(body)
		resp, _ := f.do(tok, "PATCH", "/api/v1/users/"+name, "application/json", b)
		return resp.StatusCode
	}
	if c := patch(tr.Secret, "van-thu-b", map[string]any{"role": "admin"}); c != 403 {
		t.Errorf("self promotion: %d", c)
	}
	if c := patch(tr.Secret, "van-thu-b", map[string]any{"display_name": "Văn thư"}); c != 200 {
		t.Errorf("own display name: %d", c)
	}
	if c := patch(tr.Secret, "van-thu-b", map[string]any{"password": "một mật khẩu mới"}); c != 403 {
		t.Errorf("own password with a token: %d", c)
	}
	if c := patch(tr.Secret, "admin", map[string]any{"password": "một mật khẩu mới"}); c != 404 {
		t.Errorf("someone else's password: %d", c)
	}
	if p := f.search(tr.Secret, url.Values{"from": {string(unitB)}}); p.Total != 26 {
		t.Errorf("staff of B, B's sent documents: %d", p.Total)
	}
	if c := patch(f.admin, "van-thu-b", map[string]any{"unit": string(unitA)}); c != 200 {
		t.Errorf("admin moves user: %d", c)
	}
	if p := f.search(tr.Secret, url.Values{"from": {string(unitB)}}); p.Total != 0 {
		t.Errorf("after moving to A, B's sent documents: %d", p.Total)
	}
	// Revocation.
	if resp, _ := f.do(tr.Secret, "DELETE", "/api/v1/tokens/"+tr2.Token.ID, "", nil); resp.StatusCode != 204 {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	f.getJSON(tr2.Secret, "/api/v1/me", 401, nil)
	var us []auth.User
	f.getJSON(f.admin, "/api/v1/users", 200, &us)
	if len(us) != 1 || us[0].Name != "van-thu-b" {
		t.Fatalf("users: %+v", us)
	}
}

// TestSessionCSRF: the web UI's session cookie works on the API, but an
// unsafe request with it needs the CSRF token.
func TestSessionCSRF(t *testing.T) {
	f := newFixture(t)
	if _, err := f.auth.AddUser(t.Context(), auth.NewUser{Name: "kiem-toan", Role: auth.RoleAuditor, Password: "mật khẩu dài đủ"}); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	if _, err := f.auth.SignIn(w, httptest.NewRequest("POST", "/login", nil), "kiem-toan", "mật khẩu dài đủ"); err != nil {
		t.Fatal(err)
	}
	cookie := w.Result().Cookies()[0]
	req := func(method, path string, csrf string) int {
		r, _ := http.NewRequest(method, f.srv.URL+path, nil)
		r.AddCookie(cookie)
		if csrf != "" {
			r.Header.Set("X-CSRF-Token", csrf)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	id := string(f.docs["qd-bc"])
	if c := req("GET", "/api/v1/documents/"+id, ""); c != 200 {
		t.Fatalf("GET with the cookie: %d", c)
	}
	if c := req("POST", "/api/v1/documents/"+id+"/verify", ""); c != 403 {
		t.Fatalf("POST without CSRF: %d", c)
	}
	if c := req("POST", "/api/v1/documents/"+id+"/verify", "forged"); c != 403 {
		t.Fatalf("POST with a forged CSRF token: %d", c)
	}
	// The right token is the one the UI puts in its forms.
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(cookie)
	var token string
	f.auth.Middleware("")(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { token = f.auth.CSRFToken(r) })).ServeHTTP(httptest.NewRecorder(), r)
	if c := req("POST", "/api/v1/documents/"+id+"/verify", token); c != 200 {
		t.Fatalf("POST with the CSRF token: %d", c)
	}
}

// TestOpenAPIMatchesRoutes holds openapi.yaml and the router together, in
// both directions.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var spec struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(api.OpenAPI, &spec); err != nil {
		t.Fatal(err)
	}
	var documented []string
	for p, ops := range spec.Paths {
		for m := range ops {
			if m == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(m)+" "+p)
		}
	}
	h := api.Handler(api.Deps{Gatherer: prometheus.NewRegistry()})
	var routed []string
	chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routed = append(routed, method+" "+strings.TrimSuffix(route, "/"))
		return nil
	})
	sort.Strings(documented)
	sort.Strings(routed)
	routed = slices.Compact(routed)
	if strings.Join(documented, "\n") != strings.Join(routed, "\n") {
		t.Fatalf("openapi.yaml and the router differ\ndocumented:\n%s\n\nrouted:\n%s", strings.Join(documented, "\n"), strings.Join(routed, "\n"))
	}
	// The description is served.
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/openapi.yaml")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("openapi.yaml: %v %v", resp, err)
	}
	resp.Body.Close()
}
