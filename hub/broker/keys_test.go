package broker

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
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
	files := []string{operatorSeedFile, operatorJWTFile, systemSeedFile, systemJWTFile, accountSeedFile, signingSeedFile, accountJWTFile,
		unitsSeedFile, unitsSigningFile, unitsJWTFile, stageSeedFile, stageSigningFile, stageJWTFile}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %o", f, fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(files) {
		t.Errorf("%d files in keys dir, want %d", len(entries), len(files))
	}

	ac, err := jwt.DecodeAccountClaims(k.AccountJWT())
	if err != nil {
		t.Fatal(err)
	}
	if ac.Name != AccountName || !ac.Limits.IsJSEnabled() || !ac.SigningKeys.Contains(k.edx.signingPub) || ac.Issuer != k.operatorPub ||
		len(ac.Exports) != len(edxServices())+2 || len(ac.Imports) != 0 { // +2: the units' inboxes, the checkpoints
		t.Fatalf("account claims %+v", ac)
	}
	uc, err := jwt.DecodeAccountClaims(k.UnitsAccountJWT())
	if err != nil {
		t.Fatal(err)
	}
	if uc.Name != UnitsAccountName || uc.Limits.IsJSEnabled() || !uc.SigningKeys.Contains(k.units.signingPub) ||
		len(uc.Exports) != 0 || len(uc.Imports) != len(edxServices())+len(stageServices())+2 || // +2: the units' inboxes and the checkpoints, from EDX
		uc.Limits.Subs != DefaultUnitLimits.MaxSubscriptions || uc.Limits.Payload != DefaultUnitLimits.MaxPayload ||
		uc.Limits.Conn != DefaultUnitLimits.MaxConnections {
		t.Fatalf("units account claims %+v", uc)
	}
	for _, im := range uc.Imports {
		if im.Account != k.Account() && im.Account != k.StageAccount() {
			t.Errorf("import %s from %s", im.Subject, im.Account)
		}
		if strings.HasPrefix(string(im.Subject), "$JS.API.") && !strings.HasPrefix(string(im.LocalSubject), "$JS.EDX.API.") &&
			!strings.HasPrefix(string(im.LocalSubject), "$JS.STAGE.API.") {
			t.Errorf("JetStream API %s imported as %q", im.Subject, im.LocalSubject)
		}
	}
	sc, err := jwt.DecodeAccountClaims(k.StageAccountJWT())
	if err != nil {
		t.Fatal(err)
	}
	if sc.Name != StageAccountName || sc.Limits.JetStreamLimits != DefaultStageLimits || !sc.SigningKeys.Contains(k.stage.signingPub) ||
		len(sc.Exports) != len(stageServices()) || len(sc.Imports) != 0 {
		t.Fatalf("stage account claims %+v", sc)
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
	if k2.Account() != k.Account() || k2.AccountJWT() != k.AccountJWT() || k2.OperatorJWT() != k.OperatorJWT() || k2.edx.signingPub != k.edx.signingPub ||
		k2.UnitsAccountJWT() != k.UnitsAccountJWT() || k2.StageAccountJWT() != k.StageAccountJWT() {
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

	// So are the UNITS and STAGE JWTs, and new stage limits apply.
	for _, f := range []string{unitsJWTFile, stageJWTFile} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	slim := jwt.JetStreamLimits{DiskStorage: 1 << 30, Streams: 1, Consumer: 100}
	k5, err := LoadOrCreateKeys(dir, WithStageJetStreamLimits(slim))
	if err != nil {
		t.Fatal(err)
	}
	sc5, _ := jwt.DecodeAccountClaims(k5.StageAccountJWT())
	if k5.UnitsAccount() != k.UnitsAccount() || k5.StageAccount() != k.StageAccount() || sc5 == nil || sc5.Limits.JetStreamLimits != slim {
		t.Fatal("units or stage account changed, or stage limits not applied")
	}

	conf := string(k.ServerConfig())
	if !strings.Contains(conf, "resolver: MEMORY") {
		t.Fatalf("server config:\n%s", conf)
	}
	for _, pub := range []string{k.SystemAccount(), k.Account(), k.UnitsAccount(), k.StageAccount()} {
		if !strings.Contains(conf, pub+":") {
			t.Errorf("server config lacks account %s", pub)
		}
	}
}

// TestUpgradeKeysDir: a keys directory from before the UNITS account (units'
// users in EDX, signed by edx-signing.nk) is upgraded in place: the EDX
// account keeps its key, and so its streams; UNITS and STAGE are created; the
// credentials issued in EDX before, which would let a unit work inside the
// streams' account, stop working.
func TestUpgradeKeysDir(t *testing.T) {
	dir := t.TempDir()
	k0, err := LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Turn dir into what the previous version left.
	for _, f := range []string{signingSeedFile, unitsSeedFile, unitsSigningFile, unitsJWTFile, stageSeedFile, stageSigningFile, stageJWTFile} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	old, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	oldPub, _ := old.PublicKey()
	oldSeed, _ := old.Seed()
	if err := os.WriteFile(filepath.Join(dir, oldSigningSeedFile), oldSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	ac := jwt.NewAccountClaims(k0.Account())
	ac.Name = AccountName
	ac.SigningKeys.Add(oldPub)
	ac.Limits.JetStreamLimits = unlimitedJetStream
	tok, err := ac.Encode(k0.operator)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, accountJWTFile), []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	oldEDX := k0.edx
	oldEDX.signing, oldEDX.signingPub = old, oldPub
	oldUnitCreds, err := k0.issueUser(&oldEDX, "000.00.00.H29", 0, nil, unlimitedNATS)
	if err != nil {
		t.Fatal(err)
	}

	srv, err := Start(t.Context(), Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), KeysDir: dir}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	k := srv.Keys()
	if k.Account() != k0.Account() {
		t.Fatal("the EDX account changed: its streams would be lost")
	}
	if _, err := os.Stat(filepath.Join(dir, oldSigningSeedFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old signing key left behind: %v", err)
	}
	if nc, err := nats.Connect(srv.ClientURL(), nats.UserCredentialBytes(oldUnitCreds)); err == nil {
		nc.Close()
		t.Fatal("credentials issued in EDX before the upgrade still connect")
	}
	for _, issue := range []func() ([]byte, error){
		k.IssueHubCreds, k.IssueHubStageCreds, func() ([]byte, error) { return k.IssueUnitCreds("000.00.00.H29", time.Hour) },
	} {
		creds, err := issue()
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(srv.ClientURL(), nats.UserCredentialBytes(creds))
		if err != nil {
			t.Fatalf("new credentials after the upgrade: %v", err)
		}
		nc.Close()
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
	if uc.IssuerAccount != k.UnitsAccount() || uc.Issuer != k.units.signingPub || uc.Name != "000.00.00.H29" {
		t.Fatalf("issuer %s / %s, name %s", uc.IssuerAccount, uc.Issuer, uc.Name)
	}
	if d := time.Until(time.Unix(uc.Expires, 0)); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("expires in %v", d)
	}
	if !slices.Contains(uc.Pub.Allow, "edx.*.000.00.00.H29") || !slices.Contains(uc.Pub.Allow, "edx.witness.*.000.00.00.H29") ||
		len(uc.Sub.Allow) != 2 || uc.Sub.Allow[0] != "_INBOX_EDX.000_00_00_H29.>" || uc.Sub.Allow[1] != "edx.checkpoint" {
		t.Fatalf("permissions %+v", uc.Permissions)
	}
	if _, err := jwt.ParseDecoratedUserNKey(creds); err != nil {
		t.Fatal(err)
	}

	// A unit whose first token could be a log's token has its services
	// listed: edx.*.UNIT would admit a witness request as the rest of its id.
	for unit, listed := range map[string]bool{
		"0123456789abcdef.00.H29": true,
		"0123456789abcdef":        false, // a single token: no rest to pass for
		"0123456789abcdeF.00.H29": false,
		"0123456789abcde.00.H29":  false,
		"000.00.00.H29":           false,
	} {
		creds, err := k.IssueUnitCreds(unit, time.Hour)
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
		if got := slices.Contains(uc.Pub.Allow, "edx.submit."+unit); got != listed || slices.Contains(uc.Pub.Allow, "edx.*."+unit) == listed {
			t.Errorf("%s: permissions %v", unit, uc.Pub.Allow)
		}
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

// TestAccountLimitsBindEveryCredential: a unit credential issued without
// limits of its own (as before units had them) is bound by the UNITS
// account's.
func TestAccountLimitsBindEveryCredential(t *testing.T) {
	dir := t.TempDir()
	srv, err := Start(t.Context(), Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), KeysDir: dir}, slog.New(slog.DiscardHandler),
		WithUnitLimits(UnitLimits{MaxSubscriptions: 10}))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	const unit = "000.00.00.H29"
	perms := UnitPermissions(unit)
	creds, err := srv.Keys().issueUser(&srv.Keys().units, unit, 0, &perms, unlimitedNATS)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 100)
	nc, err := nats.Connect(srv.ClientURL(), nats.UserCredentialBytes(creds), nats.CustomInboxPrefix("_INBOX_EDX.000_00_00_H29"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errc <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for i := range 20 {
		nc.SubscribeSync("_INBOX_EDX.000_00_00_H29.x." + strings.Repeat("y", i+1))
	}
	nc.Flush()
	select {
	case err := <-errc:
		if !strings.Contains(err.Error(), "maximum subscriptions exceeded") {
			t.Fatalf("error %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("20 subscriptions allowed under an account limit of 10")
	}
}
