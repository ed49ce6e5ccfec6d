package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Names of the NATS operator and accounts the hub runs.
const (
	OperatorName      = "edx"
	SystemAccountName = "SYS"
	AccountName       = "EDX"   // the streams and the hub
	UnitsAccountName  = "UNITS" // the units' users; no JetStream of its own
	StageAccountName  = "STAGE" // the store of large deliveries
	hubUserName       = "edx-hub"
)

// Files in the keys directory. Seeds are secrets (mode 0600); the JWTs are
// public but are written 0600 too, the directory is 0700.
const (
	operatorSeedFile = "operator.nk"
	operatorJWTFile  = "operator.jwt"
	systemSeedFile   = "sys.nk"
	systemJWTFile    = "sys.jwt"
	accountSeedFile  = "edx.nk"
	signingSeedFile  = "edx-hub-signing.nk"
	accountJWTFile   = "edx.jwt"
	unitsSeedFile    = "units.nk"
	unitsSigningFile = "units-signing.nk"
	unitsJWTFile     = "units.jwt"
	stageSeedFile    = "stage.nk"
	stageSigningFile = "stage-signing.nk"
	stageJWTFile     = "stage.jwt"

	// oldSigningSeedFile signed every EDX user, units included, before units
	// had an account of their own. The EDX account no longer trusts it, so
	// unit credentials issued in EDX stop working; LoadOrCreateKeys removes it.
	oldSigningSeedFile = "edx-signing.nk"
)

// Keys holds the decentralized-auth material of the hub: the operator, the
// system account and three accounts, each with a signing key:
//
//   - EDX holds the streams (the upload stream too); its only users are the
//     hub's (IssueHubCreds), with every right;
//   - UNITS holds the units' users (IssueUnitCreds) and nothing else: no
//     JetStream, only service imports of what units may do in EDX and STAGE,
//     each further limited per unit by UnitPermissions;
//   - STAGE holds the store of large deliveries; the hub writes it with a
//     user of its own (IssueHubStageCreds), units read it through imports
//     of the consumers the hub's stage service makes for them.
//
// User credentials are signed by their account's signing key, so the server
// only needs the account JWTs to admit a user it has never seen: issuing
// credentials needs no server restart and no server at all, it works the
// same against the embedded server and an external cluster that trusts this
// operator.
type Keys struct {
	dir string

	operator nkeys.KeyPair
	system   nkeys.KeyPair

	operatorPub, systemPub string
	operatorJWT, systemJWT string

	edx, units, stage account

	unitLimits UnitLimits

	// mu guards the account JWTs that change while the hub runs: the
	// UNITS account's revocations (RevokeUnitUsers).
	mu sync.Mutex
}

// account is one account's keys and JWT.
type account struct {
	name                  string
	seedFile, signingFile string
	jwtFile               string

	kp, signing     nkeys.KeyPair
	pub, signingPub string
	jwt             string
}

// KeysOption adjusts LoadOrCreateKeys.
type KeysOption func(*keysOptions)

type keysOptions struct {
	limits, stageLimits *jwt.JetStreamLimits
	units               *UnitLimits
}

// WithUnitLimits sets the limits of units' NATS users (default
// DefaultUnitLimits): the UNITS account carries them, so that they bind
// every unit credential, issued before or after; IssueUnitCreds writes them
// in each new credential too.
func WithUnitLimits(l UnitLimits) KeysOption {
	return func(o *keysOptions) { o.units = &l }
}

// WithJetStreamLimits sets the JetStream limits of the EDX account. Without
// it a new account is unlimited (bounded by the server's own limits) and a
// stored account keeps its limits. A stored account JWT whose limits differ is
// signed again, which keeps every credential issued before valid.
func WithJetStreamLimits(l jwt.JetStreamLimits) KeysOption {
	return func(o *keysOptions) { o.limits = &l }
}

// WithStageJetStreamLimits sets the JetStream limits of the STAGE account,
// as WithJetStreamLimits does for EDX. A new STAGE account gets
// DefaultStageLimits.
func WithStageJetStreamLimits(l jwt.JetStreamLimits) KeysOption {
	return func(o *keysOptions) { o.stageLimits = &l }
}

// unlimitedJetStream enables JetStream in an account without limits of its own.
var unlimitedJetStream = jwt.JetStreamLimits{
	MemoryStorage: jwt.NoLimit,
	DiskStorage:   jwt.NoLimit,
	Streams:       jwt.NoLimit,
	Consumer:      jwt.NoLimit,
	MaxAckPending: jwt.NoLimit,
}

// DefaultStageLimits are the JetStream limits of a new STAGE account: its
// one stream (the stage store, which StreamOptions.StageMaxBytes bounds) on
// disk, no memory streams, and at most 10,000 consumers at once: each read of
// a staged object uses one of the reading unit's protocol.StageSlots
// consumers, which the stage service creates, so this bounds how many reads
// (of every unit together) run at once.
var DefaultStageLimits = jwt.JetStreamLimits{
	MemoryStorage: 0,
	DiskStorage:   jwt.NoLimit,
	Streams:       1,
	Consumer:      10000,
	MaxAckPending: jwt.NoLimit,
}

// LoadOrCreateKeys loads the operator, system account and the EDX, UNITS and
// STAGE accounts' keys from dir, creating whatever is missing (directory
// 0700, files 0600). The seeds are the source of truth: a JWT that is
// missing, unreadable or does not match its keys and the account layout of
// this version (exports, imports, limits) is signed again from them.
//
// A directory from before units had an account of their own is upgraded in
// place: the EDX account keeps its key (and so its streams), UNITS and STAGE
// are created, and the EDX account gets a new signing key, so that every
// credential issued in EDX before (every unit's, and the hub's own) stops
// working. Units need new credentials (IssueUnitCreds); a hub that reads its
// credentials from a file needs new ones too.
func LoadOrCreateKeys(dir string, opts ...KeysOption) (*Keys, error) {
	var o keysOptions
	for _, opt := range opts {
		opt(&o)
	}
	if dir == "" {
		return nil, errors.New("broker: keys: empty directory")
	}
	ul := DefaultUnitLimits
	if o.units != nil {
		ul = *o.units
		ul.SetDefaults()
		if err := ul.Validate(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("broker: keys: %w", err)
	}
	k := &Keys{
		dir:   dir,
		edx:   account{name: AccountName, seedFile: accountSeedFile, signingFile: signingSeedFile, jwtFile: accountJWTFile},
		units: account{name: UnitsAccountName, seedFile: unitsSeedFile, signingFile: unitsSigningFile, jwtFile: unitsJWTFile},
		stage: account{name: StageAccountName, seedFile: stageSeedFile, signingFile: stageSigningFile, jwtFile: stageJWTFile},

		unitLimits: ul,
	}
	var err error
	if k.operator, k.operatorPub, err = loadOrCreateSeed(filepath.Join(dir, operatorSeedFile), nkeys.PrefixByteOperator); err != nil {
		return nil, err
	}
	if k.system, k.systemPub, err = loadOrCreateSeed(filepath.Join(dir, systemSeedFile), nkeys.PrefixByteAccount); err != nil {
		return nil, err
	}
	for _, a := range []*account{&k.edx, &k.units, &k.stage} {
		if a.kp, a.pub, err = loadOrCreateSeed(filepath.Join(dir, a.seedFile), nkeys.PrefixByteAccount); err != nil {
			return nil, err
		}
		if a.signing, a.signingPub, err = loadOrCreateSeed(filepath.Join(dir, a.signingFile), nkeys.PrefixByteAccount); err != nil {
			return nil, err
		}
	}
	if err := os.Remove(filepath.Join(dir, oldSigningSeedFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("broker: keys: %w", err)
	}
	if err := k.loadOrSignOperator(); err != nil {
		return nil, err
	}
	if err := k.loadOrSignSystem(); err != nil {
		return nil, err
	}

	edx := jwt.NewAccountClaims(k.edx.pub)
	edx.Limits.JetStreamLimits = unlimitedJetStream
	edx.Exports = edxExports()
	if err := k.loadOrSignAccount(&k.edx, edx, o.limits); err != nil {
		return nil, err
	}
	stage := jwt.NewAccountClaims(k.stage.pub)
	stage.Limits.JetStreamLimits = DefaultStageLimits
	stage.Exports = stageExports()
	if err := k.loadOrSignAccount(&k.stage, stage, o.stageLimits); err != nil {
		return nil, err
	}
	units := jwt.NewAccountClaims(k.units.pub)
	units.Imports = unitsImports(k.edx.pub, k.stage.pub)
	units.Limits.NatsLimits = ul.natsLimits()
	units.Limits.Conn = ul.MaxConnections
	if err := k.loadOrSignAccount(&k.units, units, nil); err != nil {
		return nil, err
	}
	return k, nil
}

// Dir is the directory the keys were loaded from.
func (k *Keys) Dir() string { return k.dir }

// OperatorJWT is the operator JWT a NATS server must trust (operator: ...).
func (k *Keys) OperatorJWT() string { return k.operatorJWT }

// SystemAccount is the public key of the system account.
func (k *Keys) SystemAccount() string { return k.systemPub }

// SystemAccountJWT is the system account's JWT.
func (k *Keys) SystemAccountJWT() string { return k.systemJWT }

// Account is the public key of the EDX account.
func (k *Keys) Account() string { return k.edx.pub }

// AccountJWT is the EDX account's JWT.
func (k *Keys) AccountJWT() string { return k.edx.jwt }

// UnitsAccount is the public key of the UNITS account.
func (k *Keys) UnitsAccount() string { return k.units.pub }

// UnitsAccountJWT is the UNITS account's JWT, with the revocations made so
// far.
func (k *Keys) UnitsAccountJWT() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.units.jwt
}

// StageAccount is the public key of the STAGE account.
func (k *Keys) StageAccount() string { return k.stage.pub }

// StageAccountJWT is the STAGE account's JWT.
func (k *Keys) StageAccountJWT() string { return k.stage.jwt }

// ResolverPreload maps account public keys to their JWTs, for a MEMORY
// resolver (resolver_preload) or to push to a full resolver.
func (k *Keys) ResolverPreload() map[string]string {
	return map[string]string{
		k.systemPub: k.systemJWT,
		k.edx.pub:   k.edx.jwt,
		k.units.pub: k.UnitsAccountJWT(),
		k.stage.pub: k.stage.jwt,
	}
}

// ServerConfig returns the nats-server configuration lines that make an
// external server or cluster trust these keys with a MEMORY resolver. Add
// jetstream, cluster and listen settings around it.
//
// A MEMORY resolver takes the account updates the hub pushes (credential
// revocations) only for accounts the server has loaded, and forgets them
// when it restarts; the hub pushes again when it starts. Prefer
// FullResolverConfig, which keeps them.
func (k *Keys) ServerConfig() []byte {
	return k.serverConfig("resolver: MEMORY\n")
}

// FullResolverConfig is ServerConfig with a full (directory) resolver in dir
// on each server: the account JWTs the hub pushes through the system account
// (the UNITS account's revocations) are stored there, survive a restart and
// spread through the cluster. The preload seeds a new directory; a stored
// JWT newer than the preload wins.
func (k *Keys) FullResolverConfig(dir string) []byte {
	return k.serverConfig(fmt.Sprintf("resolver: {\n  type: full\n  dir: %q\n  allow_delete: false\n  interval: \"2m\"\n  timeout: \"5s\"\n}\n", dir))
}

// AccountsConfig is ServerConfig without the resolver: the operator, the
// system account and the accounts' JWTs (resolver_preload), for a file that
// every server's configuration includes beside a resolver of its own.
func (k *Keys) AccountsConfig() []byte { return k.serverConfig("") }

func (k *Keys) serverConfig(resolver string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "operator: %q\n", k.operatorJWT)
	fmt.Fprintf(&b, "system_account: %s\n", k.systemPub)
	b.WriteString(resolver)
	b.WriteString("resolver_preload: {\n")
	pre := k.ResolverPreload()
	keys := make([]string, 0, len(pre))
	for pub := range pre {
		keys = append(keys, pub)
	}
	sort.Strings(keys)
	for _, pub := range keys {
		fmt.Fprintf(&b, "  %s: %q\n", pub, pre[pub])
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// IssueUnitCreds returns a .creds file for a new user of unit in the UNITS
// account, with the permissions of UnitPermissions. A ttl of zero issues
// credentials that do not expire. Every call creates a new user key; earlier
// credentials of the same unit stay valid until they expire. The unit
// connects with protocol.ConnectUnit.
func (k *Keys) IssueUnitCreds(unit string, ttl time.Duration) ([]byte, error) {
	if err := validUnit(unit); err != nil {
		return nil, err
	}
	if ttl < 0 {
		return nil, fmt.Errorf("broker: issue creds for %s: negative ttl", unit)
	}
	perms := UnitPermissions(unit)
	return k.issueUser(&k.units, unit, ttl, &perms, k.unitLimits.natsLimits())
}

// UnitLimits are the limits of units' users (WithUnitLimits).
func (k *Keys) UnitLimits() UnitLimits { return k.unitLimits }

// UserKey returns the public key of the user in a .creds file (the key an
// account revokes), and its expiry (zero: none).
func UserKey(creds []byte) (pub string, expires time.Time, err error) {
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("broker: creds: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("broker: creds: %w", err)
	}
	if uc.Expires > 0 {
		expires = time.Unix(uc.Expires, 0).UTC()
	}
	return uc.Subject, expires, nil
}

// RevokeUnitUsers revokes user keys in the UNITS account: every credential
// of those keys issued up to at is refused, and the server closes the
// connections that use one as soon as it has the new account JWT. It signs
// the account JWT again, writes it and returns it, and reports whether
// anything changed (keys already revoked change nothing). Push the JWT to the
// servers (Server.PushAccount, SystemConn.PushAccount).
func (k *Keys) RevokeUnitUsers(pubs []string, at time.Time) (string, bool, error) {
	revs := make(map[string]time.Time, len(pubs))
	for _, pub := range pubs {
		revs[pub] = at
	}
	return k.RevokeUnitUsersAt(revs)
}

// RevokeUnitUsersAt is RevokeUnitUsers with a time for each key: the hub
// merges with it the revocations every hub of a deployment made (each
// unit's record in the shared registry keeps them), so that the UNITS
// account any hub signs and pushes holds them all.
func (k *Keys) RevokeUnitUsersAt(revs map[string]time.Time) (string, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ac, err := jwt.DecodeAccountClaims(k.units.jwt)
	if err != nil {
		return "", false, fmt.Errorf("broker: keys: units account: %w", err)
	}
	changed := false
	for pub, at := range revs {
		if !nkeys.IsValidPublicUserKey(pub) {
			return "", false, fmt.Errorf("broker: keys: revoke %q: not a user public key", pub)
		}
		if t, ok := ac.Revocations[pub]; ok && t >= at.Unix() {
			continue
		}
		ac.RevokeAt(pub, at)
		changed = true
	}
	if !changed {
		return k.units.jwt, false, nil
	}
	tok, err := ac.Encode(k.operator)
	if err != nil {
		return "", false, fmt.Errorf("broker: keys: sign account %s: %w", k.units.name, err)
	}
	if err := writeFileAtomic(filepath.Join(k.dir, k.units.jwtFile), []byte(tok)); err != nil {
		return "", false, err
	}
	k.units.jwt = tok
	return tok, true, nil
}

// IssueSystemCreds returns a .creds file for the hub's user in the system
// account, with no expiry, which may do only this: push account JWTs to the
// servers ($SYS.REQ.CLAIMS.UPDATE, $SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE: how a
// credential revocation reaches them, SystemConn.PushAccount), look up the
// JWTs their resolver holds ($SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP: the check that
// a hub's keys are the cluster's, SystemConn.AccountSigningKeys), and
// watch and close the units' connections (the UNITS account's connect and
// disconnect events, the servers' connection lists and kick requests:
// ConnLimiter). The hub opens one connection with it for both.
func (k *Keys) IssueSystemCreds() ([]byte, error) {
	sys := account{name: SystemAccountName, kp: k.system, pub: k.systemPub, signing: k.system}
	var perms jwt.Permissions
	perms.Pub.Allow.Add(claimsUpdateSubject, fmt.Sprintf(accountUpdateSubject, "*"), fmt.Sprintf(accountLookupSubject, "*"),
		fmt.Sprintf(kickSubject, "*"), connzSubject)
	perms.Sub.Allow.Add("_INBOX.>",
		fmt.Sprintf(connectEventSubject, k.units.pub), fmt.Sprintf(disconnectEventSubject, k.units.pub))
	return k.issueUser(&sys, hubUserName+" system", 0, &perms, unlimitedNATS)
}

// IssueHubCreds returns a .creds file for the hub's own user in the EDX
// account: no permission limits, no expiry.
func (k *Keys) IssueHubCreds() ([]byte, error) {
	return k.issueUser(&k.edx, hubUserName, 0, nil, unlimitedNATS)
}

// IssueHubStageCreds returns a .creds file for the hub's user in the STAGE
// account, where it writes large deliveries: no permission limits, no expiry.
func (k *Keys) IssueHubStageCreds() ([]byte, error) {
	return k.issueUser(&k.stage, hubUserName, 0, nil, unlimitedNATS)
}

var unlimitedNATS = jwt.NatsLimits{Subs: jwt.NoLimit, Data: jwt.NoLimit, Payload: jwt.NoLimit}

func (k *Keys) issueUser(a *account, name string, ttl time.Duration, perms *jwt.Permissions, limits jwt.NatsLimits) ([]byte, error) {
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("broker: issue creds for %s: %w", name, err)
	}
	pub, err := ukp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("broker: issue creds for %s: %w", name, err)
	}
	seed, err := ukp.Seed()
	if err != nil {
		return nil, fmt.Errorf("broker: issue creds for %s: %w", name, err)
	}
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	if a.signing != a.kp {
		uc.IssuerAccount = a.pub
	}
	uc.Limits.NatsLimits = limits
	if perms != nil {
		uc.Permissions = *perms
	}
	if ttl > 0 {
		uc.Expires = time.Now().Add(ttl).Unix()
	}
	tok, err := uc.Encode(a.signing)
	if err != nil {
		return nil, fmt.Errorf("broker: issue creds for %s: %w", name, err)
	}
	creds, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		return nil, fmt.Errorf("broker: issue creds for %s: %w", name, err)
	}
	return creds, nil
}

func (k *Keys) loadOrSignOperator() error {
	path := filepath.Join(k.dir, operatorJWTFile)
	if tok, err := readJWT(path); err == nil {
		oc, err := jwt.DecodeOperatorClaims(tok)
		if err == nil && oc.Subject == k.operatorPub && oc.Issuer == k.operatorPub && oc.SystemAccount == k.systemPub {
			k.operatorJWT = tok
			return nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	oc := jwt.NewOperatorClaims(k.operatorPub)
	oc.Name = OperatorName
	oc.SystemAccount = k.systemPub
	tok, err := oc.Encode(k.operator)
	if err != nil {
		return fmt.Errorf("broker: keys: sign operator: %w", err)
	}
	k.operatorJWT = tok
	return writeFileAtomic(path, []byte(tok))
}

func (k *Keys) loadOrSignSystem() error {
	path := filepath.Join(k.dir, systemJWTFile)
	if tok, err := readJWT(path); err == nil {
		ac, err := jwt.DecodeAccountClaims(tok)
		if err == nil && ac.Subject == k.systemPub && ac.Issuer == k.operatorPub {
			k.systemJWT = tok
			return nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ac := jwt.NewAccountClaims(k.systemPub)
	ac.Name = SystemAccountName
	tok, err := ac.Encode(k.operator)
	if err != nil {
		return fmt.Errorf("broker: keys: sign system account: %w", err)
	}
	k.systemJWT = tok
	return writeFileAtomic(path, []byte(tok))
}

// loadOrSignAccount keeps the stored JWT of a if it says what want says
// (name, signing key, exports, imports, limits), or signs want. With limits
// nil, an account that has JetStream keeps its stored JetStream limits.
func (k *Keys) loadOrSignAccount(a *account, want *jwt.AccountClaims, limits *jwt.JetStreamLimits) error {
	path := filepath.Join(k.dir, a.jwtFile)
	want.Name = a.name
	want.SigningKeys.Add(a.signingPub)
	var stored *jwt.AccountClaims
	tok, err := readJWT(path)
	switch {
	case err == nil:
		if ac, err := jwt.DecodeAccountClaims(tok); err == nil && ac.Subject == a.pub && ac.Issuer == k.operatorPub {
			stored = ac
		}
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	if stored != nil && len(stored.Revocations) > 0 {
		// Revocations are made while the hub runs; a new layout keeps them.
		want.Revocations = jwt.RevocationList{}
		for pub, t := range stored.Revocations {
			want.Revocations[pub] = t
		}
	}
	switch {
	case limits != nil:
		want.Limits.JetStreamLimits = *limits
	case stored != nil && want.Limits.IsJSEnabled() && stored.Limits.IsJSEnabled():
		want.Limits.JetStreamLimits = stored.Limits.JetStreamLimits
	}
	signed, err := want.Encode(k.operator)
	if err != nil {
		return fmt.Errorf("broker: keys: sign account %s: %w", a.name, err)
	}
	if stored != nil {
		if ac, err := jwt.DecodeAccountClaims(signed); err == nil && sameAccount(stored, ac) {
			a.jwt = tok
			return nil
		}
	}
	a.jwt = signed
	return writeFileAtomic(path, []byte(signed))
}

// sameAccount reports whether two decoded account JWTs grant the same.
func sameAccount(a, b *jwt.AccountClaims) bool {
	if a.Name != b.Name || a.Subject != b.Subject || a.Issuer != b.Issuer {
		return false
	}
	ja, err1 := json.Marshal(a.Account)
	jb, err2 := json.Marshal(b.Account)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// loadOrCreateSeed reads an nkey seed of the given kind from path, or creates
// one and writes it there.
func loadOrCreateSeed(path string, kind nkeys.PrefixByte) (nkeys.KeyPair, string, error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		kp, err := nkeys.FromSeed(bytes.TrimSpace(data))
		if err != nil {
			return nil, "", fmt.Errorf("broker: keys: %s: %w", path, err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, "", fmt.Errorf("broker: keys: %s: %w", path, err)
		}
		if !nkeys.IsValidPublicKey(pub) || nkeys.Prefix(pub) != kind {
			return nil, "", fmt.Errorf("broker: keys: %s: not a %s seed", path, kind)
		}
		return kp, pub, nil
	case errors.Is(err, os.ErrNotExist):
		kp, err := nkeys.CreatePair(kind)
		if err != nil {
			return nil, "", fmt.Errorf("broker: keys: create %s: %w", path, err)
		}
		seed, err := kp.Seed()
		if err != nil {
			return nil, "", fmt.Errorf("broker: keys: create %s: %w", path, err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, "", fmt.Errorf("broker: keys: create %s: %w", path, err)
		}
		if err := writeFileAtomic(path, append(seed, '\n')); err != nil {
			return nil, "", err
		}
		return kp, pub, nil
	default:
		return nil, "", fmt.Errorf("broker: keys: %w", err)
	}
}

func readJWT(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		return "", fmt.Errorf("broker: keys: %w", err)
	}
	return strings.TrimSpace(string(data)), nil
}

// writeFileAtomic writes data to path with mode 0600 through a temporary file
// in the same directory, so a crash never leaves a half-written key.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("broker: keys: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("broker: keys: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("broker: keys: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("broker: keys: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("broker: keys: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("broker: keys: %w", err)
	}
	return nil
}
