package auth

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/sqldb"
)

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

// TestOpensUnversionedAccounts: an accounts database written before schema
// versions opens with its accounts (the password still signs in) and its
// CSRF key (open forms stay valid); it is marked version 1.
func TestOpensUnversionedAccounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth", "users.db")
	os.MkdirAll(filepath.Dir(path), 0o700)
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=foreign_keys(ON)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(oldAuthSchema); err != nil {
		t.Fatal(err)
	}
	csrf := bytes.Repeat([]byte{7}, 32)
	if _, err := raw.Exec(`INSERT INTO users(name, display_name, role, unit, password, created_at) VALUES('lan', 'Nguyễn Thị Lan', 'archivist', '', ?, ?)`,
		hashPassword("mật khẩu cũ đủ dài", fastHash), time.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`INSERT INTO secrets(name, value) VALUES('csrf', ?)`, csrf); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	s, err := Open(t.Context(), Config{Path: path, PasswordHash: fastHash}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := sqldb.Version(t.Context(), s.db); err != nil || v != len(migrations) {
		t.Fatalf("schema version %d, %v", v, err)
	}
	u, err := s.Authenticate(t.Context(), "lan", "mật khẩu cũ đủ dài")
	if err != nil || u.Role != RoleArchivist || u.DisplayName != "Nguyễn Thị Lan" {
		t.Fatalf("sign in with the old account: %+v %v", u, err)
	}
	if !bytes.Equal(s.csrfKey, csrf) {
		t.Fatal("the CSRF key changed")
	}
}

// TestRefusesNewerAccounts: an accounts database from a newer hub is not
// touched.
func TestRefusesNewerAccounts(t *testing.T) {
	s, _ := openTest(t)
	path := s.cfg.Path
	s.db.Exec(fmt.Sprintf("PRAGMA user_version = %d", len(migrations)+1))
	s.Close()
	if _, err := Open(t.Context(), Config{Path: path, PasswordHash: fastHash}, nil); !errors.Is(err, sqldb.ErrTooNew) {
		t.Fatalf("err %v", err)
	}
}
