package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
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
				id.addr = s.ClientAddr(r)
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

// parseProxies reads trusted_proxies: IP addresses or CIDR prefixes.
func parseProxies(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range ss {
		v = strings.TrimSpace(v)
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, err2 := netip.ParseAddr(v)
			if err2 != nil {
				return nil, fmt.Errorf("auth: trusted_proxies: %q: want an IP address or a CIDR prefix", v)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (s *Store) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr is the address of the client that made r: the connection's
// peer, or, when the peer is a trusted proxy (trusted_proxies), the
// nearest address in X-Forwarded-For that is not one. Sign-in attempts are
// counted against it, and logs show it.
func (s *Store) ClientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || len(s.proxies) == 0 || !s.trusted(peer) {
		return host
	}
	// The header's entries, nearest hop last; each trusted proxy appended
	// the address it saw. Anything left of the first untrusted entry may be
	// made up by the client.
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		for v := range strings.SplitSeq(h, ",") {
			hops = append(hops, strings.TrimSpace(v))
		}
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			ap, err2 := netip.ParseAddrPort(hops[i])
			if err2 != nil {
				break // garbage: keep the last address a trusted proxy vouched for
			}
			a = ap.Addr()
		}
		client = a.Unmap()
		if !s.trusted(client) {
			break
		}
	}
	return client.String()
}

// sleep waits d, or less if ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// limited checks a password under the sign-in limits of the client at addr
// (see LimitConfig); failures are ErrCredentials or a *RetryError.
func (s *Store) limited(ctx context.Context, addr, name, pw string) (User, error) {
	key := strings.ToLower(strings.TrimSpace(name))
	if len(key) > 64 {
		key = "\x00too long" // no account has such a name: one bucket for them all, not one each
	}
	wait, delay, ok := s.limit.attempt(addr, key)
	if !ok {
		s.log.Warn("sign-in rate limited", "user", key, "addr", addr)
		return User{}, &RetryError{After: wait.Round(time.Second) + time.Second}
	}
	if delay > 0 {
		s.log.Warn("sign-in slowed: the name is past its failure ceiling", "user", key, "addr", addr, "delay", delay)
		if err := s.sleep(ctx, delay); err != nil {
			return User{}, err
		}
	}
	u, err := s.Authenticate(ctx, name, pw)
	if errors.Is(err, ErrCredentials) {
		s.limit.failed(addr, key)
		s.log.Warn("sign-in failed", "user", key, "addr", addr)
	}
	return u, err
}

// SignIn checks a name and password under the rate limits and, when they
// are right, starts a session and sets its cookie. Failures are
// ErrCredentials or a *RetryError (ErrRateLimited).
func (s *Store) SignIn(w http.ResponseWriter, r *http.Request, name, pw string) (*Identity, error) {
	addr := s.ClientAddr(r)
	u, err := s.limited(r.Context(), addr, name, pw)
	if err != nil {
		return nil, err
	}
	secret, err := s.NewSession(r.Context(), u)
	if err != nil {
		return nil, err
	}
	http.SetCookie(w, s.cookie(r, SessionCookie, secret, s.cfg.SessionTTL))
	s.log.Info("signed in", "user", u.Name, "addr", addr)
	return &Identity{User: u, Via: ViaSession, session: secret, addr: addr}, nil
}

// CheckCurrentPassword checks that pw is the current password of who's
// account, under the same limits as sign-in: ErrCredentials when it is
// not, a *RetryError when the client has tried too often.
func (s *Store) CheckCurrentPassword(ctx context.Context, who *Identity, pw string) error {
	if who == nil || who.Via == ViaAdminToken {
		return ErrCredentials
	}
	u, err := s.limited(ctx, who.addr, who.User.Name, pw)
	if err != nil {
		return err
	}
	if u.ID != who.User.ID {
		return ErrCredentials
	}
	return nil
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
