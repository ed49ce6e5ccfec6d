package hub

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/pipeline"
	"github.com/edxhub/edx/hub/tlog"
	"github.com/edxhub/edx/hub/web"
	"github.com/edxhub/edx/pkg/pki"
)

// Config is the hub's configuration file (configs/hub.yaml). Every field has
// a default that runs the whole hub embedded under Data.
type Config struct {
	// Data is the data directory: embedded NATS, S3 and index, keys, the
	// development CA. Default ./edx-data.
	Data     string          `yaml:"data"`
	HTTP     api.Config      `yaml:"http"`
	NATS     NATSConfig      `yaml:"nats"`
	S3       S3Config        `yaml:"s3"`
	Index    index.Config    `yaml:"index"`
	PKI      PKIConfig       `yaml:"pki"`
	Pipeline pipeline.Config `yaml:"pipeline"`
	Auth     auth.Config     `yaml:"auth"`
	Web      web.Config      `yaml:"web"`
	Log      LogConfig       `yaml:"log"`
	// Tlog is the hub's transparency log of every decision (one per hub:
	// its own origin and key, under DATA/tlog by default; see evidence.go),
	// TSA where its checkpoints are time-stamped.
	Tlog tlog.Config `yaml:"tlog"`
	TSA  TSAConfig   `yaml:"tsa"`
	// Witness is how the units' agents witness the log.
	Witness WitnessConfig `yaml:"witness"`
	// Clock is the hub's time, time.Now when nil: what receipts carry as
	// acceptance time, and the "now" of re-verification and reindexing.
	// Set by tests to move through certificate lifetimes without waiting.
	Clock func() time.Time `yaml:"-"`
	// Progress, when set, is shown a rebuild of the index from the archive
	// (a new hub catching up): edx-hub sets a progress bar on a terminal.
	Progress Progress `yaml:"-"`
	// MemoryLimitMiB is the Go runtime's soft memory limit (0, the
	// default: three quarters of the machine's memory or of the control
	// group's limit, whichever is smaller; -1 disables it; GOMEMLIMIT
	// overrides it). Past it the garbage collector works harder rather than
	// let the heap grow.
	MemoryLimitMiB int `yaml:"memory_limit_mib"`
}

// MinMemoryLimitMiB is the smallest memory_limit_mib taken: below it the
// embedded servers alone fill the limit and the collector never rests.
const MinMemoryLimitMiB = 256

// NATSConfig selects the embedded server or an external cluster.
type NATSConfig struct {
	// URL of an external NATS cluster; empty runs the embedded server.
	URL string `yaml:"url"`
	// CredsFile is the hub's user credentials in the EDX account of the
	// external cluster, StageCredsFile its credentials in the STAGE account
	// (where large deliveries are staged); `edx-hub nats-config` prints the
	// server configuration and writes both.
	CredsFile      string `yaml:"creds_file"`
	StageCredsFile string `yaml:"stage_creds_file"`
	// KeysDir holds the operator and account keys the hub signs unit
	// credentials with (default DATA/nats/keys). With an external cluster,
	// configure its resolver with `edx-hub nats-config` output.
	KeysDir string `yaml:"keys_dir"`
	// CredsTTL is the life of the NATS credentials issued to a unit
	// (default 2160h, 90 days); `edx unit rotate` issues new ones.
	CredsTTL time.Duration `yaml:"creds_ttl"`
	// Embedded server settings (when URL is empty).
	Embedded broker.Config `yaml:"embedded"`
	// Streams are the JetStream settings (replicas 3 in a cluster): the
	// size of every stream, and each unit's share of the ones units write.
	Streams broker.StreamOptions `yaml:"streams"`
	// Buckets are the key-value buckets every hub shares (the unit registry
	// EDX_UNITS, the accounts EDX_ACCOUNTS and EDX_SESSIONS): replicas
	// (default: streams.replicas), placement and size.
	Buckets broker.BucketOptions `yaml:"buckets"`
	// Units bound each unit's NATS user: subscriptions, message size,
	// connections. With an external cluster, print its configuration again
	// (edx-hub nats-config --config) after changing them.
	Units broker.UnitLimits `yaml:"units"`
}

// S3Config selects the embedded gateway or an external S3 endpoint.
type S3Config struct {
	// Embedded runs versitygw in-process under DATA/s3 when Archive.Endpoint is empty.
	EmbeddedListen string         `yaml:"embedded_listen"`
	Archive        archive.Config `yaml:",inline"`
}

// PKIConfig says what the hub trusts and how it signs receipts.
type PKIConfig struct {
	// Trust is the PEM bundle of trust roots (default: the development CA's roots.pem).
	Trust string `yaml:"trust"`
	// CRLs are CRL files checked for every signer. The hub reads them again
	// when they change (checked every CRLPoll, default 5s).
	CRLs    []string      `yaml:"crls"`
	CRLPoll time.Duration `yaml:"crl_poll"`
	// CRLGrace is how long past its nextUpdate a CRL still counts as
	// current (default 1h). Past it, submissions signed under its issuer
	// are held (retried, never rejected) and /readyz reports the CRL stale
	// until a newer one is in place.
	CRLGrace time.Duration `yaml:"crl_grace"`
	// CRLFetch fetches the CRLs of the distribution points named by the
	// trust bundle's certificates and by every signer's verified chain
	// (http and https URLs), in the background: a CRL is used once its
	// signature verifies against its issuer, kept until its nextUpdate,
	// then fetched again; failures are logged and counted
	// (edx_hub_crl_fetches_total), never blocking.
	CRLFetch pki.FetchConfig `yaml:"crl_fetch"`
	// HubKey and HubCert sign receipts (default: the development CA's hub
	// key). The certificate must carry the hub signer extended key usage
	// (pki.OIDExtKeyUsageHubSigner); the development CA's is given it at
	// start when it lacks it.
	HubKey  string `yaml:"hub_key"`
	HubCert string `yaml:"hub_cert"`
	// DevCA is the development CA directory, created when missing (the
	// default with no trust configured). Units registered without a
	// certificate get one from it.
	DevCA string `yaml:"dev_ca"`
	// DevCRLURL is the CRL distribution point the development CA writes
	// into the certificates it issues from now on; the hub serves the CA's
	// CRL there (GET /pki/crl.der). Default http://<http.listen>/pki/crl.der
	// (with the machine's host name when listening on every address).
	DevCRLURL string `yaml:"dev_crl_url"`
	// IssuingCA is the city's issuing CA (certificate and key files): the
	// hub issues a key and certificate from it to a unit registered
	// without a certificate of its own (edx unit add without --cert). Its
	// certificate must chain to Trust. Every hub of a cluster may use the
	// same files. Without it (and without DevCA) a unit is registered with
	// the certificate the city's CA issued it (edx unit add --cert).
	IssuingCA IssuingCAConfig `yaml:"issuing_ca"`
}

// IssuingCAConfig names an issuing CA's certificate and key (PEM files).
type IssuingCAConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// LogConfig sets logging.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // text (default) or json
}

// LoadConfig reads a YAML configuration; unknown keys are errors.
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
	return &c, nil
}

// SetDefaults fills what is not set, with every path under Data.
func (c *Config) SetDefaults() error {
	if c.Data == "" {
		c.Data = "edx-data"
	}
	abs, err := filepath.Abs(c.Data)
	if err != nil {
		return err
	}
	c.Data = abs
	under := func(p *string, rel string) {
		if *p == "" {
			*p = filepath.Join(c.Data, rel)
		}
		if !filepath.IsAbs(*p) {
			*p, _ = filepath.Abs(*p)
		}
	}
	if c.NATS.URL == "" {
		under(&c.NATS.Embedded.StoreDir, "nats/jetstream")
		if c.NATS.Embedded.Listen == "" {
			c.NATS.Embedded.Listen = broker.DefaultListen
		}
	}
	under(&c.NATS.KeysDir, "nats/keys")
	c.NATS.Units.SetDefaults()
	c.NATS.Streams.SetDefaults()
	if c.NATS.Buckets.Replicas == 0 {
		c.NATS.Buckets.Replicas = c.NATS.Streams.Replicas
	}
	c.NATS.Buckets.SetDefaults()
	c.NATS.Embedded.KeysDir = c.NATS.KeysDir
	if c.S3.Archive.Endpoint == "" {
		if c.S3.EmbeddedListen == "" {
			c.S3.EmbeddedListen = "127.0.0.1:9000"
		}
		// The embedded gateway is the hub's alone: its archive is always
		// write-once (hub/archive, hub/s3embed).
		c.S3.Archive.ObjectLock = true
		if c.S3.Archive.RetentionDays == 0 {
			c.S3.Archive.RetentionDays = DefaultRetentionDays
		}
	}
	under(&c.Index.Path, "index/edx.db")
	c.Witness.SetDefaults()
	under(&c.Auth.Path, "auth/users.db")
	c.Auth.SetDefaults()
	c.Web.SetDefaults()
	if c.PKI.Trust == "" {
		under(&c.PKI.DevCA, "pki")
		c.PKI.Trust = filepath.Join(c.PKI.DevCA, "roots.pem")
		if c.PKI.HubKey == "" {
			c.PKI.HubKey = filepath.Join(c.PKI.DevCA, "hub.key.pem")
			c.PKI.HubCert = filepath.Join(c.PKI.DevCA, "hub.cert.pem")
		}
	} else if c.PKI.DevCA != "" {
		under(&c.PKI.DevCA, "pki")
	}
	// Every other path is made absolute now, against the working
	// directory the hub starts in: the embedded S3 gateway changes the
	// process's working directory, and files such as the CRLs are read
	// again later.
	for _, p := range []*string{&c.PKI.Trust, &c.PKI.HubKey, &c.PKI.HubCert, &c.PKI.IssuingCA.Cert, &c.PKI.IssuingCA.Key,
		&c.NATS.CredsFile, &c.NATS.StageCredsFile, &c.S3.Archive.AccessKeyFile, &c.S3.Archive.SecretKeyFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p, _ = filepath.Abs(*p)
		}
	}
	for i, p := range c.PKI.CRLs {
		if !filepath.IsAbs(p) {
			c.PKI.CRLs[i], _ = filepath.Abs(p)
		}
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = api.DefaultListen
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.NATS.CredsTTL == 0 {
		c.NATS.CredsTTL = DefaultCredsTTL
	}
	if c.PKI.CRLPoll == 0 {
		c.PKI.CRLPoll = 5 * time.Second
	}
	if c.PKI.CRLGrace == 0 {
		c.PKI.CRLGrace = time.Hour
	}
	if c.PKI.CRLFetch.Now == nil {
		c.PKI.CRLFetch.Now = c.Clock
	}
	c.PKI.CRLFetch.SetDefaults()
	c.setEvidenceDefaults()
	return nil
}

// DefaultCredsTTL is the default life of a unit's NATS credentials.
const DefaultCredsTTL = 90 * 24 * time.Hour

// DefaultRetentionDays is the COMPLIANCE retention of every object in the
// embedded archive: ten years.
const DefaultRetentionDays = 3650

// Validate checks a defaulted configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.NATS.URL != "" && (c.NATS.CredsFile == "" || c.NATS.StageCredsFile == "") {
		errs = append(errs, errors.New("nats: creds_file and stage_creds_file are required with an external url"))
	}
	if c.NATS.URL == "" {
		if err := c.NATS.Embedded.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.NATS.Units.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.NATS.Streams.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.NATS.Buckets.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.S3.Archive.Endpoint != "" {
		if err := c.S3.Archive.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("s3: %w", err))
		}
	} else if d := c.S3.Archive.RetentionDays; d < 1 || d > 36500 {
		errs = append(errs, fmt.Errorf("s3: retention_days %d: want 1 to 36500 (the embedded archive is always under object lock)", d))
	}
	if err := c.Index.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Pipeline.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Witness.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Auth.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Web.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.HTTP.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.NATS.CredsTTL < time.Minute {
		errs = append(errs, fmt.Errorf("nats: creds_ttl %s: want at least 1m", c.NATS.CredsTTL))
	}
	if c.PKI.CRLPoll < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("pki: crl_poll %s: want at least 10ms", c.PKI.CRLPoll))
	}
	if c.PKI.CRLGrace < 0 {
		errs = append(errs, fmt.Errorf("pki: crl_grace %s: negative", c.PKI.CRLGrace))
	}
	if err := c.PKI.CRLFetch.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.PKI.DevCRLURL != "" {
		if u, err := url.Parse(c.PKI.DevCRLURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("pki: dev_crl_url %q: want an http:// or https:// URL", c.PKI.DevCRLURL))
		}
	}
	if ic := c.PKI.IssuingCA; ic.Cert != "" || ic.Key != "" {
		switch {
		case ic.Cert == "" || ic.Key == "":
			errs = append(errs, errors.New("pki: issuing_ca needs both cert and key"))
		case c.PKI.DevCA != "":
			errs = append(errs, errors.New("pki: issuing_ca and dev_ca both issue unit certificates: set one"))
		}
	}
	if c.PKI.HubKey == "" || c.PKI.HubCert == "" {
		errs = append(errs, errors.New("pki: hub_key and hub_cert are required when trust is configured"))
	}
	if err := c.validateEvidence(); err != nil {
		errs = append(errs, err)
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log: level %q: want debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log: format %q: want text or json", c.Log.Format))
	}
	if m := c.MemoryLimitMiB; m < -1 || (m > 0 && m < MinMemoryLimitMiB) {
		errs = append(errs, fmt.Errorf("memory_limit_mib %d: want 0 (3/4 of the machine's memory), -1 (no limit) or at least %d", m, MinMemoryLimitMiB))
	}
	return errors.Join(errs...)
}
