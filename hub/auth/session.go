package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edxhub/edx/hub/broker"
)

// seenEvery is how stale a session's last-seen time may get before a
// request writes it again.
const seenEvery = time.Minute

// sessionTTL is how long the sessions bucket keeps a session written at now
// without another write: until it ends or goes idle, whichever is first.
func (s *Store) sessionTTL(r sessionRecord, now time.Time) time.Duration {
	return max(min(r.Expires.Sub(now), s.cfg.SessionIdle), time.Second)
}

// NewSession starts a session for u (as Authenticate returned it) and
// returns its secret (the cookie value). It fails with ErrCredentials when
// u's password changed or u was disabled since. The session expires in the
// bucket by itself.
func (s *Store) NewSession(ctx context.Context, u User) (string, error) {
	r, _, err := s.userRecord(ctx, u.Name)
	if errors.Is(err, ErrNotFound) {
		return "", ErrCredentials
	}
	if err != nil {
		return "", fmt.Errorf("auth: session: %w", err)
	}
	if r.Disabled || r.CredEpoch != u.epoch {
		return "", ErrCredentials
	}
	secret := rand.Text() + rand.Text()
	now := s.now().UTC().Truncate(time.Millisecond)
	sr := sessionRecord{V: recordVersion, User: r.Name, Created: now, Expires: now.Add(s.cfg.SessionTTL), Seen: now,
		Epoch: r.CredEpoch, SessionEpoch: r.SessionEpoch}
	if _, err := s.sessions.Create(ctx, sessionKey(digest(secret)), encode(sr), s.sessionTTL(sr, now)); err != nil {
		return "", fmt.Errorf("auth: session: %w", err)
	}
	return secret, nil
}

// Session returns the identity of a live session, or ErrNotFound. The
// account is read on every call: a session made void on any hub (a new
// password, a role change, the account disabled) is refused at once.
func (s *Store) Session(ctx context.Context, secret string) (*Identity, error) {
	if secret == "" || len(secret) > 128 {
		return nil, ErrNotFound
	}
	key := sessionKey(digest(secret))
	e, err := s.sessions.Latest(ctx, key)
	if errors.Is(err, broker.ErrNoKey) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("auth: session: %w", err)
	}
	var sr sessionRecord
	if err := decode(e.Value, "session", &sr); err != nil {
		return nil, err
	}
	r, _, err := s.userRecord(ctx, sr.User)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("auth: session: %w", err)
	}
	now := s.now()
	if err != nil || r.Disabled || sr.Epoch != r.CredEpoch || sr.SessionEpoch != r.SessionEpoch ||
		!now.Before(sr.Expires) || now.Sub(sr.Seen) >= s.cfg.SessionIdle {
		if err := s.sessions.Delete(ctx, key, e.Revision); err != nil && !errors.Is(err, broker.ErrRevision) {
			s.log.Warn("auth: a void session's record stays (it is refused all the same)", "err", err)
		}
		return nil, ErrNotFound
	}
	if now.Sub(sr.Seen) >= seenEvery {
		sr.Seen = now.UTC().Truncate(time.Millisecond)
		// Another request of the session may have written it first: either
		// write will do.
		if _, err := s.sessions.Update(ctx, key, encode(sr), e.Revision, s.sessionTTL(sr, now)); err != nil && !errors.Is(err, broker.ErrRevision) {
			return nil, fmt.Errorf("auth: session: %w", err)
		}
	}
	return &Identity{User: r.user(), Via: ViaSession, session: secret}, nil
}

// EndSession ends a session (sign out).
func (s *Store) EndSession(ctx context.Context, secret string) error {
	if secret == "" || len(secret) > 128 {
		return nil
	}
	return s.sessions.Delete(ctx, sessionKey(digest(secret)), 0)
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

// expiry is when a token ends: its expiry, bounded by token_max_ttl from
// its creation (tokens made before expiries were required have none).
func (s *Store) expiry(t tokenRecord) time.Time {
	end := t.Created.Add(s.cfg.TokenMaxTTL)
	if !t.Expires.IsZero() && t.Expires.Before(end) {
		end = t.Expires
	}
	return end
}

func (s *Store) token(t tokenRecord) Token {
	return Token{ID: t.ID, User: t.User, Name: t.Name, Created: t.Created, Expires: s.expiry(t), LastUsed: t.LastUsed}
}

// tokenTTL is how long the bucket keeps a token written at now: until it
// expires.
func (s *Store) tokenTTL(t tokenRecord, now time.Time) time.Duration {
	return max(s.expiry(t).Sub(now), time.Second)
}

// tokenRecord reads a token from the bucket's leader, with its revision.
func (s *Store) tokenRecord(ctx context.Context, id string) (tokenRecord, uint64, error) {
	if !tokenIDRE.MatchString(id) {
		return tokenRecord{}, 0, fmt.Errorf("%w: token %s", ErrNotFound, id)
	}
	e, err := s.accounts.Latest(ctx, tokenKey(id))
	if errors.Is(err, broker.ErrNoKey) {
		return tokenRecord{}, 0, fmt.Errorf("%w: token %s", ErrNotFound, id)
	}
	if err != nil {
		return tokenRecord{}, 0, fmt.Errorf("auth: token %s: %w", id, err)
	}
	var t tokenRecord
	if err := decode(e.Value, "token", &t); err != nil {
		return tokenRecord{}, 0, err
	}
	return t, e.Revision, nil
}

// NewToken creates an API token for the account called user, on behalf of
// the hub itself (edx user add, tests). See NewTokenBy.
func (s *Store) NewToken(ctx context.Context, user, name string, ttl time.Duration) (string, Token, error) {
	return s.NewTokenBy(ctx, nil, user, name, ttl)
}

// NewTokenBy creates an API token for the account called user on behalf of
// by (nil: the hub itself). ttl 0 means the configured token_ttl; more
// than token_max_ttl is ErrInvalid. An account holds at most max_tokens
// live tokens, on every hub together: past that, ErrLimit. A disabled
// account gets none, and when by is the account itself, its credentials
// must not have changed since by signed in. The secret is returned once and
// only its hash is kept; the account's expired and void tokens are swept on
// the way.
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
	// The token's record is written first, then listed on the account's
	// record, whose compare-and-set counts and adds it: a token in the
	// making is never taken for a gone one by a concurrent creation (which
	// sweeps listed ids without a record), and one refused by the count is
	// deleted before anyone holds its secret.
	cur, _, err := s.userRecord(ctx, user)
	if err != nil {
		return "", Token{}, err
	}
	t := tokenRecord{V: recordVersion, ID: id, User: cur.Name, Name: name, Hash: digest(secret), Created: now, Expires: now.Add(ttl), Epoch: cur.CredEpoch}
	if _, err := s.accounts.Create(ctx, tokenKey(id), encode(t), s.tokenTTL(t, now)); err != nil {
		return "", Token{}, fmt.Errorf("auth: new token: %w", err)
	}
	var swept []string
	r, err := s.changeUser(ctx, user, func(r *userRecord) error {
		if r.Disabled {
			return fmt.Errorf("%w: user %s is disabled", ErrInvalid, r.Name)
		}
		if by != nil && by.Via != ViaAdminToken && by.User.ID == r.ID && by.User.epoch != r.CredEpoch {
			return fmt.Errorf("%w: the password changed: sign in again", ErrCredentials)
		}
		if r.CredEpoch != t.Epoch {
			return fmt.Errorf("%w: the account's credentials changed meanwhile: try again", ErrCredentials)
		}
		live := make([]string, 0, len(r.Tokens)+1)
		swept = swept[:0]
		for _, tid := range r.Tokens {
			old, _, err := s.tokenRecord(ctx, tid)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				return err
			case old.Epoch != r.CredEpoch || !now.Before(s.expiry(old)):
				swept = append(swept, tid)
			default:
				live = append(live, tid)
			}
		}
		if len(live) >= s.cfg.MaxTokens {
			return fmt.Errorf("%w: %s already has %d live API tokens, the most an account may hold (max_tokens): revoke one first",
				ErrLimit, r.Name, len(live))
		}
		r.Tokens = append(live, id)
		return nil
	})
	if err != nil {
		s.accounts.Delete(ctx, tokenKey(id), 0)
		return "", Token{}, err
	}
	for _, tid := range swept {
		s.accounts.Delete(ctx, tokenKey(tid), 0)
	}
	attrs := []any{"user", r.Name, "token", id, "expires", t.Expires}
	if by != nil {
		attrs = append(attrs, "by", by.User.Name, "via", by.Via, "addr", by.addr)
	}
	s.log.Info("token created", attrs...)
	return secret, s.token(t), nil
}

func fmtHours(d time.Duration) string {
	if d%time.Hour == 0 {
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return d.String()
}

// Tokens returns the tokens of the account called user ("" for every one),
// expired ones included until they are swept, by creation.
func (s *Store) Tokens(ctx context.Context, user string) ([]Token, error) {
	out := []Token{}
	if user != "" {
		r, _, err := s.userRecord(ctx, user)
		if errors.Is(err, ErrNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		for _, id := range r.Tokens {
			t, _, err := s.tokenRecord(ctx, id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if t.Epoch == r.CredEpoch {
				out = append(out, s.token(t))
			}
		}
	} else {
		us, err := s.users(ctx)
		if err != nil {
			return nil, err
		}
		epochs := make(map[string]int64, len(us))
		for _, u := range us {
			epochs[u.Name] = u.CredEpoch
		}
		es, err := s.accounts.Values(ctx, "token.*")
		if err != nil {
			return nil, fmt.Errorf("auth: tokens: %w", err)
		}
		for _, e := range es {
			var t tokenRecord
			if err := decode(e.Value, "token", &t); err != nil {
				return nil, err
			}
			if ep, ok := epochs[t.User]; ok && ep == t.Epoch {
				out = append(out, s.token(t))
			}
		}
	}
	slices.SortFunc(out, func(a, b Token) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// TokenOwner returns the name of the account a token belongs to.
func (s *Store) TokenOwner(ctx context.Context, id string) (string, error) {
	t, _, err := s.tokenRecord(ctx, id)
	if err != nil {
		return "", err
	}
	return t.User, nil
}

// RevokeToken deletes a token.
func (s *Store) RevokeToken(ctx context.Context, id string) error {
	t, _, err := s.tokenRecord(ctx, id)
	if err != nil {
		return err
	}
	if err := s.accounts.Delete(ctx, tokenKey(id), 0); err != nil {
		return fmt.Errorf("auth: revoke token: %w", err)
	}
	if _, err := s.changeUser(ctx, t.User, func(r *userRecord) error {
		r.Tokens = slices.DeleteFunc(r.Tokens, func(x string) bool { return x == id })
		return nil
	}); err != nil && !errors.Is(err, ErrNotFound) {
		s.log.Warn("auth: a revoked token stays listed in its account's record until swept", "token", id, "err", err)
	}
	s.log.Info("token revoked", "token", id)
	return nil
}

// TokenIdentity returns the identity an API token stands for, or
// ErrNotFound for an unknown, expired or void one (its account disabled or
// its password changed since the token was made, on any hub).
func (s *Store) TokenIdentity(ctx context.Context, secret string) (*Identity, error) {
	if len(secret) > 128 {
		return nil, ErrNotFound
	}
	id, ok := tokenID(secret)
	if !ok {
		return nil, ErrNotFound
	}
	t, rev, err := s.tokenRecord(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(t.Hash, digest(secret)) != 1 {
		return nil, ErrNotFound
	}
	r, _, err := s.userRecord(ctx, t.User)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	now := s.now()
	if r.Disabled || t.Epoch != r.CredEpoch || !now.Before(s.expiry(t)) {
		return nil, ErrNotFound
	}
	if t.LastUsed.IsZero() || now.Sub(t.LastUsed) >= seenEvery {
		t.LastUsed = now.UTC().Truncate(time.Millisecond)
		if _, err := s.accounts.Update(ctx, tokenKey(id), encode(t), rev, s.tokenTTL(t, now)); err != nil && !errors.Is(err, broker.ErrRevision) {
			return nil, fmt.Errorf("auth: token: %w", err)
		}
	}
	return &Identity{User: r.user(), Via: ViaToken}, nil
}
