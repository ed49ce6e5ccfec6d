package hub

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/pki"
)

// crlState is what the hub knows of its CRLs' health: what /readyz reports
// and the metrics show.
type crlState struct {
	stale         prometheus.Gauge
	next          *prometheus.GaugeVec
	reloads       prometheus.Counter
	errors        prometheus.Counter
	hubExpiry     prometheus.Gauge
	fetches       *prometheus.CounterVec
	archived      prometheus.Counter
	archiveErrors prometheus.Counter

	archiveMu   sync.Mutex
	archivedSHA map[string]bool // CRLs stored in the archive (or found there) by this process

	mu        sync.Mutex
	staleNow  []pki.CRLInfo
	lastError error
	loggedAt  time.Time // when the stale CRLs were last logged
	certAt    time.Time // when the hub certificate's end was last logged
}

func newCRLState(reg prometheus.Registerer) *crlState {
	c := &crlState{
		stale: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edx_hub_crl_stale",
			Help: "CRLs in force past their nextUpdate and the grace: submissions under their issuers are held."}),
		next: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edx_hub_crl_next_update_timestamp_seconds",
			Help: "The nextUpdate of each CRL in force, by issuer."}, []string{"issuer"}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{Name: "edx_hub_crl_reloads_total",
			Help: "Times a changed CRL file was read again."}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "edx_hub_crl_reload_errors_total",
			Help: "CRL files that could not be read or parsed (the CRL in force is kept)."}),
		hubExpiry: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edx_hub_certificate_not_after_timestamp_seconds",
			Help: "The end of the hub's receipt-signing certificate."}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edx_hub_crl_fetches_total",
			Help: "CRLs fetched from distribution points, by result: new (a new CRL in force), same, error (the CRL in force is kept)."},
			[]string{"result"}),
		archived: prometheus.NewCounter(prometheus.CounterOpts{Name: "edx_hub_crl_archived_total",
			Help: "CRLs in force written to the archive (crl/<sha256>.crl), each once."}),
		archiveErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "edx_hub_crl_archive_errors_total",
			Help: "Attempts to archive a CRL that failed (tried again at the next CRL check)."}),
		archivedSHA: map[string]bool{},
	}
	if reg != nil {
		reg.MustRegister(c.stale, c.next, c.reloads, c.errors, c.hubExpiry, c.fetches, c.archived, c.archiveErrors)
	}
	return c
}

// ready is the /readyz check "crl": an error while a CRL in force is stale.
func (c *crlState) ready(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.staleNow) == 0 {
		return nil
	}
	var parts []string
	for _, s := range c.staleNow {
		where := s.Path
		if where == "" {
			where = s.Issuer
		}
		parts = append(parts, fmt.Sprintf("%s (nextUpdate %s)", where, s.NextUpdate.UTC().Format(time.RFC3339)))
	}
	return fmt.Errorf("stale: %s; documents under these issuers are held until a current CRL is in place", strings.Join(parts, ", "))
}

// watchCRLs checks the CRLs every pki.crl_poll until ctx is done.
func (h *Hub) watchCRLs(ctx context.Context) {
	t := time.NewTicker(h.cfg.PKI.CRLPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.checkCRLs(ctx, h.cfg.Clock())
	}
}

// checkCRLs re-signs the development CA's CRL before it goes stale, reads
// changed CRL files, revokes the NATS credentials of units whose
// certificate a new CRL revokes, archives every CRL in force not archived
// yet, and records (and loudly logs) stale CRLs.
func (h *Hub) checkCRLs(ctx context.Context, now time.Time) {
	c := h.crl
	if h.ca != nil {
		if did, err := h.ca.RefreshCRL(now, pki.CRLValidity/2); err != nil {
			h.log.Error("pki: re-signing the development CA's CRL failed", "err", err)
		} else if did {
			h.log.Info("pki: the development CA's CRL was re-signed", "crl", h.ca.CRLPath())
		}
	}
	changed, err := h.trust.Refresh()
	if err != nil {
		c.errors.Inc()
		h.log.Error("pki: a CRL could not be read again; the one in force is kept", "err", err)
	}
	c.mu.Lock()
	c.lastError = err
	c.mu.Unlock()
	if changed {
		c.reloads.Inc()
		h.log.Info("pki: CRLs reloaded")
		if err := h.revokeRevokedUnits(ctx); err != nil {
			h.log.Error("pki: revoking the NATS credentials of units with a revoked certificate", "err", err)
		}
	}
	h.archiveCRLs(ctx, now)
	h.recordCRLs(now)
}

// watchDistributionPoints fetches the CRLs of the distribution points the
// trust learned (from its bundle, the hub's certificate and every chain it
// verified) in the background until ctx is done: at once for a new URL,
// again when a CRL reaches its nextUpdate, Retry after a failure. A new CRL
// is applied at once (revoking the NATS credentials of units it revokes)
// and archived; failures are logged and counted, and never hold anything
// up.
func (h *Hub) watchDistributionPoints(ctx context.Context) {
	h.trust.WatchDistributionPoints(ctx, h.cfg.PKI.CRLPoll, h.cfg.PKI.CRLFetch, func(rs []pki.FetchResult) {
		changed := false
		for _, r := range rs {
			switch {
			case r.Err != nil:
				h.crl.fetches.WithLabelValues("error").Inc()
				h.log.Warn("pki: fetching a CRL from its distribution point failed; the CRLs in force are kept", "url", r.URL, "err", r.Err)
			case r.Changed:
				changed = true
				h.crl.fetches.WithLabelValues("new").Inc()
				h.log.Info("pki: CRL fetched from its distribution point", "url", r.URL, "sha256", r.SHA256)
			default:
				h.crl.fetches.WithLabelValues("same").Inc()
			}
		}
		if !changed {
			return
		}
		if err := h.revokeRevokedUnits(ctx); err != nil {
			h.log.Error("pki: revoking the NATS credentials of units with a revoked certificate", "err", err)
		}
		now := h.cfg.Clock()
		h.archiveCRLs(ctx, now)
		h.recordCRLs(now)
	})
}

// archiveCRLs writes every CRL in force that this process has not archived
// yet to the archive, under its SHA-256 (projection.CRLKey): content-addressed
// and write-once, so each CRL is stored once, however often it is seen, and
// "valid at acceptance" can be shown from the archive years later. A
// failure is logged and counted, and tried again at the next check.
func (h *Hub) archiveCRLs(ctx context.Context, now time.Time) {
	c := h.crl
	c.archiveMu.Lock()
	defer c.archiveMu.Unlock()
	for _, info := range h.trust.CRLs(now) {
		if c.archivedSHA[info.SHA256] {
			continue
		}
		key := projection.CRLKey(info.SHA256)
		obj, err := h.arch.Put(ctx, key, info.DER, "application/pkix-crl", nil)
		if err != nil {
			c.archiveErrors.Inc()
			h.log.Error("pki: archiving a CRL in force failed; tried again at the next check", "key", key, "issuer", info.Issuer, "err", err)
			continue
		}
		c.archivedSHA[info.SHA256] = true
		if !obj.Existed {
			c.archived.Inc()
			h.log.Info("pki: CRL archived", "key", key, "issuer", info.Issuer, "number", info.Number, "source", info.Path+info.URL)
		}
	}
}

// recordCRLs updates the metrics and the readiness state from the CRLs in
// force.
func (h *Hub) recordCRLs(now time.Time) {
	c := h.crl
	infos := h.trust.CRLs(now)
	var stale []pki.CRLInfo
	c.next.Reset()
	for _, i := range infos {
		if !i.NextUpdate.IsZero() {
			c.next.WithLabelValues(i.Issuer).Set(float64(i.NextUpdate.Unix()))
		}
		if i.Stale {
			stale = append(stale, i)
		}
	}
	c.stale.Set(float64(len(stale)))
	c.hubExpiry.Set(float64(h.signer.Cert().NotAfter.Unix()))
	c.mu.Lock()
	c.staleNow = stale
	logIt := len(stale) > 0 && now.Sub(c.loggedAt) >= time.Minute
	if logIt {
		c.loggedAt = now
	}
	if len(stale) == 0 {
		c.loggedAt = time.Time{}
	}
	warnCert := time.Until(h.signer.Cert().NotAfter) < 30*24*time.Hour && now.Sub(c.certAt) >= time.Hour
	if warnCert {
		c.certAt = now
	}
	c.mu.Unlock()
	if logIt {
		for _, s := range stale {
			h.log.Error("pki: CRL is stale: documents signed under its issuer are held, not accepted, until a current CRL is in place",
				"crl", s.Path, "issuer", s.Issuer, "next_update", s.NextUpdate, "grace", h.cfg.PKI.CRLGrace)
		}
	}
	if warnCert {
		left := time.Until(h.signer.Cert().NotAfter)
		h.log.Warn("pki: the hub's certificate ends soon: receipts signed after it are invalid (edx pki rotate-hub, then restart)",
			"not_after", h.signer.Cert().NotAfter, "left", left.Round(time.Hour))
	}
}
