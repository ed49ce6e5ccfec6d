package auth

import (
	"bytes"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/sqldb"
)

// users-f4d59be.db is an accounts file the hub at commit f4d59be (the last
// before the shared accounts) wrote with its own code (hub/auth, schema
// version 2): the first admin, lan.nguyen@hcm (staff of 000.01.00.H29) with
// an API token and a session, kiem-toan whose password changed after a
// token was made (the token is gone), cu disabled after a token was made.
// The secrets of that run:
const (
	fixtureLanToken   = "edx_22onpiswy3_EFINTTDXU44QM4JRG7DX4WLOE2"
	fixtureVoidToken  = "edx_bbwzr3bkfa_PSXUMARUD3SI7UHBQWTFNLOTZD"
	fixtureCuToken    = "edx_ukdkvndoo6_DLRMAN2MHTTA753UFPAYEQGPXT"
	fixtureLanSession = "C3D75ITPMMK75C5PUMI53AZP2HTN6TVVQ4TT3QW23BDR5KBZFAIM"
)

// pinClock makes stores opened from now on read time as at, moving on with
// the real clock.
func pinClock(t *testing.T, at time.Time) {
	start := time.Now()
	newClock = func() time.Time { return at.Add(time.Since(start)) }
	t.Cleanup(func() { newClock = time.Now })
}

// copyFile copies src to a new temporary directory as auth/users.db.
func copyFile(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "auth", "users.db")
	os.MkdirAll(filepath.Dir(path), 0o700)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func openPath(t *testing.T, srv *broker.Server, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{Path: path, PasswordHash: fastHash}, srv.HubJetStream(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestMigrateFileOfTheOldHub: the old hub's own accounts file is copied
// into the buckets at the first start: every account signs in with its
// password, the live token and session work (with the clock at the time
// the file was written), void and disabled ones do not, the CSRF key is
// the file's; the file is renamed users.db.migrated and a marker says so.
// A second hub opening a copy of the same file at the same place copies
// nothing again.
func TestMigrateFileOfTheOldHub(t *testing.T) {
	path := copyFile(t, "testdata/users-f4d59be.db")
	raw, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	var written int64
	var csrf []byte
	if err := raw.QueryRow("SELECT max(created_at) FROM sessions").Scan(&written); err != nil {
		t.Fatal(err)
	}
	if err := raw.QueryRow("SELECT value FROM secrets WHERE name = 'csrf'").Scan(&csrf); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	pinClock(t, time.UnixMilli(written).Add(time.Minute))

	srv := broker.ForTest(t)
	s := openPath(t, srv, path)
	ctx := t.Context()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old file is still in place: %v", err)
	}
	if _, err := os.Stat(path + migratedSuffix); err != nil {
		t.Fatalf("the old file is not renamed: %v", err)
	}
	if !bytes.Equal(s.csrfKey, csrf) {
		t.Fatal("the CSRF key is not the file's")
	}
	for _, c := range []struct{ name, pw string }{{"lan.nguyen@hcm", "mật khẩu của Lan"}, {"kiem-toan", "mật khẩu kiểm toán mới"}} {
		if _, err := s.Authenticate(ctx, c.name, c.pw); err != nil {
			t.Fatalf("%s signs in: %v", c.name, err)
		}
	}
	if _, err := s.Authenticate(ctx, "kiem-toan", "mật khẩu kiểm toán cũ"); !errors.Is(err, ErrCredentials) {
		t.Fatalf("the old password: %v", err)
	}
	if _, err := s.Authenticate(ctx, "cu", "mật khẩu người cũ"); !errors.Is(err, ErrCredentials) {
		t.Fatalf("a disabled account signs in: %v", err)
	}
	if u, _ := s.User(ctx, "lan.nguyen@hcm"); u.Unit != "000.01.00.H29" || u.Role != RoleStaff || u.DisplayName != "Nguyễn Thị Lan" {
		t.Fatalf("lan: %+v", u)
	}
	if id, err := s.TokenIdentity(ctx, fixtureLanToken); err != nil || id.User.Name != "lan.nguyen@hcm" {
		t.Fatalf("lan's token: %v %v", id, err)
	}
	for _, tok := range []string{fixtureVoidToken, fixtureCuToken} {
		if _, err := s.TokenIdentity(ctx, tok); !errors.Is(err, ErrNotFound) {
			t.Fatalf("void token %s: %v", tok, err)
		}
	}
	if id, err := s.Session(ctx, fixtureLanSession); err != nil || id.User.Name != "lan.nguyen@hcm" {
		t.Fatalf("lan's session: %v %v", id, err)
	}
	us, _ := s.Users(ctx)
	if len(us) != 4 {
		t.Fatalf("users: %+v", us)
	}
	if ts, _ := s.Tokens(ctx, ""); len(ts) != 1 || ts[0].ID != "22onpiswy3" {
		t.Fatalf("tokens: %+v", ts)
	}
	es, err := s.accounts.Values(ctx, "meta.migrated.*")
	if err != nil || len(es) != 1 || !strings.Contains(string(es[0].Value), path) {
		t.Fatalf("marker: %v %v", es, err)
	}

	// The same file put back in the same place (a restore, or a second
	// start racing the rename): the marker says it is done.
	os.Rename(path+migratedSuffix, path)
	s.UpdateUser(ctx, "lan.nguyen@hcm", Change{DisplayName: new("Lan (changed since)")})
	openPath(t, srv, path)
	if u, _ := s.User(ctx, "lan.nguyen@hcm"); u.DisplayName != "Lan (changed since)" {
		t.Fatalf("a second migration changed lan: %+v", u)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the file is not renamed the second time")
	}
}

// oldAuthSchema is the accounts database's schema before it was versioned,
// as the hub created it (user_version 0), frozen here.
const oldAuthSchema = `
CREATE TABLE IF NOT EXISTS users(
	id           INTEGER PRIMARY KEY,
	name         TEXT NOT NULL UNIQUE,
	display_name TEXT NOT NULL DEFAULT '',
	role         TEXT NOT NULL,
	unit         TEXT NOT NULL DEFAULT '',
	password     TEXT NOT NULL,
	disabled     INTEGER NOT NULL DEFAULT 0,
	created_at   INTEGER NOT NULL,
	last_sign_in INTEGER
);
CREATE TABLE IF NOT EXISTS sessions(
	hash       BLOB PRIMARY KEY,
	user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	seen_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id);
CREATE TABLE IF NOT EXISTS tokens(
	id         TEXT PRIMARY KEY,
	hash       BLOB NOT NULL UNIQUE,
	user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	name       TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER,
	last_used  INTEGER
);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens(user_id);
CREATE TABLE IF NOT EXISTS secrets(
	name  TEXT PRIMARY KEY,
	value BLOB NOT NULL
);
`

// TestMigrateUnversionedFile: a file from before schema versions (and
// before credential epochs) is copied too: its accounts sign in, its live
// token and session work, the tokens of accounts disabled then do not
// (as the old schema upgrade dropped them), and expired ones are left.
func TestMigrateUnversionedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth", "users.db")
	os.MkdirAll(filepath.Dir(path), 0o700)
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=foreign_keys(ON)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(oldAuthSchema); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	pinClock(t, now)
	ms := now.UnixMilli()
	live, expired, disabledTok := "edx_aaaaaaaaaa_"+rand.Text(), "edx_bbbbbbbbbb_"+rand.Text(), "edx_cccccccccc_"+rand.Text()
	sess := rand.Text() + rand.Text()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO users(id, name, display_name, role, unit, password, created_at) VALUES(1, 'lan', 'Nguyễn Thị Lan', 'archivist', '', ?, ?)`,
			[]any{hashPassword("mật khẩu cũ đủ dài", fastHash), ms - 1000}},
		{`INSERT INTO users(id, name, role, password, created_at, disabled) VALUES(2, 'tu', 'auditor', 'x', ?, 1)`, []any{ms - 1000}},
		{`INSERT INTO tokens(id, hash, user_id, name, created_at, expires_at) VALUES('aaaaaaaaaa', ?, 1, 'live', ?, ?)`, []any{digest(live), ms - 1000, ms + 3600_000}},
		{`INSERT INTO tokens(id, hash, user_id, name, created_at, expires_at) VALUES('bbbbbbbbbb', ?, 1, 'expired', ?, ?)`, []any{digest(expired), ms - 7200_000, ms - 3600_000}},
		{`INSERT INTO tokens(id, hash, user_id, name, created_at) VALUES('cccccccccc', ?, 2, 'of a disabled account', ?)`, []any{digest(disabledTok), ms - 1000}},
		{`INSERT INTO sessions(hash, user_id, created_at, expires_at, seen_at) VALUES(?, 1, ?, ?, ?)`, []any{digest(sess), ms - 1000, ms + 3600_000, ms - 1000}},
		{`INSERT INTO secrets(name, value) VALUES('search-cursor', ?)`, []any{bytes.Repeat([]byte{7}, 32)}},
	} {
		if _, err := raw.Exec(q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()

	srv := broker.ForTest(t)
	s := openPath(t, srv, path)
	ctx := t.Context()
	if u, err := s.Authenticate(ctx, "lan", "mật khẩu cũ đủ dài"); err != nil || u.Role != RoleArchivist || u.DisplayName != "Nguyễn Thị Lan" {
		t.Fatalf("sign in with the old account: %+v %v", u, err)
	}
	if !bytes.Equal(s.CursorKey(), bytes.Repeat([]byte{7}, 32)) {
		t.Fatal("the search-cursor key is not the file's")
	}
	if _, err := s.TokenIdentity(ctx, live); err != nil {
		t.Fatalf("live token: %v", err)
	}
	for _, tok := range []string{expired, disabledTok} {
		if _, err := s.TokenIdentity(ctx, tok); !errors.Is(err, ErrNotFound) {
			t.Fatalf("token %s: %v", tok[:14], err)
		}
	}
	if _, err := s.Session(ctx, sess); err != nil {
		t.Fatalf("live session: %v", err)
	}
	if ts, _ := s.Tokens(ctx, "lan"); len(ts) != 1 || ts[0].Name != "live" {
		t.Fatalf("lan's tokens: %+v", ts)
	}
}

// TestMigrateResumesAndKeepsOthers: a migration stopped half-way (one
// account copied, no marker) copies the rest at the next start, with that
// account's tokens; an account of the same name another hub put in the
// buckets first stays, and this file's one is not copied.
func TestMigrateResumesAndKeepsOthers(t *testing.T) {
	path := copyFile(t, "testdata/users-f4d59be.db")
	raw, _ := sql.Open("sqlite", "file:"+path+"?mode=ro")
	var written int64
	raw.QueryRow("SELECT max(created_at) FROM sessions").Scan(&written)
	raw.Close()
	pinClock(t, time.UnixMilli(written).Add(time.Minute))
	srv := broker.ForTest(t)

	// Another hub already holds an "admin" of its own.
	other, _ := openOn(t, srv)
	if _, err := other.AddUser(t.Context(), NewUser{Name: "admin", Role: RoleAdmin, Password: "the other hub's admin"}); err != nil {
		t.Fatal(err)
	}
	// The interrupted run: lan copied as the migration copies it, then
	// the hub stopped.
	s := &Store{cfg: Config{Path: path, SessionIdle: 2 * time.Hour, TokenMaxTTL: 365 * 24 * time.Hour}, now: newClock, accounts: other.accounts, sessions: other.sessions}
	db, err := sqldb.Open(t.Context(), path, sqldb.Options{Migrations: migrations, ForeignKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	users, _, err := s.readLegacy(t.Context(), db)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, lu := range users {
		if lu.rec.Name == "lan.nguyen@hcm" {
			if ok, err := s.copyUser(t.Context(), lu); !ok || err != nil {
				t.Fatalf("copy lan: %v %v", ok, err)
			}
		}
	}

	st := openPath(t, srv, path)
	ctx := t.Context()
	if _, err := st.Authenticate(ctx, "admin", "the other hub's admin"); err != nil {
		t.Fatalf("the other hub's admin: %v", err)
	}
	if _, err := st.TokenIdentity(ctx, fixtureLanToken); err != nil {
		t.Fatalf("lan's token after the resumed migration: %v", err)
	}
	if _, err := st.Authenticate(ctx, "kiem-toan", "mật khẩu kiểm toán mới"); err != nil {
		t.Fatalf("an account the interrupted run had not copied: %v", err)
	}
	if us, _ := st.Users(ctx); len(us) != 4 {
		t.Fatalf("users: %d", len(us))
	}
}

// TestMigrateRefusesNewerFile: an accounts file from a newer hub is not
// read (nor touched).
func TestMigrateRefusesNewerFile(t *testing.T) {
	path := copyFile(t, "testdata/users-f4d59be.db")
	raw, _ := sql.Open("sqlite", path)
	raw.Exec(fmt.Sprintf("PRAGMA user_version = %d", len(migrations)+1))
	raw.Close()
	if _, err := Open(t.Context(), Config{Path: path, PasswordHash: fastHash}, broker.ForTest(t).HubJetStream(t), nil); !errors.Is(err, sqldb.ErrTooNew) {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal("the newer file was moved")
	}
}
