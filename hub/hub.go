// Package hub assembles the edx hub: NATS JetStream (embedded or a cluster),
// the S3 archive (embedded versitygw or any S3), the SQLite index, the trust
// configuration, the pipeline and the HTTP API. cmd/edx-hub only parses
// flags and calls it.
package hub

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/events"
	"github.com/edxhub/edx/hub/fsinfo"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/pipeline"
	"github.com/edxhub/edx/hub/registry"
	"github.com/edxhub/edx/hub/s3embed"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/hub/tlog"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/tsa"
)

// Hub is a running hub.
type Hub struct {
	cfg    Config
	log    *slog.Logger
	nats   *broker.Server // nil with an external cluster
	s3     *s3embed.Server
	conn   *broker.HubConn
	nc     *nats.Conn
	js     jetstream.JetStream
	stage  jetstream.ObjectStore
	keys   *broker.Keys
	arch   *archive.Store
	ix     *index.Index
	units  *registry.Registry // the unit registry every hub shares
	dataFS *fsinfo.Info       // the data directory's filesystem, if known
	id     string             // the hub's stable id (DATA/hub.id)
	events *events.Publisher  // the hub's decisions, to every hub's index
	follow *events.Follower   // every hub's decisions, into this hub's index
	auth   *auth.Store
	svc    *service.Service // what the API and the web UI are faces of
	ca     *pki.CA          // development CA, nil when not configured
	// issuer issues the certificates of units registered without one:
	// pki.issuing_ca, else the development CA's; nil with neither.
	issuer  *pki.Issuer
	trust   *pki.Trust
	signer  *pki.Signer
	pipe    *pipeline.Pipeline
	reg     *prometheus.Registry
	httpLn  net.Listener
	token   string
	closers []func()
	health  health

	crl *crlState // the CRLs' health, for /readyz and the metrics
	// sys is the hub's one connection to the system account: account
	// updates (revocations) and the units' connection limit go through it.
	sys *broker.SystemConn
	// accounts gives the NATS servers new account JWTs (revocations).
	accounts service.AccountPusher

	// tlog is the hub's transparency log (nil with tlog.disabled);
	// tlogVKey its public key, logCfg its configuration as opened;
	// witness the service the units' agents witness it through.
	tlog     *tlog.Log
	tlogVKey string
	// tlogStatement is the hub's signed statement of its log's key
	// (container.SignLogKey), which the witness service hands to agents.
	tlogStatement []byte
	logCfg        tlog.Config
	devTSA        *tsa.Server // the development TSA the hub serves, or nil
	witness       *witnessService

	// reconnected has a value after the hub's NATS connection came back
	// (keepUnitConsumers).
	reconnected chan struct{}
	// trim removes from EDX_DELIVER what units acknowledged.
	trim *broker.Trimmer
	// cursors answers units' fetch requests when they read by cursor
	// (nats.streams.unit_consumers: cursor), or is nil.
	cursors *broker.Cursors
}

// Info is what a started hub tells its operator (and writes to DATA/hub.json).
type Info struct {
	NATSURL        string `json:"nats_url"`
	S3Endpoint     string `json:"s3_endpoint"`
	HTTP           string `json:"http"`
	Data           string `json:"data"`
	TrustRoots     string `json:"trust_roots"`
	DevCA          string `json:"dev_ca,omitempty"`
	AdminTokenFile string `json:"admin_token_file"`
	Bucket         string `json:"bucket"`
	// DataFS is the filesystem that holds Data, as far as the hub could
	// tell (absent when it could not).
	DataFS *fsinfo.Info `json:"data_fs,omitempty"`
	// Log is the hub's transparency log (absent with tlog.disabled).
	Log *LogInfo `json:"log,omitempty"`
}

// New starts every component the configuration asks for; Run serves.
func New(ctx context.Context, cfg Config, log *slog.Logger) (_ *Hub, err error) {
	if err := cfg.SetDefaults(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Hub{cfg: cfg, log: log, reg: prometheus.NewRegistry(), reconnected: make(chan struct{}, 1)}
	// What started so far stops on any error. h is not the result, which
	// a "return nil, err" sets to nil before this runs: the closers, which
	// use h, find it whole.
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	h.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h.crl = newCRLState(h.reg)
	if err := os.MkdirAll(cfg.Data, 0o750); err != nil {
		return nil, err
	}
	h.checkDataFS()
	// The HTTP address first: the development CA names the hub's CRL URL
	// in what it issues.
	if h.httpLn, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
		return nil, listenError(cfg.HTTP.Listen, err)
	}
	ln := h.httpLn
	h.closers = append(h.closers, func() { ln.Close() }) // Run's server has closed it already
	if err := h.startPKI(); err != nil {
		return nil, err
	}
	if err := h.startNATS(ctx); err != nil {
		return nil, err
	}
	if err := h.startS3(ctx); err != nil {
		return nil, err
	}
	if h.ix, err = index.Open(ctx, cfg.Index, log.With("component", "index")); err != nil {
		return nil, fmt.Errorf("index: open %s (index.path): %w", cfg.Index.Path, err)
	}
	ix := h.ix // h is nil in the deferred cleanup of a failed start
	h.closers = append(h.closers, func() { ix.Close() })
	if err := h.startRegistry(ctx); err != nil {
		return nil, err
	}
	if h.id, err = loadOrCreateID(filepath.Join(cfg.Data, "hub.id")); err != nil {
		return nil, err
	}
	if err := h.startEvidence(ctx); err != nil {
		return nil, err
	}
	h.events = events.NewPublisher(h.js, h.id)
	if h.follow, err = events.NewFollower(events.Config{Consumer: IndexConsumer(h.id)}, events.Deps{
		JS: h.js, Index: h.ix, Archive: h.arch, Trust: h.trust, Now: cfg.Clock, Log: log.With("component", "events"),
		Registerer: h.reg, Progress: cfg.Progress,
	}); err != nil {
		return nil, err
	}
	if err := h.startAuth(ctx); err != nil {
		return nil, err
	}
	if err := h.startService(ctx); err != nil {
		return nil, err
	}
	// CRLs that changed while the hub was down: units whose certificate
	// they revoke lose their NATS credentials now.
	if err := h.svc.RevokeRevokedUnits(ctx); err != nil {
		h.log.Error("pki: revoking the NATS credentials of units with a revoked certificate", "err", err)
	}
	h.checkCRLs(ctx, cfg.Clock())
	if err := h.startWitness(ctx); err != nil {
		return nil, err
	}
	byCursor := cfg.NATS.Streams.UnitConsumers == broker.UnitConsumersCursor
	h.trim = broker.NewTrimmer(h.js, broker.TrimConfig{Cursors: byCursor}, log.With("component", "trim"))
	if byCursor {
		h.cursors = broker.NewCursors(h.nc, h.js, h.trim, log.With("component", "cursors"))
		stat := func(f func(broker.CursorStats) float64) func() float64 {
			return func() float64 { return f(h.cursors.Stats()) }
		}
		h.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "edx_hub_fetch_requests_total", Help: "Units' fetch requests (units reading by cursor)."},
				stat(func(s broker.CursorStats) float64 { return float64(s.Requests) })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "edx_hub_fetch_forwarded_total", Help: "Fetch requests the server answered from the stream (a batched direct get to the unit's inbox)."},
				stat(func(s broker.CursorStats) float64 { return float64(s.Forwarded) })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "edx_hub_fetch_invalid_total", Help: "Fetch requests refused (malformed, or naming an inbox not the unit's)."},
				stat(func(s broker.CursorStats) float64 { return float64(s.Invalid) })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "edx_hub_fetch_held_total", Help: "Fetch requests held to the next second (a unit over 20 answered requests a second)."},
				stat(func(s broker.CursorStats) float64 { return float64(s.Held) })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "edx_hub_fetch_orphaned_total", Help: "Fetch requests another hub kept when it went silent, ended so that their units ask again."},
				stat(func(s broker.CursorStats) float64 { return float64(s.Orphaned) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edx_hub_fetch_waiting", Help: "Units' fetch requests waiting for a message."},
				stat(func(s broker.CursorStats) float64 { return float64(s.Waiting) })),
		)
	}
	deps := pipeline.Deps{
		JS: h.js, Stage: h.stage, Archive: h.arch, Index: h.ix, Units: h.units, Events: h.events, Applied: h.follow, Sent: h.trim, Trust: h.trust, Hub: h.signer,
		Metrics: pipeline.NewMetrics(h.reg), Log: log.With("component", "pipeline"), Now: cfg.Clock,
	}
	if h.tlog != nil {
		deps.TLog = h.tlog
	}
	if h.pipe, err = pipeline.New(ctx, cfg.Pipeline, deps); err != nil {
		return nil, err
	}
	info := h.Info()
	b, _ := json.MarshalIndent(info, "", "  ")
	if err := os.WriteFile(filepath.Join(cfg.Data, "hub.json"), append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *Hub) startPKI() error {
	c := h.cfg.PKI
	if c.DevCA != "" {
		crlURL := c.DevCRLURL
		if crlURL == "" && h.httpLn != nil { // no listener: a reindex, which issues nothing
			crlURL = devCRLURL(h.httpLn.Addr())
		}
		if _, err := os.Stat(filepath.Join(c.DevCA, "ca", "root.key.pem")); errors.Is(err, os.ErrNotExist) {
			h.log.Info("creating a development CA", "dir", c.DevCA)
			if _, err := pki.InitCAWith(c.DevCA, pki.CAOptions{CRLURL: crlURL}); err != nil {
				return err
			}
		}
		ca, err := pki.OpenCA(c.DevCA)
		if err != nil {
			return err
		}
		if crlURL != "" && ca.CRLURL() != crlURL {
			if err := ca.SetCRLURL(crlURL); err != nil {
				return err
			}
			h.log.Info("pki: the development CA names this CRL distribution point in what it issues", "url", crlURL)
		}
		h.ca = ca
		if filepath.Clean(c.HubCert) == filepath.Clean(ca.HubCertPath()) {
			// Before anything is signed: a subject-only hub certificate
			// is replaced, and retired as of now (the cut-over).
			issued, retired, err := ca.EnsureHubProfile(h.cfg.Clock())
			if err != nil {
				return err
			}
			if issued != nil {
				h.log.Warn("pki: the hub's certificate lacked the hub signer profile: a new key and certificate were issued",
					"serial", issued.SerialNumber.Text(16), "cert", ca.HubCertPath())
			}
			for _, r := range retired {
				h.log.Warn("pki: a subject-only hub certificate was retired (revoked, superseded): its receipts signed before now stay valid",
					"serial", r.SerialNumber.Text(16))
			}
		}
	}
	trust, err := pki.LoadTrust(c.Trust)
	if err != nil {
		return fmt.Errorf("pki.trust: the trust roots %s: %w; pki.trust names the city's root certificates (PEM); "+
			"without pki.trust the hub makes a development CA under its data directory", c.Trust, err)
	}
	for _, crl := range c.CRLs {
		if err := trust.LoadCRL(crl); err != nil {
			return err
		}
	}
	if h.ca != nil {
		// The development CA's own CRL always applies.
		if err := trust.LoadCRL(h.ca.CRLPath()); err != nil {
			return err
		}
	}
	trust.SetCRLGrace(c.CRLGrace)
	h.trust = trust
	switch {
	case c.IssuingCA.Cert != "" || c.IssuingCA.Key != "":
		if h.issuer, err = loadIssuingCA(c.IssuingCA, trust); err != nil {
			return err
		}
	case h.ca != nil:
		h.issuer = h.ca.Issuer()
	}
	if h.signer, err = pki.LoadSigner(c.HubKey, c.HubCert); err != nil {
		return err
	}
	if !pki.IsHubReceiptSigner(h.signer.Cert()) {
		return fmt.Errorf("pki: hub_cert %s lacks the hub signer extended key usage %s (critical): receipts it signed would be refused; "+
			"have the CA issue the hub's certificate with it, and retire the old one (revoke it, reason superseded) when the hub switches, "+
			"so that the receipts it signed before stay valid", c.HubCert, pki.OIDExtKeyUsageHubSigner)
	}
	// The hub's own certificates teach the trust their CRL distribution
	// points.
	trust.CheckHub(h.signer.Cert(), h.signer.Chain[1:], h.cfg.Clock())
	return nil
}

// devCRLURL is where the hub serves the development CA's CRL, as reached at
// addr: http://host:port/pki/crl.der, with the host name when addr is a
// wildcard.
func devCRLURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + crlPath
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if name, err := os.Hostname(); err == nil && name != "" {
			host = name
		} else {
			host = "localhost"
		}
	}
	return "http://" + net.JoinHostPort(host, port) + crlPath
}

func (h *Hub) startNATS(ctx context.Context) error {
	var err error
	opts := []nats.Option{
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				h.log.Warn("nats: disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			h.log.Info("nats: reconnected", "url", c.ConnectedUrl())
			select {
			case h.reconnected <- struct{}{}:
			default:
			}
		}),
		// Asynchronous errors (a subscription too slow, whose messages
		// the client dropped: JetStream delivers them again after the
		// consumer's AckWait) are said, not swallowed.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			h.log.Warn("nats: asynchronous error", "subject", subject, "err", err)
		}),
	}
	if h.cfg.NATS.URL == "" {
		h.nats, err = broker.Start(ctx, h.cfg.NATS.Embedded, h.log, broker.WithUnitLimits(h.cfg.NATS.Units))
		if err != nil {
			return err
		}
		h.closers = append(h.closers, h.nats.Shutdown)
		h.keys = h.nats.Keys()
		h.accounts = h.nats
		h.conn, err = h.nats.ConnectHub(ctx, opts...)
		if err == nil {
			h.sys, err = h.nats.SystemConn(ctx) // the server closes it
		}
	} else {
		if h.keys, err = broker.LoadOrCreateKeys(h.cfg.NATS.KeysDir, broker.WithUnitLimits(h.cfg.NATS.Units)); err != nil {
			return err
		}
		var creds, stageCreds []byte
		if creds, err = readCreds("creds_file", h.cfg.NATS.CredsFile); err != nil {
			return err
		}
		if stageCreds, err = readCreds("stage_creds_file", h.cfg.NATS.StageCredsFile); err != nil {
			return err
		}
		if err := h.checkKeys(ctx, creds, stageCreds); err != nil {
			return err
		}
		if h.conn, err = broker.ConnectHub(ctx, h.cfg.NATS.URL, creds, stageCreds, opts...); err != nil {
			return h.natsConnectError(err, "credentials (creds_file, stage_creds_file)")
		}
		err = h.connectSystem(ctx, opts)
	}
	if err != nil {
		return err
	}
	h.closers = append(h.closers, h.conn.Close)
	h.nc, h.js = h.conn.NC, h.conn.JS
	if err := h.checkMaxPayload(); err != nil {
		return err
	}
	if err := h.ensureStreams(ctx); err != nil {
		return err
	}
	if h.stage, err = h.conn.Stage(ctx); err != nil {
		return err
	}
	// Units read large deliveries through the hub (broker.StageService).
	ss, err := broker.StartStageService(ctx, h.conn, h.log.With("component", "stage"))
	if err != nil {
		return err
	}
	h.closers = append(h.closers, ss.Stop)
	// NATS has no connection limit per user: the hub keeps each unit to its
	// own (broker.ConnLimiter).
	cl, err := broker.StartConnLimiter(ctx, h.sys, h.keys, h.cfg.NATS.Units.MaxConnectionsPerUnit, h.log.With("component", "nats-connections"))
	if err != nil {
		return err
	}
	h.closers = append(h.closers, cl.Stop)
	return nil
}

// connectSystem connects to an external cluster's system account, with a
// user the hub signs from the keys directory (the connection limiter uses
// the same connection), and pushes the UNITS account there: a server
// restarted with an older JWT in its configuration gets the revocations
// back.
func (h *Hub) connectSystem(ctx context.Context, opts []nats.Option) error {
	creds, err := h.keys.IssueSystemCreds()
	if err != nil {
		return err
	}
	if h.sys, err = broker.ConnectSystem(ctx, h.cfg.NATS.URL, creds, opts...); err != nil {
		return h.natsConnectError(err, "system account user (signed from keys_dir)")
	}
	h.closers = append(h.closers, h.sys.Close)
	h.accounts = h.sys
	if err := h.checkResolverAccounts(ctx); err != nil {
		return err
	}
	// The EDX and STAGE accounts too: their exports change with edx (the
	// pull requests' response threshold), and a server keeps the account
	// it was configured with (edx-hub nats-config) until one is pushed.
	for _, a := range []struct{ name, jwt string }{
		{"EDX", h.keys.AccountJWT()}, {"STAGE", h.keys.StageAccountJWT()}, {"UNITS", h.keys.UnitsAccountJWT()},
	} {
		switch err := h.sys.PushAccount(ctx, a.jwt); {
		case errors.Is(err, broker.ErrAccountNotLoaded):
			h.log.Warn("nats: the servers have a MEMORY resolver: a unit's revoked credentials are accepted again after a server restart "+
				"until the hub pushes the account again; use a full resolver (edx-hub nats-config)", "account", a.name, "err", err)
		case err != nil:
			return fmt.Errorf("nats: push the %s account through the system account: %w", a.name, err)
		}
	}
	return nil
}

func (h *Hub) startS3(ctx context.Context) error {
	ac := h.cfg.S3.Archive
	if ac.Endpoint == "" {
		secret, err := loadOrCreateSecret(filepath.Join(h.cfg.Data, "s3", "secret.key"))
		if err != nil {
			return err
		}
		h.s3, err = s3embed.Start(ctx, s3embed.Config{Dir: filepath.Join(h.cfg.Data, "s3"), Addr: h.cfg.S3.EmbeddedListen,
			AccessKey: "edx-hub", SecretKey: secret}, h.log.With("component", "s3"))
		if err != nil {
			return err
		}
		s3 := h.s3
		h.closers = append(h.closers, func() { s3.Close() })
		ac.Endpoint, ac.AccessKey, ac.SecretKey = h.s3.Endpoint(), "edx-hub", secret
		h.cfg.S3.Archive = ac
	}
	var err error
	if h.arch, err = archive.New(ctx, ac, h.log.With("component", "archive")); err != nil {
		return h.s3Error(err)
	}
	if h.reg != nil { // nil in a reindex
		h.reg.MustRegister(h.arch.Collector())
	}
	return nil
}

// Info reports where everything is.
func (h *Hub) Info() Info {
	i := Info{Data: h.cfg.Data, TrustRoots: h.cfg.PKI.Trust, DevCA: h.cfg.PKI.DevCA,
		AdminTokenFile: filepath.Join(h.cfg.Data, "admin.token"), S3Endpoint: h.cfg.S3.Archive.Endpoint,
		Bucket: h.cfg.S3.Archive.Bucket, NATSURL: h.cfg.NATS.URL}
	if i.Bucket == "" {
		i.Bucket = archive.DefaultBucket
	}
	if h.nats != nil {
		i.NATSURL = h.nats.ClientURL()
	}
	if h.httpLn != nil {
		i.HTTP = "http://" + h.httpLn.Addr().String()
	}
	i.Log = h.LogInfo()
	i.DataFS = h.dataFS
	return i
}

// checkDataFS logs the filesystem of the data directory, and warns of an
// ext3 or ext4 without a journal (package fsinfo says why).
func (h *Hub) checkDataFS() {
	fs, err := fsinfo.Of(h.cfg.Data)
	if err != nil {
		h.log.Debug("data directory: filesystem not known", "dir", h.cfg.Data, "err", err)
		return
	}
	h.dataFS = &fs
	if fs.Unjournaled() {
		h.log.Warn("data directory on a filesystem without a journal: after a crash it needs a check (fsck) before the hub's store and archive on it can be trusted, and creating files there slows down after many deletions; put the data directory on a journaled filesystem",
			"dir", h.cfg.Data, "filesystem", fs.String())
		return
	}
	h.log.Info("data directory", "dir", h.cfg.Data, "filesystem", fs.String())
}

// LogInfo describes the hub's transparency log; nil without one.
func (h *Hub) LogInfo() *LogInfo {
	if h.tlog == nil {
		return nil
	}
	li := &LogInfo{Origin: h.tlog.Origin(), VKey: h.tlogVKey, MirrorPrefix: h.logCfg.MirrorPrefix, TimestampInterval: h.logCfg.TimestampInterval,
		TSARoots: h.cfg.TSA.Roots}
	if h.httpLn != nil {
		li.URL = "http://" + h.httpLn.Addr().String() + logPath
	}
	return li
}

// Log returns the hub's transparency log (nil with tlog.disabled), for
// tests and the witnesses' endpoints.
func (h *Hub) Log() *tlog.Log { return h.tlog }

// AdminToken returns the bearer token of the admin API.
func (h *Hub) AdminToken() string { return h.token }

// Registry returns the Prometheus registry (for benchmarks and tests).
func (h *Hub) Registry() *prometheus.Registry { return h.reg }

// Run serves HTTP, follows the decision events into the index (a new hub
// first rebuilds it from the archive, serving meanwhile and reporting
// itself not ready) and, once the index holds the units, processes
// documents, until ctx is done; then it shuts down in order: stop taking
// HTTP requests, let the pipeline finish the messages in progress, stop
// following the events, close NATS, the index and the embedded servers.
func (h *Hub) Run(ctx context.Context) error {
	if h.cursors != nil {
		// Until ctx is done, and then it ends the requests that wait.
		if err := h.cursors.Start(ctx); err != nil {
			return err
		}
	}
	srv := &http.Server{
		Handler:           h.handler(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	httpErr := make(chan error, 1)
	go func() {
		if err := srv.Serve(h.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			httpErr <- err
		}
	}()
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The follower outlives the pipeline: messages in progress wait for
	// their events to be applied.
	fctx, fcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer fcancel()
	followDone := make(chan struct{})
	go func() { defer close(followDone); h.follow.Run(fctx) }()
	pipeDone := make(chan error, 1)
	go func() {
		select {
		case <-h.follow.Ready():
		case <-pctx.Done():
			pipeDone <- nil
			return
		}
		pipeDone <- h.pipe.Run(pctx)
	}()
	var background sync.WaitGroup
	background.Go(func() { h.recover(pctx) })
	background.Go(func() { h.keepUnitConsumers(pctx) })
	background.Go(func() { h.trim.Run(pctx) })
	background.Go(func() { h.watchCRLs(pctx) })
	background.Go(func() { h.watchRevocations(pctx) })
	if h.tlog != nil {
		background.Go(func() { h.tlog.Run(pctx) })
	}
	if h.witness != nil {
		background.Go(func() { h.witness.run(pctx) })
	}
	if !h.cfg.PKI.CRLFetch.Disabled {
		background.Go(func() { h.watchDistributionPoints(pctx) })
	}
	var (
		err      error
		pipeErr  error
		pipeOver bool
	)
	select {
	case <-ctx.Done():
	case err = <-httpErr:
	case pipeErr = <-pipeDone:
		pipeOver = true
	}
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer scancel()
	srv.Shutdown(sctx)
	cancel()
	if !pipeOver {
		pipeErr = <-pipeDone
	}
	// A stop asked for while the pipeline was still starting is no error.
	if pipeErr != nil && err == nil && !(ctx.Err() != nil && errors.Is(pipeErr, context.Canceled)) {
		err = pipeErr
	}
	fcancel()
	<-followDone
	background.Wait()
	h.Close()
	return err
}

// Close stops every component in reverse order of start.
func (h *Hub) Close() {
	for i := len(h.closers) - 1; i >= 0; i-- {
		h.closers[i]()
	}
	h.closers = nil
}

// IndexConsumer is the name of a hub's durable consumer of the decision
// events, from its stable id.
func IndexConsumer(hubID string) string { return "edx-index-" + hubID }

// loadOrCreateID reads the hub's stable id, creating it at first start. It
// names the hub's own consumer of the decision events: two hubs must never
// share a data directory (nor a copy of one).
func loadOrCreateID(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" || strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567abcdefghijklmnopqrstuvwxyz0123456789-") != "" || len(id) > 64 {
			return "", fmt.Errorf("hub id %s: %q: want letters, digits and '-'", path, id)
		}
		return id, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	id := rand.Text()
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		return "", err
	}
	return id, nil
}

// loadOrCreateSecret reads a secret file, creating it (0600) with a random
// value when missing.
func loadOrCreateSecret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	s := rand.Text()
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", err
	}
	return s, nil
}
