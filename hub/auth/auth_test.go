package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/document"
)

// fastHash keeps tests quick; the format and code path are the real ones.
var fastHash = HashParams{MemoryKiB: 8 * 1024, Time: 1, Threads: 1}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func openTest(t *testing.T, mod ...func(*Config)) (*Store, *clock) {
	t.Helper()
	return openOn(t, broker.ForTest(t), mod...)
}

// openOn opens a store on srv, on a connection of its own (as a hub has),
// with a clock of its own.
func openOn(t *testing.T, srv *broker.Server, mod ...func(*Config)) (*Store, *clock) {
	t.Helper()
	cfg := Config{Path: filepath.Join(t.TempDir(), "auth", "users.db"), PasswordHash: fastHash}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := Open(t.Context(), cfg, srv.HubJetStream(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := &clock{t: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)}
	s.now = c.now
	s.limit.now = c.now
	return s, c
}

const unitA, unitB, unitC = document.UnitID("000.01.00.H29"), document.UnitID("000.02.00.H29"), document.UnitID("000.03.00.H29")

func TestPermissions(t *testing.T) {
	id := func(r Role, u document.UnitID) *Identity { return &Identity{User: User{Role: r, Unit: u}} }
	tests := []struct {
		name       string
		who        *Identity
		can        []Permission
		cannot     []Permission
		seesBC     bool // a document from B to C
		seesAB     bool // a document from A to B
		scope      document.UnitID
		seesUnitA  bool
		seesUnitB  bool
		disabledOK bool
	}{
		{"staff of A", id(RoleStaff, unitA), []Permission{ReadContent, Verify}, []Permission{ReadAll, ManageUnits, ManageUsers}, false, true, unitA, true, false, false},
		{"staff of C", id(RoleStaff, unitC), []Permission{ReadContent}, []Permission{ReadAll}, true, false, unitC, false, false, false},
		{"archivist", id(RoleArchivist, ""), []Permission{ReadAll, ReadContent, Verify}, []Permission{ManageUnits, ManageUsers}, true, true, "", true, true, false},
		{"auditor", id(RoleAuditor, ""), []Permission{ReadAll, Verify}, []Permission{ReadContent, ManageUnits, ManageUsers}, true, true, "", true, true, false},
		{"admin", id(RoleAdmin, ""), []Permission{ReadAll, ReadContent, Verify, ManageUnits, ManageUsers}, nil, true, true, "", true, true, false},
		{"anonymous", nil, nil, []Permission{ReadAll, ReadContent, Verify, ManageUnits, ManageUsers}, false, false, "", false, false, false},
		{"staff without unit", id(RoleStaff, ""), nil, []Permission{ReadAll}, false, false, "", false, false, false},
		{"unknown role", id("root", ""), nil, []Permission{ReadAll, ReadContent, Verify, ManageUnits, ManageUsers}, false, false, "", false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range tt.can {
				if !tt.who.Can(p) {
					t.Errorf("cannot %d", p)
				}
			}
			for _, p := range tt.cannot {
				if tt.who.Can(p) {
					t.Errorf("can %d", p)
				}
			}
			if got := tt.who.Sees(unitB, []document.UnitID{unitC}); got != tt.seesBC {
				t.Errorf("sees B→C: %v", got)
			}
			if got := tt.who.Sees(unitA, []document.UnitID{unitB}); got != tt.seesAB {
				t.Errorf("sees A→B: %v", got)
			}
			if tt.who != nil && tt.who.User.Role != "root" {
				if got := tt.who.Scope(); got != tt.scope {
					t.Errorf("scope %q", got)
				}
			}
			if got := tt.who.SeesUnit(unitA); got != tt.seesUnitA {
				t.Errorf("sees unit A: %v", got)
			}
			if got := tt.who.SeesUnit(unitB); got != tt.seesUnitB {
				t.Errorf("sees unit B: %v", got)
			}
			if tt.who != nil {
				d := *tt.who
				d.User.Disabled = true
				if d.Can(Verify) || d.Sees(unitA, []document.UnitID{unitB}) || d.SeesUnit(unitA) {
					t.Error("a disabled account can still do something")
				}
			}
		})
	}
}

func TestPasswordHash(t *testing.T) {
	h := hashPassword("mật khẩu đủ dài", fastHash)
	if !strings.HasPrefix(h, "$argon2id$v=19$m=8192,t=1,p=1$") {
		t.Fatalf("hash %q", h)
	}
	if !checkHash(h, "mật khẩu đủ dài") {
		t.Fatal("the right password does not match")
	}
	if checkHash(h, "mat khau du dai") || checkHash(h, "") {
		t.Fatal("a wrong password matches")
	}
	if h2 := hashPassword("mật khẩu đủ dài", fastHash); h2 == h {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=8192,t=1,p=1$AAAA$AAAA", strings.Replace(h, "m=8192", "m=1", 1),
		strings.Replace(h, "m=8192", "m=99999999", 1), h[:len(h)-4], "$argon2id$v=19$m=8192,t=1,p=1$!!$!!"} {
		if checkHash(bad, "mật khẩu đủ dài") {
			t.Errorf("malformed hash %q matches", bad)
		}
	}
}

func TestUsers(t *testing.T) {
	s, _ := openTest(t)
	ctx := t.Context()
	bad := []NewUser{
		{Name: "a", Role: RoleArchivist, Password: "long enough password"},
		{Name: "Bad Name", Role: RoleArchivist, Password: "long enough password"},
		{Name: "nhan", Role: "root", Password: "long enough password"},
		{Name: "nhan", Role: RoleStaff, Password: "long enough password"},
		{Name: "nhan", Role: RoleStaff, Unit: "H29", Password: "long enough password"},
		{Name: "nhan", Role: RoleAuditor, Unit: unitA, Password: "long enough password"},
		{Name: "nhan", Role: RoleAuditor, Password: "short"},
		{Name: "nhan", Role: RoleAuditor, Password: strings.Repeat("x", 300)},
	}
	for _, nu := range bad {
		if _, err := s.AddUser(ctx, nu); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want invalid", nu, err)
		}
	}
	u, err := s.AddUser(ctx, NewUser{Name: "Lan.Nguyen", DisplayName: "Nguyễn Thị Lan", Role: RoleStaff, Unit: unitA, Password: "mật khẩu của Lan"})
	if err != nil {
		t.Fatal(err)
	}
	if u.Name != "lan.nguyen" {
		t.Errorf("name %q not folded to lower case", u.Name)
	}
	if _, err := s.AddUser(ctx, NewUser{Name: "lan.nguyen", Role: RoleAuditor, Password: "another password"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := s.Authenticate(ctx, "LAN.NGUYEN", "mật khẩu của Lan"); err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	for _, c := range [][2]string{{"lan.nguyen", "wrong password"}, {"nobody", "mật khẩu của Lan"}, {"lan.nguyen", ""}} {
		if _, err := s.Authenticate(ctx, c[0], c[1]); !errors.Is(err, ErrCredentials) {
			t.Errorf("%v: %v", c, err)
		}
	}
	// A role change to a non-staff role drops the unit; staff need one.
	if _, err := s.UpdateUser(ctx, "lan.nguyen", Change{Role: new(RoleAuditor)}); err != nil {
		t.Fatal(err)
	}
	if u, _ := s.User(ctx, "lan.nguyen"); u.Unit != "" || u.Role != RoleAuditor {
		t.Fatalf("after role change: %+v", u)
	}
	if _, err := s.UpdateUser(ctx, "lan.nguyen", Change{Role: new(RoleStaff)}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("staff without unit: %v", err)
	}
	if _, err := s.UpdateUser(ctx, "lan.nguyen", Change{Disabled: new(true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, "lan.nguyen", "mật khẩu của Lan"); !errors.Is(err, ErrCredentials) {
		t.Fatalf("disabled account signs in: %v", err)
	}
	if _, err := s.UpdateUser(ctx, "nobody", Change{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
	us, err := s.Users(ctx)
	if err != nil || len(us) != 1 {
		t.Fatalf("users: %v %v", us, err)
	}
}

func TestSessions(t *testing.T) {
	s, clk := openTest(t, func(c *Config) { c.SessionTTL, c.SessionIdle = 8*time.Hour, 30*time.Minute })
	ctx := t.Context()
	u, err := s.AddUser(ctx, NewUser{Name: "lan", Role: RoleStaff, Unit: unitA, Password: "mật khẩu của Lan"})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := s.NewSession(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Session(ctx, sec)
	if err != nil || id.User.Name != "lan" || id.Via != ViaSession {
		t.Fatalf("session: %+v %v", id, err)
	}
	if _, err := s.Session(ctx, sec+"x"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a wrong secret finds a session")
	}
	// Requests keep it alive up to the absolute lifetime.
	for range 20 {
		clk.add(29 * time.Minute)
		if _, err := s.Session(ctx, sec); err != nil {
			if clk.now().Sub(u.Created) < 8*time.Hour {
				t.Fatalf("session ended at %v: %v", clk.now().Sub(u.Created), err)
			}
			break
		}
	}
	if _, err := s.Session(ctx, sec); !errors.Is(err, ErrNotFound) {
		t.Fatal("session outlived its lifetime")
	}
	// Idle too long.
	sec, _ = s.NewSession(ctx, u)
	clk.add(31 * time.Minute)
	if _, err := s.Session(ctx, sec); !errors.Is(err, ErrNotFound) {
		t.Fatal("idle session still valid")
	}
	// A new password ends every session.
	sec, _ = s.NewSession(ctx, u)
	if _, err := s.UpdateUser(ctx, "lan", Change{Password: new("mật khẩu mới của Lan")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, sec); !errors.Is(err, ErrNotFound) {
		t.Fatal("session survived a password change")
	}
	if _, err := s.Authenticate(ctx, "lan", "mật khẩu mới của Lan"); err != nil {
		t.Fatal(err)
	}
	sec, _ = s.NewSession(ctx, u)
	if err := s.EndSession(ctx, sec); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, sec); !errors.Is(err, ErrNotFound) {
		t.Fatal("ended session still valid")
	}
}

func TestTokens(t *testing.T) {
	s, clk := openTest(t)
	ctx := t.Context()
	if _, err := s.AddUser(ctx, NewUser{Name: "robot", Role: RoleAuditor, Password: "long enough password"}); err != nil {
		t.Fatal(err)
	}
	sec, tok, err := s.NewToken(ctx, "robot", "nightly audit", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sec, "edx_"+tok.ID+"_") {
		t.Fatalf("secret %q, id %q", sec, tok.ID)
	}
	id, err := s.TokenIdentity(ctx, sec)
	if err != nil || id.User.Name != "robot" || id.Via != ViaToken {
		t.Fatalf("token identity: %+v %v", id, err)
	}
	for _, bad := range []string{"", "edx_", sec + "x", strings.TrimPrefix(sec, "edx_")} {
		if _, err := s.TokenIdentity(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	ts, _ := s.Tokens(ctx, "robot")
	if len(ts) != 1 || ts[0].Name != "nightly audit" || ts[0].LastUsed.IsZero() {
		t.Fatalf("tokens: %+v", ts)
	}
	clk.add(25 * time.Hour)
	if _, err := s.TokenIdentity(ctx, sec); !errors.Is(err, ErrNotFound) {
		t.Fatal("expired token accepted")
	}
	// No lifetime asked: token_ttl; more than token_max_ttl: refused.
	sec, tok, _ = s.NewToken(ctx, "robot", "default lifetime", 0)
	if want := clk.now().Add(s.cfg.TokenTTL); !tok.Expires.Equal(want.UTC().Truncate(time.Millisecond)) {
		t.Fatalf("default expiry %v, want %v", tok.Expires, want)
	}
	if _, _, err := s.NewToken(ctx, "robot", "too long", s.cfg.TokenMaxTTL+time.Hour); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a lifetime past token_max_ttl: %v", err)
	}
	if err := s.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokenIdentity(ctx, sec); !errors.Is(err, ErrNotFound) {
		t.Fatal("revoked token accepted")
	}
	if err := s.RevokeToken(ctx, tok.ID); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, _, err := s.NewToken(ctx, "nobody", "x", 0); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
}

func TestFirstAdmin(t *testing.T) {
	s, _ := openTest(t)
	pwFile := filepath.Join(t.TempDir(), "admin.password")
	created, err := s.EnsureFirstAdmin(t.Context(), pwFile)
	if err != nil || !created {
		t.Fatalf("created %v, %v", created, err)
	}
	fi, err := os.Stat(pwFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v", fi, err)
	}
	pw, _ := os.ReadFile(pwFile)
	u, err := s.Authenticate(t.Context(), "admin", strings.TrimSpace(string(pw)))
	if err != nil || u.Role != RoleAdmin {
		t.Fatalf("first admin: %+v %v", u, err)
	}
	if created, err := s.EnsureFirstAdmin(t.Context(), pwFile); err != nil || created {
		t.Fatalf("second call created %v, %v", created, err)
	}
}

// TestHTTP: sign-in cookies, identities from cookies and tokens, CSRF.
func TestHTTP(t *testing.T) {
	s, _ := openTest(t)
	ctx := t.Context()
	s.AddUser(ctx, NewUser{Name: "lan", Role: RoleStaff, Unit: unitA, Password: "mật khẩu của Lan"})
	tokSecret, _, _ := s.NewToken(ctx, "lan", "script", 0)
	var got *Identity
	h := s.Middleware("the-admin-token")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = FromContext(r.Context())
		if r.Method == "POST" && !s.CheckCSRF(r) {
			http.Error(w, "csrf", http.StatusForbidden)
		}
	}))
	serve := func(r *http.Request) *httptest.ResponseRecorder {
		got = nil
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}

	// Sign in over plain HTTP and over TLS.
	for _, tlsOn := range []bool{false, true} {
		r := httptest.NewRequest("POST", "/login", nil)
		if tlsOn {
			r.TLS = &tls.ConnectionState{}
		}
		w := httptest.NewRecorder()
		id, err := s.SignIn(w, r, "lan", "mật khẩu của Lan")
		if err != nil {
			t.Fatal(err)
		}
		c := w.Result().Cookies()
		if len(c) != 1 || c[0].Name != SessionCookie || !c[0].HttpOnly || c[0].SameSite != http.SameSiteLaxMode || c[0].Secure != tlsOn {
			t.Fatalf("tls %v: cookie %+v", tlsOn, c)
		}
		// The cookie identifies later requests.
		r = httptest.NewRequest("GET", "/", nil)
		r.AddCookie(c[0])
		serve(r)
		if got == nil || got.User.Name != "lan" || got.Via != ViaSession {
			t.Fatalf("cookie identity %v", got)
		}
		// A form post needs the session's CSRF token.
		csrf := s.csrfToken("session", id.session)
		for _, tc := range []struct {
			token string
			code  int
		}{{"", 403}, {"forged", 403}, {csrf, 200}} {
			r = httptest.NewRequest("POST", "/x", strings.NewReader(url.Values{"csrf": {tc.token}}.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.AddCookie(c[0])
			if w := serve(r); w.Code != tc.code {
				t.Errorf("csrf %q: %d", tc.token, w.Code)
			}
		}
	}
	// Bearer tokens: an API token and the admin token; no CSRF needed.
	for _, tc := range []struct {
		auth, user, via string
	}{
		{"Bearer " + tokSecret, "lan", ViaToken},
		{"Bearer the-admin-token", "admin-token", ViaAdminToken},
		{"Bearer wrong", "", ""},
		{"Basic bGFuOng=", "", ""},
	} {
		r := httptest.NewRequest("POST", "/x", nil)
		r.Header.Set("Authorization", tc.auth)
		w := serve(r)
		switch {
		case tc.user == "" && got != nil:
			t.Errorf("%s: identified as %v", tc.auth, got)
		case tc.user != "" && (got == nil || got.User.Name != tc.user || got.Via != tc.via || w.Code != 200):
			t.Errorf("%s: %v %d", tc.auth, got, w.Code)
		}
	}
	// Sign-in form CSRF is bound to its cookie.
	w := httptest.NewRecorder()
	tok := s.SignInCSRF(w, httptest.NewRequest("GET", "/login", nil))
	c := w.Result().Cookies()
	r := httptest.NewRequest("POST", "/login", strings.NewReader(url.Values{"csrf": {tok}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if s.CheckSignInCSRF(r) {
		t.Fatal("sign-in CSRF passes without its cookie")
	}
	r.AddCookie(c[0])
	if !s.CheckSignInCSRF(r) {
		t.Fatal("sign-in CSRF fails with its cookie")
	}
}

// TestSignInRateLimit: failures count per name and address, so that one
// address hammering a name does not lock out its owner elsewhere; past a
// much higher ceiling for the name from every address, attempts on it are
// slowed, never refused.
func TestSignInRateLimit(t *testing.T) {
	s, clk := openTest(t, func(c *Config) { c.SignInLimit.NameBurst = 10 })
	var slowed []time.Duration
	s.sleep = func(_ context.Context, d time.Duration) error { slowed = append(slowed, d); return nil }
	ctx := t.Context()
	s.AddUser(ctx, NewUser{Name: "lan", Role: RoleStaff, Unit: unitA, Password: "mật khẩu của Lan"})
	try := func(addr, name, pw string) error {
		r := httptest.NewRequest("POST", "/login", nil)
		r.RemoteAddr = addr
		_, err := s.SignIn(httptest.NewRecorder(), r, name, pw)
		return err
	}
	// One address: five wrong passwords for lan, then it is refused there,
	// even with the right password...
	for i := range 5 {
		if err := try("10.0.0.1:1000", "lan", "wrong password"); !errors.Is(err, ErrCredentials) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	var re *RetryError
	if err := try("10.0.0.1:1000", "lan", "mật khẩu của Lan"); !errors.As(err, &re) || re.After <= 0 {
		t.Fatalf("after 5 failures from one address: %v", err)
	}
	// ... and only there.
	if err := try("10.0.1.1:1000", "lan", "mật khẩu của Lan"); err != nil {
		t.Fatalf("lan from another address: %v", err)
	}
	if len(slowed) != 0 {
		t.Fatalf("slowed %v below the name's ceiling", slowed)
	}
	clk.add(31 * time.Second)
	if err := try("10.0.0.1:1000", "lan", "mật khẩu của Lan"); err != nil {
		t.Fatalf("after waiting: %v", err)
	}
	// Many addresses: past the name's ceiling (10 failures here), attempts
	// on lan are slowed but still answered, and the right password works.
	for i := range 10 {
		if err := try(fmt.Sprintf("10.1.0.%d:1", i), "lan", "wrong password"); !errors.Is(err, ErrCredentials) {
			t.Fatalf("many addresses, attempt %d: %v", i, err)
		}
	}
	if len(slowed) == 0 {
		t.Fatal("attempts on a name past its ceiling are not slowed")
	}
	n := len(slowed)
	if err := try("10.2.0.1:1000", "lan", "mật khẩu của Lan"); err != nil || len(slowed) != n+1 || slowed[n] != s.cfg.SignInLimit.NameDelay {
		t.Fatalf("lan past the ceiling: %v, slowed %v", err, slowed)
	}
	// One address trying many names runs out after its burst.
	n = 0
	for i := range 20 {
		if err := try("10.9.9.9:1", "user"+string(rune('a'+i)), "whatever password"); errors.Is(err, ErrRateLimited) {
			break
		}
		n++
	}
	if n != 10 {
		t.Fatalf("an address made %d attempts before the limit, want 10", n)
	}
	// IPv6: a /64 is one address.
	for i := range 5 {
		try(fmt.Sprintf("[2001:db8:1:2::%x]:1", i+1), "lan", "wrong password")
	}
	if err := try("[2001:db8:1:2:ffff::1]:1", "lan", "mật khẩu của Lan"); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("another address of the same /64: %v", err)
	}
	if err := try("[2001:db8:1:3::1]:1", "lan", "mật khẩu của Lan"); err != nil {
		t.Fatalf("another /64: %v", err)
	}
}

// TestClientAddr: X-Forwarded-For counts only from trusted proxies.
func TestClientAddr(t *testing.T) {
	s, _ := openTest(t, func(c *Config) { c.TrustedProxies = []string{"10.0.0.1", "192.168.0.0/16", "::1"} })
	plain, _ := openTest(t)
	for _, tc := range []struct {
		peer, xff string
		want      string // with the proxies trusted
	}{
		{"203.0.113.5:4000", "198.51.100.1", "203.0.113.5"}, // not a proxy: the header is the client's own
		{"10.0.0.1:4000", "", "10.0.0.1"},
		{"10.0.0.1:4000", "198.51.100.1", "198.51.100.1"},
		{"10.0.0.1:4000", "6.6.6.6, 198.51.100.1, 192.168.3.4", "198.51.100.1"}, // the nearest untrusted hop
		{"10.0.0.1:4000", "not-an-address", "10.0.0.1"},
		{"10.0.0.1:4000", "198.51.100.1, junk", "10.0.0.1"},
		{"[::1]:4000", "2001:db8::7", "2001:db8::7"},
		{"10.0.0.1:4000", "198.51.100.1:5555", "198.51.100.1"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.peer
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := s.ClientAddr(r); got != tc.want {
			t.Errorf("%s, %q: %s, want %s", tc.peer, tc.xff, got, tc.want)
		}
		host, _, _ := net.SplitHostPort(tc.peer)
		if got := plain.ClientAddr(r); got != host {
			t.Errorf("no trusted proxies: %s, %q: %s", tc.peer, tc.xff, got)
		}
	}
}

// TestCredentialEpochs: a new password or disabling voids every session
// and token of the account, also those a request racing the change
// creates, and re-enabling brings none back.
func TestCredentialEpochs(t *testing.T) {
	s, _ := openTest(t)
	ctx := t.Context()
	s.AddUser(ctx, NewUser{Name: "lan", Role: RoleStaff, Unit: unitA, Password: "mật khẩu của Lan"})
	u, err := s.Authenticate(ctx, "lan", "mật khẩu của Lan")
	if err != nil {
		t.Fatal(err)
	}
	sess, _ := s.NewSession(ctx, u)
	id, err := s.Session(ctx, sess)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := s.NewTokenBy(ctx, id, "lan", "script", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateUser(ctx, "lan", Change{Password: new("mật khẩu mới của Lan")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokenIdentity(ctx, tok); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a token outlived a password change: %v", err)
	}
	if _, err := s.Session(ctx, sess); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a session outlived a password change: %v", err)
	}
	// Racing the change: signed in with the old password, a session or a
	// token made after the change is refused.
	if _, err := s.NewSession(ctx, u); !errors.Is(err, ErrCredentials) {
		t.Fatalf("a session from before the change: %v", err)
	}
	if _, _, err := s.NewTokenBy(ctx, id, "lan", "raced", 0); !errors.Is(err, ErrCredentials) {
		t.Fatalf("a token made by a session from before the change: %v", err)
	}
	if ts, _ := s.Tokens(ctx, "lan"); len(ts) != 0 {
		t.Fatalf("tokens left: %+v", ts)
	}
	// Disabling, then enabling.
	tok, _, _ = s.NewToken(ctx, "lan", "script", 0)
	u, _ = s.Authenticate(ctx, "lan", "mật khẩu mới của Lan")
	sess, _ = s.NewSession(ctx, u)
	s.UpdateUser(ctx, "lan", Change{Disabled: new(true)})
	if _, _, err := s.NewToken(ctx, "lan", "while disabled", 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a token for a disabled account: %v", err)
	}
	s.UpdateUser(ctx, "lan", Change{Disabled: new(false)})
	if _, err := s.TokenIdentity(ctx, tok); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a token came back with the account: %v", err)
	}
	if _, err := s.Session(ctx, sess); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a session came back with the account: %v", err)
	}
}

// TestTokenBound: an account holds at most max_tokens live tokens.
func TestTokenBound(t *testing.T) {
	s, clk := openTest(t, func(c *Config) { c.MaxTokens = 3 })
	ctx := t.Context()
	s.AddUser(ctx, NewUser{Name: "robot", Role: RoleAuditor, Password: "long enough password"})
	var ids []string
	for i := range 3 {
		_, tok, err := s.NewToken(ctx, "robot", fmt.Sprint("t", i), time.Duration(i+1)*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tok.ID)
	}
	_, _, err := s.NewToken(ctx, "robot", "one more", 0)
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "revoke one") {
		t.Fatalf("past the bound: %v", err)
	}
	// Revoked and expired tokens free their place.
	s.RevokeToken(ctx, ids[2])
	if _, _, err := s.NewToken(ctx, "robot", "after a revocation", 0); err != nil {
		t.Fatal(err)
	}
	clk.add(90 * time.Minute)
	if _, _, err := s.NewToken(ctx, "robot", "after an expiry", 0); err != nil {
		t.Fatal(err)
	}
	if ts, _ := s.Tokens(ctx, "robot"); len(ts) != 3 {
		t.Fatalf("tokens: %+v", ts)
	}
}

func TestConfig(t *testing.T) {
	c := Config{Path: "x.db"}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, mod := range []func(*Config){
		func(c *Config) { c.Path = "" },
		func(c *Config) { c.FirstAdmin = "Not Valid" },
		func(c *Config) { c.CookieSecure = "never" },
		func(c *Config) { c.SessionIdle = time.Second },
		func(c *Config) { c.PasswordHash.MemoryKiB = 16 },
		func(c *Config) { c.SignInLimit.IPBurst = -1 },
		func(c *Config) { c.SignInLimit.NameDelay = time.Hour },
		func(c *Config) { c.TrustedProxies = []string{"proxy.example"} },
		func(c *Config) { c.TokenMaxTTL = time.Hour },
		func(c *Config) { c.MaxTokens = -1 },
	} {
		d := c
		mod(&d)
		if d.Validate() == nil {
			t.Errorf("%+v validates", d)
		}
	}
}

// TestPasswordResetAudited: an admin setting someone else's password is
// logged as a reset, with who did it and from where; one's own change is
// not.
func TestPasswordResetAudited(t *testing.T) {
	var buf bytes.Buffer
	s, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "users.db"), PasswordHash: fastHash},
		broker.ForTest(t).HubJetStream(t), slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	admin, _ := s.AddUser(ctx, NewUser{Name: "quan-tri", Role: RoleAdmin, Password: "mật khẩu quản trị"})
	lan, _ := s.AddUser(ctx, NewUser{Name: "lan", Role: RoleStaff, Unit: unitA, Password: "mật khẩu của Lan"})
	by := &Identity{User: admin, Via: ViaSession, addr: "192.0.2.9"}
	if _, err := s.UpdateUserBy(ctx, by, "lan", Change{Password: new("đặt lại bởi quản trị")}); err != nil {
		t.Fatal(err)
	}
	if log := buf.String(); !strings.Contains(log, `level=WARN msg="password reset by an admin" user=lan`) ||
		!strings.Contains(log, "by=quan-tri via=session addr=192.0.2.9") {
		t.Fatalf("log:\n%s", log)
	}
	buf.Reset()
	if _, err := s.UpdateUserBy(ctx, &Identity{User: lan, Via: ViaSession}, "lan", Change{Password: new("mật khẩu mới của Lan")}); err != nil {
		t.Fatal(err)
	}
	if log := buf.String(); strings.Contains(log, "reset") || !strings.Contains(log, `msg="user changed" user=lan`) {
		t.Fatalf("log:\n%s", log)
	}
}
