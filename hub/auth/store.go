package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/sqldb"
)

// Config configures accounts and sessions (the hub's auth: section).
type Config struct {
	// Path of the users database; default DATA/auth/users.db.
	Path string `yaml:"path"`
	// FirstAdmin is the name of the admin account created, with a random
	// password written to admin.password beside the database, when there
	// is no account at all. Default "admin".
	FirstAdmin string `yaml:"first_admin"`
	// SessionTTL bounds a session from sign-in (default 12h); SessionIdle
	// ends it after that long without a request (default 2h).
	SessionTTL  time.Duration `yaml:"session_ttl"`
	SessionIdle time.Duration `yaml:"session_idle"`
	// CookieSecure: "auto" (default) marks cookies Secure when the request
	// came over TLS; "always" marks them Secure regardless (behind a
	// TLS-terminating proxy).
	CookieSecure string `yaml:"cookie_secure"`
	// PasswordHash are argon2id's costs (default DefaultHashParams).
	PasswordHash HashParams `yaml:"password_hash"`
	// SignInLimit bounds sign-in attempts.
	SignInLimit LimitConfig `yaml:"sign_in_limit"`
	// TrustedProxies are the addresses (IPs or CIDR prefixes) of reverse
	// proxies in front of the hub, whose X-Forwarded-For header names the
	// client. Default none: the client is the connection's peer, and the
	// header is ignored.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// TokenTTL is an API token's lifetime when its request names none
	// (default 2160h, 90 days); TokenMaxTTL is the longest one may ask for
	// (default 8760h, a year).
	TokenTTL    time.Duration `yaml:"token_ttl"`
	TokenMaxTTL time.Duration `yaml:"token_max_ttl"`
	// MaxTokens is how many live API tokens one account may hold (default
	// 20); creating more is refused until one is revoked or expires.
	MaxTokens int `yaml:"max_tokens"`
}

// SetDefaults fills what is not set; Path stays for the caller to place.
func (c *Config) SetDefaults() {
	if c.FirstAdmin == "" {
		c.FirstAdmin = "admin"
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = 12 * time.Hour
	}
	if c.SessionIdle == 0 {
		c.SessionIdle = 2 * time.Hour
	}
	if c.CookieSecure == "" {
		c.CookieSecure = "auto"
	}
	if c.PasswordHash == (HashParams{}) {
		c.PasswordHash = DefaultHashParams
	}
	c.SignInLimit.setDefaults()
	if c.TokenTTL == 0 {
		c.TokenTTL = 90 * 24 * time.Hour
	}
	if c.TokenMaxTTL == 0 {
		c.TokenMaxTTL = 365 * 24 * time.Hour
	}
	if c.MaxTokens == 0 {
		c.MaxTokens = 20
	}
}

// Validate checks a defaulted configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("auth: path is required"))
	}
	if err := checkName(c.FirstAdmin); err != nil {
		errs = append(errs, fmt.Errorf("auth: first_admin: %w", err))
	}
	if c.SessionTTL < time.Minute || c.SessionIdle < time.Minute {
		errs = append(errs, errors.New("auth: session_ttl and session_idle must be at least 1m"))
	}
	if c.CookieSecure != "auto" && c.CookieSecure != "always" {
		errs = append(errs, fmt.Errorf("auth: cookie_secure %q: want auto or always", c.CookieSecure))
	}
	if err := c.PasswordHash.validate(); err != nil {
		errs = append(errs, fmt.Errorf("auth: %w", err))
	}
	if err := c.SignInLimit.validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	if c.TokenTTL < time.Minute || c.TokenMaxTTL < c.TokenTTL {
		errs = append(errs, errors.New("auth: token_ttl must be at least 1m and token_max_ttl at least token_ttl"))
	}
	if c.MaxTokens < 1 {
		errs = append(errs, errors.New("auth: max_tokens must be at least 1"))
	}
	return errors.Join(errs...)
}

// Store holds accounts, sessions and tokens. Its methods are safe for
// concurrent use.
type Store struct {
	cfg       Config
	db        *sql.DB
	log       *slog.Logger
	now       func() time.Time
	hashSem   chan struct{} // bounds concurrent argon2id hashes (memory)
	dummy     string        // a hash checked when the user does not exist, so timing does not tell
	csrfKey   []byte
	cursorKey []byte
	limit     *limiter
	proxies   []netip.Prefix
	// sleep waits out the slow-down of a name past its sign-in ceiling.
	sleep func(ctx context.Context, d time.Duration) error

	mu sync.Mutex // serialises account changes that read then write
}

// migrations are the accounts database's schema versions (sqldb): never
// edit one, append. A database from before versioning holds version 1 and
// is adopted.
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
// under. A new password or disabling the account moves the epoch on (and
// deletes the sessions and tokens), so that nothing issued before outlives
// the change, not even a session or token created by a request that raced
// it. Accounts disabled before epochs existed lose their tokens now, as they
// would have on being disabled.
const migration2 = `
ALTER TABLE users ADD COLUMN cred_epoch INTEGER NOT NULL DEFAULT 0;
DELETE FROM tokens WHERE user_id IN (SELECT id FROM users WHERE disabled = 1);
ALTER TABLE sessions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
`

// Open opens (creating if needed) the users database of a defaulted and
// validated configuration.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	// One connection: the load is a lookup per request and rare writes.
	db, err := sqldb.Open(ctx, path, sqldb.Options{Migrations: migrations, ForeignKeys: true})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	proxies, _ := parseProxies(cfg.TrustedProxies)
	s := &Store{cfg: cfg, db: db, log: log, now: time.Now, hashSem: make(chan struct{}, 2), proxies: proxies, sleep: sleep}
	if err := s.init(ctx); err != nil {
		db.Close()
		return nil, err
	}
	os.Chmod(path, 0o600)
	s.dummy = hashPassword(rand.Text(), cfg.PasswordHash)
	s.limit = newLimiter(cfg.SignInLimit, s.now)
	return s, nil
}

func (s *Store) init(ctx context.Context) error {
	// The keys survive restarts so that open forms and result pages stay
	// valid.
	var err error
	if s.csrfKey, err = s.secret(ctx, "csrf"); err != nil {
		return err
	}
	if s.cursorKey, err = s.secret(ctx, "search-cursor"); err != nil {
		return err
	}
	return nil
}

// secret returns the random 32-byte key called name, made on first use.
func (s *Store) secret(ctx context.Context, name string) ([]byte, error) {
	key := make([]byte, 32)
	rand.Read(key)
	if _, err := s.db.ExecContext(ctx, "INSERT INTO secrets(name, value) VALUES(?, ?) ON CONFLICT DO NOTHING", name, key); err != nil {
		return nil, fmt.Errorf("auth: secrets: %w", err)
	}
	if err := s.db.QueryRowContext(ctx, "SELECT value FROM secrets WHERE name = ?", name).Scan(&key); err != nil {
		return nil, fmt.Errorf("auth: secrets: %w", err)
	}
	return key, nil
}

// CursorKey is the hub's key for sealing search cursors (api.Records), kept
// with the accounts so that it survives restarts.
func (s *Store) CursorKey() []byte { return s.cursorKey }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Config returns the defaulted configuration.
func (s *Store) Config() Config { return s.cfg }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._@-]{1,63}$`)

func checkName(n string) error {
	if !nameRE.MatchString(n) {
		return fmt.Errorf("%w: user name %q: want 2 to 64 of a-z 0-9 . _ @ -, starting with a letter or digit", ErrInvalid, n)
	}
	return nil
}

// NewUser is an account to create.
type NewUser struct {
	Name        string          `json:"name"`
	DisplayName string          `json:"display_name"`
	Role        Role            `json:"role"`
	Unit        document.UnitID `json:"unit,omitempty"`
	Password    string          `json:"password"`
}

func checkRoleUnit(r Role, u document.UnitID) error {
	if err := r.Validate(); err != nil {
		return err
	}
	switch {
	case r == RoleStaff && u == "":
		return fmt.Errorf("%w: records staff need a unit", ErrInvalid)
	case r == RoleStaff:
		if err := u.Validate(); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	case u != "":
		return fmt.Errorf("%w: only records staff belong to a unit", ErrInvalid)
	}
	return nil
}

// AddUser creates an account. Whether a staff member's unit is registered
// is for the caller to check.
func (s *Store) AddUser(ctx context.Context, nu NewUser) (User, error) {
	nu.Name = strings.ToLower(strings.TrimSpace(nu.Name))
	if err := checkName(nu.Name); err != nil {
		return User{}, err
	}
	if err := checkRoleUnit(nu.Role, nu.Unit); err != nil {
		return User{}, err
	}
	if err := CheckPassword(nu.Password); err != nil {
		return User{}, err
	}
	if len(nu.DisplayName) > 200 {
		return User{}, fmt.Errorf("%w: display name too long", ErrInvalid)
	}
	h, err := s.hash(ctx, nu.Password)
	if err != nil {
		return User{}, err
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	res, err := s.db.ExecContext(ctx, `INSERT INTO users(name, display_name, role, unit, password, created_at)
		VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO NOTHING`,
		nu.Name, nu.DisplayName, string(nu.Role), string(nu.Unit), h, now.UnixMilli())
	if err != nil {
		return User{}, fmt.Errorf("auth: add user: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return User{}, fmt.Errorf("%w: user %s", ErrConflict, nu.Name)
	}
	id, _ := res.LastInsertId()
	s.log.Info("user created", "user", nu.Name, "role", nu.Role, "unit", nu.Unit)
	return User{ID: id, Name: nu.Name, DisplayName: nu.DisplayName, Role: nu.Role, Unit: nu.Unit, Created: now}, nil
}

const userCols = "id, name, display_name, role, unit, disabled, created_at, last_sign_in, cred_epoch"

type scanner interface{ Scan(dst ...any) error }

func scanUser(r scanner, extra ...any) (User, error) {
	var (
		u       User
		role    string
		unit    string
		created int64
		last    sql.NullInt64
	)
	err := r.Scan(append([]any{&u.ID, &u.Name, &u.DisplayName, &role, &unit, &u.Disabled, &created, &last, &u.epoch}, extra...)...)
	u.Role, u.Unit, u.Created = Role(role), document.UnitID(unit), time.UnixMilli(created).UTC()
	if last.Valid {
		u.LastSignIn = time.UnixMilli(last.Int64).UTC()
	}
	return u, err
}

// User returns the account called name.
func (s *Store) User(ctx context.Context, name string) (User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, "SELECT "+userCols+" FROM users WHERE name = ?", strings.ToLower(name)))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, fmt.Errorf("%w: user %s", ErrNotFound, name)
	}
	if err != nil {
		return User{}, fmt.Errorf("auth: user %s: %w", name, err)
	}
	return u, nil
}

// Users returns every account, by name.
func (s *Store) Users(ctx context.Context) ([]User, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+userCols+" FROM users ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("auth: users: %w", err)
	}
	defer rows.Close()
	out := []User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("auth: users: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// Change is a change to an account; nil fields stay as they are.
type Change struct {
	DisplayName *string          `json:"display_name,omitempty"`
	Role        *Role            `json:"role,omitempty"`
	Unit        *document.UnitID `json:"unit,omitempty"`
	Disabled    *bool            `json:"disabled,omitempty"`
	Password    *string          `json:"password,omitempty"`
}

// UpdateUser applies c to the account called name. A new password or
// disabling the account ends its sessions and API tokens for good (a
// later enable does not bring them back); a new role or unit ends its
// sessions.
func (s *Store) UpdateUser(ctx context.Context, name string, c Change) (User, error) {
	return s.UpdateUserBy(ctx, nil, name, c)
}

// UpdateUserBy is UpdateUser on behalf of by (nil: the hub itself), who is
// written in the log; a password set by someone other than the account's
// owner is logged as a reset, at warning level, for the audit trail.
func (s *Store) UpdateUserBy(ctx context.Context, by *Identity, name string, c Change) (User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := s.User(ctx, name)
	if err != nil {
		return User{}, err
	}
	role, unit := u.Role, u.Unit
	if c.Role != nil {
		role = *c.Role
		if role != RoleStaff && c.Unit == nil {
			unit = ""
		}
	}
	if c.Unit != nil {
		unit = *c.Unit
	}
	if err := checkRoleUnit(role, unit); err != nil {
		return User{}, err
	}
	var hash string
	if c.Password != nil {
		if err := CheckPassword(*c.Password); err != nil {
			return User{}, err
		}
		if hash, err = s.hash(ctx, *c.Password); err != nil {
			return User{}, err
		}
	}
	if c.DisplayName != nil {
		if len(*c.DisplayName) > 200 {
			return User{}, fmt.Errorf("%w: display name too long", ErrInvalid)
		}
		u.DisplayName = *c.DisplayName
	}
	disabling := c.Disabled != nil && *c.Disabled && !u.Disabled
	if c.Disabled != nil {
		u.Disabled = *c.Disabled
	}
	// A new credential, or an account shut: nothing issued before counts.
	newEpoch := hash != "" || disabling
	endSessions := newEpoch || u.Disabled || role != u.Role || unit != u.Unit
	u.Role, u.Unit = role, unit
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return User{}, fmt.Errorf("auth: update user: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "UPDATE users SET display_name = ?, role = ?, unit = ?, disabled = ? WHERE id = ?",
		u.DisplayName, string(u.Role), string(u.Unit), u.Disabled, u.ID); err != nil {
		return User{}, fmt.Errorf("auth: update user: %w", err)
	}
	if hash != "" {
		if _, err := tx.ExecContext(ctx, "UPDATE users SET password = ? WHERE id = ?", hash, u.ID); err != nil {
			return User{}, fmt.Errorf("auth: update user: %w", err)
		}
	}
	if newEpoch {
		if err := tx.QueryRowContext(ctx, "UPDATE users SET cred_epoch = cred_epoch + 1 WHERE id = ? RETURNING cred_epoch", u.ID).Scan(&u.epoch); err != nil {
			return User{}, fmt.Errorf("auth: update user: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM tokens WHERE user_id = ?", u.ID); err != nil {
			return User{}, fmt.Errorf("auth: update user: %w", err)
		}
	}
	if endSessions {
		if _, err := tx.ExecContext(ctx, "DELETE FROM sessions WHERE user_id = ?", u.ID); err != nil {
			return User{}, fmt.Errorf("auth: update user: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return User{}, fmt.Errorf("auth: update user: %w", err)
	}
	attrs := []any{"user", u.Name, "role", u.Role, "unit", u.Unit, "disabled", u.Disabled, "password", hash != "", "credentials_revoked", newEpoch}
	if by != nil {
		attrs = append(attrs, "by", by.User.Name, "via", by.Via, "addr", by.addr)
	}
	if hash != "" && by != nil && (by.Via == ViaAdminToken || by.User.ID != u.ID) {
		s.log.Warn("password reset by an admin", attrs...)
	} else {
		s.log.Info("user changed", attrs...)
	}
	return u, nil
}

// hash hashes a password, at most two at a time (each takes 64 MiB).
func (s *Store) hash(ctx context.Context, pw string) (string, error) {
	select {
	case s.hashSem <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-s.hashSem }()
	return hashPassword(pw, s.cfg.PasswordHash), nil
}

func (s *Store) check(ctx context.Context, hash, pw string) (bool, error) {
	select {
	case s.hashSem <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-s.hashSem }()
	return checkHash(hash, pw), nil
}

// Authenticate checks a user name and password. It takes as long for an
// unknown name as for a wrong password, and says the same.
func (s *Store) Authenticate(ctx context.Context, name, pw string) (User, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	var hash string
	u, err := scanUser(s.db.QueryRowContext(ctx, "SELECT "+userCols+", password FROM users WHERE name = ?", name), &hash)
	found := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return User{}, fmt.Errorf("auth: authenticate: %w", err)
	}
	if !found || len(pw) > MaxPassword {
		hash = s.dummy
	}
	ok, err := s.check(ctx, hash, pw)
	if err != nil {
		return User{}, err
	}
	if !found || !ok || u.Disabled {
		return User{}, ErrCredentials
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	if _, err := s.db.ExecContext(ctx, "UPDATE users SET last_sign_in = ? WHERE id = ?", now.UnixMilli(), u.ID); err != nil {
		return User{}, fmt.Errorf("auth: authenticate: %w", err)
	}
	u.LastSignIn = now
	return u, nil
}

// EnsureFirstAdmin creates the first admin account when there is no account
// at all, with a random password written (0600) to passwordFile. It reports
// whether it did.
func (s *Store) EnsureFirstAdmin(ctx context.Context, passwordFile string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil {
		return false, fmt.Errorf("auth: %w", err)
	}
	if n > 0 {
		return false, nil
	}
	pw := rand.Text()
	if err := os.MkdirAll(filepath.Dir(passwordFile), 0o700); err != nil {
		return false, fmt.Errorf("auth: %w", err)
	}
	if err := os.WriteFile(passwordFile, []byte(pw+"\n"), 0o600); err != nil {
		return false, fmt.Errorf("auth: %w", err)
	}
	if _, err := s.AddUser(ctx, NewUser{Name: s.cfg.FirstAdmin, DisplayName: "Quản trị / Administrator", Role: RoleAdmin, Password: pw}); err != nil {
		return false, err
	}
	return true, nil
}

func digest(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}
