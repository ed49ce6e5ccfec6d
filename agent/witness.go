package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edxhub/edx/agent/logwatch"
	"github.com/edxhub/edx/agent/webhook"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// witnessMetrics are the witness's metrics.
type witnessMetrics struct {
	size        *prometheus.GaugeVec
	checkpoints *prometheus.CounterVec
	alerts      prometheus.Counter
}

func newWitnessMetrics(reg prometheus.Registerer) *witnessMetrics {
	m := &witnessMetrics{
		size: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edx_agent_witness_size",
			Help: "The size of the last checkpoint of each hub's log (by origin) this agent verified."}, []string{"origin"}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edx_agent_witness_checkpoints_total",
			Help: "Checkpoints of the hubs' logs checked, by result: cosigned, stale (older, consistent), inconsistent (not cosigned: an alert), " +
				"unknown (a log whose key the agent could not learn), error (not checked: retried)."},
			[]string{"result"}),
		alerts: prometheus.NewCounter(prometheus.CounterOpts{Name: "edx_agent_witness_alerts_total",
			Help: "Inconsistencies of the hubs' logs this agent saw (a fork, a rewrite, a rollback, a bad signature), each once: see the evidence directory."}),
	}
	reg.MustRegister(m.size, m.checkpoints, m.alerts)
	return m
}

// openWitness opens the agent's witness of the hubs' logs, unless disabled.
func (a *Agent) openWitness(ctx context.Context) error {
	if a.cfg.Witness.Disabled {
		return nil
	}
	w, err := logwatch.Open(ctx, logwatch.Config{Unit: a.cfg.Unit, KeyFile: a.cfg.Witness.KeyFile, LogKeys: a.sec.LogKeys, Trust: a.sec.Trust,
		DB: filepath.Join(a.cfg.Data, "state", "witness.db"), EvidenceDir: a.evidenceDir()})
	if err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	a.watch = w
	a.wm = newWitnessMetrics(a.reg)
	if logs, err := w.Logs(ctx); err == nil {
		for _, l := range logs {
			a.wm.size.WithLabelValues(l.Origin).Set(float64(l.Size))
		}
	}
	return nil
}

// evidenceDir is where the witness keeps the evidence of an inconsistent
// log.
func (a *Agent) evidenceDir() string { return filepath.Join(a.cfg.Data, "witness-evidence") }

// witness checks every checkpoint the hubs offer (protocol.SubjectCheckpoint)
// and, every witness.poll and after each (re)connection, the newest one of
// each log it knows, until ctx is done. It first registers the unit's
// witness key (by the unit's signed statement), and again at each poll
// until a hub has it.
func (a *Agent) witness(ctx context.Context, l *link) {
	if a.watch == nil {
		return
	}
	svc := &protocol.Witness{NC: l.nc, Unit: a.cfg.Unit}
	offered := make(chan []byte, 16)
	sub, err := l.nc.Subscribe(protocol.SubjectCheckpoint, func(m *nats.Msg) {
		select {
		case offered <- m.Data:
		default: // the poll catches up
		}
	})
	if err != nil {
		a.log.Warn("witness: cannot hear the checkpoints the hubs offer; polling only", "err", err)
	} else {
		defer sub.Unsubscribe()
	}
	tick := time.NewTicker(a.cfg.Witness.Poll)
	defer tick.Stop()
	var once sync.Once
	registered, poll := false, true
	for {
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		if !registered && poll && len(a.watch.Origins()) > 0 {
			err := a.watch.Register(rctx, svc, a.sec.Signer)
			switch {
			case err == nil:
				registered = true
				a.log.Info("witness: the unit's witness key is registered with the hub", "key", a.watch.VKey())
			case protocol.IsWitnessRefusal(err, reason.WitnessKeyMismatch):
				a.log.Error("witness: the hub holds another witness key for this unit: its cosignatures are refused until the operator "+
					"registers this one (edx unit rotate --witness-key with the key below), or witness.key_file names the registered key",
					"key", a.watch.VKey(), "err", err)
			case ctx.Err() == nil:
				once.Do(func() {
					a.log.Warn("witness: the hub did not answer the registration of the witness key (a hub without the witness service, "+
						"or NATS credentials issued before it: edx unit rotate issues new ones); trying again every witness.poll",
						"err", err)
				})
			}
		}
		if poll {
			for _, o := range a.watch.Sync(rctx, svc) {
				a.witnessed(o.Origin, o.Result, o.Alert, o.Err)
			}
		}
		cancel()
		poll = false
		select {
		case <-ctx.Done():
			return
		case raw := <-offered:
			rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			res, alert, err := a.watch.Check(rctx, raw, svc)
			cancel()
			a.witnessed(logwatch.OriginOf(raw), res, alert, err)
			// A log learned now: the registration may wait for it.
			poll = !registered && res != nil && res.Learned
		case <-tick.C:
			poll = true
		case <-a.wakeWitness:
			poll = true
		}
	}
}

// witnessed logs, counts and reports what a check of a log did.
func (a *Agent) witnessed(origin string, res *logwatch.Result, alert *logwatch.Alert, err error) {
	switch {
	case alert != nil:
		a.wm.checkpoints.WithLabelValues("inconsistent").Inc()
		a.wm.alerts.Inc()
		a.log.Error("witness: a hub's log is inconsistent: the checkpoint is NOT cosigned; the evidence is kept", "origin", alert.Origin,
			"kind", alert.Kind, "old_size", alert.OldSize, "new_size", alert.NewSize, "detail", alert.Detail, "evidence", alert.Evidence)
		a.hook.Notify(webhook.Event{ID: fmt.Sprintf("witness.alert.%d", alert.ID), Type: webhook.WitnessAlert, Time: alert.At, Data: alert})
	case err != nil && res == nil && errors.Is(err, context.Canceled):
	case err != nil && res == nil:
		var ws *protocol.WitnessError
		if errors.As(err, &ws) && ws.Code == reason.WitnessUnavailable || errors.Is(err, nats.ErrNoResponders) {
			a.log.Debug("witness: nothing to check yet", "origin", origin, "err", err)
			return
		}
		if errors.Is(err, logwatch.ErrInconsistent) {
			a.wm.checkpoints.WithLabelValues("inconsistent").Inc() // alerted before
			a.log.Warn("witness: a hub offers the inconsistent log again: not cosigned", "origin", origin, "err", err)
			return
		}
		if errors.Is(err, logwatch.ErrUnknownLog) {
			a.wm.checkpoints.WithLabelValues("unknown").Inc()
			if _, seen := a.unknownLogs.LoadOrStore(origin, true); !seen {
				a.log.Warn("witness: a log whose key this agent does not know and could not learn from its hub: not checked "+
					"(add its key to witness.log_key_file, or check that the hub's certificate chains to trust.roots)", "origin", origin, "err", err)
			}
			return
		}
		a.wm.checkpoints.WithLabelValues("error").Inc()
		a.log.Warn("witness: checkpoint not checked (tried again)", "origin", origin, "err", err)
	case res != nil && res.Stale:
		a.wm.checkpoints.WithLabelValues("stale").Inc()
	case res != nil:
		if res.Learned {
			a.log.Info("witness: a hub's log learned from the hub's signed statement of its key", "origin", res.Origin)
			a.unknownLogs.Delete(res.Origin)
		}
		a.wm.checkpoints.WithLabelValues("cosigned").Inc()
		a.wm.size.WithLabelValues(res.Origin).Set(float64(res.Size))
		if err != nil {
			a.log.Warn("witness: checkpoint verified, cosignature not taken by the hub", "origin", res.Origin, "size", res.Size, "err", err)
			return
		}
		a.log.Debug("witness: checkpoint verified and cosigned", "origin", res.Origin, "size", res.Size, "kept", res.Kept)
	}
}

// witnessState is the /readyz detail "witness".
func (a *Agent) witnessState(ctx context.Context) string {
	if a.watch == nil {
		return "disabled"
	}
	as, err := a.watch.Alerts(ctx)
	if err != nil {
		return "unknown: " + err.Error()
	}
	logs, err := a.watch.Logs(ctx)
	if err != nil {
		return "unknown: " + err.Error()
	}
	var parts []string
	for _, l := range logs {
		parts = append(parts, fmt.Sprintf("%s up to size %d", l.Origin, l.Size))
	}
	s := "verified " + strings.Join(parts, ", ")
	if len(logs) == 0 {
		s = "no hub's log known yet"
	}
	if len(as) > 0 {
		last := as[len(as)-1]
		s += fmt.Sprintf("; ALERT: %d inconsistencies of the hubs' logs seen, the last %s of %s at size %d (%s); evidence in %s",
			len(as), last.Kind, last.Origin, last.NewSize, last.At.Format(time.RFC3339), a.evidenceDir())
	}
	return s
}
