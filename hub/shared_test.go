package hub

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/registry"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// secondHub starts another hub of first's deployment, in this process: its
// own data directory, index and HTTP port; first's NATS server (as an
// external cluster: credentials files issued from a copy of first's keys
// directory, which every hub of a deployment needs), first's S3 bucket and
// first's CA.
func secondHub(t *testing.T, first *running) *running {
	t.Helper()
	fc := first.cfg
	cfg := Config{Data: t.TempDir()}
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.S3.Archive = fc.S3.Archive
	cfg.PKI = fc.PKI
	cfg.Pipeline = fc.Pipeline
	cfg.NATS.URL = first.Info().NATSURL
	cfg.NATS.KeysDir = filepath.Join(cfg.Data, "nats", "keys")
	os.MkdirAll(filepath.Dir(cfg.NATS.KeysDir), 0o700)
	if out, err := exec.Command("cp", "-a", fc.NATS.KeysDir, cfg.NATS.KeysDir).CombinedOutput(); err != nil {
		t.Fatalf("copy the keys: %v %s", err, out)
	}
	keys, err := broker.LoadOrCreateKeys(cfg.NATS.KeysDir)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := keys.IssueHubCreds()
	if err != nil {
		t.Fatal(err)
	}
	stageCreds, err := keys.IssueHubStageCreds()
	if err != nil {
		t.Fatal(err)
	}
	cfg.NATS.CredsFile, cfg.NATS.StageCredsFile = filepath.Join(cfg.Data, "hub.creds"), filepath.Join(cfg.Data, "stage.creds")
	os.WriteFile(cfg.NATS.CredsFile, creds, 0o600)
	os.WriteFile(cfg.NATS.StageCredsFile, stageCreds, 0o600)
	return startHub(t, cfg)
}

// TestTwoHubsShareState: two hubs of one deployment share the units, the
// accounts and the admin token. Units registered through hub 1 are found
// by hub 2; hub 1's admin token works on hub 2 (and is in hub 2's
// admin.token file); an account made through hub 1 and its API token work
// on hub 2, and a password changed through hub 2 voids the token on hub
// 1. A unit's credentials revoked through hub 1 stay revoked when hub 2,
// whose keys never saw that revocation, pushes the UNITS account for a
// revocation of its own.
func TestTwoHubsShareState(t *testing.T) {
	h1 := startHub(t, testConfig(t))
	a, b := h1.register(uA), h1.register(uB)
	h2 := secondHub(t, h1)

	if h2.AdminToken() != h1.AdminToken() {
		t.Fatal("the hubs have different admin tokens")
	}
	if f, _ := os.ReadFile(filepath.Join(h2.cfg.Data, "admin.token")); strings.TrimSpace(string(f)) != h1.AdminToken() {
		t.Fatalf("hub 2's admin.token file: %q", f)
	}
	if code := getAs(t, h2, h1.AdminToken(), "/api/v1/users"); code != http.StatusOK {
		t.Fatalf("hub 1's admin token on hub 2: %d", code)
	}
	for _, id := range []document.UnitID{uA, uB} {
		if reg, dis, err := h2.units.UnitStatus(t.Context(), id); err != nil || !reg || dis {
			t.Fatalf("unit %s in hub 2's registry: %v %v %v", id, reg, dis, err)
		}
	}
	// Documents go through whichever hub takes them from the shared
	// consumer: none is refused.
	for range 6 {
		id := a.send(a.signer, uB)
		if n := a.notice(); n.Type != protocol.NoticeAccepted || n.DocumentID != id {
			t.Fatalf("A to B: %s %v", n.Type, n.Reasons.Codes())
		}
		b.delivery()
	}

	// Accounts.
	var nu api.NewUserResult
	if code := h1.api("POST", "/api/v1/users", auth.NewUser{Name: "kiem-toan", Role: auth.RoleAuditor, Password: "mật khẩu kiểm toán"}, &nu); code != http.StatusCreated {
		t.Fatalf("add a user on hub 1: %d", code)
	}
	tok, _, err := h1.auth.NewToken(t.Context(), "kiem-toan", "script", 0)
	if err != nil {
		t.Fatal(err)
	}
	if code := getAs(t, h2, tok, "/api/v1/me"); code != http.StatusOK {
		t.Fatalf("hub 1's token on hub 2: %d", code)
	}
	if code := h2.api("PATCH", "/api/v1/users/kiem-toan", map[string]any{"password": "mật khẩu kiểm toán mới"}, nil); code != http.StatusOK {
		t.Fatalf("change the password on hub 2: %d", code)
	}
	if code := getAs(t, h1, tok, "/api/v1/me"); code != http.StatusUnauthorized {
		t.Fatalf("the token on hub 1 after a new password on hub 2: %d", code)
	}

	// Revocations: A rotated through hub 1, then B through hub 2.
	var rb api.UnitBundle
	if code := h1.api("POST", "/api/v1/units/"+string(uA)+"/rotate", nil, &rb); code != http.StatusOK {
		t.Fatalf("rotate A on hub 1: %d", code)
	}
	a.waitClosed("rotated on hub 1")
	old := a.creds
	eventually(t, "hub 2's registry holds A's revocation", func() bool {
		u, err := h2.units.Get(t.Context(), uA)
		return err == nil && len(u.Revoked) == 1
	})
	if code := h2.api("POST", "/api/v1/units/"+string(uB)+"/rotate", nil, nil); code != http.StatusOK {
		t.Fatalf("rotate B on hub 2: %d", code)
	}
	b.waitClosed("rotated on hub 2")
	h1.refused(old, uA, "after hub 2 pushed the UNITS account")
	h2.refused(b.creds, uB, "rotated on hub 2")
	h1.agentFrom(uA, &rb, a) // the new ones work
}

// getAs GETs path on a hub with a bearer token and returns the status.
func getAs(t *testing.T, h *running, token, path string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", h.Info().HTTP+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestUnitsCannotReachSharedBuckets: the units' NATS credentials reach the
// EDX account only through the UNITS account's imports, none of which
// touches the key-value buckets: a unit can neither read, watch, look up
// nor write the unit registry or the accounts.
func TestUnitsCannotReachSharedBuckets(t *testing.T) {
	h := startHub(t, testConfig(t))
	a := h.register(uA)
	ctx := t.Context()
	var (
		mu   sync.Mutex
		errs []error
	)
	nc, _, _, err := protocol.ConnectUnit(ctx, h.Info().NATSURL, a.creds, uA,
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	denied := func(subject string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, err := range errs {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				return true
			}
		}
		return false
	}
	for _, bucket := range []string{registry.Bucket, "EDX_ACCOUNTS", "EDX_SESSIONS"} {
		// Watch every key (a KV watch is a subscription on $KV.<bucket>.>).
		sub := "$KV." + bucket + ".>"
		if _, err := nc.SubscribeSync(sub); err != nil {
			t.Fatal(err)
		}
		// Read or write a key, in the UNITS account and through the EDX
		// API prefix the imports use.
		for _, subj := range []string{
			"$KV." + bucket + ".user.admin",
			"$JS.API.DIRECT.GET.KV_" + bucket,
			"$JS.API.STREAM.MSG.GET.KV_" + bucket,
			protocol.EDXAPIPrefix + ".DIRECT.GET.KV_" + bucket,
			protocol.EDXAPIPrefix + ".STREAM.MSG.GET.KV_" + bucket,
			protocol.EDXAPIPrefix + ".STREAM.INFO.KV_" + bucket,
			protocol.EDXAPIPrefix + ".CONSUMER.CREATE.KV_" + bucket,
		} {
			if err := nc.PublishRequest(subj, nc.NewRespInbox(), []byte(`{"last_by_subj":"$KV.`+bucket+`.>"}`)); err != nil {
				t.Fatal(err)
			}
			eventually(t, "permissions violation for "+subj, func() bool { return denied(subj) })
		}
		eventually(t, "permissions violation for "+sub, func() bool { return denied(sub) })
		// And with the JetStream client the agents use.
		js, _ := jetstream.NewWithAPIPrefix(nc, protocol.EDXAPIPrefix)
		kctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := js.KeyValue(kctx, bucket)
		cancel()
		if err == nil {
			t.Fatalf("a unit binds bucket %s", bucket)
		}
	}
	// Nothing a unit sent changed the registry.
	if u, err := h.units.Lookup(ctx, uA); err != nil || u.Name != "Đơn vị "+string(uA) {
		t.Fatalf("A's record: %+v %v", u, err)
	}
}

// TestStartsFromOldHubData: a hub's data directory from before the shared
// registry and accounts, as the hub at f4d59be left it (testdata: its
// index with three units, its accounts file, its admin.token), starts: the
// units are copied into the registry (B still disabled), the accounts into
// the shared buckets (their passwords sign in), the admin token stays the
// file's, and the old accounts file is renamed users.db.migrated. A
// restart copies nothing again.
func TestStartsFromOldHubData(t *testing.T) {
	cfg := testConfig(t)
	if out, err := exec.Command("cp", "-a", "testdata/legacy-f4d59be/.", cfg.Data).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	h := startHub(t, cfg)
	if h.AdminToken() != "OLDHUBADMINTOKENFROMFILE0000000" {
		t.Fatalf("admin token %q", h.AdminToken())
	}
	units := h.units.List()
	if len(units) != 3 || units[0].Name != "Sở Nội vụ" || len(units[0].NATSUsers) != 1 || !units[1].Disabled || units[2].Disabled {
		t.Fatalf("units: %+v", units)
	}
	if _, err := h.auth.Authenticate(t.Context(), "lan.nguyen@hcm", "mật khẩu của Lan"); err != nil {
		t.Fatalf("an old account: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Data, "auth", "users.db.migrated")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Data, "auth", "users.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old accounts file is still in place: %v", err)
	}
	// The units are in force: A (from the old index) sends to C.
	var v api.UnitView
	if code := h.api("GET", "/api/v1/units/000.02.00.H29", nil, &v); code != http.StatusOK || v.State != api.UnitDisabled {
		t.Fatalf("B: %d %+v", code, v.State)
	}
	h.stop()

	// Restarted (the embedded NATS keeps the buckets): nothing copied again;
	// a change made since stays.
	h = startHub(t, cfg)
	if _, err := h.units.Update(t.Context(), "000.03.00.H29", func(u registry.Unit, _ bool) (registry.Unit, error) {
		u.Name = "Ủy ban nhân dân Quận 1 (renamed)"
		return u, nil
	}); err != nil {
		t.Fatal(err)
	}
	h.stop()
	h = startHub(t, cfg)
	if u, _ := h.units.Lookup(t.Context(), "000.03.00.H29"); u.Name != "Ủy ban nhân dân Quận 1 (renamed)" {
		t.Fatalf("a restart copied the old index again: %+v", u)
	}
	if h.AdminToken() != "OLDHUBADMINTOKENFROMFILE0000000" {
		t.Fatalf("admin token after restart %q", h.AdminToken())
	}
}
