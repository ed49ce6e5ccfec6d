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

// NewSession starts a session for u and returns its secret (the cookie
// value). Expired sessions are swept on the way.
func (s *Store) NewSession(ctx context.Context, u User) (string, error) {
	secret := rand.Text() + rand.Text()
	now := s.now().UnixMilli()
	if _, err := s.db.ExecContext(ctx, "DELETE FROM sessions WHERE expires_at <= ? OR seen_at <= ?",
		now, now-s.cfg.SessionIdle.Milliseconds()); err != nil {
		return "", fmt.Errorf("auth: session: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, "INSERT INTO sessions(hash, user_id, created_at, expires_at, seen_at) VALUES(?, ?, ?, ?, ?)",
		digest(secret), u.ID, now, now+s.cfg.SessionTTL.Milliseconds(), now); err != nil {
		return "", fmt.Errorf("auth: session: %w", err)
	}
	return secret, nil
}

// Session returns the identity of a live session, or ErrNotFound.
func (s *Store) Session(ctx context.Context, secret string) (*Identity, error) {
	if secret == "" || len(secret) > 128 {
		return nil, ErrNotFound
	}
	h := digest(secret)
	var expires, seen int64
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+prefixed("u", userCols)+`, s.expires_at, s.seen_at
		FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.hash = ?`, h), &expires, &seen)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("auth: session: %w", err)
	}
	now := s.now().UnixMilli()
	if u.Disabled || now >= expires || now-seen >= s.cfg.SessionIdle.Milliseconds() {
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

// NewToken creates an API token for the account called user; ttl 0 means
// no expiry. The secret is returned once and only its hash is kept.
func (s *Store) NewToken(ctx context.Context, user, name string, ttl time.Duration) (string, Token, error) {
	u, err := s.User(ctx, user)
	if err != nil {
		return "", Token{}, err
	}
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 {
		return "", Token{}, fmt.Errorf("%w: a token needs a name of at most 100 bytes", ErrInvalid)
	}
	if ttl < 0 {
		return "", Token{}, fmt.Errorf("%w: negative token lifetime", ErrInvalid)
	}
	id := strings.ToLower(rand.Text()[:10])
	secret := tokenPrefix + id + "_" + rand.Text()
	now := s.now().UTC().Truncate(time.Millisecond)
	t := Token{ID: id, User: u.Name, Name: name, Created: now}
	var exp any
	if ttl > 0 {
		t.Expires = now.Add(ttl)
		exp = t.Expires.UnixMilli()
	}
	if _, err := s.db.ExecContext(ctx, "INSERT INTO tokens(id, hash, user_id, name, created_at, expires_at) VALUES(?, ?, ?, ?, ?, ?)",
		id, digest(secret), u.ID, name, now.UnixMilli(), exp); err != nil {
		return "", Token{}, fmt.Errorf("auth: new token: %w", err)
	}
	s.log.Info("token created", "user", u.Name, "token", id)
	return secret, t, nil
}

// Tokens returns the tokens of the account called user ("" for every one).
func (s *Store) Tokens(ctx context.Context, user string) ([]Token, error) {
	q := `SELECT t.id, u.name, t.name, t.created_at, t.expires_at, t.last_used FROM tokens t JOIN users u ON u.id = t.user_id`
	var args []any
	if user != "" {
		q += " WHERE u.name = ?"
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
			t          Token
			created    int64
			exp, lastU sql.NullInt64
		)
		if err := rows.Scan(&t.ID, &t.User, &t.Name, &created, &exp, &lastU); err != nil {
			return nil, fmt.Errorf("auth: tokens: %w", err)
		}
		t.Created = time.UnixMilli(created).UTC()
		if exp.Valid {
			t.Expires = time.UnixMilli(exp.Int64).UTC()
		}
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
// ErrNotFound for an unknown, expired or disabled one.
func (s *Store) TokenIdentity(ctx context.Context, secret string) (*Identity, error) {
	if !strings.HasPrefix(secret, tokenPrefix) || len(secret) > 128 {
		return nil, ErrNotFound
	}
	var (
		id        string
		exp, last sql.NullInt64
	)
	h := digest(secret)
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+prefixed("u", userCols)+`, t.id, t.expires_at, t.last_used
		FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = ?`, h), &id, &exp, &last)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("auth: token: %w", err)
	}
	now := s.now().UnixMilli()
	if u.Disabled || (exp.Valid && now >= exp.Int64) {
		return nil, ErrNotFound
	}
	if !last.Valid || now-last.Int64 >= seenEvery.Milliseconds() {
		if _, err := s.db.ExecContext(ctx, "UPDATE tokens SET last_used = ? WHERE id = ?", now, id); err != nil {
			return nil, fmt.Errorf("auth: token: %w", err)
		}
	}
	return &Identity{User: u, Via: ViaToken}, nil
}
