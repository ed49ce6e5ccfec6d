package hub

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edxhub/edx/pkg/pki"
)

// crlState is what the hub knows of its CRLs' health: what /readyz reports
// and the metrics show.
type crlState struct {
	stale     prometheus.Gauge
	next      *prometheus.GaugeVec
	reloads   prometheus.Counter
	errors    prometheus.Counter
	hubExpiry prometheus.Gauge

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
	}
	if reg != nil {
		reg.MustRegister(c.stale, c.next, c.reloads, c.errors, c.hubExpiry)
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
// certificate a new CRL revokes, and records (and loudly logs) stale CRLs.
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
	h.recordCRLs(now)
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
