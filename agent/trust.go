package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edxhub/edx/pkg/reason"
)

// watchTrust reads the CRL files again when they change (every
// trust.crl_poll) and says loudly when one is stale: deliveries signed under
// its issuer then wait, retried, until a current CRL is in place.
func (a *Agent) watchTrust(ctx context.Context) {
	if len(a.cfg.Trust.CRLs) == 0 {
		return
	}
	var loggedAt time.Time
	a.sec.Trust.Watch(ctx, a.cfg.Trust.CRLPoll, func(changed bool, err error) {
		if err != nil {
			a.log.Error("trust: a CRL could not be read again; the one in force is kept", "err", err)
		}
		if changed {
			a.log.Info("trust: CRLs reloaded")
		}
		now := time.Now()
		stale := a.sec.Trust.StaleCRLs(now)
		a.m.crlStale.Set(float64(len(stale)))
		if len(stale) == 0 {
			loggedAt = time.Time{}
			return
		}
		if now.Sub(loggedAt) < time.Minute {
			return
		}
		loggedAt = now
		for _, s := range stale {
			a.log.Error("trust: CRL is stale: deliveries signed under its issuer wait until a current CRL is in place",
				"crl", s.Path, "issuer", s.Issuer, "next_update", s.NextUpdate, "grace", a.cfg.Trust.CRLGrace)
		}
	})
}

// watchCreds logs when the NATS credentials expire, at start, and warns
// (every day) once the expiry is within nats.creds_warn.
func (a *Agent) watchCreds(ctx context.Context) {
	exp := a.sec.CredsExpire
	if exp.IsZero() {
		a.log.Warn("nats: the unit's credentials do not expire; ask the hub for new ones (edx unit rotate)")
		return
	}
	a.log.Info("nats: the unit's credentials expire", "at", exp)
	t := time.NewTicker(24 * time.Hour)
	defer t.Stop()
	for {
		switch left := time.Until(exp); {
		case left <= 0:
			a.log.Error("nats: the unit's credentials have EXPIRED: the hub refuses them; install new ones (edx unit rotate on the hub)", "expired_at", exp)
		case left < a.cfg.NATS.CredsWarn:
			a.log.Warn("nats: the unit's credentials expire soon; install new ones (edx unit rotate on the hub) before then",
				"at", exp, "left", left.Round(time.Hour))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// credsState is the readiness detail of the credentials' expiry.
func (a *Agent) credsState() string {
	exp := a.sec.CredsExpire
	switch left := time.Until(exp); {
	case exp.IsZero():
		return "no expiry"
	case left <= 0:
		return "EXPIRED at " + exp.Format(time.RFC3339)
	case left < a.cfg.NATS.CredsWarn:
		return fmt.Sprintf("expire soon: %s (in %s)", exp.Format(time.RFC3339), left.Round(time.Hour))
	}
	return "expire " + exp.Format(time.RFC3339)
}

// crlState is the readiness detail of the CRLs.
func (a *Agent) crlState() string {
	stale := a.sec.Trust.StaleCRLs(time.Now())
	if len(stale) == 0 {
		return "ok"
	}
	var parts []string
	for _, s := range stale {
		parts = append(parts, fmt.Sprintf("%s (nextUpdate %s)", s.Path, s.NextUpdate.Format(time.RFC3339)))
	}
	return "stale: " + strings.Join(parts, ", ")
}

// heldReasons are the reasons that make a delivery wait instead of going to
// quarantine: about the agent's trust state, not the document.
func heldReasons(rs reason.List) reason.List {
	var out reason.List
	for _, r := range rs {
		if r.Code.Transient() {
			out = append(out, r)
		}
	}
	return out
}

func credsExpiryGauge(a *Agent) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edx_agent_nats_creds_expiry_timestamp_seconds",
		Help: "When the unit's NATS credentials expire (0: never)."}, func() float64 {
		if a.sec.CredsExpire.IsZero() {
			return 0
		}
		return float64(a.sec.CredsExpire.Unix())
	})
}
