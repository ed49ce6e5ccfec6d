package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/hub/registry"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/hub/tlog"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/evidence"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/tsa"
)

// The hub's evidence is its transparency log of every decision (Config.Tlog,
// hub/tlog) and the trusted time on it (Config.TSA).
//
// Each hub has a log of its own (tessera's POSIX driver has one writer): its
// own origin and Ed25519 log key under its data directory, mirrored to the
// archive under tlog/<origin>/ (projection.LogPrefix) at every time-stamped
// checkpoint. Receipts name the log (origin) and the entry (index). An
// auditor reads any hub's log from its HTTP endpoint (/log/) or, the hub
// gone, from the archive.

// TSAConfig names the RFC 3161 time-stamping authorities of the log's
// checkpoints.
type TSAConfig struct {
	// URLs of the TSAs, tried in order (the city's: a national CA's TSA).
	// Empty, with a development CA: the hub runs a development TSA itself
	// (POST /tsa), with a timeStamping certificate from the development
	// CA. Empty without one: decisions are logged but not time-stamped
	// (their time rests on the hub's clock), which the hub warns of at
	// start.
	URLs []string `yaml:"urls"`
	// Roots is a PEM file of the TSAs' trust roots (default pki.trust): a
	// token that does not chain to them is refused when it is made, since
	// it would not verify later.
	Roots string `yaml:"roots"`
	// Timeout bounds one request to one TSA (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// Policy, when set, is the TSA policy to request and require.
	Policy string `yaml:"policy"`
}

// DefaultLogBatchMaxAge is the hub's default tlog.batch_max_age: how long
// an entry waits for others to share its write on an idle log (on a busy
// one, what arrives during a write shares the next at once).
const DefaultLogBatchMaxAge = 10 * time.Millisecond

// DefaultLogBatchInterval is the hub's default tlog.batch_interval: while
// the CPUs are 80% busy, a log write at most every 10ms. With tessera's
// POSIX driver (eight syncs a batch) 50ms took the log's writes from 6.9%
// of the hub's CPU to 2.1% under edx bench; with the journal's one sync,
// 5ms and 50ms cost the same CPU within the noise (issue #11, stop 22),
// and 50ms was latency: at 1,500 units and half the maximum rate, p90
// submit→delivered 124–170 ms against 91 at 10ms.
const DefaultLogBatchInterval = 10 * time.Millisecond

// setEvidenceDefaults: the log under the data directory (DATA/tlog, key
// DATA/tlog.key, made at first start, its public half written to
// DATA/tlog.pub), batch_max_age 10ms, batch_interval 10ms, the TSA roots the trust's. The
// origin stays empty unless configured: the hub names its log after its id
// (edx.local/hub/<hub id>), so that every hub has its own.
func (c *Config) setEvidenceDefaults() {
	under := func(p *string, rel string) {
		if *p == "" {
			*p = filepath.Join(c.Data, rel)
		}
		if !filepath.IsAbs(*p) {
			*p, _ = filepath.Abs(*p)
		}
	}
	under(&c.Tlog.Dir, "tlog")
	under(&c.Tlog.KeyFile, "tlog.key")
	if c.Tlog.BatchMaxAge == 0 {
		c.Tlog.BatchMaxAge = DefaultLogBatchMaxAge
	}
	if c.Tlog.BatchInterval == 0 {
		c.Tlog.BatchInterval = DefaultLogBatchInterval
	}
	if c.TSA.Roots == "" {
		c.TSA.Roots = c.PKI.Trust
	} else if !filepath.IsAbs(c.TSA.Roots) {
		c.TSA.Roots, _ = filepath.Abs(c.TSA.Roots)
	}
}

func (c *Config) validateEvidence() error {
	if c.Tlog.Disabled {
		return nil
	}
	lc := c.Tlog
	if lc.Origin == "" {
		lc.Origin = "edx.local/hub/id" // set at start from the hub's id
	}
	lc.SetDefaults()
	var errs []error
	if err := lc.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(c.TSA.URLs) > 0 {
		tc := tsa.Config{URLs: c.TSA.URLs, Timeout: c.TSA.Timeout, Policy: c.TSA.Policy}
		if err := tc.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.TSA.Timeout < 0 {
		errs = append(errs, fmt.Errorf("tsa: timeout %s: negative", c.TSA.Timeout))
	}
	return errors.Join(errs...)
}

// LogInfo is what the hub tells of its log (GET /api/v1/log, hub.json).
type LogInfo struct {
	Origin string `json:"origin"`
	// VKey is the log's public key (a note verifier key: origin+hash+key):
	// edx audit verify --log-key, and agents' witness check.
	VKey string `json:"vkey"`
	// URL is where the log is served read-only (C2SP tlog-tiles).
	URL string `json:"url,omitempty"`
	// MirrorPrefix is where the archive holds it.
	MirrorPrefix      string        `json:"mirror_prefix"`
	TimestampInterval time.Duration `json:"timestamp_interval"`
	// TSARoots is the file of the TSA roots the hub checks its tokens
	// against (on the hub's machine: edx proof --data reads it).
	TSARoots string `json:"tsa_roots,omitempty"`
}

// startEvidence opens the hub's transparency log (making its key at first
// start), its TSA client (or the development TSA), writes the log's public
// key beside its mirror in the archive, and logs the trust store and the
// hub's certificate in force.
func (h *Hub) startEvidence(ctx context.Context) error {
	if h.cfg.Tlog.Disabled {
		h.log.Warn("evidence: the transparency log is disabled (tlog.disabled): decisions are not logged and receipts name no log entry")
		return nil
	}
	cfg, tc := h.cfg.Tlog, h.cfg.TSA
	if cfg.Origin == "" {
		cfg.Origin = "edx.local/hub/" + strings.ToLower(h.id)
	}
	signer, verifier, vkey, err := tlog.EnsureKey(cfg.KeyFile, cfg.Origin)
	if err != nil {
		return fmt.Errorf("tlog.key_file %s: %w", cfg.KeyFile, err)
	}
	if h.cfg.Tlog.Origin != "" && signer.Name() != h.cfg.Tlog.Origin {
		h.log.Warn("evidence: the log key names another origin than tlog.origin; the key's name is the log's origin",
			"key_file", cfg.KeyFile, "origin", signer.Name(), "configured", h.cfg.Tlog.Origin)
	}
	cfg.Origin = signer.Name()
	if cfg.MirrorPrefix == "" {
		cfg.MirrorPrefix = projection.LogPrefix(cfg.Origin)
	}
	cfg.SetDefaults()
	if err := os.WriteFile(filepath.Join(h.cfg.Data, "tlog.pub"), []byte(vkey+"\n"), 0o644); err != nil {
		return fmt.Errorf("evidence: %w", err)
	}
	if err := h.publishLogKey(ctx, cfg.MirrorPrefix, vkey); err != nil {
		return err
	}
	var stamper tlog.Timestamper
	urls := tc.URLs
	if len(urls) == 0 && h.ca == nil {
		h.log.Warn("evidence: no TSA (tsa.urls): decisions are logged, but no checkpoint is time-stamped and no audit bundle can be made; " +
			"the time of every decision rests on the hub's clock until a TSA is configured")
	} else if len(urls) == 0 {
		k, c, err := h.ca.EnsureTSA("edx development TSA")
		if err != nil {
			return fmt.Errorf("evidence: development TSA: %w", err)
		}
		if h.devTSA, err = tsa.LoadServer(k, c, tc.Policy); err != nil {
			return fmt.Errorf("evidence: development TSA: %w", err)
		}
		urls = []string{loopbackURL(h.httpLn.Addr()) + tsaPath}
		h.log.Info("evidence: checkpoints are time-stamped by the development TSA (set tsa.urls for a real one)", "url", urls[0])
	}
	if len(urls) > 0 {
		rootsPEM, err := os.ReadFile(tc.Roots)
		if err != nil {
			return fmt.Errorf("tsa.roots: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(rootsPEM) {
			return fmt.Errorf("tsa.roots %s: no certificate", tc.Roots)
		}
		c, err := tsa.NewClient(tsa.Config{URLs: urls, Timeout: tc.Timeout, Policy: tc.Policy, Roots: roots})
		if err != nil {
			return err
		}
		stamper = c
	}
	b, err := tlog.DirBackend(ctx, cfg.Dir)
	if err != nil {
		return fmt.Errorf("tlog.dir %s: %w", cfg.Dir, err)
	}
	l, err := tlog.Open(ctx, cfg, b, tlog.Deps{Signer: signer, Verifier: verifier, Timestamper: stamper, Archive: h.arch,
		Logger: h.log.With("component", "tlog"), Registerer: h.reg})
	if err != nil {
		return err
	}
	h.tlog, h.tlogVKey, h.logCfg = l, vkey, cfg
	// Every hub's log in the shared registry (a unit's bundle carries all
	// their keys), and the hub's signed statement of its key (an agent
	// registered before this hub joined learns the key from it).
	if err := h.units.RecordLog(ctx, registry.Log{Origin: l.Origin(), VKey: vkey, Hub: h.id}); err != nil {
		l.Close(context.WithoutCancel(ctx))
		return fmt.Errorf("evidence: %w", err)
	}
	if h.tlogStatement, err = container.SignLogKey(l.Origin(), vkey, h.cfg.Clock(), h.signer); err != nil {
		l.Close(context.WithoutCancel(ctx))
		return fmt.Errorf("evidence: %w", err)
	}
	h.closers = append(h.closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := l.Close(ctx); err != nil {
			h.log.Error("evidence: closing the log", "err", err)
		}
	})
	h.log.Info("evidence: transparency log open", "origin", l.Origin(), "dir", cfg.Dir, "vkey", vkey)
	// What the hub trusts, and the certificate it signs receipts with.
	h.logOnce(ctx, &evidence.Entry{Kind: evidence.Trust, Action: "replaced", Digest: sha256Hex(rootsOf(h.cfg.PKI.Trust))})
	hc := h.signer.Cert()
	h.logOnce(ctx, &evidence.Entry{Kind: evidence.Certificate, Action: "registered", Serial: hc.SerialNumber.Text(16), Digest: sha256Hex(hc.Raw)})
	return nil
}

// publishLogKey writes the log's public key beside its mirror, once. Another
// key there is another hub's log under the same origin: two hubs must not
// share one (tlog.origin, or a copied data directory).
func (h *Hub) publishLogKey(ctx context.Context, prefix, vkey string) error {
	key := prefix + tlog.VKeyName
	_, err := h.arch.Put(ctx, key, []byte(vkey+"\n"), "text/plain; charset=utf-8", nil)
	if errors.Is(err, archive.ErrConflict) {
		b, _, gerr := h.arch.Get(ctx, key)
		if gerr != nil {
			return fmt.Errorf("evidence: %s: %w", key, gerr)
		}
		if strings.TrimSpace(string(b)) != vkey {
			return fmt.Errorf("evidence: the archive holds another log key under %s (%s): another hub uses the origin of this one; "+
				"give each hub its own tlog.origin (and never copy a data directory)", key, strings.TrimSpace(string(b)))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("evidence: %s: %w", key, err)
	}
	return nil
}

// logOnce logs a decision the hub may meet again (at each start, or after
// a restart) once, by its key. A failure is logged: the change it records
// is in force already.
func (h *Hub) logOnce(ctx context.Context, e *evidence.Entry) {
	if h.tlog == nil {
		return
	}
	e.V = evidence.Version
	if e.Time.IsZero() {
		e.Time = h.cfg.Clock().UTC()
	}
	idx, dup, err := h.tlog.AppendOnce(ctx, e)
	if err != nil {
		h.log.Error("evidence: a decision could not be logged", "kind", e.Kind, "action", e.Action, "err", err)
		return
	}
	if !dup {
		h.log.Debug("evidence: logged", "kind", e.Kind, "action", e.Action, "index", idx)
	}
}

// logUnit logs a change of a unit's record (its digest as the registry
// archived it) and, when its certificate is new or revoked, the
// certificate; both in one write, waited for (each change is its own
// decision: the record's digest holds its time). A failure is logged: the
// change is in force already.
func (h *Hub) logUnit(ctx context.Context, u registry.Unit, oldSerial string) {
	if h.tlog == nil {
		return
	}
	b, err := registry.Encode(u)
	if err != nil {
		return
	}
	at := u.At.UTC()
	entries := []*evidence.Entry{{Kind: evidence.UnitChange, Time: at, Unit: string(u.ID), Action: u.Event, Digest: sha256Hex(b)}}
	if certs, err := pki.ParseCertificates([]byte(u.CertPEM)); err == nil && len(certs) > 0 {
		c := certs[0]
		serial := c.SerialNumber.Text(16)
		switch {
		case u.Event == service.EventRevoked:
			entries = append(entries, &evidence.Entry{Kind: evidence.Certificate, Time: at, Unit: string(u.ID), Action: "revoked", Serial: serial, Digest: sha256Hex(c.Raw)})
		case serial != oldSerial:
			action := "registered"
			if h.issuer != nil && bytes.Equal(c.RawIssuer, h.issuer.Cert.RawSubject) {
				action = "issued"
			}
			entries = append(entries, &evidence.Entry{Kind: evidence.Certificate, Time: at, Unit: string(u.ID), Action: action, Serial: serial, Digest: sha256Hex(c.Raw)})
		}
	}
	var waits []func() (uint64, error)
	for _, e := range entries {
		e.V = evidence.Version
		waits = append(waits, h.tlog.AppendAsync(ctx, e))
	}
	for i, w := range waits {
		if _, err := w(); err != nil {
			h.log.Error("evidence: a unit change could not be logged", "unit", u.ID, "kind", entries[i].Kind, "action", entries[i].Action, "err", err)
		}
	}
}

// logCRL logs a CRL the hub put in force (installed), once.
func (h *Hub) logCRL(ctx context.Context, info pki.CRLInfo) {
	e := &evidence.Entry{Kind: evidence.CRL, Action: "installed", Digest: info.SHA256}
	if info.Number != nil && info.Number.Sign() >= 0 {
		e.Serial = info.Number.Text(16)
	}
	h.logOnce(ctx, e)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func rootsOf(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// tsaPath is where the hub serves the development TSA.
const tsaPath = "/tsa"

// loopbackURL is http://host:port for the hub itself at addr: a wildcard
// address becomes 127.0.0.1.
func loopbackURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return (&url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}).String()
}

// hubEvidence reads the transparency logs for the API: this hub's own, and
// the other hubs' from their mirrors in the archive (which hold their
// time-stamped checkpoints).
type hubEvidence struct{ h *Hub }

func (e *hubEvidence) Proof(ctx context.Context, origin string, index uint64) (*evidence.Proof, error) {
	var (
		p   *evidence.Proof
		err error
	)
	if origin == e.h.tlog.Origin() {
		p, err = e.h.tlog.Proof(ctx, index)
		if errors.Is(err, tlog.ErrNotIntegrated) {
			// Sequenced, not yet in a published checkpoint: one comes
			// within tlog.checkpoint_interval.
			actx, cancel := context.WithTimeout(ctx, 2*e.h.logCfg.CheckpointInterval+time.Second)
			_, werr := e.h.tlog.Await(actx, index)
			cancel()
			if werr == nil {
				p, err = e.h.tlog.Proof(ctx, index)
			}
		}
	} else {
		p, err = tlog.OpenMirror(e.h.arch, projection.LogPrefix(origin)).Proof(ctx, index)
	}
	return p, evidenceErr(origin, err)
}

func (e *hubEvidence) Cosigned(ctx context.Context, origin string, size uint64) ([]byte, error) {
	var (
		b   []byte
		err error
	)
	if origin == e.h.tlog.Origin() {
		b, err = e.h.tlog.Cosigned(ctx, size)
	} else {
		b, err = tlog.OpenMirror(e.h.arch, projection.LogPrefix(origin)).Cosigned(ctx, size)
	}
	return b, evidenceErr(origin, err)
}

func (e *hubEvidence) Info() any { return e.h.LogInfo() }

func evidenceErr(origin string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, tlog.ErrNotIntegrated):
		return fmt.Errorf("%w: the log %s has no checkpoint holding the entry yet (another hub's log is read from its archive mirror, "+
			"written at each time-stamp); try again shortly", service.ErrPending, origin)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: log %s: %v", service.ErrNotFound, origin, err)
	}
	return err
}
