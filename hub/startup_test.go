package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/pki"
)

// extNATS is an external nats-server configured as `edx-hub nats-config`
// prints it for keysDir, with the hub's credential files beside it.
type extNATS struct {
	ns                *server.Server
	keysDir           string
	creds, stageCreds string
}

// startExtNATS starts a server trusting the keys in keysDir (created when
// empty); extra is added to its configuration (max_payload, JetStream
// limits).
func startExtNATS(t *testing.T, keysDir, maxPayload, jsExtra string) *extNATS {
	t.Helper()
	keys, err := broker.LoadOrCreateKeys(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	e := &extNATS{keysDir: keysDir, creds: filepath.Join(base, "hub.creds"), stageCreds: filepath.Join(base, "hub-stage.creds")}
	for path, issue := range map[string]func() ([]byte, error){e.creds: keys.IssueHubCreds, e.stageCreds: keys.IssueHubStageCreds} {
		b, err := issue()
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(path, b, 0o600)
	}
	conf := filepath.Join(base, "nats.conf")
	os.WriteFile(conf, fmt.Appendf(nil, "listen: 127.0.0.1:-1\n%sjetstream { store_dir: %q\n%s }\n%s", maxPayload,
		filepath.Join(base, "js"), jsExtra, keys.FullResolverConfig(filepath.Join(base, "jwt"))), 0o600)
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoLog, opts.NoSigs = true, true
	if e.ns, err = server.NewServer(opts); err != nil {
		t.Fatal(err)
	}
	e.ns.Start()
	t.Cleanup(func() { e.ns.Shutdown(); e.ns.WaitForShutdown() })
	if !e.ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return e
}

// use points cfg at the server.
func (e *extNATS) use(cfg *Config) {
	cfg.NATS.URL, cfg.NATS.KeysDir = e.ns.ClientURL(), e.keysDir
	cfg.NATS.CredsFile, cfg.NATS.StageCredsFile = e.creds, e.stageCreds
}

// copyDir copies the files of a directory (the keys directory).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	os.MkdirAll(to, 0o700)
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(to, e.Name()), b, 0o600)
	}
}

// TestNewStartupErrors: every way a hub's start can fail comes back from
// New as an error (never a panic, never a hub) whose message says what is
// wrong and what to do about it.
func TestNewStartupErrors(t *testing.T) {
	const maxPayload8M = "max_payload: 8MB\n"
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, cfg *Config)
		want  []string // each must appear in the error
	}{
		{
			name: "NATS unreachable",
			setup: func(t *testing.T, cfg *Config) {
				e := startExtNATS(t, t.TempDir(), maxPayload8M, "")
				e.use(cfg)
				cfg.NATS.URL = "nats://127.0.0.1:" + freePort(t)
			},
			want: []string{"nats: cannot reach", "nats.url", "running"},
		},
		{
			name: "credentials file missing",
			setup: func(t *testing.T, cfg *Config) {
				e := startExtNATS(t, t.TempDir(), maxPayload8M, "")
				e.use(cfg)
				cfg.NATS.CredsFile = filepath.Join(t.TempDir(), "none.creds")
			},
			want: []string{"nats: creds_file", "none.creds", "edx-hub nats-config"},
		},
		{
			name: "credentials of an operator the servers do not trust",
			setup: func(t *testing.T, cfg *Config) {
				e := startExtNATS(t, t.TempDir(), maxPayload8M, "")
				other := startExtNATS(t, t.TempDir(), maxPayload8M, "") // another operator's keys and creds
				e.use(cfg)
				cfg.NATS.KeysDir, cfg.NATS.CredsFile, cfg.NATS.StageCredsFile = other.keysDir, other.creds, other.stageCreds
			},
			want: []string{"refuse", "operator", "keys_dir", "edx-hub nats-config"},
		},
		{
			name: "keys directory not the cluster's",
			setup: func(t *testing.T, cfg *Config) {
				e := startExtNATS(t, t.TempDir(), maxPayload8M, "")
				e.use(cfg)
				cfg.NATS.KeysDir = t.TempDir() // a hub that made keys of its own
			},
			want: []string{"keys_dir", "creds_file", "account", "copy"},
		},
		{
			name: "keys directory with a units signing key the cluster does not have",
			setup: func(t *testing.T, cfg *Config) {
				e := startExtNATS(t, t.TempDir(), maxPayload8M, "")
				e.use(cfg)
				// A copy of the keys missing one seed: the hub would make a
				// new one and push a UNITS account that no longer trusts the
				// credentials the other hubs issued.
				keys := t.TempDir()
				copyDir(t, e.keysDir, keys)
				os.Remove(filepath.Join(keys, "units-signing.nk"))
				cfg.NATS.KeysDir = keys
			},
			want: []string{"keys_dir", "UNITS", "signing key", "copy"},
		},
		{
			name: "server max_payload below the streams' messages",
			setup: func(t *testing.T, cfg *Config) {
				e := startExtNATS(t, t.TempDir(), "", "") // nats-server's default, 1 MB
				e.use(cfg)
			},
			want: []string{"max_payload", "1048576", "edx-hub nats-config"},
		},
		{
			name: "streams that do not fit in the cluster's JetStream",
			setup: func(t *testing.T, cfg *Config) {
				e := startExtNATS(t, t.TempDir(), maxPayload8M, "max_file_store: 64MB\n")
				e.use(cfg)
			},
			want: []string{"max_bytes", "nats.streams"},
		},
		{
			name: "S3 unreachable",
			setup: func(t *testing.T, cfg *Config) {
				cfg.S3.Archive.Endpoint = "127.0.0.1:" + freePort(t)
			},
			want: []string{"s3", "cannot reach", "s3.endpoint"},
		},
		{
			name: "S3 credentials refused",
			setup: func(t *testing.T, cfg *Config) {
				cfg.S3.Archive.SecretKey = "not-the-secret"
			},
			want: []string{"s3", "credentials", "access_key"},
		},
		{
			name: "trust roots missing",
			setup: func(t *testing.T, cfg *Config) {
				cfg.PKI.Trust = filepath.Join(t.TempDir(), "roots.pem")
				cfg.PKI.HubKey, cfg.PKI.HubCert = "hub.key.pem", "hub.cert.pem"
			},
			want: []string{"pki.trust", "roots.pem"},
		},
		{
			name: "issuing CA that the trust roots do not cover",
			setup: func(t *testing.T, cfg *Config) {
				city, other := newCityCA(t), newCityCA(t)
				*cfg = city.config(t)
				cfg.PKI.IssuingCA = IssuingCAConfig{Cert: filepath.Join(other.Dir, "ca", "issuing.cert.pem"), Key: filepath.Join(other.Dir, "ca", "issuing.key.pem")}
			},
			want: []string{"pki.issuing_ca", "trust"},
		},
		{
			name: "index path not writable",
			setup: func(t *testing.T, cfg *Config) {
				f := filepath.Join(t.TempDir(), "file")
				os.WriteFile(f, nil, 0o600)
				cfg.Index.Path = filepath.Join(f, "edx.db") // under a file
			},
			want: []string{"index", "index.path"},
		},
		{
			name: "HTTP address taken",
			setup: func(t *testing.T, cfg *Config) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
				cfg.HTTP.Listen = ln.Addr().String()
			},
			want: []string{"http", "http.listen", "in use"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.setup(t, &cfg)
			h, err := New(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				h.Close()
				t.Fatal("the hub started")
			}
			if h != nil {
				t.Errorf("New returned a hub with its error")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

// freePort is a TCP port nothing listens on.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// TestUnitCertificateIssuer: a hub with the city's issuing CA
// (pki.issuing_ca) issues a key and certificate to a unit registered
// without one, chained to the city's roots; a hub with neither an issuing
// CA nor a development CA says what to give instead.
func TestUnitCertificateIssuer(t *testing.T) {
	city := newCityCA(t)
	cfg := city.config(t)
	cfg.PKI.IssuingCA = IssuingCAConfig{Cert: filepath.Join(city.Dir, "ca", "issuing.cert.pem"), Key: filepath.Join(city.Dir, "ca", "issuing.key.pem")}
	h := startHub(t, cfg)
	var b api.UnitBundle
	if code := h.api("POST", "/api/v1/units", api.UnitRequest{ID: uA, Name: "Sở Nội vụ"}, &b); code != http.StatusCreated {
		t.Fatalf("register without a certificate: %d", code)
	}
	certs, err := pki.ParseCertificates([]byte(b.CertPEM))
	if err != nil || b.KeyPEM == "" {
		t.Fatalf("bundle: %v, key %d bytes", err, len(b.KeyPEM))
	}
	trust, _ := pki.LoadTrust(city.RootsPath())
	if _, rs := trust.Check(certs[0], certs[1:], time.Now()); len(rs) > 0 {
		t.Fatalf("the issued certificate: %v", rs)
	}
	if u, _ := pki.UnitOf(certs[0]); u != uA {
		t.Fatalf("the certificate names %q", u)
	}
	h.stop()

	cfg = city.config(t)
	h = startHub(t, cfg)
	var e struct {
		Error string `json:"error"`
	}
	code := h.apiRaw("POST", "/api/v1/units", api.UnitRequest{ID: uB, Name: "Sở Tài chính"}, &e)
	if code != http.StatusBadRequest || !strings.Contains(e.Error, "edx unit add --cert") || !strings.Contains(e.Error, "pki.issuing_ca") {
		t.Fatalf("register without a certificate nor an issuer: %d %q", code, e.Error)
	}
}

// apiRaw is api that decodes the answer whatever its status.
func (r *running) apiRaw(method, path string, body, out any) int {
	r.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(r.t.Context(), method, r.Info().HTTP+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+r.AdminToken())
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(out)
	return resp.StatusCode
}

// TestNewWaitsForJetStreamCluster: a hub started while its 3-server
// cluster cannot take R3 streams yet (one server up, the others starting
// later, as when servers and hubs start together) waits for it rather than
// give up at the first JetStream timeout.
func TestNewWaitsForJetStreamCluster(t *testing.T) {
	keysDir := t.TempDir()
	keys, err := broker.LoadOrCreateKeys(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	var client, route [3]string
	for i := range 3 {
		client[i], route[i] = "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	}
	start := func(i int) {
		conf := filepath.Join(base, fmt.Sprintf("n%d.conf", i))
		os.WriteFile(conf, fmt.Appendf(nil, "server_name: n%d\nlisten: %q\nmax_payload: 8MB\njetstream { store_dir: %q, max_file_store: 64GB }\n"+
			"cluster { name: edx, listen: %q, routes: [\"nats://%s\", \"nats://%s\", \"nats://%s\"] }\n%s",
			i, client[i], filepath.Join(base, fmt.Sprint("js", i)), route[i], route[0], route[1], route[2],
			keys.FullResolverConfig(filepath.Join(base, fmt.Sprint("jwt", i)))), 0o600)
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Error(err)
			return
		}
		opts.NoLog, opts.NoSigs = true, true
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Error(err)
			return
		}
		ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	}
	start(0)
	base2 := t.TempDir()
	for name, issue := range map[string]func() ([]byte, error){"hub.creds": keys.IssueHubCreds, "hub-stage.creds": keys.IssueHubStageCreds} {
		b, _ := issue()
		os.WriteFile(filepath.Join(base2, name), b, 0o600)
	}
	cfg := testConfig(t)
	cfg.NATS.URL = "nats://" + client[0] + ",nats://" + client[1] + ",nats://" + client[2]
	cfg.NATS.KeysDir = keysDir
	cfg.NATS.CredsFile, cfg.NATS.StageCredsFile = filepath.Join(base2, "hub.creds"), filepath.Join(base2, "hub-stage.creds")
	cfg.NATS.Streams.Replicas = 3
	cfg.NATS.Streams.DeliverMaxBytes, cfg.NATS.Streams.StageMaxBytes, cfg.NATS.Streams.UploadMaxBytes = 256<<20, 256<<20, 512<<20
	cfg.NATS.Streams.UploadUnitQuota = 64 << 20
	go func() {
		time.Sleep(6 * time.Second) // past the JetStream API's timeout of the hub's first attempt
		start(1)
		start(2)
	}()
	h, err := New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("the hub gave up on a cluster that was starting: %v", err)
	}
	h.Close()
}
