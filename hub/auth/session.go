package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// seenEvery is how stale a session's last-seen time may get before a
// request writes it again.
const seenEvery = time.Minute

// NewSession starts a session for u (as Authenticate returned it) and
// returns its secret (the cookie value). It fails with ErrCredentials when
// u's password changed or u was disabled since. Expired sessions are swept
// on the way.
func (s *Store) NewSession(ctx context.Context, u User) (string, error) {
	secret := rand.Text() + rand.Text()
	now := s.now().UnixMilli()
	if _, err := s.db.ExecContext(ctx, "DELETE FROM sessions WHERE expires_at <= ? OR seen_at <= ?",
		now, now-s.cfg.SessionIdle.Milliseconds()); err != nil {
		return "", fmt.Errorf("auth: session: %w", err)
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO sessions(hash, user_id, created_at, expires_at, seen_at, epoch)
		SELECT ?, id, ?, ?, ?, cred_epoch FROM users WHERE id = ? AND cred_epoch = ? AND disabled = 0`,
		digest(secret), now, now+s.cfg.SessionTTL.Milliseconds(), now, u.ID, u.epoch)
	if err != nil {
		return "", fmt.Errorf("auth: session: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return "", ErrCredentials
	}
	return secret, nil
}

// Session returns the identity of a live session, or ErrNotFound.
func (s *Store) Session(ctx context.Context, secret string) (*Identity, error) {
	if secret == "" || len(secret) > 128 {
		return nil, ErrNotFound
	}
	h := digest(secret)
	var expires, seen, epoch int64
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+prefixed("u", userCols)+`, s.expires_at, s.seen_at, s.epoch
		FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.hash = ?`, h), &expires, &seen, &epoch)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("auth: session: %w", err)
	}
	now := s.now().UnixMilli()
	if u.Disabled || epoch != u.epoch || now >= expires || now-seen >= s.cfg.SessionIdle.Milliseconds() {
		s.db.ExecContext(ctx, "DELETE FROM sessions WHERE hash = ?", h)
		return nil, ErrNotFound
	}
	if now-seen >= seenEvery.Milliseconds() {
		if _, err := s.db.ExecContext(ctx, "UPDATE sessions SET seen_at = ? WHERE hash = ?", now, h); err != nil {
			return nil, fmt.Errorf("auth: session: %w", err)
		}
	}
	return &Identity{User: u, Via: ViaSession, session: secret}, nil
}

// EndSession ends a session (sign out).
func (s *Store) EndSession(ctx context.Context, secret string) error {
	_, err := s.db.ExecContext(ctx, "DELETE FROM sessions WHERE hash = ?", digest(secret))
	return err
}

func prefixed(alias, cols string) string {
	f := strings.Split(cols, ",")
	for i, c := range f {
		f[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(f, ", ")
}

// csrfToken returns the CSRF token bound to a secret (a session, or the
// pre-session cookie of the sign-in form).
func (s *Store) csrfToken(purpose, binding string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(purpose + "\x00" + binding))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *Store) checkCSRF(purpose, binding, token string) bool {
	if binding == "" || token == "" {
		return false
	}
	return hmac.Equal([]byte(s.csrfToken(purpose, binding)), []byte(token))
}

// Token is an API token's description (never its secret).
type Token struct {
	ID       string    `json:"id"`
	User     string    `json:"user"`
	Name     string    `json:"name"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires,omitzero"`
	LastUsed time.Time `json:"last_used,omitzero"`
}

// tokenPrefix starts every API token, so that scanners can find leaked ones.
const tokenPrefix = "edx_"

// NewToken creates an API token for the account called user, on behalf of
// the hub itself (edx user add, tests). See NewTokenBy.
func (s *Store) NewToken(ctx context.Context, user, name string, ttl time.Duration) (string, Token, error) {
	return s.NewTokenBy(ctx, nil, user, name, ttl)
}

// NewTokenBy creates an API token for the account called user on behalf of
// by (nil: the hub itself). ttl 0 means the configured token_ttl; more
// than token_max_ttl is ErrInvalid. An account holds at most max_tokens
// live tokens: past that, ErrLimit. A disabled account gets none, and when
// by is the account itself, its credentials must not have changed since
// by signed in. The secret is returned once and only its hash is kept;
// the account's expired and void tokens are swept on the way.
func (s *Store) NewTokenBy(ctx context.Context, by *Identity, user, name string, ttl time.Duration) (string, Token, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 {
		return "", Token{}, fmt.Errorf("%w: a token needs a name of at most 100 bytes", ErrInvalid)
	}
	switch {
	case ttl < 0:
		return "", Token{}, fmt.Errorf("%w: negative token lifetime", ErrInvalid)
	case ttl == 0:
		ttl = s.cfg.TokenTTL
	case ttl > s.cfg.TokenMaxTTL:
		return "", Token{}, fmt.Errorf("%w: a token lives at most %s (token_max_ttl)", ErrInvalid, fmtHours(s.cfg.TokenMaxTTL))
	}
	id := strings.ToLower(rand.Text()[:10])
	secret := tokenPrefix + id + "_" + rand.Text()
	now := s.now().UTC().Truncate(time.Millisecond)
	// The write transaction (BEGIN IMMEDIATE) makes the count and the
	// insert one step.
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", Token{}, fmt.Errorf("auth: new token: %w", err)
	}
	defer tx.Rollback()
	u, err := scanUser(tx.QueryRowContext(ctx, "SELECT "+userCols+" FROM users WHERE name = ?", strings.ToLower(user)))
	if errors.Is(err, sql.ErrNoRows) {
		return "", Token{}, fmt.Errorf("%w: user %s", ErrNotFound, user)
	}
	if err != nil {
		return "", Token{}, fmt.Errorf("auth: new token: %w", err)
	}
	if u.Disabled {
		return "", Token{}, fmt.Errorf("%w: user %s is disabled", ErrInvalid, u.Name)
	}
	if by != nil && by.Via != ViaAdminToken && by.User.ID == u.ID && by.User.epoch != u.epoch {
		return "", Token{}, fmt.Errorf("%w: the password changed: sign in again", ErrCredentials)
	}
	nowMS := now.UnixMilli()
	if _, err := tx.ExecContext(ctx, "DELETE FROM tokens WHERE user_id = ? AND (epoch != ? OR "+tokenExpiry("")+" <= ?)",
		u.ID, u.epoch, s.cfg.TokenMaxTTL.Milliseconds(), nowMS); err != nil {
		return "", Token{}, fmt.Errorf("auth: new token: %w", err)
	}
	var live int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM tokens WHERE user_id = ?", u.ID).Scan(&live); err != nil {
		return "", Token{}, fmt.Errorf("auth: new token: %w", err)
	}
	if live >= s.cfg.MaxTokens {
		return "", Token{}, fmt.Errorf("%w: %s already has %d live API tokens, the most an account may hold (max_tokens): revoke one first",
			ErrLimit, u.Name, live)
	}
	t := Token{ID: id, User: u.Name, Name: name, Created: now, Expires: now.Add(ttl)}
	if _, err := tx.ExecContext(ctx, "INSERT INTO tokens(id, hash, user_id, name, created_at, expires_at, epoch) VALUES(?, ?, ?, ?, ?, ?, ?)",
		id, digest(secret), u.ID, name, nowMS, t.Expires.UnixMilli(), u.epoch); err != nil {
		return "", Token{}, fmt.Errorf("auth: new token: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return "", Token{}, fmt.Errorf("auth: new token: %w", err)
	}
	attrs := []any{"user", u.Name, "token", id, "expires", t.Expires}
	if by != nil {
		attrs = append(attrs, "by", by.User.Name, "via", by.Via, "addr", by.addr)
	}
	s.log.Info("token created", attrs...)
	return secret, t, nil
}

// tokenExpiry is when a token ends, in SQL, for the table alias prefix
// ("t." or ""), taking one argument (token_max_ttl in milliseconds): its
// expiry, bounded by token_max_ttl from its creation (tokens made before
// expiries were required have none).
func tokenExpiry(alias string) string {
	return "min(coalesce(" + alias + "expires_at, 9223372036854775807), " + alias + "created_at + ?)"
}

func fmtHours(d time.Duration) string {
	if d%time.Hour == 0 {
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return d.String()
}

// Tokens returns the tokens of the account called user ("" for every one),
// expired ones included until they are swept.
func (s *Store) Tokens(ctx context.Context, user string) ([]Token, error) {
	q := `SELECT t.id, u.name, t.name, t.created_at, ` + tokenExpiry("t.") + `, t.last_used
		FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.epoch = u.cred_epoch`
	args := []any{s.cfg.TokenMaxTTL.Milliseconds()}
	if user != "" {
		q += " AND u.name = ?"
		args = append(args, strings.ToLower(user))
	}
	rows, err := s.db.QueryContext(ctx, q+" ORDER BY t.created_at, t.id", args...)
	if err != nil {
		return nil, fmt.Errorf("auth: tokens: %w", err)
	}
	defer rows.Close()
	out := []Token{}
	for rows.Next() {
		var (
			t            Token
			created, exp int64
			lastU        sql.NullInt64
		)
		if err := rows.Scan(&t.ID, &t.User, &t.Name, &created, &exp, &lastU); err != nil {
			return nil, fmt.Errorf("auth: tokens: %w", err)
		}
		t.Created = time.UnixMilli(created).UTC()
		t.Expires = time.UnixMilli(exp).UTC()
		if lastU.Valid {
			t.LastUsed = time.UnixMilli(lastU.Int64).UTC()
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// TokenOwner returns the name of the account a token belongs to.
func (s *Store) TokenOwner(ctx context.Context, id string) (string, error) {
	var name string
	err := s.db.QueryRowContext(ctx, "SELECT u.name FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?", id).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("%w: token %s", ErrNotFound, id)
	}
	return name, err
}

// RevokeToken deletes a token.
func (s *Store) RevokeToken(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, "DELETE FROM tokens WHERE id = ?", id)
	if err != nil {
		return fmt.Errorf("auth: revoke token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: token %s", ErrNotFound, id)
	}
	s.log.Info("token revoked", "token", id)
	return nil
}

// TokenIdentity returns the identity an API token stands for, or
// ErrNotFound for an unknown, expired or void one (its account disabled or
// its password changed since the token was made).
func (s *Store) TokenIdentity(ctx context.Context, secret string) (*Identity, error) {
	if !strings.HasPrefix(secret, tokenPrefix) || len(secret) > 128 {
		return nil, ErrNotFound
	}
	var (
		id         string
		exp, epoch int64
		last       sql.NullInt64
	)
	h := digest(secret)
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+prefixed("u", userCols)+`, t.id, `+
		tokenExpiry("t.")+`, t.last_used, t.epoch
		FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = ?`, s.cfg.TokenMaxTTL.Milliseconds(), h), &id, &exp, &last, &epoch)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("auth: token: %w", err)
	}
	now := s.now().UnixMilli()
	if u.Disabled || epoch != u.epoch || now >= exp {
		return nil, ErrNotFound
	}
	if !last.Valid || now-last.Int64 >= seenEvery.Milliseconds() {
		if _, err := s.db.ExecContext(ctx, "UPDATE tokens SET last_used = ? WHERE id = ?", now, id); err != nil {
			return nil, fmt.Errorf("auth: token: %w", err)
		}
	}
	return &Identity{User: u, Via: ViaToken}, nil
}
