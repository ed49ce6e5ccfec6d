// Package agent is a unit's edx agent: it takes documents from the agency's
// document system (HTTP API, outbox folder), signs and spools them, sends
// them to the hub over NATS JetStream, receives the unit's deliveries,
// verifies them again, keeps them in the inbox, and carries statuses both
// ways. cmd/edx-agent reads the configuration and calls New and Run.
//
// Packages: spool (the durable outbox), outbox (check, sign, spool), inbox
// (received documents), api (HTTP), folders (outbox/sent/failed folders),
// webhook (events to the document system), packets (edXML in and out), axis
// (the national axis's client protocol). This package holds the
// configuration and the NATS side.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edxhub/edx/agent/api"
	"github.com/edxhub/edx/agent/axis"
	"github.com/edxhub/edx/agent/bridge"
	"github.com/edxhub/edx/agent/folders"
	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/agent/logwatch"
	"github.com/edxhub/edx/agent/outbox"
	"github.com/edxhub/edx/agent/packets"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/agent/webhook"
	pkgaxis "github.com/edxhub/edx/pkg/axis"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
)

// Agent is a running agent.
type Agent struct {
	cfg     Config
	sec     *Secrets
	log     *slog.Logger
	spool   *spool.Spool
	inbox   *inbox.Store
	outbox  *outbox.Outbox
	packets *packets.Exchange
	folders *folders.Watcher // nil when disabled
	bridge  *bridge.Bridge   // nil unless this unit is the gateway to an upstream axis
	hook    *webhook.Notifier
	reg     *prometheus.Registry
	m       *metrics
	ln      net.Listener
	handler http.Handler
	watch   *logwatch.Watcher // the witness of the hubs' logs; nil when disabled
	// unknownLogs are the origins of logs not learned, each warned of once.
	unknownLogs sync.Map
	wm          *witnessMetrics
	limits      container.Limits

	wakeSend, wakeStatus chan struct{}
	wakeWitness          chan struct{} // after a reconnection: check the newest checkpoint

	closeOnce sync.Once
	mu        sync.Mutex
	link      *link // the current NATS connection, nil while there is none
	// hooks for tests: the NATS options added to every connection.
	natsOpts []natsOption
}

// New checks the configuration, opens the spool and the inbox and binds the
// API's address; Run starts the rest.
func New(ctx context.Context, cfg Config, log *slog.Logger) (a *Agent, err error) {
	if err := cfg.SetDefaults(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sec, err := cfg.Check()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a = &Agent{cfg: cfg, sec: sec, log: log, reg: prometheus.NewRegistry(),
		wakeSend: make(chan struct{}, 1), wakeStatus: make(chan struct{}, 1), wakeWitness: make(chan struct{}, 1)}
	started := a // a is nil once an error is returned
	defer func() {
		if err != nil {
			started.Close()
		}
	}()
	a.limits = container.DefaultLimits
	a.limits.MaxSize = cfg.Send.MaxDocumentBytes
	if err := os.MkdirAll(cfg.Data, 0o750); err != nil {
		return nil, err
	}
	if a.spool, err = spool.Open(ctx, filepath.Join(cfg.Data, "spool"), log.With("component", "spool")); err != nil {
		return nil, err
	}
	if a.inbox, err = inbox.Open(ctx, inbox.Config{
		Dir:        cfg.Folders.Inbox,
		DB:         filepath.Join(cfg.Data, "state", "inbox.db"),
		Quarantine: filepath.Join(cfg.Data, "quarantine"),
		EdXML:      cfg.DMS.Format == FormatEdXML,
	}, log.With("component", "inbox")); err != nil {
		return nil, err
	}
	if a.outbox, err = outbox.New(cfg.Unit, sec.Signer, sec.Trust, a.spool, cfg.Send.MaxDocumentBytes); err != nil {
		return nil, err
	}
	tmp := filepath.Join(cfg.Data, "tmp")
	if a.packets, err = packets.New(packets.Config{TempDir: tmp, UnitName: unitName(sec)}, a.outbox, a.spool, a.inbox); err != nil {
		return nil, err
	}
	var ax *axis.Server
	if cfg.Axis.Enabled {
		if ax, err = axis.New(cfg.Axis, sec.AxisSecrets, a.packets, tmp, log.With("component", "axis")); err != nil {
			return nil, err
		}
		ax.Spooled, ax.StatusAdded = a.kickSend, a.kickStatus
	}
	if cfg.Folders.Enabled {
		if a.folders, err = folders.New(folders.Config{Outbox: cfg.Folders.Outbox, Sent: cfg.Folders.Sent, Failed: cfg.Folders.Failed,
			Interval: cfg.Folders.Interval}, a.outbox, log.With("component", "folders")); err != nil {
			return nil, err
		}
		a.folders.Spooled = a.kickSend
		a.folders.Packets = a.packets
		a.folders.StatusAdded = a.kickStatus
	}
	for _, w := range sec.Warnings {
		log.Warn("agent: " + w)
	}
	a.hook = webhook.New(cfg.Webhook, sec.WebhookSecret, log.With("component", "webhook"))
	a.m = newMetrics(a.reg, a)
	if cfg.Bridge.Enabled {
		if a.bridge, err = bridge.New(ctx, cfg.Bridge, sec.BridgeSecret, cfg.Data, bridge.Deps{
			Unit: cfg.Unit, Exchange: a.packets, Spool: a.spool, Publish: a.relayStatus, Spooled: a.kickSend, MaxPacket: cfg.Send.MaxDocumentBytes,
			Log:     log.With("component", "bridge"),
			Observe: func(event string) { a.m.bridge.WithLabelValues(event).Inc() },
		}); err != nil {
			return nil, err
		}
	}
	if err := a.openWitness(ctx); err != nil {
		return nil, err
	}
	if ax != nil {
		ax.Observe = func(call string, code pkgaxis.Code) {
			a.m.axisCalls.WithLabelValues(call, strconv.Itoa(int(code))).Inc()
		}
	}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if a.handler, err = api.New(api.Deps{
		Outbox: a.outbox, Documents: a.spool, Inbox: a.inbox, Packets: a.packets, Token: sec.Token,
		Ready:       a.ready,
		Metrics:     promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}),
		Spooled:     a.kickSend,
		StatusAdded: a.kickStatus,
		Log:         log.With("component", "api"),
		Axis:        axisHandler(ax),
		AxisPath:    cfg.Axis.Path,
	}); err != nil {
		return nil, err
	}
	if a.ln, err = net.Listen("tcp", cfg.API.Listen); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	return a, nil
}

// Addr is the API's address.
func (a *Agent) Addr() string { return a.ln.Addr().String() }

// Unit is the agent's unit.
func (a *Agent) Unit() document.UnitID { return a.cfg.Unit }

// Handler is the API (for tests).
func (a *Agent) Handler() http.Handler { return a.handler }

// Registry is the Prometheus registry.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (a *Agent) kickSend()   { kick(a.wakeSend) }
func (a *Agent) kickStatus() { kick(a.wakeStatus) }

func (a *Agent) ready(ctx context.Context) (map[string]string, error) {
	detail := map[string]string{"unit": string(a.cfg.Unit), "nats": "disconnected",
		"nats_creds": a.credsState(), "crl": a.crlState(), "witness": a.witnessState(ctx)}
	if l := a.current(); l != nil && l.nc.IsConnected() {
		detail["nats"] = "connected"
	}
	if err := a.spool.Ping(ctx); err != nil {
		return detail, fmt.Errorf("spool: %w", err)
	}
	if err := a.inbox.Ping(ctx); err != nil {
		return detail, fmt.Errorf("inbox: %w", err)
	}
	if a.bridge != nil {
		n, err := a.bridge.Ready(ctx)
		if err != nil {
			return detail, err
		}
		for k, v := range n {
			detail["bridge_"+k] = strconv.Itoa(v)
		}
	}
	return detail, nil
}

// Run serves the API, scans the outbox folder and talks to the hub until
// ctx is done. Then it shuts down in this order: the API stops taking
// requests (those in progress finish, up to 15s), the outbox folder scan
// stops, the NATS loops finish the message in hand and stop, the NATS
// connection drains, and the stores close. Nothing spooled is lost at any
// point: what was not sent is sent after the next start.
func (a *Agent) Run(ctx context.Context) error {
	defer a.Close()
	srv := &http.Server{Handler: a.handler, ReadHeaderTimeout: 10 * time.Second}
	httpErr := make(chan error, 1)
	go func() {
		if err := srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			httpErr <- err
		}
		close(httpErr)
	}()
	a.log.Info("agent started", "unit", a.cfg.Unit, "api", "http://"+a.Addr(), "nats", a.cfg.NATS.URL, "data", a.cfg.Data)

	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	var wg sync.WaitGroup
	if a.folders != nil {
		wg.Go(func() { a.folders.Run(work) })
	}
	hookCtx, stopHook := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHook()
	var hookWG sync.WaitGroup
	hookWG.Go(func() { a.hook.Run(hookCtx) })
	wg.Go(func() { a.runNATS(work) })
	if a.bridge != nil {
		wg.Go(func() { a.bridge.Run(work) })
	}
	wg.Go(func() { a.watchTrust(work) })
	wg.Go(func() { a.watchCreds(work) })

	var err error
	select {
	case <-ctx.Done():
	case err = <-httpErr:
		err = fmt.Errorf("api: %w", err)
	}
	a.log.Info("agent stopping")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	if serr := srv.Shutdown(sctx); serr != nil {
		a.log.Warn("api shutdown", "err", serr)
	}
	cancel()
	stopWork()
	wg.Wait()
	stopHook()
	hookWG.Wait()
	a.log.Info("agent stopped")
	return err
}

// Close releases what New opened (Run calls it).
func (a *Agent) Close() { a.closeOnce.Do(a.close) }

func (a *Agent) close() {
	a.mu.Lock()
	l := a.link
	a.link = nil
	a.mu.Unlock()
	if l != nil {
		l.close()
	}
	if a.ln != nil {
		a.ln.Close()
	}
	if a.bridge != nil {
		a.bridge.Close()
	}
	if a.inbox != nil {
		a.inbox.Close()
	}
	if a.watch != nil {
		a.watch.Close()
	}
	if a.spool != nil {
		a.spool.Close()
	}
}

func documentID(s string) document.ID { return document.ID(s) }

// axisHandler is the axis server as a handler, nil when there is none.
func axisHandler(ax *axis.Server) http.Handler {
	if ax == nil {
		return nil
	}
	return ax
}

// unitName is the unit's name as its certificate gives it.
func unitName(sec *Secrets) string {
	c := sec.Signer.Cert()
	if len(c.Subject.Organization) > 0 {
		return c.Subject.Organization[0]
	}
	return c.Subject.CommonName
}
