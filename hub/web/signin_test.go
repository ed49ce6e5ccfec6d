package web_test

import (
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/service/servicetest"
)

// newSiteWith is newSite with the accounts store's configuration changed.
func newSiteWith(t *testing.T, opts ...func(*auth.Config)) *site {
	return siteOf(t, servicetest.New(t, opts...))
}

// from makes the browser's requests come from addr, as a trusted proxy in
// front of the hub reports it.
type from struct {
	addr string
	next http.RoundTripper
}

func (f from) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", f.addr)
	return f.next.RoundTrip(r)
}

func (s *site) browserFrom(t *testing.T, addr string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, s: s, c: &http.Client{Jar: jar, Transport: from{addr, http.DefaultTransport}}}
}

// at serves a browser's requests with the hub's handler in process, as
// coming from the client address addr (the connection's peer).
type at struct {
	h    http.Handler
	addr string
}

func (a at) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.RemoteAddr, r.RequestURI = a.addr, r.URL.RequestURI()
	w := httptest.NewRecorder()
	a.h.ServeHTTP(w, r)
	resp := w.Result()
	resp.Request = r
	return resp, nil
}

func (s *site) browserAt(t *testing.T, addr string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, s: s, c: &http.Client{Jar: jar, Transport: at{s.srv.Config.Handler, addr}}}
}

// TestSignInLockoutPerAddress: one address failing 20 times for a name is
// refused there, and the name's owner still signs in from another: the
// connection's peer address, or the client a trusted proxy names.
func TestSignInLockoutPerAddress(t *testing.T) {
	t.Run("peer", func(t *testing.T) {
		s := newSite(t)
		lockout(t, s, s.browserAt(t, "203.0.113.66:40000"), s.browserAt(t, "198.51.100.7:40000"))
	})
	t.Run("behind a trusted proxy", func(t *testing.T) {
		s := newSiteWith(t, func(c *auth.Config) { c.TrustedProxies = []string{"127.0.0.1", "::1"} })
		lockout(t, s, s.browserFrom(t, "203.0.113.66"), s.browserFrom(t, "198.51.100.7"))
	})
}

func lockout(t *testing.T, s *site, attacker, alice *browser) {
	s.User("alice", auth.RoleAuditor, "")
	var refused int
	for i := range 20 {
		attacker.get("/login")
		code, _ := attacker.post("/login", url.Values{"name": {"alice"}, "password": {"đoán thử lần " + string(rune('a'+i))}})
		switch {
		case code == http.StatusTooManyRequests:
			refused++
		case code != http.StatusUnauthorized:
			t.Fatalf("attempt %d: %d", i, code)
		}
	}
	if refused < 15 {
		t.Fatalf("only %d of 20 attempts from one address refused", refused)
	}
	// Even the right password is refused from that address...
	attacker.get("/login")
	if code, _ := attacker.post("/login", url.Values{"name": {"alice"}, "password": {servicetest.Password}}); code != http.StatusTooManyRequests {
		t.Fatalf("the hammering address, right password: %d", code)
	}
	// ... but alice, elsewhere, signs in.
	alice.signIn("alice")
}

// TestSignInAddressNotSpoofed: without trusted proxies, X-Forwarded-For is
// the client's own say and changes nothing.
func TestSignInAddressNotSpoofed(t *testing.T) {
	s := newSite(t)
	s.User("alice", auth.RoleAuditor, "")
	for i := range 6 {
		b := s.browserFrom(t, "198.51.100."+string(rune('1'+i)))
		b.get("/login")
		code, _ := b.post("/login", url.Values{"name": {"alice"}, "password": {"sai mật khẩu rồi"}})
		if want := http.StatusUnauthorized; i == 5 {
			if code != http.StatusTooManyRequests {
				t.Fatalf("attempt %d with a made-up X-Forwarded-For: %d", i, code)
			}
		} else if code != want {
			t.Fatalf("attempt %d: %d", i, code)
		}
	}
}

// offSite are post-sign-in redirect targets that a browser would take off
// the hub: WHATWG URL parsing drops tabs and newlines anywhere, reads "\"
// as "/", and strips leading spaces and controls.
var offSite = []string{
	"/\t/example.com", "/%09/example.com", "//example.com", "/\\example.com", `\/example.com`, "https://example.com",
	"/%2F%2Fexample.com", "/%2f/example.com", "/%5Cexample.com", "/\n/example.com", "/\r\n/example.com", "/%0a/example.com",
	" //example.com", "\t//example.com", "///example.com", "/\\/example.com", "http:example.com", "http:/example.com",
	"javascript:alert(1)", "//example.com/%2e%2e", "/\u00a0/example.com", "/\u2028/example.com", "/\x00/example.com",
	"\x01//example.com", "//\texample.com", "/ /example.com", "%2F%2Fexample.com", "//user@example.com",
	"/login?next=//example.com", "",
}

// TestSignInRedirectStaysOnSite: after sign-in, and on the sign-in page
// when already signed in, next never leads off the hub; ordinary paths are
// kept.
func TestSignInRedirectStaysOnSite(t *testing.T) {
	s := newSite(t)
	s.User("alice", auth.RoleAuditor, "")
	noFollow := func(b *browser) *http.Client {
		return &http.Client{Jar: b.c.Jar, Transport: b.c.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	var signIns int
	signIn := func(next string) string {
		t.Helper()
		signIns++ // each from an address of its own, under the sign-in limits
		b := s.browserAt(t, fmt.Sprintf("192.0.2.%d:40000", signIns))
		nf := noFollow(b)
		b.get("/login")
		form := url.Values{"name": {"alice"}, "password": {servicetest.Password}, "next": {next}, "csrf": {b.csrf}}
		req, _ := http.NewRequest("POST", s.srv.URL+"/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", s.srv.URL)
		resp, err := nf.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign in with next %q: %d", next, resp.StatusCode)
		}
		return resp.Header.Get("Location")
	}
	b := s.browser(t)
	b.signIn("alice")
	nf := noFollow(b)
	signedIn := func(next string) string {
		t.Helper()
		resp, err := nf.Get(s.srv.URL + "/login?next=" + url.QueryEscape(next))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-in page, signed in, next %q: %d", next, resp.StatusCode)
		}
		return resp.Header.Get("Location")
	}
	for _, next := range offSite {
		if loc := signIn(next); loc != "/search" {
			t.Errorf("sign in, next %q: Location %q", next, loc)
		}
		if loc := signedIn(next); loc != "/search" {
			t.Errorf("signed in, next %q: Location %q", next, loc)
		}
	}
	// The raw query as the issue gave it (next=/%09/example.com).
	resp, err := nf.Get(s.srv.URL + "/login?next=/%09/example.com")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); loc != "/search" {
		t.Errorf("/login?next=/%%09/example.com: Location %q", loc)
	}
	for _, next := range []string{"/documents/x?y=1", "/search?q=quy%E1%BA%BFt+%C4%91%E1%BB%8Bnh&sort=relevance", "/units/000.01.00.H29"} {
		if loc := signIn(next); loc != next {
			t.Errorf("sign in, next %q: Location %q", next, loc)
		}
	}
	// The sign-in page carries only a safe next in its form.
	anon := s.browser(t)
	if _, body := anon.get("/login?next=/%09/example.com"); !strings.Contains(body, `name="next" value="/search"`) {
		t.Errorf("sign-in page's next:\n%s", body)
	}
}

// TestAccountPassword: the account page changes the password with the
// current one, and the change ends the account's API tokens too.
func TestAccountPassword(t *testing.T) {
	s := newSite(t)
	tok := s.User("alice", auth.RoleAuditor, "")
	b := s.browser(t)
	b.signIn("alice")
	b.get("/account")
	if code, body := b.post("/account/password", url.Values{"current": {"không phải mật khẩu"}, "password": {"mật khẩu mới dài"}, "password2": {"mật khẩu mới dài"}}); code != 400 ||
		!strings.Contains(body, "The current password is wrong") {
		t.Fatalf("wrong current password: %d", code)
	}
	b.get("/account")
	if code, body := b.post("/account/password", url.Values{"current": {servicetest.Password}, "password": {"mật khẩu mới dài"}, "password2": {"mật khẩu mới dài"}}); code != 200 ||
		!strings.Contains(body, `id="login"`) {
		t.Fatalf("password change: %d", code)
	}
	req, _ := http.NewRequest("GET", s.srv.URL+"/api/v1/me", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("the API token after the password change: %v", resp.StatusCode)
	}
}
