package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/pkg/document"
)

// adminTokenOnly identifies requests bearing the admin token, when the hub
// runs without accounts.
func adminTokenOnly(token string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if ok && token != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(token)) == 1 {
				r = r.WithContext(auth.WithIdentity(r.Context(), &auth.Identity{User: auth.AdminUser, Via: auth.ViaAdminToken}))
			}
			next.ServeHTTP(w, r)
		})
	}
}

func (s *server) me(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, identity(r))
}

func (s *server) listUnits(w http.ResponseWriter, r *http.Request) {
	us, err := s.rec.Units(r.Context(), identity(r), r.URL.Query().Get("counters") == "true")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, us)
}

func (s *server) addUnit(w http.ResponseWriter, r *http.Request) {
	if !identity(r).Can(auth.ManageUnits) {
		s.fail(w, r, fmt.Errorf("%w: only admins register units", ErrForbidden))
		return
	}
	if s.d.Units == nil {
		s.fail(w, r, fmt.Errorf("%w: unit registration is not available", ErrUnavailable))
		return
	}
	var req UnitRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := s.d.Units.AddUnit(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, b)
}

func unitID(r *http.Request) document.UnitID { return document.UnitID(chi.URLParam(r, "id")) }

// manageUnit checks that the caller may change units and that the hub can.
func (s *server) manageUnit(w http.ResponseWriter, r *http.Request) bool {
	if !identity(r).Can(auth.ManageUnits) {
		s.fail(w, r, fmt.Errorf("%w: only admins change units", ErrForbidden))
		return false
	}
	if s.d.Units == nil {
		s.fail(w, r, fmt.Errorf("%w: unit registration is not available", ErrUnavailable))
		return false
	}
	if err := unitID(r).Validate(); err != nil {
		s.fail(w, r, fmt.Errorf("%w: %v", ErrInvalid, err))
		return false
	}
	return true
}

func (s *server) disableUnit(w http.ResponseWriter, r *http.Request) {
	if !s.manageUnit(w, r) {
		return
	}
	u, err := s.d.Units.DisableUnit(r.Context(), unitID(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.rec.view(u))
}

func (s *server) enableUnit(w http.ResponseWriter, r *http.Request) {
	if !s.manageUnit(w, r) {
		return
	}
	b, err := s.d.Units.EnableUnit(r.Context(), unitID(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

func (s *server) rotateUnit(w http.ResponseWriter, r *http.Request) {
	if !s.manageUnit(w, r) {
		return
	}
	var req RotateRequest
	if r.ContentLength != 0 {
		if err := decode(w, r, &req); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	b, err := s.d.Units.RotateUnit(r.Context(), unitID(r), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

func (s *server) unit(w http.ResponseWriter, r *http.Request) {
	u, err := s.rec.Unit(r.Context(), identity(r), unitID(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (s *server) unitList(which string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var (
			out any
			err error
		)
		if which == "overdue" {
			out, err = s.rec.Overdue(r.Context(), identity(r), unitID(r))
		} else {
			out, err = s.rec.Pending(r.Context(), identity(r), unitID(r), 100)
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// users answers ErrUnavailable when the hub runs without accounts.
func (s *server) users() (*auth.Store, error) {
	if s.d.Auth == nil {
		return nil, fmt.Errorf("%w: accounts are not enabled", ErrUnavailable)
	}
	return s.d.Auth, nil
}

func (s *server) listUsers(w http.ResponseWriter, r *http.Request) {
	st, err := s.users()
	if err == nil && !identity(r).Can(auth.ManageUsers) {
		err = fmt.Errorf("%w: only admins list users", ErrForbidden)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	us, err := st.Users(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, us)
}

// NewUserResult is the answer to creating a user: the account, and its
// password when the hub generated it (shown once).
type NewUserResult struct {
	User     auth.User `json:"user"`
	Password string    `json:"password,omitempty"`
}

// AddUser creates an account as who: admins only; a staff member's unit
// must be registered. An empty password is generated and returned.
func (rs *Records) AddUser(ctx context.Context, st *auth.Store, who *auth.Identity, nu auth.NewUser) (NewUserResult, error) {
	if !who.Can(auth.ManageUsers) {
		return NewUserResult{}, fmt.Errorf("%w: only admins create users", ErrForbidden)
	}
	if nu.Unit != "" {
		if err := nu.Unit.Validate(); err != nil {
			return NewUserResult{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if _, err := rs.Index.GetUnit(ctx, nu.Unit); err != nil {
			return NewUserResult{}, fmt.Errorf("%w: unit %s is not registered", ErrInvalid, nu.Unit)
		}
	}
	var res NewUserResult
	if nu.Password == "" {
		nu.Password = rand.Text()
		res.Password = nu.Password
	}
	u, err := st.AddUser(ctx, nu)
	if err != nil {
		return NewUserResult{}, err
	}
	res.User = u
	return res, nil
}

func (s *server) addUser(w http.ResponseWriter, r *http.Request) {
	st, err := s.users()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var nu auth.NewUser
	if err := decode(w, r, &nu); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.rec.AddUser(r.Context(), st, identity(r), nu)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, res)
}

// self reports whether the request is about the caller's own account.
func self(r *http.Request, name string) bool {
	id := identity(r)
	return id.Via != auth.ViaAdminToken && strings.EqualFold(id.User.Name, name)
}

func (s *server) getUser(w http.ResponseWriter, r *http.Request) {
	st, err := s.users()
	name := chi.URLParam(r, "name")
	if err == nil && !identity(r).Can(auth.ManageUsers) && !self(r, name) {
		err = fmt.Errorf("%w: user %s", ErrNotFound, name)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := st.User(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

// UserChange is a change to an account (PATCH /api/v1/users/{name}): the
// fields of auth.Change, and the current password, which changing one's
// own password requires.
type UserChange struct {
	auth.Change
	CurrentPassword string `json:"current_password,omitempty"`
}

// ErrCurrentPassword: a change of one's own password named a wrong current
// password.
var ErrCurrentPassword = fmt.Errorf("%w: the current password is wrong", ErrForbidden)

// UpdateUser changes an account as who: admins change anything (a staff
// member's new unit must be registered); others only their own display
// name. One's own password changes only when signed in (a session, not an
// API token) and with the current password, checked under the sign-in
// limits; an admin setting someone else's password is a reset, logged as
// such with who did it.
func (rs *Records) UpdateUser(ctx context.Context, st *auth.Store, who *auth.Identity, name string, c UserChange) (auth.User, error) {
	own := who != nil && who.Via != auth.ViaAdminToken && strings.EqualFold(who.User.Name, name)
	if !who.Can(auth.ManageUsers) {
		if !own {
			return auth.User{}, fmt.Errorf("%w: user %s", ErrNotFound, name)
		}
		if c.Role != nil || c.Unit != nil || c.Disabled != nil {
			return auth.User{}, fmt.Errorf("%w: only admins change roles, units and access", ErrForbidden)
		}
	}
	if own && c.Password != nil {
		// A leaked API token, or a session left open, must not take the
		// account.
		if who.Via != auth.ViaSession {
			return auth.User{}, fmt.Errorf("%w: change your password on the account page, signed in, not with an API token", ErrForbidden)
		}
		if c.CurrentPassword == "" {
			return auth.User{}, fmt.Errorf("%w: current_password is required to change your own password", ErrInvalid)
		}
		if err := st.CheckCurrentPassword(ctx, who, c.CurrentPassword); err != nil {
			if errors.Is(err, auth.ErrCredentials) {
				return auth.User{}, ErrCurrentPassword
			}
			return auth.User{}, err
		}
	}
	if c.Unit != nil && *c.Unit != "" {
		if _, err := rs.Index.GetUnit(ctx, *c.Unit); err != nil {
			return auth.User{}, fmt.Errorf("%w: unit %s is not registered", ErrInvalid, *c.Unit)
		}
	}
	if own && c.Disabled != nil && *c.Disabled {
		return auth.User{}, fmt.Errorf("%w: you cannot disable your own account", ErrInvalid)
	}
	return st.UpdateUserBy(ctx, who, name, c.Change)
}

func (s *server) updateUser(w http.ResponseWriter, r *http.Request) {
	st, err := s.users()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var c UserChange
	if err := decode(w, r, &c); err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := s.rec.UpdateUser(r.Context(), st, identity(r), chi.URLParam(r, "name"), c)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (s *server) listTokens(w http.ResponseWriter, r *http.Request) {
	st, err := s.users()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id := identity(r)
	user := r.URL.Query().Get("user")
	switch {
	case id.Can(auth.ManageUsers):
		// any user, or every one when user is empty
	case user == "" || self(r, user):
		user = id.User.Name
	default:
		s.fail(w, r, fmt.Errorf("%w: only admins list others' tokens", ErrForbidden))
		return
	}
	ts, err := st.Tokens(r.Context(), user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ts)
}

// TokenRequest asks for an API token.
type TokenRequest struct {
	Name string `json:"name"`
	// User owns the token: the caller when empty; others' only for admins.
	User string `json:"user,omitempty"`
	// TTL is a Go duration ("720h"); empty: the hub's token_ttl (90 days by
	// default). More than token_max_ttl is refused.
	TTL string `json:"ttl,omitempty"`
}

// NewTokenResult carries a new token's secret, shown once.
type NewTokenResult struct {
	Token  auth.Token `json:"token"`
	Secret string     `json:"secret"`
}

// NewToken creates an API token as who. Tokens are made by a person signed
// in (a session, the account page), by an admin, or by the hub's admin
// token; an API token of anyone else makes none, so that a leaked one
// cannot make itself heirs. An account holds at most the hub's max_tokens.
func (rs *Records) NewToken(ctx context.Context, st *auth.Store, who *auth.Identity, req TokenRequest) (NewTokenResult, error) {
	if who == nil {
		return NewTokenResult{}, ErrUnauthorized
	}
	if who.Via == auth.ViaToken && !who.Can(auth.ManageUsers) {
		return NewTokenResult{}, fmt.Errorf("%w: API tokens are created on the account page, signed in, or by an admin; not with another token", ErrForbidden)
	}
	user := req.User
	switch {
	case user == "" && who.Via == auth.ViaAdminToken:
		return NewTokenResult{}, fmt.Errorf("%w: the admin token owns no tokens: name a user", ErrInvalid)
	case user == "":
		user = who.User.Name
	case !who.Can(auth.ManageUsers) && !strings.EqualFold(user, who.User.Name):
		return NewTokenResult{}, fmt.Errorf("%w: only admins create tokens for others", ErrForbidden)
	}
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			return NewTokenResult{}, fmt.Errorf("%w: ttl %q: want a positive duration such as 720h", ErrInvalid, req.TTL)
		}
	}
	secret, t, err := st.NewTokenBy(ctx, who, user, req.Name, ttl)
	if err != nil {
		return NewTokenResult{}, err
	}
	return NewTokenResult{Token: t, Secret: secret}, nil
}

func (s *server) newToken(w http.ResponseWriter, r *http.Request) {
	st, err := s.users()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req TokenRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.rec.NewToken(r.Context(), st, identity(r), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, res)
}

// RevokeToken revokes a token as who: its owner or an admin.
func (rs *Records) RevokeToken(ctx context.Context, st *auth.Store, who *auth.Identity, id string) error {
	owner, err := st.TokenOwner(ctx, id)
	if err != nil {
		return err
	}
	if !who.Can(auth.ManageUsers) && (who.Via == auth.ViaAdminToken || !strings.EqualFold(owner, who.User.Name)) {
		return fmt.Errorf("%w: token %s", ErrNotFound, id)
	}
	return st.RevokeToken(ctx, id)
}

func (s *server) revokeToken(w http.ResponseWriter, r *http.Request) {
	st, err := s.users()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.rec.RevokeToken(r.Context(), st, identity(r), chi.URLParam(r, "id")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
