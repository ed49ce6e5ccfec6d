package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/document"
)

// Config configures accounts and sessions (the hub's auth: section).
type Config struct {
	// Path is where hubs before the shared accounts kept them, a SQLite
	// file (default DATA/auth/users.db): at the first start it is copied
	// into the shared buckets and renamed users.db.migrated. The first
	// admin's password file is written beside it.
	Path string `yaml:"path"`
	// FirstAdmin is the name of the admin account created, with a random
	// password written to admin.password beside Path, when there is no
	// account at all. Default "admin".
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
	// Buckets place and size the accounts' buckets (the hub's
	// nats.buckets).
	Buckets broker.BucketOptions `yaml:"-"`
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
	c.Buckets.SetDefaults()
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
	if c.MaxTokens < 1 || c.MaxTokens > maxTokensBound {
		errs = append(errs, fmt.Errorf("auth: max_tokens must be in 1..%d", maxTokensBound))
	}
	if err := c.Buckets.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("auth: %w", err))
	}
	return errors.Join(errs...)
}

// maxTokensBound bounds max_tokens: an account's record lists its tokens.
const maxTokensBound = 1000

// Store holds accounts, sessions and tokens in the key-value buckets every
// hub shares (see records.go), so that an account, a session or a token
// works on every hub; the sign-in rate limits are counted by each hub on
// its own. Its methods are safe for concurrent use.
type Store struct {
	cfg       Config
	accounts  *broker.Bucket // EDX_ACCOUNTS
	sessions  *broker.Bucket // EDX_SESSIONS
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
}

// sessionMarkerTTL is how long the sessions bucket keeps the marker of an
// expired session.
const sessionMarkerTTL = time.Minute

// newClock is a new store's clock (tests pin it to read old files as of when
// they were written).
var newClock = time.Now

// maxAttempts bounds the compare-and-set retries of one change.
const maxAttempts = 32

// Open opens the accounts on js (creating or configuring their buckets), and
// copies in, once, the SQLite accounts file of an earlier hub at cfg.Path
// (see migrate). The CSRF and search-cursor keys are the ones every hub
// uses: the first hub makes them.
func Open(ctx context.Context, cfg Config, js jetstream.JetStream, log *slog.Logger) (*Store, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if js == nil {
		return nil, errors.New("auth: JetStream is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	cfg.Path = path
	proxies, _ := parseProxies(cfg.TrustedProxies)
	s := &Store{cfg: cfg, log: log, now: newClock, hashSem: make(chan struct{}, 2), proxies: proxies, sleep: sleep}
	b := cfg.Buckets
	if s.accounts, err = broker.OpenBucket(ctx, js, b.KeyValueConfig(accountsBucket, "edx accounts: users, API tokens (each expiring with its token), shared keys", 5, sessionMarkerTTL)); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if s.sessions, err = broker.OpenBucket(ctx, js, b.KeyValueConfig(sessionsBucket, "edx sign-in sessions, each expiring with its session", 1, sessionMarkerTTL)); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	// The keys survive restarts, and every hub has the same, so that open
	// forms and result pages stay valid whichever hub answers.
	if s.csrfKey, err = s.secret(ctx, "csrf", randomKey); err != nil {
		return nil, err
	}
	if s.cursorKey, err = s.secret(ctx, "search-cursor", randomKey); err != nil {
		return nil, err
	}
	s.dummy = hashPassword(rand.Text(), cfg.PasswordHash)
	s.limit = newLimiter(cfg.SignInLimit, s.now)
	return s, nil
}

func randomKey() []byte {
	key := make([]byte, 32)
	rand.Read(key)
	return key
}

// secret returns the shared key called name: the one in the bucket, or,
// when there is none yet, a new one from mk, created so that of two hubs
// making it at once both end up with the same.
func (s *Store) secret(ctx context.Context, name string, mk func() []byte) ([]byte, error) {
	for range maxAttempts {
		e, err := s.accounts.Latest(ctx, secretKey(name))
		if err == nil {
			var r secretRecord
			if err := decode(e.Value, "secret", &r); err != nil {
				return nil, err
			}
			return r.Value, nil
		}
		if !errors.Is(err, broker.ErrNoKey) {
			return nil, fmt.Errorf("auth: secret %s: %w", name, err)
		}
		v := mk()
		if _, err := s.accounts.Create(ctx, secretKey(name), encode(secretRecord{V: recordVersion, Value: v}), 0); err == nil {
			return v, nil
		} else if !errors.Is(err, broker.ErrRevision) {
			return nil, fmt.Errorf("auth: secret %s: %w", name, err)
		}
	}
	return nil, fmt.Errorf("auth: secret %s: raced too often", name)
}

// AdminToken returns the admin token every hub of the deployment accepts,
// and writes it (0600) to file for the tools on this hub's machine (edx
// unit add, edx get): the one in the bucket; with none yet, the one in file
// (a hub from before the shared accounts), or a new one. The token itself is
// kept, not a hash, so that every hub can write it for its tools; only the
// hub's NATS users can read the bucket.
func (s *Store) AdminToken(ctx context.Context, file string) (string, error) {
	old, _ := os.ReadFile(file)
	have := strings.TrimSpace(string(old))
	b, err := s.secret(ctx, "admin-token", func() []byte {
		if have != "" {
			return []byte(have)
		}
		return []byte(rand.Text())
	})
	if err != nil {
		return "", err
	}
	tok := string(b)
	if tok != have {
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			return "", fmt.Errorf("auth: admin token: %w", err)
		}
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("auth: admin token: %w", err)
		}
		if have != "" {
			s.log.Warn("auth: the admin token file now holds the deployment's admin token (the one it held is no longer accepted)", "file", file)
		}
	}
	return tok, nil
}

// CursorKey is the hub's key for sealing search cursors (hub/service), kept
// with the accounts so that it survives restarts and is the same on every
// hub.
func (s *Store) CursorKey() []byte { return s.cursorKey }

// Close releases nothing: the buckets belong to the hub's connection.
func (s *Store) Close() error { return nil }

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

// newUserID is a random positive id (accounts are made on any hub).
func newUserID() int64 {
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	return n.Int64() + 1
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
	r := userRecord{V: recordVersion, ID: newUserID(), Name: nu.Name, DisplayName: nu.DisplayName, Role: nu.Role, Unit: nu.Unit,
		Password: h, Created: now}
	if _, err := s.accounts.Create(ctx, userKey(r.Name), encode(r), 0); errors.Is(err, broker.ErrRevision) {
		return User{}, fmt.Errorf("%w: user %s", ErrConflict, nu.Name)
	} else if err != nil {
		return User{}, fmt.Errorf("auth: add user: %w", err)
	}
	s.log.Info("user created", "user", nu.Name, "role", nu.Role, "unit", nu.Unit)
	return r.user(), nil
}

// userRecord reads an account from the bucket's leader, with its revision:
// ErrNotFound when there is none.
func (s *Store) userRecord(ctx context.Context, name string) (userRecord, uint64, error) {
	name = strings.ToLower(name)
	if checkName(name) != nil {
		return userRecord{}, 0, fmt.Errorf("%w: user %s", ErrNotFound, name)
	}
	e, err := s.accounts.Latest(ctx, userKey(name))
	if errors.Is(err, broker.ErrNoKey) {
		return userRecord{}, 0, fmt.Errorf("%w: user %s", ErrNotFound, name)
	}
	if err != nil {
		return userRecord{}, 0, fmt.Errorf("auth: user %s: %w", name, err)
	}
	var r userRecord
	if err := decode(e.Value, "user", &r); err != nil {
		return userRecord{}, 0, err
	}
	return r, e.Revision, nil
}

// changeUser applies change to an account with compare-and-set on its
// revision, read again and applied again after a conflict; change must not
// keep anything from an earlier call. It returns the record written.
func (s *Store) changeUser(ctx context.Context, name string, change func(r *userRecord) error) (userRecord, error) {
	for range maxAttempts {
		r, rev, err := s.userRecord(ctx, name)
		if err != nil {
			return userRecord{}, err
		}
		if err := change(&r); err != nil {
			return userRecord{}, err
		}
		r.V = recordVersion
		if _, err := s.accounts.Update(ctx, userKey(r.Name), encode(r), rev, 0); err == nil {
			return r, nil
		} else if !errors.Is(err, broker.ErrRevision) {
			return userRecord{}, fmt.Errorf("auth: user %s: %w", name, err)
		}
	}
	return userRecord{}, fmt.Errorf("auth: user %s: changed by others %d times while changing it", name, maxAttempts)
}

// User returns the account called name.
func (s *Store) User(ctx context.Context, name string) (User, error) {
	r, _, err := s.userRecord(ctx, name)
	if err != nil {
		return User{}, err
	}
	return r.user(), nil
}

// users reads every account.
func (s *Store) users(ctx context.Context) ([]userRecord, error) {
	es, err := s.accounts.Values(ctx, "user.*")
	if err != nil {
		return nil, fmt.Errorf("auth: users: %w", err)
	}
	out := make([]userRecord, 0, len(es))
	for _, e := range es {
		var r userRecord
		if err := decode(e.Value, "user", &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Users returns every account, by name.
func (s *Store) Users(ctx context.Context) ([]User, error) {
	rs, err := s.users(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]User, len(rs))
	for i := range rs {
		out[i] = rs[i].user()
	}
	slices.SortFunc(out, func(a, b User) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
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
	var hash string
	if c.Password != nil {
		if err := CheckPassword(*c.Password); err != nil {
			return User{}, err
		}
	}
	if c.DisplayName != nil && len(*c.DisplayName) > 200 {
		return User{}, fmt.Errorf("%w: display name too long", ErrInvalid)
	}
	var (
		newEpoch bool
		dropped  []string
	)
	r, err := s.changeUser(ctx, name, func(r *userRecord) error {
		role, unit := r.Role, r.Unit
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
			return err
		}
		if c.Password != nil && hash == "" {
			var err error
			if hash, err = s.hash(ctx, *c.Password); err != nil {
				return err
			}
		}
		if c.DisplayName != nil {
			r.DisplayName = *c.DisplayName
		}
		disabling := c.Disabled != nil && *c.Disabled && !r.Disabled
		if c.Disabled != nil {
			r.Disabled = *c.Disabled
		}
		// A new credential, or an account shut: nothing issued before counts.
		newEpoch = hash != "" || disabling
		endSessions := newEpoch || r.Disabled || role != r.Role || unit != r.Unit
		r.Role, r.Unit = role, unit
		if hash != "" {
			r.Password = hash
		}
		dropped = nil
		if newEpoch {
			r.CredEpoch++
			dropped, r.Tokens = r.Tokens, nil
		}
		if endSessions {
			r.SessionEpoch++
		}
		return nil
	})
	if err != nil {
		return User{}, err
	}
	for _, id := range dropped {
		if err := s.accounts.Delete(ctx, tokenKey(id), 0); err != nil {
			s.log.Warn("auth: a void token's record stays (it is refused all the same)", "token", id, "err", err)
		}
	}
	u := r.user()
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
	r, _, err := s.userRecord(ctx, name)
	found := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return User{}, fmt.Errorf("auth: authenticate: %w", err)
	}
	hash := r.Password
	if !found || len(pw) > MaxPassword {
		hash = s.dummy
	}
	ok, err := s.check(ctx, hash, pw)
	if err != nil {
		return User{}, err
	}
	if !found || !ok || r.Disabled {
		return User{}, ErrCredentials
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	epoch := r.CredEpoch
	r, err = s.changeUser(ctx, name, func(r *userRecord) error {
		if r.CredEpoch != epoch || r.Disabled {
			return ErrCredentials // changed while the password was checked
		}
		r.LastSignIn = now
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrCredentials) || errors.Is(err, ErrNotFound) {
			return User{}, ErrCredentials
		}
		return User{}, fmt.Errorf("auth: authenticate: %w", err)
	}
	return r.user(), nil
}

// EnsureFirstAdmin creates the first admin account when there is no account
// at all, with a random password written (0600) to passwordFile. It reports
// whether it did; of hubs starting at once, one does.
func (s *Store) EnsureFirstAdmin(ctx context.Context, passwordFile string) (bool, error) {
	us, err := s.users(ctx)
	if err != nil {
		return false, err
	}
	if len(us) > 0 {
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
		if !broker.NotReady(err) {
			// Kept when the account may have been made all the same (a
			// request that timed out): a second try then finds it, and the
			// file holds its password.
			os.Remove(passwordFile)
		}
		if errors.Is(err, ErrConflict) {
			return false, nil // another hub made it
		}
		return false, err
	}
	return true, nil
}

func digest(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}
