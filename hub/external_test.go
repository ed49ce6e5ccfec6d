package hub

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/broker"
)

// TestExternalClusterRevocation: a hub on an external nats-server configured
// as `edx-hub nats-config` prints (full resolver) revokes a rotated unit's
// credentials there through the system account: the old connection is
// closed, the old credentials refused, also after the server restarts.
func TestExternalClusterRevocation(t *testing.T) {
	keysDir := t.TempDir()
	keys, err := broker.LoadOrCreateKeys(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	conf := filepath.Join(base, "nats.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listen: 127.0.0.1:-1\nmax_payload: 8MB\njetstream { store_dir: %q, max_file_store: 64GB }\n%s",
		filepath.Join(base, "js"), keys.FullResolverConfig(filepath.Join(base, "jwt")))), 0o600)
	start := func(port int) *server.Server {
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		opts.NoLog, opts.NoSigs = true, true
		if port > 0 {
			opts.Port = port
		}
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server not ready")
		}
		return ns
	}
	ns := start(0)
	for name, issue := range map[string]func() ([]byte, error){"hub.creds": keys.IssueHubCreds, "hub-stage.creds": keys.IssueHubStageCreds} {
		b, err := issue()
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(base, name), b, 0o600)
	}
	cfg := testConfig(t)
	cfg.NATS.URL, cfg.NATS.KeysDir = ns.ClientURL(), keysDir
	cfg.NATS.CredsFile, cfg.NATS.StageCredsFile = filepath.Join(base, "hub.creds"), filepath.Join(base, "hub-stage.creds")
	h := startHub(t, cfg)
	a := h.register(uA)
	// The full resolver keeps the pushed JWT over the preload of the
	// configuration only when it was issued in a later second.
	time.Sleep(time.Until(time.Unix(time.Now().Unix()+1, 0)))
	var rb api.UnitBundle
	if code := h.api("POST", "/api/v1/units/"+string(uA)+"/rotate", nil, &rb); code != http.StatusOK {
		t.Fatalf("rotate: %d", code)
	}
	a.waitClosed("rotated on an external server")
	h.refused(a.creds, uA, "rotated on an external server")
	a2 := h.agentFrom(uA, &rb)
	a2.nc.Close()
	h.stop()

	// The server restarts from its configuration (whose preload has the
	// UNITS account without the revocation) and its resolver directory.
	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	start(port)
	h.refused(a.creds, uA, "after the external server restarted")
	if nc, _, _, err := h.dial([]byte(rb.Creds), uA); err != nil {
		t.Fatalf("the new credentials after the restart: %v", err)
	} else {
		nc.Close()
	}
}
