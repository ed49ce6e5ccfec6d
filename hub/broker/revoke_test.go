package broker_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// dial connects as a unit and returns the connection and a channel that is
// closed when the connection is closed for good.
func dial(t *testing.T, url string, creds []byte, unit string) (*nats.Conn, jetstream.JetStream, <-chan struct{}, error) {
	t.Helper()
	closed := make(chan struct{})
	nc, js, _, err := protocol.ConnectUnit(t.Context(), url, creds, document.UnitID(unit),
		nats.MaxReconnects(2), nats.ReconnectWait(50*time.Millisecond), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		return nil, nil, nil, err
	}
	t.Cleanup(nc.Close)
	return nc, js, closed, nil
}

func waitClosed(t *testing.T, closed <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: the connection is still open", what)
	}
}

// fetchDelivery takes the unit's next delivery and acks it.
func fetchDelivery(t *testing.T, js jetstream.JetStream, unit string) ([]byte, error) {
	cons, err := js.Consumer(t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(unit))
	if err != nil {
		return nil, err
	}
	m, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil {
		return nil, err
	}
	return m.Data(), m.DoubleAck(t.Context())
}

// TestRevokeUnitUsers: a unit's user revoked in the UNITS account and pushed
// to the running server loses its connection, cannot connect again and so
// cannot take the unit's deliveries; the unit's new credentials can. The
// revocation is kept in the keys directory: a restarted server refuses the
// old credentials too.
func TestRevokeUnitUsers(t *testing.T) {
	e := newEnv(t)
	keys := e.srv.Keys()
	old, err := keys.IssueUnitCreds(unitA, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	oldPub, _, err := broker.UserKey(old)
	if err != nil {
		t.Fatal(err)
	}
	_, _, closed, err := dial(t, e.srv.ClientURL(), old, unitA)
	if err != nil {
		t.Fatal(err)
	}
	other := e.unit(t, unitB) // another unit is not affected
	if _, err := e.hubJS.Publish(t.Context(), protocol.DeliverSubject(unitA), []byte("for A")); err != nil {
		t.Fatal(err)
	}

	tok, changed, err := keys.RevokeUnitUsers([]string{oldPub}, time.Now())
	if err != nil || !changed {
		t.Fatalf("RevokeUnitUsers: %v %v", changed, err)
	}
	if _, again, _ := keys.RevokeUnitUsers([]string{oldPub}, time.Now().Add(-time.Minute)); again {
		t.Error("revoking a revoked key changed the account")
	}
	if err := e.srv.PushAccount(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, closed, "revoked user")
	if _, _, _, err := dial(t, e.srv.ClientURL(), old, unitA); err == nil {
		t.Fatal("revoked credentials connected")
	}
	if !other.nc.IsConnected() {
		t.Fatal("another unit lost its connection")
	}
	fresh, err := keys.IssueUnitCreds(unitA, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, js, _, err := dial(t, e.srv.ClientURL(), fresh, unitA)
	if err != nil {
		t.Fatalf("new credentials: %v", err)
	}
	if got, err := fetchDelivery(t, js, unitA); err != nil || string(got) != "for A" {
		t.Fatalf("delivery with the new credentials: %q %v", got, err)
	}

	// Restart on the same keys: the revocation is in units.jwt.
	e.hubConn.Close()
	e.srv.Shutdown()
	srv := startServer(t, e.storeDir, e.keysDir)
	t.Cleanup(srv.Shutdown)
	if _, _, _, err := dial(t, srv.ClientURL(), old, unitA); err == nil {
		t.Fatal("revoked credentials connected after a restart")
	}
	if _, _, _, err := dial(t, srv.ClientURL(), fresh, unitA); err != nil {
		t.Fatalf("new credentials after a restart: %v", err)
	}
	reloaded, err := broker.LoadOrCreateKeys(e.keysDir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(reloaded.FullResolverConfig("jwt")), reloaded.UnitsAccountJWT()) || reloaded.UnitsAccountJWT() != tok {
		t.Fatal("the revocation is not in the stored UNITS account")
	}
}

// TestCredsExpire: credentials with a lifetime are refused once it has
// passed, and a connection made with them is closed by the server then.
func TestCredsExpire(t *testing.T) {
	e := newEnv(t)
	creds, err := e.srv.Keys().IssueUnitCreds(unitA, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, exp, err := broker.UserKey(creds)
	if err != nil || exp.IsZero() || time.Until(exp) > 2*time.Second {
		t.Fatalf("expiry %v %v", exp, err)
	}
	_, _, closed, err := dial(t, e.srv.ClientURL(), creds, unitA)
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, closed, "expired credentials")
	time.Sleep(time.Until(exp.Add(time.Second)))
	if _, _, _, err := dial(t, e.srv.ClientURL(), creds, unitA); err == nil {
		t.Fatal("expired credentials connected")
	}
}

// TestExternalServerRevocation: an external nats-server configured with
// FullResolverConfig takes the hub's push of the UNITS account through the
// system account, closes and refuses the revoked user, and still refuses it
// after a restart (the full resolver stored the JWT).
func TestExternalServerRevocation(t *testing.T) {
	keys, err := broker.LoadOrCreateKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	conf := filepath.Join(base, "nats.conf")
	cfg := fmt.Sprintf("listen: 127.0.0.1:-1\nmax_payload: 8MB\njetstream { store_dir: %q, max_file_store: 64GB }\n%s", filepath.Join(base, "js"),
		keys.FullResolverConfig(filepath.Join(base, "jwt")))
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() *server.Server {
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatalf("%v\n%s", err, cfg)
		}
		opts.NoLog, opts.NoSigs = true, true
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("external server not ready")
		}
		return ns
	}
	ns := start()
	hubCreds, _ := keys.IssueHubCreds()
	stageCreds, _ := keys.IssueHubStageCreds()
	h, err := broker.ConnectHub(t.Context(), ns.ClientURL(), hubCreds, stageCreds)
	if err != nil {
		t.Fatal(err)
	}
	if err := broker.EnsureStreams(t.Context(), h.JS, h.StageJS, broker.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := broker.EnsureUnitConsumer(t.Context(), h.JS, unitA, ""); err != nil {
		t.Fatal(err)
	}
	h.Close()
	old, _ := keys.IssueUnitCreds(unitA, time.Hour)
	oldPub, _, _ := broker.UserKey(old)
	_, _, closed, err := dial(t, ns.ClientURL(), old, unitA)
	if err != nil {
		t.Fatal(err)
	}
	sysCreds, err := keys.IssueSystemCreds()
	if err != nil {
		t.Fatal(err)
	}
	sys, err := broker.ConnectSystem(t.Context(), ns.ClientURL(), sysCreds)
	if err != nil {
		t.Fatal(err)
	}
	// A full resolver keeps the stored JWT over the preload only when it
	// was issued in a later second (iat): as it is in use, long after the
	// configuration was written.
	time.Sleep(time.Until(time.Unix(time.Now().Unix()+1, 0)))
	tok, _, err := keys.RevokeUnitUsers([]string{oldPub}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.PushAccount(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	sys.Close()
	waitClosed(t, closed, "revoked user on an external server")
	if _, _, _, err := dial(t, ns.ClientURL(), old, unitA); err == nil {
		t.Fatal("revoked credentials connected to the external server")
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	ns = start()
	if _, _, _, err := dial(t, ns.ClientURL(), old, unitA); err == nil {
		t.Fatal("revoked credentials connected after the external server restarted")
	}
	fresh, _ := keys.IssueUnitCreds(unitA, time.Hour)
	if _, _, _, err := dial(t, ns.ClientURL(), fresh, unitA); err != nil {
		t.Fatalf("new credentials: %v", err)
	}
}

// TestSystemConnShared: the hub's one system-account connection serves the
// connection limiter and the account pushes together, keeps serving them
// after the embedded server restarts (it reconnects on the client URL), and
// may do nothing else in the system account.
func TestSystemConnShared(t *testing.T) {
	e := newEnv(t)
	keys := e.srv.Keys()
	sys, err := e.srv.SystemConn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if again, err := e.srv.SystemConn(t.Context()); err != nil || again != sys {
		t.Fatalf("a second SystemConn: %p %v, want the first %p", again, err, sys)
	}
	l, err := broker.StartConnLimiter(t.Context(), sys, keys, 1, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Stop)

	if err := e.srv.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	// After the restart: a unit's second connection closes its first (the
	// limiter's events), and a revocation pushed closes the second.
	creds, _ := keys.IssueUnitCreds(unitA, time.Hour)
	connect := func() *nats.Conn {
		t.Helper()
		var nc *nats.Conn
		waitFor(t, "a unit connects after the restart", func() bool {
			nc, err = nats.Connect(e.srv.ClientURL(), nats.UserCredentialBytes(creds), nats.NoReconnect())
			return err == nil
		})
		t.Cleanup(nc.Close)
		nc.Flush()
		return nc
	}
	first := connect()
	time.Sleep(10 * time.Millisecond) // distinct start times
	second := connect()
	waitFor(t, "the unit's first connection closed, over its limit of one", first.IsClosed)
	pub, _, _ := broker.UserKey(creds)
	tok, _, err := keys.RevokeUnitUsers([]string{pub}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.PushAccount(t.Context(), tok); err != nil {
		t.Fatalf("push after a restart: %v", err)
	}
	waitFor(t, "the revoked user's connection closed after a restart", second.IsClosed)

	// Nothing else: another system request is a permission violation.
	sysCreds, err := keys.IssueSystemCreds()
	if err != nil {
		t.Fatal(err)
	}
	denied := make(chan error, 1)
	nc, err := nats.Connect(e.srv.ClientURL(), nats.UserCredentialBytes(sysCreds),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Publish("$SYS.REQ.SERVER.PING.JSZ", nil)
	nc.Flush()
	select {
	case err := <-denied:
		if !strings.Contains(err.Error(), "Permissions Violation") {
			t.Fatalf("JSZ request: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the system user published a JSZ request")
	}
}
