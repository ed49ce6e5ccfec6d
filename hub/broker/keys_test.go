package broker

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
)

func TestLoadOrCreateKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	k, err := LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %o", fi.Mode().Perm())
	}
	for _, f := range []string{operatorSeedFile, operatorJWTFile, systemSeedFile, systemJWTFile, accountSeedFile, signingSeedFile, accountJWTFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %o", f, fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 7 {
		t.Errorf("%d files in keys dir, want 7", len(entries))
	}

	ac, err := jwt.DecodeAccountClaims(k.AccountJWT())
	if err != nil {
		t.Fatal(err)
	}
	if ac.Name != AccountName || !ac.Limits.IsJSEnabled() || !ac.SigningKeys.Contains(k.signingPub) || ac.Issuer != k.operatorPub {
		t.Fatalf("account claims %+v", ac)
	}
	oc, err := jwt.DecodeOperatorClaims(k.OperatorJWT())
	if err != nil {
		t.Fatal(err)
	}
	if oc.SystemAccount != k.SystemAccount() {
		t.Fatalf("operator system account %s", oc.SystemAccount)
	}

	// Reloading gives the same keys and the same JWTs.
	k2, err := LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if k2.Account() != k.Account() || k2.AccountJWT() != k.AccountJWT() || k2.OperatorJWT() != k.OperatorJWT() || k2.signingPub != k.signingPub {
		t.Fatal("reload changed the keys")
	}

	// New limits re-sign the account JWT with the same keys.
	lim := jwt.JetStreamLimits{DiskStorage: 1 << 30, MemoryStorage: 1 << 20, Streams: 10, Consumer: 5000}
	k3, err := LoadOrCreateKeys(dir, WithJetStreamLimits(lim))
	if err != nil {
		t.Fatal(err)
	}
	ac3, err := jwt.DecodeAccountClaims(k3.AccountJWT())
	if err != nil {
		t.Fatal(err)
	}
	if ac3.Limits.JetStreamLimits != lim || ac3.Subject != k.Account() {
		t.Fatalf("limits %+v", ac3.Limits.JetStreamLimits)
	}
	// A lost account JWT is signed again from the seeds.
	if err := os.Remove(filepath.Join(dir, accountJWTFile)); err != nil {
		t.Fatal(err)
	}
	k4, err := LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if k4.Account() != k.Account() {
		t.Fatal("account key changed")
	}

	if !strings.Contains(string(k.ServerConfig()), "resolver: MEMORY") {
		t.Fatalf("server config:\n%s", k.ServerConfig())
	}
}

func TestLoadOrCreateKeysRejectsWrongSeed(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreateKeys(dir); err != nil {
		t.Fatal(err)
	}
	// An account seed where the operator seed belongs.
	seed, err := os.ReadFile(filepath.Join(dir, accountSeedFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, operatorSeedFile), seed, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKeys(dir); err == nil {
		t.Fatal("account seed accepted as operator seed")
	}
}

func TestIssueUnitCreds(t *testing.T) {
	k, err := LoadOrCreateKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	creds, err := k.IssueUnitCreds("000.00.00.H29", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	if uc.IssuerAccount != k.Account() || uc.Issuer != k.signingPub || uc.Name != "000.00.00.H29" {
		t.Fatalf("issuer %s / %s, name %s", uc.IssuerAccount, uc.Issuer, uc.Name)
	}
	if d := time.Until(time.Unix(uc.Expires, 0)); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("expires in %v", d)
	}
	if !slices.Contains(uc.Pub.Allow, "edx.submit.000.00.00.H29") || len(uc.Sub.Allow) != 1 || uc.Sub.Allow[0] != "_INBOX_000_00_00_H29.>" {
		t.Fatalf("permissions %+v", uc.Permissions)
	}
	if _, err := jwt.ParseDecoratedUserNKey(creds); err != nil {
		t.Fatal(err)
	}

	for _, bad := range []string{"", "a.*", "a.>", "a..b", "a b", "a_b", ".a", "a."} {
		if _, err := k.IssueUnitCreds(bad, 0); err == nil {
			t.Errorf("unit %q accepted", bad)
		}
	}
	if _, err := k.IssueUnitCreds("000.00.00.H29", -time.Second); err == nil {
		t.Error("negative ttl accepted")
	}
}
