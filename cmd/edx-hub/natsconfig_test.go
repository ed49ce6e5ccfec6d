package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
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

// TestNATSConfigCluster: three servers, each configured by edx-hub
// nats-config alone (--name, --listen, --cluster-listen, --routes, its own
// directories), form a JetStream cluster: a meta leader is elected, the
// hub's credentials create a stream with three replicas, and a message
// published on one server is read through another.
func TestNATSConfigCluster(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	var client, route [3]string
	for i := range 3 {
		client[i], route[i] = "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	}
	routes := strings.Join([]string{"nats://" + route[0], "nats://" + route[1], "nats://" + route[2]}, ",")
	var servers []*server.Server
	for i := range 3 {
		n := filepath.Join(dir, "n"+strconv.Itoa(i+1))
		os.MkdirAll(n, 0o700)
		var out, errb bytes.Buffer
		if code := natsConfig([]string{"--keys", keys, "--out", dir, "--name", "n" + strconv.Itoa(i+1), "--listen", client[i],
			"--cluster-listen", route[i], "--routes", routes, "--store-dir", filepath.Join(n, "js"), "--resolver-dir", filepath.Join(n, "jwt"),
			"--max-store", "1GB"}, &out, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		conf := filepath.Join(n, "nats.conf")
		os.WriteFile(conf, out.Bytes(), 0o600)
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		if opts.ServerName != "n"+strconv.Itoa(i+1) || opts.Cluster.Name != "edx" || len(opts.Routes) != 3 || opts.JetStreamMaxStore != 1<<30 {
			t.Fatalf("server %d: name %q, cluster %q, %d routes, max store %d", i+1, opts.ServerName, opts.Cluster.Name, len(opts.Routes), opts.JetStreamMaxStore)
		}
		opts.NoLog, opts.NoSigs = true, true
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		servers = append(servers, ns)
	}
	for _, ns := range servers {
		// Generous: CI runs this beside the e2e clusters on two cores.
		if !ns.ReadyForConnections(45 * time.Second) {
			t.Fatalf("nats-server %s not ready after 45s", ns.ClientURL())
		}
	}
	creds, _ := os.ReadFile(filepath.Join(dir, "hub.creds"))
	connect := func(i int) jetstream.JetStream {
		nc, err := nats.Connect(servers[i].ClientURL(), nats.UserCredentialBytes(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		return js
	}
	js1, js3 := connect(0), connect(2)
	// The servers elect a meta leader once their routes are up.
	var st jetstream.Stream
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		st, err = js1.CreateStream(t.Context(), jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3"}, Replicas: 3, MaxBytes: 1 << 20})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no R3 stream: %v", err)
		}
	}
	leaders := 0
	for _, ns := range servers {
		if ns.JetStreamIsLeader() {
			leaders++
		}
	}
	if leaders != 1 {
		t.Fatalf("%d meta leaders", leaders)
	}
	info, err := st.Info(t.Context())
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream cluster info: %+v %v", info, err)
	}
	if _, err := js1.Publish(t.Context(), "r3", []byte("một")); err != nil {
		t.Fatal(err)
	}
	m, err := js3.Stream(t.Context(), "R3")
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.GetMsg(t.Context(), 1)
	if err != nil || string(got.Data) != "một" {
		t.Fatalf("message read through another server: %v %+v", err, got)
	}
}

func TestNATSConfigRefusesHalfACluster(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--cluster-listen", "127.0.0.1:6222"},
		{"--routes", "nats://127.0.0.1:6222"},
		{"--cluster-listen", "127.0.0.1:6222", "--routes", "nats://127.0.0.1:6222"},
		{"--listen", "4222"},
	} {
		var out, errb bytes.Buffer
		if code := natsConfig(append([]string{"--keys", filepath.Join(dir, "keys"), "--out", dir}, args...), &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", args, code, errb.String())
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// TestConfigsNATSCluster: configs/nats-1.conf ... nats-3.conf, with the
// edx-accounts.conf that edx-hub nats-config --accounts-only writes beside
// them, start three servers (in their own directory, as the README runs
// them; ports moved to free ones) that form a JetStream cluster trusting
// the hub's keys: the hub's credentials create an R3 stream.
func TestConfigsNATSCluster(t *testing.T) {
	files, _ := filepath.Glob("../../configs/nats-*.conf")
	for i := range files {
		files[i], _ = filepath.Abs(files[i])
	}
	if len(files) != 3 {
		t.Fatalf("configs/nats-*.conf: %d files, want 3", len(files))
	}
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := natsConfig([]string{"--accounts-only", "--keys", filepath.Join(dir, "keys"), "--out", dir}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if strings.Contains(out.String(), "resolver:") || strings.Contains(out.String(), "jetstream") {
		t.Fatalf("--accounts-only prints more than the accounts:\n%s", out.String())
	}
	os.WriteFile(filepath.Join(dir, "edx-accounts.conf"), out.Bytes(), 0o600)
	// The files' fixed ports, moved to free ones (other tests may run).
	moved := map[string]string{}
	for _, p := range []string{"4222", "4223", "4224", "6222", "6223", "6224", "8222", "8223", "8224"} {
		moved["127.0.0.1:"+p] = "127.0.0.1:" + freePort(t)
	}
	t.Chdir(dir) // the files' relative directories
	var servers []*server.Server
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for from, to := range moved {
			s = strings.ReplaceAll(s, from, to)
		}
		conf := filepath.Join(dir, filepath.Base(f))
		os.WriteFile(conf, []byte(s), 0o600)
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if _, ok := opts.AccountResolver.(*server.DirAccResolver); !ok || opts.MaxPayload < broker.DefaultMaxPayload || len(opts.TrustedOperators) != 1 {
			t.Fatalf("%s: resolver %T, max_payload %d, %d operators", f, opts.AccountResolver, opts.MaxPayload, len(opts.TrustedOperators))
		}
		opts.NoLog, opts.NoSigs = true, true
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		servers = append(servers, ns)
	}
	for _, ns := range servers {
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server not ready")
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nats-2", "jwt")); err != nil {
		t.Fatalf("the resolver directory is not where the README runs the servers: %v", err)
	}
	creds, _ := os.ReadFile(filepath.Join(dir, "hub.creds"))
	nc, err := nats.Connect(servers[1].ClientURL(), nats.UserCredentialBytes(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		st, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3"}, Replicas: 3, MaxBytes: 1 << 20})
		if err == nil {
			if info, err := st.Info(t.Context()); err != nil || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
				t.Fatalf("R3 stream: %+v %v", info, err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no R3 stream: %v", err)
		}
	}
}
