package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// HashParams are argon2id's costs. The defaults follow RFC 9106's second
// recommendation scaled to the hub's two cores: 64 MiB, 2 passes, 2 lanes
// (about 0.1 s a hash here). Each hash carries its parameters, so changing
// them later keeps old hashes verifiable.
type HashParams struct {
	MemoryKiB uint32 `yaml:"memory_kib"`
	Time      uint32 `yaml:"iterations"`
	Threads   uint8  `yaml:"threads"`
}

// DefaultHashParams are used when the configuration sets none.
var DefaultHashParams = HashParams{MemoryKiB: 64 * 1024, Time: 2, Threads: 2}

func (p HashParams) validate() error {
	if p.MemoryKiB < 8*1024 || p.Time < 1 || p.Threads < 1 {
		return fmt.Errorf("%w: password_hash: memory_kib ≥ 8192, iterations ≥ 1 and threads ≥ 1 are required", ErrInvalid)
	}
	return nil
}

// Password rules: long enough to resist guessing once the rate limit is
// passed, short enough that hashing stays bounded.
const (
	MinPassword = 10
	MaxPassword = 256
)

// CheckPassword reports whether pw is acceptable as a new password.
func CheckPassword(pw string) error {
	n := utf8.RuneCountInString(pw)
	switch {
	case n < MinPassword:
		return fmt.Errorf("%w: the password must have at least %d characters", ErrInvalid, MinPassword)
	case len(pw) > MaxPassword:
		return fmt.Errorf("%w: the password must have at most %d bytes", ErrInvalid, MaxPassword)
	}
	return nil
}

const keyLen = 32

// hashPassword returns the PHC string of an argon2id hash of pw:
// $argon2id$v=19$m=65536,t=2,p=2$<salt>$<hash>.
func hashPassword(pw string, p HashParams) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.MemoryKiB, p.Threads, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// checkHash reports whether pw matches the PHC string h.
func checkHash(h, pw string) bool {
	parts := strings.Split(h, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return false
	}
	var p HashParams
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil || p.validate() != nil ||
		p.MemoryKiB > 1<<21 || p.Time > 64 {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}
