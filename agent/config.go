package agent

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"golang.org/x/mod/sumdb/note"
	"gopkg.in/yaml.v3"
	gopkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/edxhub/edx/agent/axis"
	"github.com/edxhub/edx/agent/bridge"
	"github.com/edxhub/edx/agent/webhook"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// DefaultListen is the API's default address: the loopback interface only.
const DefaultListen = "127.0.0.1:8090"

// Config is the agent's configuration file (configs/agent.yaml). Secrets
// (the API token, the PKCS#12 password, the webhook secret) come from files
// or environment variables, never from the file itself or a flag.
//
// Relative paths in a file are relative to the file's directory (as
// `edx unit add` writes units/<ID>/agent.yaml beside the unit's key,
// certificate and credentials), so the agent finds them wherever it is
// started from; in a Config built in code, to the working directory.
type Config struct {
	// Unit is this agency's identifier, e.g. 000.00.00.H29. Required.
	Unit document.UnitID `yaml:"unit"`
	// Data is the data directory: spool, inbox database, quarantine, and
	// the default folders. Default ./edx-agent-data.
	Data    string        `yaml:"data"`
	API     APIConfig     `yaml:"api"`
	Signing SigningConfig `yaml:"signing"`
	Trust   TrustConfig   `yaml:"trust"`
	NATS    NATSConfig    `yaml:"nats"`
	Send    SendConfig    `yaml:"send"`
	Folders FoldersConfig `yaml:"folders"`
	DMS     DMSConfig     `yaml:"dms"`
	Axis    axis.Config   `yaml:"axis"`
	// Bridge makes this unit the city's gateway to an upstream axis (the
	// national axis): see agent/bridge. The hub names the same unit in its
	// pipeline.gateway.
	Bridge  bridge.Config  `yaml:"bridge"`
	Webhook webhook.Config `yaml:"webhook"`
	Log     LogConfig      `yaml:"log"`
	Witness WitnessConfig  `yaml:"witness"`

	dir string // the directory of the file loaded (LoadConfig), for relative paths
}

// APIConfig is the local HTTP API.
type APIConfig struct {
	Listen string `yaml:"listen"` // default 127.0.0.1:8090
	// TokenFile holds the bearer token; TokenEnv names an environment
	// variable holding it. One is required.
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
}

// SigningConfig is the unit's signing key and certificate chain: PEM files,
// or a PKCS#12 file with its password in a file or an environment variable.
type SigningConfig struct {
	KeyFile            string `yaml:"key_file"`
	CertFile           string `yaml:"cert_file"` // leaf first, then its chain
	PKCS12File         string `yaml:"pkcs12_file"`
	PKCS12PasswordFile string `yaml:"pkcs12_password_file"`
	PKCS12PasswordEnv  string `yaml:"pkcs12_password_env"`
}

// TrustConfig is what the agent trusts when it verifies deliveries and
// receipts.
type TrustConfig struct {
	Roots string   `yaml:"roots"` // PEM bundle of trust roots. Required.
	CRLs  []string `yaml:"crls"`  // optional CRL files (PEM or DER)
	// CRLPoll is how often the CRL files are checked for a change and read
	// again (default 5s).
	CRLPoll time.Duration `yaml:"crl_poll"`
	// CRLGrace is how long past its nextUpdate a CRL still counts (default
	// 1h). Past it, deliveries signed under its issuer wait (they are
	// retried, not quarantined) until a current CRL is in place.
	CRLGrace time.Duration `yaml:"crl_grace"`
}

// NATSConfig is the connection to the hub.
type NATSConfig struct {
	// URL of the hub's NATS server, e.g. nats://hub.example:4222, or of
	// several servers of a cluster, comma-separated (the agent connects to
	// one of them and fails over to the others). Required.
	URL       string `yaml:"url"`
	CredsFile string `yaml:"creds_file"` // the unit's credentials from `edx unit add`. Required.
	// CredsWarn: the agent warns (log, /readyz detail) this long before its
	// credentials expire (default 336h, 14 days); `edx unit rotate` on the
	// hub issues new ones.
	CredsWarn time.Duration `yaml:"creds_warn"`
	// Keepalive is how often the quiet connection proves it is alive: the
	// agent pings the server, and its pull of deliveries asks the server
	// for a heartbeat, at this interval (default 2m, the NATS client's;
	// 10s to 4m). Longer costs the hub less at rest (with 10,000 units,
	// 4m took over a quarter off an embedded hub's idle CPU) and notices a hung
	// server or a pull the server lost later (two intervals). A broken
	// connection is noticed sooner, by TCP's own keepalive. The hub's
	// nats.embedded.ping_interval is the other way's. Reading by cursor (a
	// hub with no consumer per unit), it is also how long a request waits
	// at the hub with nothing to send: a hub that died with it waiting is
	// noticed after it and 15 s more.
	Keepalive time.Duration `yaml:"keepalive"`
}

// SendConfig tunes the sender.
type SendConfig struct {
	// MaxDocumentBytes bounds a container (default 256 MiB, the hub's limit).
	MaxDocumentBytes int64 `yaml:"max_document_bytes"`
	// MaxBackoff caps the wait between attempts while NATS is unreachable
	// (default 1m).
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// ResubmitAfter publishes again a document the stream took but the hub
	// never answered (default 1h; the hub de-duplicates).
	ResubmitAfter time.Duration `yaml:"resubmit_after"`
}

// FoldersConfig is the folder interface; paths default under Data.
type FoldersConfig struct {
	Enabled  bool          `yaml:"enabled"`
	Outbox   string        `yaml:"outbox"`
	Sent     string        `yaml:"sent"`
	Failed   string        `yaml:"failed"`
	Inbox    string        `yaml:"inbox"`    // where received documents are written (always, folders enabled or not)
	Interval time.Duration `yaml:"interval"` // outbox scan interval, default 2s
}

// DMSConfig says what the document system reads.
type DMSConfig struct {
	// Format is json (the default: document.json and files) or edxml: the
	// inbox folder also holds each document as an edXML packet,
	// inbox/<id>/document.edxml. Packets are taken, and given on the API,
	// whatever the format.
	Format string `yaml:"format"`
}

// DMS formats.
const (
	FormatJSON  = "json"
	FormatEdXML = "edxml"
)

// WitnessConfig is how the agent witnesses the hub's transparency log: it
// checks every checkpoint the hub offers against the last one it verified
// and cosigns it with the unit's witness key (agent/logwatch).
type WitnessConfig struct {
	// Disabled: the agent does not witness the log.
	Disabled bool `yaml:"disabled"`
	// KeyFile is the unit's witness key (default DATA/witness.key, made at
	// first start and registered with the hub by the unit's signed
	// statement; edx unit add writes witness.key beside the agent's files
	// and registers it).
	KeyFile string `yaml:"key_file"`
	// LogKeyFile holds the verifier keys of the hubs' logs, one a line
	// (edx unit add writes log.vkey: every hub's log the registry
	// records). The agent witnesses each of them, and also the log of a
	// hub that joins later, whose key it learns from the hub's statement
	// of it, signed by a hub certificate that chains to trust.roots.
	// Without the file, every log is learned that way.
	LogKeyFile string `yaml:"log_key_file"`
	// Poll is how often the agent asks for the newest checkpoint besides
	// those the hub offers as they come (default 5m).
	Poll time.Duration `yaml:"poll"`
}

// LogConfig sets up logging.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// LoadConfig reads a YAML configuration; unknown keys are an error. It does
// not apply defaults nor validate.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.dir = filepath.Dir(abs)
	return &c, nil
}

// resolvePaths makes the relative paths of a loaded file relative to its
// directory.
func (c *Config) resolvePaths() {
	if c.dir == "" {
		return
	}
	ps := []*string{&c.Data, &c.API.TokenFile, &c.Signing.KeyFile, &c.Signing.CertFile, &c.Signing.PKCS12File,
		&c.Signing.PKCS12PasswordFile, &c.Trust.Roots, &c.NATS.CredsFile, &c.Webhook.SecretFile,
		&c.Folders.Outbox, &c.Folders.Sent, &c.Folders.Failed, &c.Folders.Inbox, &c.Witness.KeyFile, &c.Witness.LogKeyFile}
	for i := range c.Trust.CRLs {
		ps = append(ps, &c.Trust.CRLs[i])
	}
	for i := range c.Axis.Systems {
		ps = append(ps, &c.Axis.Systems[i].SecretFile)
	}
	ps = append(ps, &c.Bridge.SecretFile)
	for _, p := range ps {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(c.dir, *p)
		}
	}
}

// SetDefaults fills in what was left out; relative paths are resolved
// (against the file's directory for a loaded file).
func (c *Config) SetDefaults() error {
	if c.Data == "" {
		c.Data = "./edx-agent-data"
	}
	c.resolvePaths()
	d, err := filepath.Abs(c.Data)
	if err != nil {
		return fmt.Errorf("config: data: %w", err)
	}
	c.Data = d
	if c.API.Listen == "" {
		c.API.Listen = DefaultListen
	}
	if c.Send.MaxDocumentBytes == 0 {
		c.Send.MaxDocumentBytes = container.DefaultLimits.MaxSize
	}
	if c.Send.MaxBackoff == 0 {
		c.Send.MaxBackoff = time.Minute
	}
	if c.Send.ResubmitAfter == 0 {
		c.Send.ResubmitAfter = time.Hour
	}
	for _, p := range []struct {
		v   *string
		def string
	}{{&c.Folders.Outbox, "outbox"}, {&c.Folders.Sent, "sent"}, {&c.Folders.Failed, "failed"}, {&c.Folders.Inbox, "inbox"}} {
		if *p.v == "" {
			*p.v = filepath.Join(c.Data, p.def)
		}
	}
	if c.Folders.Interval == 0 {
		c.Folders.Interval = 2 * time.Second
	}
	if c.Trust.CRLPoll == 0 {
		c.Trust.CRLPoll = 5 * time.Second
	}
	if c.Trust.CRLGrace == 0 {
		c.Trust.CRLGrace = time.Hour
	}
	if c.NATS.CredsWarn == 0 {
		c.NATS.CredsWarn = 14 * 24 * time.Hour
	}
	if c.NATS.Keepalive == 0 {
		c.NATS.Keepalive = protocol.UnitPullHeartbeat
	}
	if c.DMS.Format == "" {
		c.DMS.Format = FormatJSON
	}
	c.Axis.SetDefaults(c.Send.MaxDocumentBytes)
	c.Bridge.SetDefaults()
	if c.Witness.KeyFile == "" {
		c.Witness.KeyFile = filepath.Join(c.Data, "witness.key")
	}
	if c.Witness.Poll == 0 {
		c.Witness.Poll = 5 * time.Minute
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	return nil
}

// Validate reports every problem of a defaulted configuration. It does not
// read the files it names; Check does.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Unit == "" {
		add("unit: required (e.g. 000.00.00.H29)")
	} else if err := c.Unit.Validate(); err != nil {
		add("unit: %v", err)
	}
	if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
		add("api.listen %q: %v", c.API.Listen, err)
	}
	if (c.API.TokenFile == "") == (c.API.TokenEnv == "") {
		add("api: set exactly one of token_file and token_env")
	}
	s := c.Signing
	pem, p12 := s.KeyFile != "" || s.CertFile != "", s.PKCS12File != ""
	switch {
	case pem && p12:
		add("signing: set key_file and cert_file, or pkcs12_file, not both")
	case pem && (s.KeyFile == "" || s.CertFile == ""):
		add("signing: key_file and cert_file go together")
	case !pem && !p12:
		add("signing: set key_file and cert_file, or pkcs12_file")
	case p12 && s.PKCS12PasswordFile != "" && s.PKCS12PasswordEnv != "":
		add("signing: set at most one of pkcs12_password_file and pkcs12_password_env")
	}
	if c.Trust.Roots == "" {
		add("trust.roots: required (the PEM bundle of trust roots)")
	}
	if c.NATS.URL == "" {
		add("nats.url: required")
	} else {
		for s := range strings.SplitSeq(c.NATS.URL, ",") {
			if u, err := url.Parse(strings.TrimSpace(s)); err != nil || u.Host == "" || !strings.HasPrefix(u.Scheme, "nats") && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss" {
				add("nats.url %q: want nats://host:port, or several comma-separated", c.NATS.URL)
				break
			}
		}
	}
	if c.NATS.CredsFile == "" {
		add("nats.creds_file: required (the unit's credentials from `edx unit add`)")
	}
	if c.NATS.CredsWarn < 0 {
		add("nats.creds_warn %s: negative", c.NATS.CredsWarn)
	}
	if c.NATS.Keepalive < protocol.MinUnitKeepalive || c.NATS.Keepalive > protocol.MaxUnitKeepalive {
		add("nats.keepalive %s: want %s to %s", c.NATS.Keepalive, protocol.MinUnitKeepalive, protocol.MaxUnitKeepalive)
	}
	if c.Trust.CRLPoll < 10*time.Millisecond {
		add("trust.crl_poll %s: want at least 10ms", c.Trust.CRLPoll)
	}
	if c.Trust.CRLGrace < 0 {
		add("trust.crl_grace %s: negative", c.Trust.CRLGrace)
	}
	if c.Send.MaxDocumentBytes < 1024 || c.Send.MaxDocumentBytes > container.DefaultLimits.MaxSize {
		add("send.max_document_bytes %d: want 1 KiB to %d", c.Send.MaxDocumentBytes, container.DefaultLimits.MaxSize)
	}
	if c.Send.MaxBackoff < 100*time.Millisecond {
		add("send.max_backoff %s: want at least 100ms", c.Send.MaxBackoff)
	}
	if c.Send.ResubmitAfter < time.Minute {
		add("send.resubmit_after %s: want at least 1m", c.Send.ResubmitAfter)
	}
	if c.Folders.Interval < 100*time.Millisecond {
		add("folders.interval %s: want at least 100ms", c.Folders.Interval)
	}
	if err := c.Webhook.Validate(); err != nil {
		add("%v", err)
	}
	if c.DMS.Format != FormatJSON && c.DMS.Format != FormatEdXML {
		add("dms.format %q: want json or edxml", c.DMS.Format)
	}
	if err := c.Axis.Validate(); err != nil {
		add("%v", err)
	}
	if err := c.Bridge.Validate(); err != nil {
		add("%v", err)
	}
	if c.Witness.Poll < time.Second {
		add("witness.poll %s: want at least 1s", c.Witness.Poll)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		add("log.format %q: want text or json", c.Log.Format)
	}
	return errors.Join(errs...)
}

// Secrets are what the agent reads from files and the environment.
type Secrets struct {
	Token         string
	Signer        *pki.Signer
	Trust         *pki.Trust
	Creds         []byte
	CredsExpire   time.Time // zero: the credentials do not expire
	WebhookSecret []byte
	// Warnings are problems that do not stop the agent (a stale CRL).
	Warnings []string
	// AxisSecrets are the shared secrets of the document systems calling
	// the axis protocol, by system id.
	AxisSecrets map[string][]byte
	// BridgeSecret is the shared secret of the city's system at the
	// upstream axis.
	BridgeSecret []byte
	// LogKeys are the verifier keys of the hubs' logs
	// (witness.log_key_file), none when not configured.
	LogKeys []string
}

// Check reads every file and variable the configuration names, as New does,
// and checks that they fit together: the token, the signing key with its
// certificate for this unit, chaining to the trust roots, the CRLs and the
// NATS credentials.
func (c *Config) Check() (*Secrets, error) {
	var s Secrets
	var err error
	if s.Token, err = readSecret(c.API.TokenFile, c.API.TokenEnv); err != nil {
		return nil, fmt.Errorf("api token: %w", err)
	}
	if len(s.Token) < 16 {
		return nil, errors.New("api token: at least 16 characters")
	}
	if s.Trust, err = pki.LoadTrust(c.Trust.Roots); err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	for _, p := range c.Trust.CRLs {
		if err := s.Trust.LoadCRL(p); err != nil {
			return nil, fmt.Errorf("trust: %w", err)
		}
	}
	s.Trust.SetCRLGrace(c.Trust.CRLGrace)
	if s.Signer, err = loadSigner(c.Signing); err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	if u, err := pki.UnitOf(s.Signer.Cert()); err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	} else if u != c.Unit {
		return nil, fmt.Errorf("signing: the certificate belongs to unit %s, this agent is %s", u, c.Unit)
	}
	if _, rs := s.Trust.Check(s.Signer.Cert(), s.Signer.Chain[1:], time.Now()); len(rs) > 0 {
		var hard reason.List
		for _, r := range rs {
			if r.Code.Transient() {
				s.Warnings = append(s.Warnings, "signing: "+r.String())
			} else {
				hard = append(hard, r)
			}
		}
		if len(hard) > 0 {
			return nil, fmt.Errorf("signing: the certificate does not verify against the trust roots: %v", hard)
		}
	}
	if s.Creds, err = os.ReadFile(c.NATS.CredsFile); err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	if !bytes.Contains(s.Creds, []byte("NATS USER JWT")) {
		return nil, fmt.Errorf("nats: %s is not a NATS credentials file", c.NATS.CredsFile)
	}
	if s.CredsExpire, err = credsExpiry(s.Creds); err != nil {
		return nil, fmt.Errorf("nats: %s: %w", c.NATS.CredsFile, err)
	}
	if c.Webhook.SecretFile != "" {
		if s.WebhookSecret, err = os.ReadFile(c.Webhook.SecretFile); err != nil {
			return nil, fmt.Errorf("webhook: %w", err)
		}
		s.WebhookSecret = bytes.TrimSpace(s.WebhookSecret)
	}
	if c.Axis.Enabled {
		s.AxisSecrets = map[string][]byte{}
		for _, sys := range c.Axis.Systems {
			v, err := readSecret(sys.SecretFile, sys.SecretEnv)
			if err != nil {
				return nil, fmt.Errorf("axis: system %s: secret: %w", sys.ID, err)
			}
			if len(v) < axis.MinSecretLength {
				return nil, fmt.Errorf("axis: system %s: the secret must be at least %d bytes", sys.ID, axis.MinSecretLength)
			}
			s.AxisSecrets[sys.ID] = []byte(v)
		}
	}
	if c.Bridge.Enabled {
		v, err := readSecret(c.Bridge.SecretFile, c.Bridge.SecretEnv)
		if err != nil {
			return nil, fmt.Errorf("bridge: secret: %w", err)
		}
		if len(v) < bridge.MinSecretLength {
			return nil, fmt.Errorf("bridge: the secret must be at least %d bytes", bridge.MinSecretLength)
		}
		s.BridgeSecret = []byte(v)
	}
	if f := c.Witness.LogKeyFile; f != "" && !c.Witness.Disabled {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("witness: log key: %w", err)
		}
		if s.LogKeys, err = parseLogKeys(b); err != nil {
			return nil, fmt.Errorf("witness: log keys %s: %w", f, err)
		}
	}
	return &s, nil
}

// parseLogKeys reads log verifier keys, one a line (blank lines and lines
// starting with '#' skipped), at most one per log.
func parseLogKeys(b []byte) ([]string, error) {
	var keys []string
	origins := map[string]bool{}
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		v, err := note.NewVerifier(l)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if origins[v.Name()] {
			return nil, fmt.Errorf("line %d: a second key for log %s", i+1, v.Name())
		}
		origins[v.Name()] = true
		keys = append(keys, l)
	}
	if len(keys) == 0 {
		return nil, errors.New("no key")
	}
	return keys, nil
}

// credsExpiry reads when NATS credentials expire (zero: never).
func credsExpiry(creds []byte) (time.Time, error) {
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return time.Time{}, err
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return time.Time{}, err
	}
	if uc.Expires == 0 {
		return time.Time{}, nil
	}
	return time.Unix(uc.Expires, 0).UTC(), nil
}

// readSecret reads a secret from a file or an environment variable,
// trimming surrounding white space.
func readSecret(file, env string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	v, ok := os.LookupEnv(env)
	if !ok {
		return "", fmt.Errorf("environment variable %s is not set", env)
	}
	return strings.TrimSpace(v), nil
}

// loadSigner loads the unit's key and chain, from PEM files or PKCS#12.
// The key is used through crypto.Signer only, so a PKCS#11 token can take
// its place later.
func loadSigner(c SigningConfig) (*pki.Signer, error) {
	if c.PKCS12File == "" {
		return pki.LoadSigner(c.KeyFile, c.CertFile)
	}
	data, err := os.ReadFile(c.PKCS12File)
	if err != nil {
		return nil, err
	}
	var pw string
	if c.PKCS12PasswordFile != "" || c.PKCS12PasswordEnv != "" {
		if pw, err = readSecret(c.PKCS12PasswordFile, c.PKCS12PasswordEnv); err != nil {
			return nil, fmt.Errorf("pkcs12 password: %w", err)
		}
	}
	return parsePKCS12(data, pw)
}

// parsePKCS12 decodes a PKCS#12 file (modern AES/PBKDF2 or legacy
// encryption) into a signer with its chain.
func parsePKCS12(data []byte, password string) (*pki.Signer, error) {
	key, leaf, cas, err := gopkcs12.DecodeChain(data, password)
	if err != nil {
		return nil, fmt.Errorf("pkcs12: %w", err)
	}
	cs, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pkcs12: key type %T cannot sign", key)
	}
	chain := append([]*x509.Certificate{leaf}, cas...)
	return pki.NewSignerFromKey(cs, chain)
}
