package auth

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/broker"
)

// TestSharedAcrossHubs: two hubs' stores on one NATS (each on its own
// connection) share accounts, sessions, tokens and keys: an account made
// through one signs in through the other, a token or session made on one
// works on the other, and a password changed on one voids the account's
// tokens and sessions on the other at once.
func TestSharedAcrossHubs(t *testing.T) {
	srv := broker.ForTest(t)
	s1, _ := openOn(t, srv)
	s2, _ := openOn(t, srv)
	ctx := t.Context()
	if !bytes.Equal(s1.csrfKey, s2.csrfKey) || !bytes.Equal(s1.CursorKey(), s2.CursorKey()) || len(s1.csrfKey) != 32 {
		t.Fatal("the hubs' CSRF or search-cursor keys differ")
	}
	if _, err := s1.AddUser(ctx, NewUser{Name: "lan.nguyen@hcm", Role: RoleStaff, Unit: unitA, Password: "mật khẩu của Lan"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.AddUser(ctx, NewUser{Name: "lan.nguyen@hcm", Role: RoleAuditor, Password: "another password"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("the same name on the other hub: %v", err)
	}
	u, err := s2.Authenticate(ctx, "lan.nguyen@hcm", "mật khẩu của Lan")
	if err != nil || u.Unit != unitA {
		t.Fatalf("sign in on hub 2 with an account made on hub 1: %+v %v", u, err)
	}
	sess, err := s2.NewSession(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := s1.Session(ctx, sess); err != nil || id.User.Name != "lan.nguyen@hcm" {
		t.Fatalf("a session of hub 2 on hub 1: %v %v", id, err)
	}
	tok, _, err := s1.NewToken(ctx, "lan.nguyen@hcm", "script", 0)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := s2.TokenIdentity(ctx, tok); err != nil || id.User.Name != "lan.nguyen@hcm" || id.Via != ViaToken {
		t.Fatalf("a token of hub 1 on hub 2: %v %v", id, err)
	}
	if ts, err := s2.Tokens(ctx, ""); err != nil || len(ts) != 1 || ts[0].User != "lan.nguyen@hcm" {
		t.Fatalf("tokens on hub 2: %+v %v", ts, err)
	}
	sess1, _ := s1.NewSession(ctx, u)

	// A new password through hub 2: hub 1 refuses the token and both
	// sessions at once.
	if _, err := s2.UpdateUser(ctx, "lan.nguyen@hcm", Change{Password: new("mật khẩu mới của Lan")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.TokenIdentity(ctx, tok); !errors.Is(err, ErrNotFound) {
		t.Fatalf("hub 1 takes a token voided on hub 2: %v", err)
	}
	for _, sec := range []string{sess, sess1} {
		if _, err := s1.Session(ctx, sec); !errors.Is(err, ErrNotFound) {
			t.Fatalf("hub 1 takes a session voided on hub 2: %v", err)
		}
	}
	if _, err := s1.NewSession(ctx, u); !errors.Is(err, ErrCredentials) {
		t.Fatalf("a session from the old sign-in on hub 1: %v", err)
	}
	if _, err := s1.Authenticate(ctx, "lan.nguyen@hcm", "mật khẩu mới của Lan"); err != nil {
		t.Fatalf("the new password on hub 1: %v", err)
	}
	// A role change on hub 1 ends hub 2's sessions (not the tokens).
	u, _ = s2.Authenticate(ctx, "lan.nguyen@hcm", "mật khẩu mới của Lan")
	sess, _ = s2.NewSession(ctx, u)
	tok, _, _ = s2.NewToken(ctx, "lan.nguyen@hcm", "script", 0)
	if _, err := s1.UpdateUser(ctx, "lan.nguyen@hcm", Change{Role: new(RoleAuditor)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Session(ctx, sess); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a session outlived a role change on the other hub: %v", err)
	}
	if id, err := s2.TokenIdentity(ctx, tok); err != nil || id.User.Role != RoleAuditor {
		t.Fatalf("the token after a role change: %v %v", id, err)
	}

	// The admin token is the deployment's: the first hub's file, written
	// to the second hub's.
	dir1, dir2 := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(dir1, "admin.token"), []byte("the-first-hubs-admin-token\n"), 0o600)
	os.WriteFile(filepath.Join(dir2, "admin.token"), []byte("a-token-of-its-own\n"), 0o600)
	a1, err := s1.AdminToken(ctx, filepath.Join(dir1, "admin.token"))
	if err != nil || a1 != "the-first-hubs-admin-token" {
		t.Fatalf("admin token of hub 1: %q %v", a1, err)
	}
	a2, err := s2.AdminToken(ctx, filepath.Join(dir2, "admin.token"))
	b, _ := os.ReadFile(filepath.Join(dir2, "admin.token"))
	if err != nil || a2 != a1 || strings.TrimSpace(string(b)) != a1 {
		t.Fatalf("admin token of hub 2: %q, file %q, %v", a2, b, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir2, "admin.token")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file mode %v", fi.Mode())
	}
}

// TestFirstAdminOnce: hubs starting at once on empty accounts make one
// first admin between them.
func TestFirstAdminOnce(t *testing.T) {
	srv := broker.ForTest(t)
	var (
		wg      sync.WaitGroup
		created atomic.Int32
	)
	stores := []*Store{}
	for range 3 {
		s, _ := openOn(t, srv)
		stores = append(stores, s)
	}
	dir := t.TempDir()
	for i, s := range stores {
		wg.Go(func() {
			ok, err := s.EnsureFirstAdmin(t.Context(), filepath.Join(dir, fmt.Sprint(i), "admin.password"))
			if err != nil {
				t.Error(err)
			}
			if ok {
				created.Add(1)
			}
		})
	}
	wg.Wait()
	us, _ := stores[0].Users(t.Context())
	if created.Load() != 1 || len(us) != 1 {
		t.Fatalf("%d first admins created, %d accounts", created.Load(), len(us))
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*", "admin.password"))
	if len(files) != 1 {
		t.Fatalf("password files: %v", files)
	}
}

// TestTokenBoundAcrossHubs: tokens made at once through two hubs stay
// within max_tokens.
func TestTokenBoundAcrossHubs(t *testing.T) {
	srv := broker.ForTest(t)
	s1, _ := openOn(t, srv, func(c *Config) { c.MaxTokens = 3 })
	s2, _ := openOn(t, srv, func(c *Config) { c.MaxTokens = 3 })
	s1.AddUser(t.Context(), NewUser{Name: "robot", Role: RoleAuditor, Password: "long enough password"})
	var (
		wg      sync.WaitGroup
		made    atomic.Int32
		limited atomic.Int32
	)
	for i := range 10 {
		s := []*Store{s1, s2}[i%2]
		wg.Go(func() {
			_, _, err := s.NewToken(t.Context(), "robot", fmt.Sprint("t", i), time.Hour)
			switch {
			case err == nil:
				made.Add(1)
			case errors.Is(err, ErrLimit):
				limited.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	ts, _ := s2.Tokens(t.Context(), "robot")
	if made.Load() != 3 || limited.Load() != 7 || len(ts) != 3 {
		t.Fatalf("made %d, limited %d, listed %d", made.Load(), limited.Load(), len(ts))
	}
}

// TestSessionExpiresInBucket: a session's record leaves the bucket by
// itself once it goes idle (a per-key TTL the server enforces); nothing
// sweeps it.
func TestSessionExpiresInBucket(t *testing.T) {
	s, _ := openTest(t)
	s.now = time.Now
	s.cfg.SessionIdle = 2 * time.Second // below what the configuration allows, to wait less
	ctx := t.Context()
	u, _ := s.AddUser(ctx, NewUser{Name: "lan", Role: RoleAuditor, Password: "mật khẩu của Lan"})
	sec, err := s.NewSession(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	key := sessionKey(digest(sec))
	if _, err := s.sessions.Latest(ctx, key); err != nil {
		t.Fatalf("the session's record: %v", err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := s.sessions.Latest(ctx, key); errors.Is(err, broker.ErrNoKey) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session's record is still in the bucket 30s after its idle timeout")
		}
	}
	if _, err := s.Session(ctx, sec); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired session: %v", err)
	}
}

// TestRecordVersions: every record kind reads its versions (1, the first)
// and refuses a newer one or one without a version.
func TestRecordVersions(t *testing.T) {
	for _, tc := range []struct {
		kind, rec string
		dst       any
		check     func(any) bool
		err       error
	}{
		{"user", `{"v":1,"id":7,"name":"lan","role":"staff","unit":"000.01.00.H29","password":"$argon2id$x","created":"2026-01-02T00:00:00Z","cred_epoch":2,"session_epoch":3,"tokens":["abc"]}`,
			&userRecord{}, func(v any) bool {
				r := v.(*userRecord)
				return r.ID == 7 && r.Name == "lan" && r.Unit == unitA && r.CredEpoch == 2 && r.SessionEpoch == 3 && len(r.Tokens) == 1
			}, nil},
		{"token", `{"v":1,"id":"abc","user":"lan","name":"script","hash":"AQID","created":"2026-01-02T00:00:00Z","epoch":2}`,
			&tokenRecord{}, func(v any) bool {
				r := v.(*tokenRecord)
				return r.ID == "abc" && bytes.Equal(r.Hash, []byte{1, 2, 3}) && r.Expires.IsZero() && r.Epoch == 2
			}, nil},
		{"session", `{"v":1,"user":"lan","created":"2026-01-02T00:00:00Z","expires":"2026-01-02T12:00:00Z","seen":"2026-01-02T01:00:00Z","epoch":1,"session_epoch":4}`,
			&sessionRecord{}, func(v any) bool { r := v.(*sessionRecord); return r.User == "lan" && r.SessionEpoch == 4 }, nil},
		{"secret", `{"v":1,"value":"AQID"}`, &secretRecord{}, func(v any) bool { return bytes.Equal(v.(*secretRecord).Value, []byte{1, 2, 3}) }, nil},
		{"user", `{"v":2,"name":"lan"}`, &userRecord{}, nil, ErrNewer},
		{"token", `{"id":"abc"}`, &tokenRecord{}, nil, errors.New("without a schema version")},
		{"session", `{"v":1,`, &sessionRecord{}, nil, errors.New("unexpected end")},
	} {
		t.Run(tc.kind+" "+tc.rec[:min(12, len(tc.rec))], func(t *testing.T) {
			err := decode([]byte(tc.rec), tc.kind, tc.dst)
			switch {
			case tc.err == nil && err != nil:
				t.Fatal(err)
			case tc.err == nil && !tc.check(tc.dst):
				t.Fatalf("read %+v", tc.dst)
			case tc.err != nil && (err == nil || !errors.Is(err, tc.err) && !strings.Contains(err.Error(), tc.err.Error())):
				t.Fatalf("err %v, want %v", err, tc.err)
			}
		})
	}
}

// TestKeyName: account names become keys one to one, within the
// characters keys allow.
func TestKeyName(t *testing.T) {
	seen := map[string]string{}
	for _, n := range []string{"lan", "lan.nguyen", "lan_nguyen", "lan_2enguyen", "lan@hcm.gov.vn", "a-b", "a..b", "0x"} {
		k := keyName(n)
		for _, c := range k {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				t.Fatalf("%q → %q", n, k)
			}
		}
		if o, ok := seen[k]; ok {
			t.Fatalf("%q and %q share key %q", n, o, k)
		}
		seen[k] = n
	}
}
