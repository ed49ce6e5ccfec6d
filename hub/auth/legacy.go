package auth

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/sqldb"
)

// Hubs before the shared accounts kept them in a SQLite file of their own
// (DATA/auth/users.db). The hub copies such a file into the buckets once, at
// its first start, and renames it users.db.migrated; what follows is only
// used to read it.

// migrations are the SQLite accounts file's schema versions (sqldb): a file
// of any of them (or from before versioning) is brought to the last before
// it is read, as the hubs that wrote them did.
var migrations = []sqldb.Migration{
	{SQL: schema},     // 1
	{SQL: migration2}, // 2: credential epochs
}

// schema is version 1.
const schema = `
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

// migration2 adds credential epochs (issue #9): each account has a
// credential epoch, and each session and API token the epoch it was issued
// under. Accounts disabled before epochs existed lose their tokens.
const migration2 = `
ALTER TABLE users ADD COLUMN cred_epoch INTEGER NOT NULL DEFAULT 0;
DELETE FROM tokens WHERE user_id IN (SELECT id FROM users WHERE disabled = 1);
ALTER TABLE sessions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
`

// migratedSuffix is added to the name of a SQLite accounts file once it is
// copied into the buckets.
const migratedSuffix = ".migrated"

// legacyUser is an account of a SQLite accounts file, with its live tokens
// and sessions.
type legacyUser struct {
	rec      userRecord
	tokens   []tokenRecord
	sessions []legacySession
}

type legacySession struct {
	hash []byte
	rec  sessionRecord
}

// migrate copies the SQLite accounts file at cfg.Path, when there is one,
// into the buckets: its accounts, their live API tokens and sessions (so
// that nobody has to sign in again), and its CSRF and search-cursor keys;
// then it records the copy in a marker key (meta.migrated.<digest of
// host:path>, which says from which file) and renames the file
// users.db.migrated, which nothing reads again.
//
// It is idempotent and resumable: every copy is a create that a present key
// refuses, and an account already in the buckets that this file did not
// write there (another hub's of the same name) is kept, and this file's one
// is not copied (logged). A hub stopped half-way copies the rest at its
// next start; one stopped after the marker only renames the file.
func (s *Store) migrate(ctx context.Context) error {
	path := s.cfg.Path
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	host, _ := os.Hostname()
	source := host + ":" + path
	sum := sha256.Sum256([]byte(source))
	mkey := "meta.migrated." + hex.EncodeToString(sum[:8])
	if _, err := s.accounts.Latest(ctx, mkey); err == nil {
		return retire(path)
	} else if !errors.Is(err, broker.ErrNoKey) {
		return fmt.Errorf("auth: migrate %s: %w", path, err)
	}
	db, err := sqldb.Open(ctx, path, sqldb.Options{Migrations: migrations, ForeignKeys: true})
	if err != nil {
		return fmt.Errorf("auth: migrate %s: %w", path, err)
	}
	users, secrets, err := s.readLegacy(ctx, db)
	db.Close()
	if err != nil {
		return fmt.Errorf("auth: migrate %s: %w", path, err)
	}
	m := migrationMarker{V: recordVersion, From: source}
	for _, name := range []string{"csrf", "search-cursor"} {
		if v, ok := secrets[name]; ok {
			if _, err := s.accounts.Create(ctx, secretKey(name), encode(secretRecord{V: recordVersion, Value: v}), 0); err != nil && !errors.Is(err, broker.ErrRevision) {
				return fmt.Errorf("auth: migrate %s: %w", path, err)
			}
		}
	}
	now := s.now()
	for _, lu := range users {
		copied, err := s.copyUser(ctx, lu)
		if err != nil {
			return fmt.Errorf("auth: migrate %s: %w", path, err)
		}
		if !copied {
			s.log.Warn("auth: migrate: an account of this name is in the shared accounts already and stays; "+
				"this file's account, its tokens and sessions are not copied", "user", lu.rec.Name, "from", source)
			continue
		}
		m.Users++
		for _, t := range lu.tokens {
			if _, err := s.accounts.Create(ctx, tokenKey(t.ID), encode(t), s.tokenTTL(t, now)); err != nil && !errors.Is(err, broker.ErrRevision) {
				return fmt.Errorf("auth: migrate %s: %w", path, err)
			}
			m.Tokens++
		}
		for _, ls := range lu.sessions {
			if _, err := s.sessions.Create(ctx, sessionKey(ls.hash), encode(ls.rec), s.sessionTTL(ls.rec, now)); err != nil && !errors.Is(err, broker.ErrRevision) {
				return fmt.Errorf("auth: migrate %s: %w", path, err)
			}
			m.Sessions++
		}
	}
	m.At = s.now().UTC()
	if _, err := s.accounts.Create(ctx, mkey, encode(m), 0); err != nil && !errors.Is(err, broker.ErrRevision) {
		return fmt.Errorf("auth: migrate %s: marker: %w", path, err)
	}
	s.log.Warn("auth: the accounts of this hub's SQLite file are now in the shared accounts; the file is renamed",
		"from", path, "to", path+migratedSuffix, "users", m.Users, "tokens", m.Tokens, "sessions", m.Sessions)
	return retire(path)
}

// copyUser creates an account of a SQLite file in the buckets. It reports
// false when the bucket holds an account of that name that this file did
// not put there.
func (s *Store) copyUser(ctx context.Context, lu legacyUser) (bool, error) {
	_, err := s.accounts.Create(ctx, userKey(lu.rec.Name), encode(lu.rec), 0)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, broker.ErrRevision) {
		return false, err
	}
	cur, _, err := s.userRecord(ctx, lu.rec.Name)
	if err != nil {
		return false, err
	}
	// Copied by an earlier, interrupted run of this migration.
	return cur.ID == lu.rec.ID && cur.Password == lu.rec.Password && cur.Created.Equal(lu.rec.Created), nil
}

// retire renames a copied SQLite accounts file (and its WAL files, if any).
func retire(path string) error {
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Rename(path+suffix, path+suffix+migratedSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("auth: %w", err)
		}
	}
	return nil
}

// readLegacy reads a SQLite accounts file of the last schema version: its
// accounts with their live tokens and sessions, and its keys.
func (s *Store) readLegacy(ctx context.Context, db *sql.DB) ([]legacyUser, map[string][]byte, error) {
	secrets := map[string][]byte{}
	rows, err := db.QueryContext(ctx, "SELECT name, value FROM secrets")
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var (
			name string
			v    []byte
		)
		if err := rows.Scan(&name, &v); err != nil {
			rows.Close()
			return nil, nil, err
		}
		secrets[name] = v
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}

	byID := map[int64]*legacyUser{}
	var order []int64
	rows, err = db.QueryContext(ctx, `SELECT id, name, display_name, role, unit, password, disabled, created_at, last_sign_in, cred_epoch
		FROM users ORDER BY id`)
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var (
			r       userRecord
			role    string
			unit    string
			created int64
			last    sql.NullInt64
		)
		if err := rows.Scan(&r.ID, &r.Name, &r.DisplayName, &role, &unit, &r.Password, &r.Disabled, &created, &last, &r.CredEpoch); err != nil {
			rows.Close()
			return nil, nil, err
		}
		if checkName(r.Name) != nil {
			s.log.Warn("auth: migrate: an account with a name not allowed is not copied", "user", r.Name)
			continue
		}
		r.V, r.Role, r.Unit, r.Created = recordVersion, Role(role), document.UnitID(unit), time.UnixMilli(created).UTC()
		if last.Valid {
			r.LastSignIn = time.UnixMilli(last.Int64).UTC()
		}
		byID[r.ID] = &legacyUser{rec: r}
		order = append(order, r.ID)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}

	now := s.now()
	rows, err = db.QueryContext(ctx, "SELECT id, hash, user_id, name, created_at, expires_at, last_used, epoch FROM tokens ORDER BY created_at, id")
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var (
			t            tokenRecord
			uid, created int64
			exp, last    sql.NullInt64
		)
		if err := rows.Scan(&t.ID, &t.Hash, &uid, &t.Name, &created, &exp, &last, &t.Epoch); err != nil {
			rows.Close()
			return nil, nil, err
		}
		lu := byID[uid]
		t.V, t.Created = recordVersion, time.UnixMilli(created).UTC()
		if exp.Valid {
			t.Expires = time.UnixMilli(exp.Int64).UTC()
		}
		if last.Valid {
			t.LastUsed = time.UnixMilli(last.Int64).UTC()
		}
		if lu == nil || !tokenIDRE.MatchString(t.ID) || t.Epoch != lu.rec.CredEpoch || lu.rec.Disabled || !now.Before(s.expiry(t)) {
			continue // void or expired: nothing to carry over
		}
		t.User = lu.rec.Name
		lu.tokens = append(lu.tokens, t)
		lu.rec.Tokens = append(lu.rec.Tokens, t.ID)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}

	rows, err = db.QueryContext(ctx, "SELECT hash, user_id, created_at, expires_at, seen_at, epoch FROM sessions")
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var (
			ls                        legacySession
			uid, created, exp, seenAt int64
		)
		if err := rows.Scan(&ls.hash, &uid, &created, &exp, &seenAt, &ls.rec.Epoch); err != nil {
			rows.Close()
			return nil, nil, err
		}
		lu := byID[uid]
		ls.rec.V, ls.rec.Created, ls.rec.Expires, ls.rec.Seen = recordVersion, time.UnixMilli(created).UTC(), time.UnixMilli(exp).UTC(), time.UnixMilli(seenAt).UTC()
		if lu == nil || len(ls.hash) != sha256.Size || ls.rec.Epoch != lu.rec.CredEpoch || lu.rec.Disabled ||
			!now.Before(ls.rec.Expires) || now.Sub(ls.rec.Seen) >= s.cfg.SessionIdle {
			continue
		}
		ls.rec.User = lu.rec.Name
		lu.sessions = append(lu.sessions, ls)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	users := make([]legacyUser, 0, len(order))
	for _, id := range order {
		users = append(users, *byID[id])
	}
	return users, secrets, nil
}
