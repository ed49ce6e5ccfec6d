package service

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/pkg/document"
)

// accounts is the accounts store, or ErrUnavailable when the hub runs
// without accounts.
func (svc *Service) accounts() (*auth.Store, error) {
	if svc.d.Accounts == nil {
		return nil, fmt.Errorf("%w: accounts are not enabled", ErrUnavailable)
	}
	return svc.d.Accounts, nil
}

// own reports whether who acts on their own account (signed in or with
// their token; not the admin token).
func own(who *auth.Identity, name string) bool {
	return who != nil && who.Via != auth.ViaAdminToken && strings.EqualFold(who.User.Name, name)
}

// Users lists the accounts: admins only.
func (svc *Service) Users(ctx context.Context, who *auth.Identity) ([]auth.User, error) {
	st, err := svc.accounts()
	if err != nil {
		return nil, err
	}
	if !who.Can(auth.ManageUsers) {
		return nil, fmt.Errorf("%w: only admins list users", ErrForbidden)
	}
	return st.Users(ctx)
}

// User returns an account: any for admins, one's own for the others
// (another's is ErrNotFound, as one that does not exist).
func (svc *Service) User(ctx context.Context, who *auth.Identity, name string) (auth.User, error) {
	st, err := svc.accounts()
	if err != nil {
		return auth.User{}, err
	}
	if !who.Can(auth.ManageUsers) && !own(who, name) {
		return auth.User{}, fmt.Errorf("%w: user %s", ErrNotFound, name)
	}
	return st.User(ctx, name)
}

// Tokens lists API tokens (never their secrets): admins list anyone's, or
// everyone's with user empty; the others their own.
func (svc *Service) Tokens(ctx context.Context, who *auth.Identity, user string) ([]auth.Token, error) {
	st, err := svc.accounts()
	if err != nil {
		return nil, err
	}
	switch {
	case who.Can(auth.ManageUsers):
		// any user, or every one when user is empty
	case user == "" || own(who, user):
		user = who.User.Name
	default:
		return nil, fmt.Errorf("%w: only admins list others' tokens", ErrForbidden)
	}
	return st.Tokens(ctx, user)
}

// NewUserResult is the answer to creating a user: the account, and its
// password when the hub generated it (shown once).
type NewUserResult struct {
	User     auth.User `json:"user"`
	Password string    `json:"password,omitempty"`
}

// AddUser creates an account as who: admins only; a staff member's unit
// must be registered. An empty password is generated and returned.
func (svc *Service) AddUser(ctx context.Context, who *auth.Identity, nu auth.NewUser) (NewUserResult, error) {
	st, err := svc.accounts()
	if err != nil {
		return NewUserResult{}, err
	}
	if !who.Can(auth.ManageUsers) {
		return NewUserResult{}, fmt.Errorf("%w: only admins create users", ErrForbidden)
	}
	if nu.Unit != "" {
		if err := nu.Unit.Validate(); err != nil {
			return NewUserResult{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if err := svc.registered(ctx, nu.Unit); err != nil {
			return NewUserResult{}, err
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

// registered checks that a staff member's unit is registered: asked of the
// registry every hub shares, so that a unit registered through another hub
// a moment ago is known here.
func (svc *Service) registered(ctx context.Context, id document.UnitID) error {
	if _, err := svc.unit(ctx, id); err != nil {
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%w: unit %s is not registered", ErrInvalid, id)
		}
		return err
	}
	return nil
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
func (svc *Service) UpdateUser(ctx context.Context, who *auth.Identity, name string, c UserChange) (auth.User, error) {
	st, err := svc.accounts()
	if err != nil {
		return auth.User{}, err
	}
	self := own(who, name)
	if !who.Can(auth.ManageUsers) {
		if !self {
			return auth.User{}, fmt.Errorf("%w: user %s", ErrNotFound, name)
		}
		if c.Role != nil || c.Unit != nil || c.Disabled != nil {
			return auth.User{}, fmt.Errorf("%w: only admins change roles, units and access", ErrForbidden)
		}
	}
	if self && c.Password != nil {
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
		if err := svc.registered(ctx, *c.Unit); err != nil {
			return auth.User{}, err
		}
	}
	if self && c.Disabled != nil && *c.Disabled {
		return auth.User{}, fmt.Errorf("%w: you cannot disable your own account", ErrInvalid)
	}
	return st.UpdateUserBy(ctx, who, name, c.Change)
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
func (svc *Service) NewToken(ctx context.Context, who *auth.Identity, req TokenRequest) (NewTokenResult, error) {
	st, err := svc.accounts()
	if err != nil {
		return NewTokenResult{}, err
	}
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

// RevokeToken revokes a token as who: its owner or an admin.
func (svc *Service) RevokeToken(ctx context.Context, who *auth.Identity, id string) error {
	st, err := svc.accounts()
	if err != nil {
		return err
	}
	owner, err := st.TokenOwner(ctx, id)
	if err != nil {
		return err
	}
	if !who.Can(auth.ManageUsers) && (who.Via == auth.ViaAdminToken || !strings.EqualFold(owner, who.User.Name)) {
		return fmt.Errorf("%w: token %s", ErrNotFound, id)
	}
	return st.RevokeToken(ctx, id)
}
