package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// The accounts live in two JetStream key-value buckets every hub shares:
//
//	EDX_ACCOUNTS  user.<name>      an account (userRecord)
//	              token.<id>       an API token (tokenRecord); the id is in
//	                               the token itself (edx_<id>_<secret>)
//	              secret.<name>    a key every hub uses alike (secretRecord):
//	                               csrf, search-cursor, admin-token
//	              meta.migrated.*  a SQLite accounts file copied in (marker)
//	EDX_SESSIONS  session.<hash>   a sign-in session (sessionRecord), by the
//	                               SHA-256 of its secret, expiring with it
//
// Every record carries its schema version "v"; decode reads every version up
// to recordVersion (upgrading older ones) and refuses newer ones.
const (
	accountsBucket = "EDX_ACCOUNTS"
	sessionsBucket = "EDX_SESSIONS"
)

// recordVersion is the schema version of the records this code writes.
const recordVersion = 1

// ErrNewer: a record written by a newer hub, which this one does not read.
var ErrNewer = errors.New("auth: record of a newer schema version")

// userRecord is an account.
type userRecord struct {
	V           int             `json:"v"`
	ID          int64           `json:"id"`
	Name        string          `json:"name"`
	DisplayName string          `json:"display_name,omitempty"`
	Role        Role            `json:"role"`
	Unit        document.UnitID `json:"unit,omitempty"`
	Password    string          `json:"password"` // argon2id hash
	Disabled    bool            `json:"disabled,omitempty"`
	Created     time.Time       `json:"created"`
	LastSignIn  time.Time       `json:"last_sign_in,omitzero"`
	// CredEpoch moves on with a new password or when the account is
	// disabled: every session and token issued under an earlier one is
	// void, on every hub (each checks it on every use).
	CredEpoch int64 `json:"cred_epoch"`
	// SessionEpoch moves on whenever the account's sessions end (a new
	// role or unit too): sessions of an earlier one are void.
	SessionEpoch int64 `json:"session_epoch"`
	// Tokens are the ids of the account's API tokens, at most max_tokens
	// live ones: a new token is added with compare-and-set on this record,
	// so that the bound holds across hubs.
	Tokens []string `json:"tokens,omitempty"`
}

func (r *userRecord) user() User {
	return User{ID: r.ID, Name: r.Name, DisplayName: r.DisplayName, Role: r.Role, Unit: r.Unit, Disabled: r.Disabled,
		Created: r.Created, LastSignIn: r.LastSignIn, epoch: r.CredEpoch}
}

// tokenRecord is an API token: the SHA-256 of its secret, never the secret.
type tokenRecord struct {
	V        int       `json:"v"`
	ID       string    `json:"id"`
	User     string    `json:"user"`
	Name     string    `json:"name"`
	Hash     []byte    `json:"hash"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires,omitzero"` // zero: made before expiries were required (token_max_ttl bounds it)
	LastUsed time.Time `json:"last_used,omitzero"`
	Epoch    int64     `json:"epoch"` // the account's CredEpoch when it was made
}

// sessionRecord is a sign-in session; its key holds the SHA-256 of its
// secret.
type sessionRecord struct {
	V            int       `json:"v"`
	User         string    `json:"user"`
	Created      time.Time `json:"created"`
	Expires      time.Time `json:"expires"`
	Seen         time.Time `json:"seen"`
	Epoch        int64     `json:"epoch"`         // the account's CredEpoch
	SessionEpoch int64     `json:"session_epoch"` // the account's SessionEpoch
}

// secretRecord is a key every hub uses alike.
type secretRecord struct {
	V     int    `json:"v"`
	Value []byte `json:"value"`
}

// migrationMarker records a SQLite accounts file copied into the buckets.
type migrationMarker struct {
	V        int       `json:"v"`
	From     string    `json:"from"`
	At       time.Time `json:"at"`
	Users    int       `json:"users"`
	Tokens   int       `json:"tokens"`
	Sessions int       `json:"sessions"`
}

// encode marshals a record (its V set by the caller to recordVersion).
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("auth: encode %T: %v", v, err)) // plain structs: cannot fail
	}
	return b
}

// decode reads a record of any version up to recordVersion into dst (a
// pointer to one of the record types), upgraded. Version 1 is the first:
// there is nothing older to upgrade yet; a record without "v" is refused.
func decode(b []byte, kind string, dst any) error {
	var head struct {
		V *int `json:"v"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return fmt.Errorf("auth: %s record: %w", kind, err)
	}
	switch {
	case head.V == nil || *head.V < 1:
		return fmt.Errorf("auth: %s record without a schema version", kind)
	case *head.V > recordVersion:
		return fmt.Errorf("%w: %s record version %d, this hub reads up to %d", ErrNewer, kind, *head.V, recordVersion)
	}
	if err := json.Unmarshal(b, dst); err != nil {
		return fmt.Errorf("auth: %s record (v%d): %w", kind, *head.V, err)
	}
	return nil
}

// keyName encodes an account name for a key: letters, digits and '-' as
// they are, any other byte as _XX (hex), since '.' separates key tokens and
// '@' is not allowed in keys.
func keyName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "_%02x", c)
		}
	}
	return b.String()
}

func userKey(name string) string { return "user." + keyName(name) }

// tokenIDRE is a token id (ten characters of rand.Text, lower case).
var tokenIDRE = regexp.MustCompile(`^[a-z0-9]{1,32}$`)

func tokenKey(id string) string { return "token." + id }

func sessionKey(hash []byte) string { return fmt.Sprintf("session.%x", hash) }

func secretKey(name string) string { return "secret." + name }

// tokenID is the id in a token's secret (edx_<id>_<random>).
func tokenID(secret string) (string, bool) {
	rest, ok := strings.CutPrefix(secret, tokenPrefix)
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, "_")
	if !ok || !tokenIDRE.MatchString(id) {
		return "", false
	}
	return id, true
}
