package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
)

// TestNATSConfig: what edx-hub nats-config prints is a server
// configuration that runs as it is (with a listen address added): a
// message size that fits the units' limit, JetStream in the store directory
// asked for, the operator, the accounts and a full resolver (or a MEMORY
// one); the hub's credentials it writes connect and use JetStream.
func TestNATSConfig(t *testing.T) {
	for _, tc := range []struct {
		name       string
		units      string // nats.units in the hub's configuration, "" for none
		resolver   string // --resolver-dir; "" a directory of the test
		maxPayload int32
		full       bool
	}{
		{name: "defaults, full resolver", maxPayload: broker.DefaultMaxPayload, full: true},
		{name: "units' payload above the default, memory resolver", units: "  units:\n    max_payload: 12582912\n",
			resolver: "memory", maxPayload: 12 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			store, jwtDir := filepath.Join(dir, "js"), filepath.Join(dir, "jwt")
			args := []string{"--keys", filepath.Join(dir, "keys"), "--out", dir, "--store-dir", store, "--resolver-dir", jwtDir}
			if tc.resolver != "" {
				args[len(args)-1] = tc.resolver
			}
			if tc.units != "" {
				cfg := filepath.Join(dir, "hub.yaml")
				os.WriteFile(cfg, []byte("nats:\n"+tc.units), 0o600)
				args = append(args, "--config", cfg)
			}
			var out, errb bytes.Buffer
			if code := natsConfig(args, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			conf := filepath.Join(dir, "nats.conf")
			os.WriteFile(conf, append([]byte("listen: 127.0.0.1:-1\n"), out.Bytes()...), 0o600)
			opts, err := server.ProcessConfigFile(conf)
			if err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			if opts.MaxPayload != tc.maxPayload || !opts.JetStream || opts.StoreDir != store || len(opts.TrustedOperators) != 1 || opts.SystemAccount == "" {
				t.Fatalf("max_payload %d (want %d), jetstream %v, store %q, operators %d, system account %q:\n%s",
					opts.MaxPayload, tc.maxPayload, opts.JetStream, opts.StoreDir, len(opts.TrustedOperators), opts.SystemAccount, out.String())
			}
			switch r := opts.AccountResolver.(type) {
			case *server.DirAccResolver:
				if !tc.full {
					t.Fatal("a full resolver, want MEMORY")
				}
			case *server.MemAccResolver:
				if tc.full {
					t.Fatal("a MEMORY resolver, want a full one")
				}
			default:
				t.Fatalf("resolver %T", r)
			}
			opts.NoLog, opts.NoSigs = true, true
			ns, err := server.NewServer(opts)
			if err != nil {
				t.Fatal(err)
			}
			ns.Start()
			t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
			if !ns.ReadyForConnections(10 * time.Second) {
				t.Fatal("nats-server not ready")
			}
			creds, err := os.ReadFile(filepath.Join(dir, "hub.creds"))
			if err != nil {
				t.Fatal(err)
			}
			nc, err := nats.Connect(ns.ClientURL(), nats.UserCredentialBytes(creds))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if nc.MaxPayload() != int64(tc.maxPayload) {
				t.Errorf("the hub's connection has max payload %d, want %d", nc.MaxPayload(), tc.maxPayload)
			}
			js, _ := jetstream.New(nc)
			if _, err := js.AccountInfo(t.Context()); err != nil {
				t.Fatalf("the hub's JetStream: %v", err)
			}
			if !strings.Contains(errb.String(), "hub-stage.creds") {
				t.Errorf("stderr: %s", errb.String())
			}
		})
	}
}
