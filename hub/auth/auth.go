// Package auth is who may do what on the hub: local accounts (argon2id
// password hashes), roles, sign-in sessions held in HttpOnly SameSite
// cookies, CSRF tokens for forms, API tokens for machines and a rate limit
// on sign-in. Users, sessions and tokens live in JetStream key-value buckets
// that every hub of a deployment shares (records.go), so that an account,
// a session or a token works on every hub, and a new password or a disabled
// account voids its sessions and tokens on every hub. Only hashes of
// passwords, session ids and tokens are stored. The sign-in rate limits are
// counted by each hub on its own, in memory.
//
// # Roles
//
//   - staff: records staff of one unit. They see only the documents their
//     unit sent or received, and everything about those.
//   - archivist: every document, its files and reports.
//   - auditor: every document's metadata, receipts and verification reports,
//     not the content (containers and files).
//   - admin: everything, and units and users.
//
// The rules are in one place: the Can and Sees methods of Identity.
package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// Error kinds; the API maps them to HTTP status codes.
var (
	ErrNotFound    = errors.New("auth: not found")
	ErrConflict    = errors.New("auth: already exists")
	ErrInvalid     = errors.New("auth: invalid")
	ErrCredentials = errors.New("auth: wrong user name or password")
	ErrRateLimited = errors.New("auth: too many sign-in attempts, try again later")
	ErrLimit       = errors.New("auth: limit reached")
)

// Role is what a user is allowed to do.
type Role string

// The roles.
const (
	RoleStaff     Role = "staff"
	RoleArchivist Role = "archivist"
	RoleAuditor   Role = "auditor"
	RoleAdmin     Role = "admin"
)

// Roles lists every role.
var Roles = []Role{RoleStaff, RoleArchivist, RoleAuditor, RoleAdmin}

// Validate reports whether r is a known role.
func (r Role) Validate() error {
	if !slices.Contains(Roles, r) {
		return fmt.Errorf("%w: role %q: want staff, archivist, auditor or admin", ErrInvalid, string(r))
	}
	return nil
}

// Permission is one thing a role may do.
type Permission int

// The permissions.
const (
	// ReadAll: search and open every document's metadata (otherwise only
	// the documents of one's own unit).
	ReadAll Permission = iota
	// ReadContent: download containers and files of the documents one sees.
	ReadContent
	// Verify: verification reports and receipts of the documents one sees,
	// and verification of uploaded containers.
	Verify
	// ManageUnits: register units; counters of every unit.
	ManageUnits
	// ManageUsers: create, change and disable accounts; tokens of others.
	ManageUsers
)

// grants is the one table of who may do what.
var grants = map[Role][]Permission{
	RoleStaff:     {ReadContent, Verify},
	RoleArchivist: {ReadAll, ReadContent, Verify},
	RoleAuditor:   {ReadAll, Verify},
	RoleAdmin:     {ReadAll, ReadContent, Verify, ManageUnits, ManageUsers},
}

// User is an account.
type User struct {
	ID          int64           `json:"-"`
	Name        string          `json:"name"` // sign-in name
	DisplayName string          `json:"display_name"`
	Role        Role            `json:"role"`
	Unit        document.UnitID `json:"unit,omitempty"` // staff only
	Disabled    bool            `json:"disabled"`
	Created     time.Time       `json:"created,omitzero"`
	LastSignIn  time.Time       `json:"last_sign_in,omitzero"`
	// epoch is the credential epoch: sessions and tokens issued under an
	// earlier one are void (see UpdateUser).
	epoch int64
}

// Ways a request is authenticated.
const (
	ViaSession    = "session"     // a sign-in cookie
	ViaToken      = "token"       // an API token
	ViaAdminToken = "admin-token" // the hub's admin token file
)

// Identity is who a request acts as.
type Identity struct {
	User User   `json:"user"`
	Via  string `json:"via"`
	// session is the session token (cookie value) when Via is ViaSession;
	// CSRF tokens are bound to it.
	session string
	// addr is the client's address (see Store.ClientAddr), which checks of
	// the current password are rate-limited by.
	addr string
}

// Can reports whether the identity holds permission p.
func (i *Identity) Can(p Permission) bool {
	return i != nil && !i.User.Disabled && slices.Contains(grants[i.User.Role], p)
}

// Scope is the one unit whose documents the identity may see, or "" for
// every unit. A staff account without a unit sees nothing (Sees is false).
func (i *Identity) Scope() document.UnitID {
	if i.Can(ReadAll) {
		return ""
	}
	return i.User.Unit
}

// Sees reports whether the identity may see a document from one unit to
// others: any document with ReadAll, else one its unit sent or received.
func (i *Identity) Sees(from document.UnitID, to []document.UnitID) bool {
	if i == nil || i.User.Disabled {
		return false
	}
	if i.Can(ReadAll) {
		return true
	}
	u := i.User.Unit
	return u != "" && (from == u || slices.Contains(to, u))
}

// SeesUnit reports whether the identity may see a unit's counters and lists.
func (i *Identity) SeesUnit(u document.UnitID) bool {
	return i.Can(ReadAll) || (i != nil && !i.User.Disabled && i.User.Unit != "" && i.User.Unit == u)
}

type ctxKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity of the request, or nil when anonymous.
func FromContext(ctx context.Context) *Identity {
	id, _ := ctx.Value(ctxKey{}).(*Identity)
	return id
}
