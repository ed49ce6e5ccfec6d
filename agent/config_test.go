package agent

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"golang.org/x/mod/sumdb/note"
	gopkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/edxhub/edx/agent/axis"
	"github.com/edxhub/edx/agent/internal/agenttest"
	"github.com/edxhub/edx/pkg/pki"
)

func TestExampleConfigLoads(t *testing.T) {
	c, err := LoadConfig("../configs/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetDefaults(); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Unit != "000.00.00.H29" || c.API.Listen != DefaultListen || !c.Folders.Enabled || c.Folders.Inbox != filepath.Join(c.Data, "inbox") {
		t.Fatalf("%+v", c)
	}
	if c.DMS.Format != FormatJSON || c.Axis.Enabled || c.Axis.Path != "/axis" || len(c.Axis.Systems) != 1 ||
		c.Axis.Systems[0].SecretFile != filepath.Join(filepath.Dir(c.Data), "axis.secret") || c.Axis.MaxRequestBytes <= c.Send.MaxDocumentBytes {
		t.Fatalf("dms %+v, axis %+v", c.DMS, c.Axis)
	}
	// The same file with the axis on validates too.
	c.Axis.Enabled = true
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// nats.keepalive: the example's is the default, and the pull's
	// heartbeat must stay under half a request's life.
	if c.NATS.Keepalive != 2*time.Minute {
		t.Fatalf("keepalive %s, want 2m", c.NATS.Keepalive)
	}
	for _, k := range []time.Duration{9 * time.Second, 4*time.Minute + time.Second, -time.Minute} {
		c.NATS.Keepalive = k
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "nats.keepalive") {
			t.Fatalf("keepalive %s: %v", k, err)
		}
	}
	for _, k := range []time.Duration{10 * time.Second, 4 * time.Minute} {
		c.NATS.Keepalive = k
		if err := c.Validate(); err != nil {
			t.Fatalf("keepalive %s: %v", k, err)
		}
	}
}

// TestGatewayConfigLoads: configs/agent-gateway.yaml, the gateway unit's
// agent with its bridge to the upstream axis.
func TestGatewayConfigLoads(t *testing.T) {
	c, err := LoadConfig("../configs/agent-gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetDefaults(); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	b := c.Bridge
	if c.Unit != "000.99.00.H29" || !b.Enabled || b.URL != "https://vdxp.example.gov.vn/api" || b.SystemID != "vxp.hcm.edx" || b.Name != "vdxp" ||
		b.SecretFile != filepath.Join(filepath.Dir(c.Data), "vdxp.secret") || b.Poll != 30*time.Second || b.ListLimit != 500 {
		t.Fatalf("bridge %+v", b)
	}
	b.URL = "ftp://vdxp"
	c.Bridge = b
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "bridge.url") {
		t.Fatalf("a bad url: %v", err)
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.yaml")
	os.WriteFile(p, []byte("unit: 000.00.00.H29\napi:\n  tokn_file: x\n"), 0o600)
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), "tokn_file") {
		t.Fatalf("err %v", err)
	}
}

func valid() Config {
	return Config{
		Unit:    "000.00.00.H29",
		API:     APIConfig{TokenEnv: "T"},
		Signing: SigningConfig{KeyFile: "k", CertFile: "c"},
		Trust:   TrustConfig{Roots: "r"},
		NATS:    NATSConfig{URL: "nats://127.0.0.1:4222", CredsFile: "u.creds"},
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"valid", func(*Config) {}, ""},
		{"no unit", func(c *Config) { c.Unit = "" }, "unit: required"},
		{"bad unit", func(c *Config) { c.Unit = "H29" }, "unit"},
		{"two tokens", func(c *Config) { c.API.TokenFile = "f" }, "exactly one of token_file"},
		{"no token", func(c *Config) { c.API.TokenEnv = "" }, "exactly one of token_file"},
		{"pem and p12", func(c *Config) { c.Signing.PKCS12File = "p" }, "not both"},
		{"key without cert", func(c *Config) { c.Signing.CertFile = "" }, "go together"},
		{"no signing", func(c *Config) { c.Signing = SigningConfig{} }, "signing"},
		{"p12", func(c *Config) { c.Signing = SigningConfig{PKCS12File: "p", PKCS12PasswordEnv: "P"} }, ""},
		{"no roots", func(c *Config) { c.Trust.Roots = "" }, "trust.roots"},
		{"bad url", func(c *Config) { c.NATS.URL = "http://x" }, "nats.url"},
		{"cluster urls", func(c *Config) { c.NATS.URL = "nats://a:4222, nats://b:4222,tls://c:4222" }, ""},
		{"one bad of several", func(c *Config) { c.NATS.URL = "nats://a:4222,b:4222" }, "nats.url"},
		{"no creds", func(c *Config) { c.NATS.CredsFile = "" }, "creds_file"},
		{"bad listen", func(c *Config) { c.API.Listen = "8090" }, "api.listen"},
		{"bad webhook", func(c *Config) { c.Webhook.URL = "ftp://x" }, "webhook"},
		{"bad level", func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{"tiny limit", func(c *Config) { c.Send.MaxDocumentBytes = 10 }, "max_document_bytes"},
		{"edxml format", func(c *Config) { c.DMS.Format = "edxml" }, ""},
		{"bad format", func(c *Config) { c.DMS.Format = "pdf" }, "dms.format"},
		{"axis without systems", func(c *Config) { c.Axis.Enabled = true }, "axis.systems"},
		{"axis", func(c *Config) {
			c.Axis = axis.Config{Enabled: true, Systems: []axis.System{{ID: "vxp.saas.03", SecretEnv: "S"}}}
		}, ""},
		{"axis path", func(c *Config) {
			c.Axis = axis.Config{Enabled: true, Path: "/v1", Systems: []axis.System{{ID: "vxp.saas.03", SecretEnv: "S"}}}
		}, "axis.path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			c.Data = t.TempDir()
			tt.change(&c)
			if err := c.SetDefaults(); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}

// userCreds makes a NATS credentials file (a user of a throw-away account)
// that expires at exp.
func userCreds(t *testing.T, exp time.Time) []byte {
	t.Helper()
	akp, _ := nkeys.CreateAccount()
	ukp, _ := nkeys.CreateUser()
	pub, _ := ukp.PublicKey()
	seed, _ := ukp.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Expires = exp.Unix()
	tok, err := uc.Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	b, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeUnitFiles writes what `edx unit add` gives an agent.
func writeUnitFiles(t *testing.T, p *agenttest.PKI) (dir string) {
	t.Helper()
	dir = t.TempDir()
	s := p.Unit(t, "000.00.00.H29")
	kp, _ := pki.EncodePrivateKey(s.Key)
	os.WriteFile(filepath.Join(dir, "unit.key.pem"), kp, 0o600)
	os.WriteFile(filepath.Join(dir, "unit.cert.pem"), pki.EncodeCertificates(s.Chain...), 0o644)
	roots, _ := os.ReadFile(p.CA.RootsPath())
	os.WriteFile(filepath.Join(dir, "roots.pem"), roots, 0o644)
	os.WriteFile(filepath.Join(dir, "unit.creds"), userCreds(t, time.Now().Add(90*24*time.Hour)), 0o600)
	os.WriteFile(filepath.Join(dir, "api.token"), []byte("0123456789abcdef0123\n"), 0o600)
	return dir
}

func TestCheckPEMAndPKCS12(t *testing.T) {
	p := agenttest.NewPKI(t)
	dir := writeUnitFiles(t, p)
	c := Config{
		Unit:    "000.00.00.H29",
		Data:    t.TempDir(),
		API:     APIConfig{TokenFile: filepath.Join(dir, "api.token")},
		Signing: SigningConfig{KeyFile: filepath.Join(dir, "unit.key.pem"), CertFile: filepath.Join(dir, "unit.cert.pem")},
		Trust:   TrustConfig{Roots: filepath.Join(dir, "roots.pem")},
		NATS:    NATSConfig{URL: "nats://127.0.0.1:4222", CredsFile: filepath.Join(dir, "unit.creds")},
	}
	c.SetDefaults()
	sec, err := c.Check()
	if err != nil {
		t.Fatal(err)
	}
	if sec.Token != "0123456789abcdef0123" {
		t.Fatalf("token %q", sec.Token)
	}
	if d := time.Until(sec.CredsExpire); d < 89*24*time.Hour || d > 90*24*time.Hour {
		t.Fatalf("credentials expire in %s, want 90 days", d)
	}

	// The same key and chain as PKCS#12, modern (AES, PBKDF2) and legacy
	// (3DES) encryption, the password from the environment.
	s := p.Unit(t, "000.00.00.H29")
	for name, enc := range map[string]*gopkcs12.Encoder{"modern": gopkcs12.Modern, "legacy": gopkcs12.LegacyDES} {
		t.Run(name, func(t *testing.T) {
			der, err := enc.Encode(s.Key, s.Chain[0], s.Chain[1:], "mật khẩu")
			if err != nil {
				t.Fatal(err)
			}
			p12 := filepath.Join(dir, name+".p12")
			os.WriteFile(p12, der, 0o600)
			t.Setenv("EDX_P12_PASSWORD", "mật khẩu")
			c2 := c
			c2.Signing = SigningConfig{PKCS12File: p12, PKCS12PasswordEnv: "EDX_P12_PASSWORD"}
			sec, err := c2.Check()
			if err != nil {
				t.Fatal(err)
			}
			if !sec.Signer.Cert().Equal(s.Cert()) || len(sec.Signer.Chain) != 2 {
				t.Fatal("wrong chain from PKCS#12")
			}
			t.Setenv("EDX_P12_PASSWORD", "sai")
			if _, err := c2.Check(); err == nil {
				t.Fatal("a wrong password was accepted")
			}
		})
	}

	// The axis protocol's secrets, from a file or the environment.
	os.WriteFile(filepath.Join(dir, "axis.secret"), []byte("A7TKG/r2gOKTEpe1MhWx6zw8O4JfzN0KkCRS6HZY81Ve\n"), 0o600)
	t.Setenv("EDX_AXIS_SECRET", "another secret of 24 bytes")
	c3 := c
	c3.Axis = axis.Config{Enabled: true, Systems: []axis.System{{ID: "vxp.saas.03", SecretFile: filepath.Join(dir, "axis.secret")}, {ID: "lgsp", SecretEnv: "EDX_AXIS_SECRET"}}}
	if sec, err := c3.Check(); err != nil || string(sec.AxisSecrets["vxp.saas.03"]) != "A7TKG/r2gOKTEpe1MhWx6zw8O4JfzN0KkCRS6HZY81Ve" || len(sec.AxisSecrets["lgsp"]) != 26 {
		t.Fatalf("axis secrets: %v", err)
	}
	t.Setenv("EDX_AXIS_SECRET", "short")
	if _, err := c3.Check(); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Fatalf("a short axis secret: %v", err)
	}

	// Another unit's certificate, a short token, a missing credentials file.
	bad := []func(*Config){
		func(c *Config) { c.Unit = "000.01.00.H29" },
		func(c *Config) {
			os.WriteFile(filepath.Join(dir, "short"), []byte("abc"), 0o600)
			c.API.TokenFile = filepath.Join(dir, "short")
		},
		func(c *Config) { c.NATS.CredsFile = filepath.Join(dir, "missing") },
		func(c *Config) { c.Trust.Roots = filepath.Join(dir, "unit.cert.pem") },
	}
	for i, change := range bad {
		c2 := c
		change(&c2)
		if _, err := c2.Check(); err == nil {
			t.Errorf("bad config %d passed Check", i)
		}
	}
}

// TestRelativePathsFromTheFile: relative paths in a configuration file are
// relative to its directory, wherever the agent starts.
func TestRelativePathsFromTheFile(t *testing.T) {
	p := agenttest.NewPKI(t)
	dir := writeUnitFiles(t, p)
	cfg := `unit: 000.00.00.H29
data: ./data
api:
  token_file: api.token
signing:
  key_file: ./unit.key.pem
  cert_file: unit.cert.pem
trust:
  roots: ./roots.pem
nats:
  url: nats://127.0.0.1:4222
  creds_file: ./unit.creds
folders:
  inbox: ./received
`
	os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(cfg), 0o644)
	t.Chdir(t.TempDir())
	c, err := LoadConfig(filepath.Join(dir, "agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetDefaults(); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check(); err != nil {
		t.Fatal(err)
	}
	if c.Data != filepath.Join(dir, "data") || c.Folders.Inbox != filepath.Join(dir, "received") || c.Folders.Outbox != filepath.Join(dir, "data", "outbox") {
		t.Fatalf("data %s, inbox %s, outbox %s", c.Data, c.Folders.Inbox, c.Folders.Outbox)
	}
	// Defaults twice (edx-agent, then agent.New) change nothing.
	before := *c
	c.SetDefaults()
	if c.Data != before.Data || c.Signing != before.Signing {
		t.Fatal("SetDefaults is not idempotent")
	}
}

// TestParseLogKeys: witness.log_key_file holds every hub's log key, one a
// line; blank and comment lines are skipped, a bad key or a second key of
// one log refused.
func TestParseLogKeys(t *testing.T) {
	_, k1, _ := note.GenerateKey(rand.Reader, "edx.local/hub/one")
	_, k2, _ := note.GenerateKey(rand.Reader, "edx.local/hub/two")
	_, k1b, _ := note.GenerateKey(rand.Reader, "edx.local/hub/one")
	keys, err := parseLogKeys([]byte("# the hubs' logs\n" + k1 + "\n\n  " + k2 + "  \n"))
	if err != nil || len(keys) != 2 || keys[0] != k1 || keys[1] != k2 {
		t.Fatalf("%q %v", keys, err)
	}
	for _, bad := range []string{"", "# none\n", k1 + "\nnot a key\n", k1 + "\n" + k1b + "\n"} {
		if _, err := parseLogKeys([]byte(bad)); err == nil {
			t.Errorf("%q taken", bad)
		}
	}
}
