package broker

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Names of the NATS operator and accounts the hub runs.
const (
	OperatorName      = "edx"
	SystemAccountName = "SYS"
	AccountName       = "EDX"
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
	signingSeedFile  = "edx-signing.nk"
	accountJWTFile   = "edx.jwt"
)

// Keys holds the decentralized-auth material of the hub: the operator, the
// system account and the EDX account with its signing key. User credentials
// (one per unit, one for the hub) are signed by the EDX account signing key,
// so the server only needs the account JWTs to admit a user it has never seen:
// issuing credentials needs no server restart and no server at all, it works
// the same against the embedded server and an external cluster that trusts
// this operator.
type Keys struct {
	dir string

	operator nkeys.KeyPair
	system   nkeys.KeyPair
	account  nkeys.KeyPair
	signing  nkeys.KeyPair

	operatorPub, systemPub, accountPub, signingPub string
	operatorJWT, systemJWT, accountJWT             string
}

// KeysOption adjusts LoadOrCreateKeys.
type KeysOption func(*keysOptions)

type keysOptions struct {
	limits *jwt.JetStreamLimits
}

// WithJetStreamLimits sets the JetStream limits of the EDX account. Without
// it a new account is unlimited (bounded by the server's own limits) and a
// stored account keeps its limits. A stored account JWT whose limits differ is
// signed again, which keeps every credential issued before valid.
func WithJetStreamLimits(l jwt.JetStreamLimits) KeysOption {
	return func(o *keysOptions) { o.limits = &l }
}

// unlimitedJetStream enables JetStream in an account without limits of its own.
var unlimitedJetStream = jwt.JetStreamLimits{
	MemoryStorage: jwt.NoLimit,
	DiskStorage:   jwt.NoLimit,
	Streams:       jwt.NoLimit,
	Consumer:      jwt.NoLimit,
	MaxAckPending: jwt.NoLimit,
}

// LoadOrCreateKeys loads the operator, system account and EDX account keys
// from dir, creating whatever is missing (directory 0700, files 0600). The
// seeds are the source of truth: a JWT that is missing, unreadable or does not
// match its keys is signed again from them.
func LoadOrCreateKeys(dir string, opts ...KeysOption) (*Keys, error) {
	var o keysOptions
	for _, opt := range opts {
		opt(&o)
	}
	if dir == "" {
		return nil, errors.New("broker: keys: empty directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("broker: keys: %w", err)
	}
	k := &Keys{dir: dir}
	var err error
	if k.operator, k.operatorPub, err = loadOrCreateSeed(filepath.Join(dir, operatorSeedFile), nkeys.PrefixByteOperator); err != nil {
		return nil, err
	}
	if k.system, k.systemPub, err = loadOrCreateSeed(filepath.Join(dir, systemSeedFile), nkeys.PrefixByteAccount); err != nil {
		return nil, err
	}
	if k.account, k.accountPub, err = loadOrCreateSeed(filepath.Join(dir, accountSeedFile), nkeys.PrefixByteAccount); err != nil {
		return nil, err
	}
	if k.signing, k.signingPub, err = loadOrCreateSeed(filepath.Join(dir, signingSeedFile), nkeys.PrefixByteAccount); err != nil {
		return nil, err
	}
	if err := k.loadOrSignOperator(); err != nil {
		return nil, err
	}
	if err := k.loadOrSignSystem(); err != nil {
		return nil, err
	}
	if err := k.loadOrSignAccount(o.limits); err != nil {
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
func (k *Keys) Account() string { return k.accountPub }

// AccountJWT is the EDX account's JWT.
func (k *Keys) AccountJWT() string { return k.accountJWT }

// ResolverPreload maps account public keys to their JWTs, for a MEMORY
// resolver (resolver_preload) or to push to a full resolver.
func (k *Keys) ResolverPreload() map[string]string {
	return map[string]string{k.systemPub: k.systemJWT, k.accountPub: k.accountJWT}
}

// ServerConfig returns the nats-server configuration lines that make an
// external server or cluster trust these keys with a MEMORY resolver. Add
// jetstream, cluster and listen settings around it.
func (k *Keys) ServerConfig() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "operator: %q\n", k.operatorJWT)
	fmt.Fprintf(&b, "system_account: %s\n", k.systemPub)
	b.WriteString("resolver: MEMORY\nresolver_preload: {\n")
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

// IssueUnitCreds returns a .creds file for a new user of unit in the EDX
// account, with the permissions of UnitPermissions. A ttl of zero issues
// credentials that do not expire. Every call creates a new user key; earlier
// credentials of the same unit stay valid until they expire.
func (k *Keys) IssueUnitCreds(unit string, ttl time.Duration) ([]byte, error) {
	if err := validUnit(unit); err != nil {
		return nil, err
	}
	if ttl < 0 {
		return nil, fmt.Errorf("broker: issue creds for %s: negative ttl", unit)
	}
	perms := UnitPermissions(unit)
	return k.issueUser(unit, ttl, &perms)
}

// IssueHubCreds returns a .creds file for the hub's own user in the EDX
// account: no permission limits, no expiry.
func (k *Keys) IssueHubCreds() ([]byte, error) {
	return k.issueUser(hubUserName, 0, nil)
}

func (k *Keys) issueUser(name string, ttl time.Duration, perms *jwt.Permissions) ([]byte, error) {
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
	uc.IssuerAccount = k.accountPub
	if perms != nil {
		uc.Permissions = *perms
	}
	if ttl > 0 {
		uc.Expires = time.Now().Add(ttl).Unix()
	}
	tok, err := uc.Encode(k.signing)
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

func (k *Keys) loadOrSignAccount(limits *jwt.JetStreamLimits) error {
	path := filepath.Join(k.dir, accountJWTFile)
	want := unlimitedJetStream
	if limits != nil {
		want = *limits
	}
	if tok, err := readJWT(path); err == nil {
		ac, err := jwt.DecodeAccountClaims(tok)
		if err == nil && ac.Subject == k.accountPub && ac.Issuer == k.operatorPub &&
			ac.SigningKeys.Contains(k.signingPub) && ac.Limits.IsJSEnabled() &&
			(limits == nil || ac.Limits.JetStreamLimits == want) {
			k.accountJWT = tok
			return nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ac := jwt.NewAccountClaims(k.accountPub)
	ac.Name = AccountName
	ac.SigningKeys.Add(k.signingPub)
	ac.Limits.JetStreamLimits = want
	tok, err := ac.Encode(k.operator)
	if err != nil {
		return fmt.Errorf("broker: keys: sign account: %w", err)
	}
	k.accountJWT = tok
	return writeFileAtomic(path, []byte(tok))
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
