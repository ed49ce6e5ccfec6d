package web_test

import (
	"bytes"
	"html"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/service/servicetest"
	"github.com/edxhub/edx/hub/web"
)

// site is the hub's HTTP handler (API and UI) over a fixture, as hub.Hub
// assembles it.
type site struct {
	*servicetest.Fixture
	srv *httptest.Server
}

func newSite(t *testing.T) *site { return siteOf(t, servicetest.New(t)) }

// siteOf serves a fixture's service through both faces.
func siteOf(t *testing.T, f *servicetest.Fixture) *site {
	h := api.Handler(api.Deps{Service: f.Service, Auth: f.Auth, AdminToken: f.AdminToken, Log: f.Log,
		Web: web.Handler(web.Deps{Service: f.Service, Auth: f.Auth, Log: f.Log})})
	s := &site{Fixture: f, srv: httptest.NewServer(h)}
	t.Cleanup(s.srv.Close)
	return s
}

// browser is a client with cookies, as a person's browser.
type browser struct {
	t    *testing.T
	s    *site
	c    *http.Client
	csrf string // of the last page
}

func (s *site) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, s: s, c: &http.Client{Jar: jar}}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) page(resp *http.Response, err error) (int, string) {
	b.t.Helper()
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if m := csrfRE.FindSubmatch(body); m != nil {
		b.csrf = html.UnescapeString(string(m[1]))
	}
	return resp.StatusCode, string(body)
}

func (b *browser) get(path string) (int, string) {
	b.t.Helper()
	return b.page(b.c.Get(b.s.srv.URL + path))
}

func (b *browser) post(path string, form url.Values) (int, string) {
	b.t.Helper()
	if form.Get("csrf") == "-" {
		form.Del("csrf")
	} else if !form.Has("csrf") {
		form.Set("csrf", b.csrf)
	}
	req, _ := http.NewRequest("POST", b.s.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.s.srv.URL)
	return b.page(b.c.Do(req))
}

func (b *browser) signIn(name string) {
	b.t.Helper()
	if code, _ := b.get("/login"); code != 200 {
		b.t.Fatalf("login page: %d", code)
	}
	code, body := b.post("/login", url.Values{"name": {name}, "password": {servicetest.Password}, "next": {"/search"}})
	if code != 200 || !strings.Contains(body, `id="search-form"`) {
		b.t.Fatalf("sign in as %s: %d\n%s", name, code, body)
	}
}

func TestSignIn(t *testing.T) {
	s := newSite(t)
	s.User("van-thu-a", auth.RoleStaff, servicetest.UnitA)
	b := s.browser(t)
	// Anonymous visitors go to the sign-in page, and come back after.
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(s.srv.URL + "/documents/x?y=1")
	if err != nil || resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=%2Fdocuments%2Fx%3Fy%3D1" {
		t.Fatalf("anonymous: %v %v", resp.StatusCode, resp.Header.Get("Location"))
	}
	code, body := b.get("/search")
	if code != 200 || !strings.Contains(body, `id="login"`) || !strings.Contains(body, "Đăng nhập") || !strings.Contains(body, "Sign in") {
		t.Fatalf("sign-in page: %d", code)
	}
	// A post without the form's token, a wrong password, then the right one.
	if code, _ := b.post("/login", url.Values{"name": {"van-thu-a"}, "password": {servicetest.Password}, "csrf": {"-"}}); code != 403 {
		t.Fatalf("sign in without CSRF: %d", code)
	}
	b.get("/login")
	if code, body := b.post("/login", url.Values{"name": {"van-thu-a"}, "password": {"sai mật khẩu rồi"}}); code != 401 || !strings.Contains(body, "Wrong user name or password") {
		t.Fatalf("wrong password: %d", code)
	}
	// Off-site next is ignored.
	code, body = b.post("/login", url.Values{"name": {"van-thu-a"}, "password": {servicetest.Password}, "next": {"//evil.example/"}})
	if code != 200 || !strings.Contains(body, `id="search-form"`) {
		t.Fatalf("sign in: %d", code)
	}
	u, _ := url.Parse(s.srv.URL)
	var session *http.Cookie
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == auth.SessionCookie {
			session = c
		}
	}
	if session == nil {
		t.Fatal("no session cookie")
	}
	// Sign out needs the token too.
	if code, _ := b.post("/logout", url.Values{"csrf": {"forged"}}); code != 403 {
		t.Fatalf("sign out with a forged token: %d", code)
	}
	b.get("/search")
	if code, body := b.post("/logout", url.Values{}); code != 200 || !strings.Contains(body, `id="login"`) {
		t.Fatalf("sign out: %d", code)
	}
	if code, body := b.get("/search"); code != 200 || !strings.Contains(body, `id="login"`) {
		t.Fatalf("after sign-out: %d", code)
	}
	// The old session cookie is dead on the server too.
	req, _ := http.NewRequest("GET", s.srv.URL+"/api/v1/me", nil)
	req.AddCookie(session)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("old session: %v", resp.StatusCode)
	}
}

func TestPages(t *testing.T) {
	s := newSite(t)
	s.User("van-thu-a", auth.RoleStaff, servicetest.UnitA)
	s.User("kiem-toan", auth.RoleAuditor, "")
	s.User("luu-tru", auth.RoleArchivist, "")
	staff := s.browser(t)
	staff.signIn("van-thu-a")

	// Search: folding, and only unit A's documents.
	code, body := staff.get("/search?q=quyet+dinh")
	if code != 200 || !strings.Contains(body, "Quyết định phê duyệt kế hoạch sử dụng đất đai năm 2026") || strings.Contains(body, "Ban chỉ đạo") {
		t.Fatalf("staff search: %d\n%s", code, body)
	}
	if !strings.Contains(body, `id="result-count"`) || !strings.Contains(body, "<strong>1</strong>") {
		t.Fatal("no result count")
	}
	code, body = staff.get("/search?since=25%2F11%2F2026")
	if code != 400 || !strings.Contains(body, "since") {
		t.Fatalf("bad date: %d", code)
	}
	// The document page: metadata, signature panel (valid), files, timeline.
	qd := string(s.Docs["qd-dat-dai"])
	code, body = staff.get("/documents/" + qd)
	for _, want := range []string{
		`id="signature-panel"`, `class="verdict valid"`, "HỢP LỆ", "VALID", "000.01.00.H29", "Sở Nội vụ", // signer's unit
		"Nguyễn Văn An", "Phó Chủ tịch", `<ol class="chain">`, // signer and chain
		"Đã tiếp nhận / accepted", "Đỗ Văn Em", "Đã vào sổ", // timeline
		`<object class="pdf" data="/api/v1/documents/` + qd + `/files/van-ban.pdf"`, // the PDF inline
		"/api/v1/documents/" + qd + "/container", "/api/v1/documents/" + qd + "/receipt",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("document page lacks %q", want)
		}
	}
	if code != 200 || t.Failed() {
		t.Fatalf("document page %d:\n%s", code, body)
	}
	// The PDF it frames is served to this session.
	if resp, err := staff.c.Get(s.srv.URL + "/api/v1/documents/" + qd + "/files/van-ban.pdf"); err != nil || resp.StatusCode != 200 ||
		resp.Header.Get("Content-Type") != "application/pdf" || !strings.HasPrefix(resp.Header.Get("Content-Disposition"), "inline") {
		t.Fatalf("framed PDF: %v %v", resp.StatusCode, resp.Header)
	}
	// As of acceptance, the corpus predates the test CA: invalid, with reasons.
	if _, body = staff.get("/documents/" + qd + "?at=accepted"); !strings.Contains(body, `class="verdict invalid"`) || !strings.Contains(body, "signature.expired") {
		t.Fatal("document page as of acceptance")
	}
	// B → C is not there for A.
	if code, body := staff.get("/documents/" + string(s.Docs["qd-bc"])); code != 404 || strings.Contains(body, "Ban chỉ đạo") {
		t.Fatalf("staff A opens B → C: %d", code)
	}
	// The unit page: A's counters and overdue document; B's is not A's.
	code, body = staff.get("/units/" + string(servicetest.UnitA))
	if code != 200 || !strings.Contains(body, `<span class="n" id="count-overdue">1</span>`) || !strings.Contains(body, "Báo cáo sơ kết công tác cải cách hành chính") {
		t.Fatalf("unit page: %d\n%s", code, body)
	}
	if code, _ := staff.get("/units/" + string(servicetest.UnitB)); code != 403 {
		t.Fatalf("staff A, unit B: %d", code)
	}
	if code, _ := staff.get("/admin/users"); code != 403 {
		t.Fatalf("staff A, users: %d", code)
	}

	// An auditor: every document, no content links.
	aud := s.browser(t)
	aud.signIn("kiem-toan")
	code, body = aud.get("/documents/" + string(s.Docs["qd-bc"]))
	if code != 200 || !strings.Contains(body, `class="verdict valid"`) || strings.Contains(body, "/container\"") || strings.Contains(body, "<object") ||
		!strings.Contains(body, "not file content") || !strings.Contains(body, "/receipt\"") {
		t.Fatalf("auditor document page: %d\n%s", code, body)
	}
	// The auditor uploads the container and receipt an archivist fetched.
	arch := s.browser(t)
	arch.signIn("luu-tru")
	bc := string(s.Docs["qd-bc"])
	get := func(path string) []byte {
		resp, err := arch.c.Get(s.srv.URL + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	data, receipt := get("/api/v1/documents/"+bc+"/container"), get("/api/v1/documents/"+bc+"/receipt")
	aud.get("/audit")
	upload := func(csrf string, container []byte) (int, string) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("csrf", csrf)
		mw.WriteField("at", "now")
		w, _ := mw.CreateFormFile("container", bc+".asice")
		w.Write(container)
		w, _ = mw.CreateFormFile("receipt", bc+".receipt.p7s")
		w.Write(receipt)
		mw.Close()
		req, _ := http.NewRequest("POST", s.srv.URL+"/audit", &buf)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		return aud.page(aud.c.Do(req))
	}
	if code, _ := upload("forged", data); code != 403 {
		t.Fatalf("audit upload with a forged token: %d", code)
	}
	aud.get("/audit")
	code, body = upload(aud.csrf, data)
	if code != 200 || !strings.Contains(body, `class="verdict valid"`) || !strings.Contains(body, bc+".asice") || !strings.Contains(body, "quyết-định.pdf") {
		t.Fatalf("audit upload: %d\n%s", code, body)
	}
	code, body = upload(aud.csrf, append([]byte{}, data[:len(data)-40]...))
	if code != 200 || !strings.Contains(body, `class="verdict invalid"`) || !strings.Contains(body, "container.malformed") {
		t.Fatalf("audit upload of a truncated container: %d\n%s", code, body)
	}

	// Account: an API token, shown once, that works on the API.
	aud.get("/account")
	code, body = aud.post("/account/tokens", url.Values{"name": {"kịch bản kiểm toán"}, "ttl": {"720h"}})
	m := regexp.MustCompile(`<code id="new-token">([^<]+)</code>`).FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("new token: %d\n%s", code, body)
	}
	req, _ := http.NewRequest("GET", s.srv.URL+"/api/v1/me", nil)
	req.Header.Set("Authorization", "Bearer "+m[1])
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the new token: %v", resp.StatusCode)
	}
	// A form from another origin is refused before our own checks.
	req, _ = http.NewRequest("POST", s.srv.URL+"/account/tokens", strings.NewReader(url.Values{"name": {"x"}, "csrf": {aud.csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if code, _ := aud.page(aud.c.Do(req)); code != 403 {
		t.Fatalf("cross-site post: %d", code)
	}
}

func TestAdminPages(t *testing.T) {
	s := newSite(t)
	s.User("quan-tri", auth.RoleAdmin, "")
	b := s.browser(t)
	b.signIn("quan-tri")
	code, body := b.get("/admin/users")
	if code != 200 || !strings.Contains(body, `id="add-user"`) {
		t.Fatalf("users page: %d", code)
	}
	code, body = b.post("/admin/users", url.Values{"name": {"van-thu-b"}, "display_name": {"Nguyễn Thị Bảy"}, "role": {"staff"}, "unit": {string(servicetest.UnitB)}})
	m := regexp.MustCompile(`<code id="new-password">([^<]+)</code>`).FindStringSubmatch(body)
	if code != 200 || m == nil || !strings.Contains(body, "Nguyễn Thị Bảy") {
		t.Fatalf("add user: %d\n%s", code, body)
	}
	// The new user signs in with the generated password.
	nb := s.browser(t)
	nb.get("/login")
	if code, body := nb.post("/login", url.Values{"name": {"van-thu-b"}, "password": {m[1]}, "next": {"/units"}}); code != 200 || !strings.Contains(body, "count-received") {
		t.Fatalf("new user's first sign-in: %d\n%s", code, body)
	}
	// A staff account needs a unit; names are unique.
	if code, body := b.post("/admin/users", url.Values{"name": {"x1"}, "role": {"staff"}}); code != 400 || !strings.Contains(body, "unit") {
		t.Fatalf("staff without unit: %d", code)
	}
	if code, _ := b.post("/admin/users", url.Values{"name": {"van-thu-b"}, "role": {"auditor"}}); code != 409 {
		t.Fatalf("duplicate: %d", code)
	}
	// Disabling ends the user's session.
	if code, _ := b.post("/admin/users/van-thu-b", url.Values{"action": {"disable"}}); code != 200 {
		t.Fatalf("disable: %d", code)
	}
	if code, body := nb.get("/search"); code != 200 || !strings.Contains(body, `id="login"`) {
		t.Fatalf("disabled user's session: %d", code)
	}
	// Units list for admins.
	if code, body := b.get("/units"); code != 200 || !strings.Contains(body, "Ủy ban nhân dân Quận 1") {
		t.Fatalf("units: %d", code)
	}
}

func TestHeadersAndAssets(t *testing.T) {
	s := newSite(t)
	resp, err := http.Get(s.srv.URL + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("headers: %v", resp.Header)
	}
	for _, c := range resp.Cookies() {
		if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
			t.Errorf("cookie %s: %+v", c.Name, c)
		}
	}
	resp, err = http.Get(s.srv.URL + "/static/style.css")
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") {
		t.Fatalf("stylesheet: %v", resp)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if bytes.Contains(b, []byte("http://")) || bytes.Contains(b, []byte("https://")) || bytes.Contains(b, []byte("@import")) {
		t.Fatal("the stylesheet loads something from elsewhere")
	}
	// The API keeps its JSON errors and the UI its pages.
	resp, _ = http.Get(s.srv.URL + "/api/v1/documents")
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("API: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, _ = http.Get(s.srv.URL + "/no/such/page")
	if resp.StatusCode != 404 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("unknown page: %d", resp.StatusCode)
	}
}
