package agent

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's Prometheus metrics.
type metrics struct {
	sendSeconds    prometheus.Histogram
	publishSeconds prometheus.Histogram
	sent           *prometheus.CounterVec
	received       *prometheus.CounterVec
	publishErrors  prometheus.Counter
	statuses       *prometheus.CounterVec
	connected      prometheus.Gauge
	crlStale       prometheus.Gauge
	held           prometheus.Counter
	axisCalls      *prometheus.CounterVec
	bridge         *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, a *Agent) *metrics {
	m := &metrics{
		sendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edx_agent_send_seconds", Help: "Time from spooling a document to the hub's decision (accepted or rejected).",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 16),
		}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edx_agent_publish_seconds", Help: "Time to publish one submission until the stream acknowledges it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edx_agent_documents_sent_total", Help: "Sent documents the hub decided on, by result (accepted, rejected).",
		}, []string{"result"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edx_agent_deliveries_total", Help: "Deliveries handled, by result (stored, duplicate, quarantined; waiting: a staged container not available yet, retried).",
		}, []string{"result"}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edx_agent_publish_errors_total", Help: "Failed attempts to publish a submission or a status (retried).",
		}),
		statuses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edx_agent_statuses_sent_total", Help: "Statuses published, by code.",
		}, []string{"code"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edx_agent_nats_connected", Help: "1 while the agent is connected to the hub's NATS.",
		}),
		crlStale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edx_agent_crl_stale", Help: "CRLs past their nextUpdate and the grace: deliveries under their issuers wait.",
		}),
		held: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edx_agent_deliveries_held_total", Help: "Deliveries naked for a retry because the agent could not decide (a stale CRL).",
		}),
		axisCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edx_agent_axis_calls_total", Help: "Calls of the national axis's client protocol, by call (other: unknown) and ErrorCode (0: success).",
		}, []string{"call", "code"}),
		bridge: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edx_agent_bridge_events_total", Help: "What the gateway's bridge to the upstream axis did, by event (carried_sent, carried_reconciled, carried_refused, document_in, status_in, status_up, status_down, refused_in, upstream_error).",
		}, []string{"event"}),
	}
	count := func(f func(context.Context) (int, error)) func() float64 {
		return func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, err := f(ctx)
			if err != nil {
				return -1
			}
			return float64(n)
		}
	}
	reg.MustRegister(m.sendSeconds, m.publishSeconds, m.sent, m.received, m.publishErrors, m.statuses, m.connected, m.axisCalls, m.bridge,
		m.crlStale, m.held, credsExpiryGauge(a),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edx_agent_spool_depth", Help: "Documents spooled or submitted and not yet decided by the hub."}, count(a.spool.Depth)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edx_agent_inbox_documents", Help: "Documents received in the inbox."}, count(a.inbox.Count)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edx_agent_statuses_pending", Help: "Statuses queued and not yet published."}, count(a.inbox.PendingCount)),
	)
	return m
}
