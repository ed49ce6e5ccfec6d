package api_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/hub/service/servicetest"
)

// session is a person signed in, as the web UI's sign-in leaves them: a
// session cookie and its CSRF token.
type session struct {
	f      *fixture
	cookie *http.Cookie
	csrf   string
}

func (f *fixture) signIn(name, password string) *session {
	f.t.Helper()
	w := httptest.NewRecorder()
	if _, err := f.auth.SignIn(w, httptest.NewRequest("POST", "/login", nil), name, password); err != nil {
		f.t.Fatalf("sign in as %s: %v", name, err)
	}
	s := &session{f: f, cookie: w.Result().Cookies()[0]}
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(s.cookie)
	f.auth.Middleware("")(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { s.csrf = f.auth.CSRFToken(r) })).ServeHTTP(httptest.NewRecorder(), r)
	return s
}

func (s *session) do(method, path string, body any) (int, []byte) {
	s.f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	r, _ := http.NewRequestWithContext(s.f.t.Context(), method, s.f.srv.URL+path, rd)
	r.AddCookie(s.cookie)
	r.Header.Set("X-CSRF-Token", s.csrf)
	r.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		s.f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (f *fixture) call(tok, method, path string, body any) (int, []byte) {
	f.t.Helper()
	b, _ := json.Marshal(body)
	resp, rb := f.do(tok, method, path, "application/json", b)
	return resp.StatusCode, rb
}

// TestTokensAndPasswords: tokens are made by a session or an admin, never
// by a token; each lives at most token_max_ttl (token_ttl by default); an
// account holds at most max_tokens; one's own password changes only with a
// session and the current password, and a new password, an admin's reset
// or disabling the account ends every token and session of it for good.
func TestTokensAndPasswords(t *testing.T) {
	f := newFixture(t)
	tok := f.user("kiem-toan", auth.RoleAuditor, "")
	me := func(tok string) int { resp, _ := f.get(tok, "/api/v1/me"); return resp.StatusCode }

	// A token makes no tokens, for itself or anyone.
	if c, b := f.call(tok, "POST", "/api/v1/tokens", map[string]any{"name": "heir"}); c != 403 || !strings.Contains(string(b), "account page") {
		t.Fatalf("a token made by a token: %d %s", c, b)
	}
	// A session does; with no lifetime given, the hub's default.
	s := f.signIn("kiem-toan", servicetest.Password)
	c, b := s.do("POST", "/api/v1/tokens", map[string]any{"name": "nightly audit"})
	var fromSession service.NewTokenResult
	if c != 201 || json.Unmarshal(b, &fromSession) != nil {
		t.Fatalf("a token made by a session: %d %s", c, b)
	}
	if life := fromSession.Token.Expires.Sub(fromSession.Token.Created); life != 90*24*time.Hour {
		t.Fatalf("default lifetime %v", life)
	}
	if c, b := s.do("POST", "/api/v1/tokens", map[string]any{"name": "forever", "ttl": "87600h"}); c != 400 || !strings.Contains(string(b), "at most 8760h") {
		t.Fatalf("a lifetime past token_max_ttl: %d %s", c, b)
	}
	// The bound: 20 live tokens; the admin fills it up.
	for i := 2; i < 20; i++ {
		if c, b := f.call(f.admin, "POST", "/api/v1/tokens", map[string]any{"name": fmt.Sprint("t", i), "user": "kiem-toan"}); c != 201 {
			t.Fatalf("token %d: %d %s", i+1, c, b)
		}
	}
	if c, b := s.do("POST", "/api/v1/tokens", map[string]any{"name": "one too many"}); c != 409 || !strings.Contains(string(b), "20 live API tokens") {
		t.Fatalf("token 21: %d %s", c, b)
	}

	// One's own password: not with a token, not without the current one,
	// not with a wrong one.
	const newPW = "một mật khẩu mới dài"
	if c, _ := f.call(tok, "PATCH", "/api/v1/users/kiem-toan", map[string]any{"password": newPW, "current_password": servicetest.Password}); c != 403 {
		t.Fatalf("own password with a token: %d", c)
	}
	if c, b := s.do("PATCH", "/api/v1/users/kiem-toan", map[string]any{"password": newPW}); c != 400 || !strings.Contains(string(b), "current_password") {
		t.Fatalf("own password without the current one: %d %s", c, b)
	}
	if c, b := s.do("PATCH", "/api/v1/users/kiem-toan", map[string]any{"password": newPW, "current_password": "not the password"}); c != 403 || !strings.Contains(string(b), "current password is wrong") {
		t.Fatalf("own password with a wrong current one: %d %s", c, b)
	}
	if me(tok) != 200 || me(fromSession.Secret) != 200 {
		t.Fatal("refused changes ended tokens")
	}
	if c, b := s.do("PATCH", "/api/v1/users/kiem-toan", map[string]any{"password": newPW, "current_password": servicetest.Password}); c != 200 {
		t.Fatalf("own password: %d %s", c, b)
	}
	// Every token and the session are gone, and the account holds none.
	if me(tok) != 401 || me(fromSession.Secret) != 401 {
		t.Fatal("a token outlived the password change")
	}
	if c, _ := s.do("GET", "/api/v1/me", nil); c != 401 {
		t.Fatalf("the session outlived the password change: %d", c)
	}
	var ts []auth.Token
	f.getJSON(f.admin, "/api/v1/tokens?user=kiem-toan", 200, &ts)
	if len(ts) != 0 {
		t.Fatalf("tokens left: %+v", ts)
	}
	s = f.signIn("kiem-toan", newPW)
	if c, _ := s.do("POST", "/api/v1/tokens", map[string]any{"name": "after"}); c != 201 {
		t.Fatalf("a token after the change: %d", c)
	}

	// An admin's reset of someone else's password needs no current one and
	// ends that account's tokens too.
	staff := f.user("van-thu-a", auth.RoleStaff, unitA)
	if c, b := f.call(f.admin, "PATCH", "/api/v1/users/van-thu-a", map[string]any{"password": "đặt lại bởi quản trị"}); c != 200 {
		t.Fatalf("admin reset: %d %s", c, b)
	}
	if me(staff) != 401 {
		t.Fatal("a token outlived an admin's reset")
	}
	// Disabling ends them for good: enabling brings none back.
	staff2 := f.user("van-thu-b", auth.RoleStaff, unitB)
	sb := f.signIn("van-thu-b", servicetest.Password)
	if c, _ := f.call(f.admin, "PATCH", "/api/v1/users/van-thu-b", map[string]any{"disabled": true}); c != 200 {
		t.Fatal("disable")
	}
	if c, _ := f.call(f.admin, "PATCH", "/api/v1/users/van-thu-b", map[string]any{"disabled": false}); c != 200 {
		t.Fatal("enable")
	}
	if me(staff2) != 401 {
		t.Fatal("a token came back when its account was enabled again")
	}
	if c, _ := sb.do("GET", "/api/v1/me", nil); c != 401 {
		t.Fatal("a session came back when its account was enabled again")
	}
}

// TestSearchCursorsSealed: a search cursor tells the client nothing (the
// relevance score of the last hit is not in it), does not survive
// tampering, and serves only the person and the query it was given for.
func TestSearchCursorsSealed(t *testing.T) {
	f := newFixture(t)
	a1 := f.user("van-thu-a", auth.RoleStaff, unitA)
	a2 := f.user("van-thu-a2", auth.RoleStaff, unitA)
	params := url.Values{"q": {"dat dai"}, "sort": {"relevance"}, "limit": {"1"}}
	p := f.search(a1, params)
	if p.Total != 2 || p.NextCursor == "" {
		t.Fatalf("first page: %+v", p)
	}
	// The score the index keeps in its own cursor.
	ip, err := f.ix.Search(t.Context(), index.Query{Text: "dat dai", Sort: index.SortRelevance, Limit: 1, Unit: unitA})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(ip.NextCursor)
	var inner struct {
		Rank float64 `json:"r"`
	}
	if err := json.Unmarshal(raw, &inner); err != nil || inner.Rank == 0 {
		t.Fatalf("index cursor %s: %v", raw, err)
	}
	dec, _ := base64.RawURLEncoding.DecodeString(p.NextCursor)
	for _, s := range []string{strconv.FormatFloat(inner.Rank, 'g', -1, 64), strconv.FormatFloat(inner.Rank, 'g', 6, 64), `"r"`, "relevance"} {
		if strings.Contains(p.NextCursor, s) || bytes.Contains(dec, []byte(s)) {
			t.Fatalf("the cursor %q shows %q", p.NextCursor, s)
		}
	}
	// It works for its owner and query: the second and last page.
	next := url.Values{"q": {"dat dai"}, "sort": {"relevance"}, "limit": {"1"}, "cursor": {p.NextCursor}}
	p2 := f.search(a1, next)
	if len(p2.Items) != 1 || p2.Items[0].ID == p.Items[0].ID || p2.NextCursor != "" {
		t.Fatalf("second page: %+v", p2)
	}
	bad := func(who string, tok string, v url.Values) {
		t.Helper()
		resp, b := f.get(tok, "/api/v1/documents?"+v.Encode())
		if resp.StatusCode != 400 || !strings.Contains(string(b), "cursor") {
			t.Errorf("%s: %d %s", who, resp.StatusCode, b)
		}
	}
	// Tampered: every byte flipped in turn gives 400.
	cb, _ := base64.RawURLEncoding.DecodeString(p.NextCursor)
	for i := range cb {
		x := bytes.Clone(cb)
		x[i] ^= 0x01
		v := url.Values{"q": {"dat dai"}, "sort": {"relevance"}, "limit": {"1"}, "cursor": {base64.RawURLEncoding.EncodeToString(x)}}
		resp, _ := f.get(a1, "/api/v1/documents?"+v.Encode())
		if resp.StatusCode != 400 {
			t.Fatalf("byte %d flipped: %d", i, resp.StatusCode)
		}
	}
	bad("truncated", a1, url.Values{"q": {"dat dai"}, "sort": {"relevance"}, "cursor": {p.NextCursor[:len(p.NextCursor)-4]}})
	// The index's own, readable cursor is not accepted from outside.
	bad("an unsealed cursor", a1, url.Values{"q": {"dat dai"}, "sort": {"relevance"}, "cursor": {ip.NextCursor}})
	// Another person of the same unit, or the admin token.
	bad("another user", a2, next)
	bad("the admin token", f.admin, next)
	// Another query.
	bad("another query", a1, url.Values{"q": {"dat"}, "sort": {"relevance"}, "limit": {"1"}, "cursor": {p.NextCursor}})
	bad("another sort", a1, url.Values{"q": {"dat dai"}, "limit": {"1"}, "cursor": {p.NextCursor}})
}
