package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// Cookie names.
const (
	SessionCookie = "edx_session"
	// signInCookie binds the sign-in form's CSRF token before there is a
	// session (login CSRF).
	signInCookie = "edx_signin"
)

// AdminUser is the identity of a request bearing the hub's admin token.
var AdminUser = User{Name: "admin-token", DisplayName: "Admin token", Role: RoleAdmin}

// Middleware identifies the request and puts its Identity (nil when
// anonymous or when the credentials are wrong) in the request's context:
// an "Authorization: Bearer" API token or the admin token first, else the
// session cookie. It rejects nothing; handlers decide.
func (s *Store) Middleware(adminToken string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var id *Identity
			if h := r.Header.Get("Authorization"); h != "" {
				tok, ok := strings.CutPrefix(h, "Bearer ")
				switch {
				case !ok:
				case adminToken != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(adminToken)) == 1:
					id = &Identity{User: AdminUser, Via: ViaAdminToken}
				default:
					var err error
					if id, err = s.TokenIdentity(r.Context(), tok); err != nil && !errors.Is(err, ErrNotFound) {
						s.log.Error("auth: token lookup", "err", err)
					}
				}
			} else if c, err := r.Cookie(SessionCookie); err == nil {
				if id, err = s.Session(r.Context(), c.Value); err != nil && !errors.Is(err, ErrNotFound) {
					s.log.Error("auth: session lookup", "err", err)
				}
			}
			if id != nil {
				r = r.WithContext(WithIdentity(r.Context(), id))
			}
			next.ServeHTTP(w, r)
		})
	}
}

// RetryError says when a rate-limited sign-in may be tried again.
type RetryError struct{ After time.Duration }

func (e *RetryError) Error() string { return ErrRateLimited.Error() }
func (e *RetryError) Unwrap() error { return ErrRateLimited }

// clientIP is the address sign-in attempts are counted against: the peer
// address (a proxy in front of the hub would have to be trusted explicitly;
// headers such as X-Forwarded-For are not).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// SignIn checks a name and password under the rate limits and, when they
// are right, starts a session and sets its cookie. Failures are
// ErrCredentials or a *RetryError (ErrRateLimited).
func (s *Store) SignIn(w http.ResponseWriter, r *http.Request, name, pw string) (*Identity, error) {
	key := strings.ToLower(strings.TrimSpace(name))
	if wait, ok := s.limit.attempt(clientIP(r), key); !ok {
		s.log.Warn("sign-in rate limited", "user", key, "addr", clientIP(r))
		return nil, &RetryError{After: wait.Round(time.Second) + time.Second}
	}
	u, err := s.Authenticate(r.Context(), name, pw)
	if err != nil {
		if errors.Is(err, ErrCredentials) {
			s.limit.failed(key)
			s.log.Warn("sign-in failed", "user", key, "addr", clientIP(r))
		}
		return nil, err
	}
	secret, err := s.NewSession(r.Context(), u)
	if err != nil {
		return nil, err
	}
	http.SetCookie(w, s.cookie(r, SessionCookie, secret, s.cfg.SessionTTL))
	s.log.Info("signed in", "user", u.Name, "addr", clientIP(r))
	return &Identity{User: u, Via: ViaSession, session: secret}, nil
}

// SignOut ends the request's session and clears its cookie.
func (s *Store) SignOut(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		if err := s.EndSession(r.Context(), c.Value); err != nil {
			s.log.Error("auth: sign out", "err", err)
		}
	}
	http.SetCookie(w, s.cookie(r, SessionCookie, "", -1))
}

func (s *Store) cookie(r *http.Request, name, value string, ttl time.Duration) *http.Cookie {
	c := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: r.TLS != nil || s.cfg.CookieSecure == "always"}
	if ttl < 0 {
		c.MaxAge = -1
	} else if ttl > 0 {
		c.MaxAge = int(ttl / time.Second)
	}
	return c
}

// CSRFToken returns the token a form posted by this request's session must
// carry in its "csrf" field (or an X-CSRF-Token header); "" without a
// session.
func (s *Store) CSRFToken(r *http.Request) string {
	id := FromContext(r.Context())
	if id == nil || id.Via != ViaSession {
		return ""
	}
	return s.csrfToken("session", id.session)
}

// CheckCSRF reports whether an unsafe request may proceed: one with a
// bearer token carries no ambient credential and always may; one with a
// session must carry the session's CSRF token.
func (s *Store) CheckCSRF(r *http.Request) bool {
	id := FromContext(r.Context())
	if id == nil || id.Via != ViaSession {
		return true
	}
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.PostFormValue("csrf")
	}
	return s.checkCSRF("session", id.session, tok)
}

// SignInCSRF returns the CSRF token of the sign-in form, setting the cookie
// it is bound to when the browser has none yet.
func (s *Store) SignInCSRF(w http.ResponseWriter, r *http.Request) string {
	v := ""
	if c, err := r.Cookie(signInCookie); err == nil && len(c.Value) >= 26 && len(c.Value) <= 64 {
		v = c.Value
	} else {
		v = rand.Text()
		http.SetCookie(w, s.cookie(r, signInCookie, v, time.Hour))
	}
	return s.csrfToken("sign-in", v)
}

// CheckSignInCSRF reports whether a posted sign-in form carries the token
// bound to the browser's sign-in cookie.
func (s *Store) CheckSignInCSRF(r *http.Request) bool {
	c, err := r.Cookie(signInCookie)
	if err != nil {
		return false
	}
	return s.checkCSRF("sign-in", c.Value, r.PostFormValue("csrf"))
}

// String describes an identity for logs.
func (i *Identity) String() string {
	if i == nil {
		return "anonymous"
	}
	return fmt.Sprintf("%s (%s via %s)", i.User.Name, i.User.Role, i.Via)
}
