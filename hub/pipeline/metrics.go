package pipeline

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the pipeline's Prometheus metrics.
type Metrics struct {
	accepted       prometheus.Counter
	rejected       *prometheus.CounterVec
	transient      prometheus.Counter
	held           *prometheus.CounterVec
	statuses       *prometheus.CounterVec
	statusRejected *prometheus.CounterVec
	bytes          prometheus.Counter
	archiveSeconds prometheus.Histogram
	verifySeconds  prometheus.Histogram
	e2eSeconds     prometheus.Histogram
	backlog        *prometheus.GaugeVec
	fromArchive    prometheus.Counter
	statusSigned   *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &Metrics{
		accepted:  prometheus.NewCounter(prometheus.CounterOpts{Name: "edx_hub_documents_accepted_total", Help: "Documents accepted, archived and routed."}),
		rejected:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edx_hub_documents_rejected_total", Help: "Rejected submissions by reason code."}, []string{"reason"}),
		transient: prometheus.NewCounter(prometheus.CounterOpts{Name: "edx_hub_transient_failures_total", Help: "Messages naked for a retry after a transient failure."}),
		held: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edx_hub_submissions_held_total",
			Help: "Submissions naked for a retry because the hub could not decide (a stale CRL), by reason code."}, []string{"reason"}),
		statuses:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edx_hub_statuses_total", Help: "Statuses recorded, by edXML code."}, []string{"code"}),
		statusRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edx_hub_statuses_rejected_total", Help: "Statuses refused, by reason code."}, []string{"reason"}),
		bytes:          prometheus.NewCounter(prometheus.CounterOpts{Name: "edx_hub_accepted_bytes_total", Help: "Bytes of accepted containers."}),
		archiveSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edx_hub_archive_put_seconds", Help: "Latency of archiving a container.", Buckets: buckets}),
		verifySeconds:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edx_hub_verify_seconds", Help: "Latency of loading and verifying a container.", Buckets: buckets}),
		e2eSeconds:     prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edx_hub_submit_to_accept_seconds", Help: "From the submission's arrival in the stream to its acceptance notice.", Buckets: buckets}),
		backlog:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edx_hub_backlog_messages", Help: "Messages waiting or in progress, by stream."}, []string{"stream"}),
		fromArchive: prometheus.NewCounter(prometheus.CounterOpts{Name: "edx_hub_judged_from_archive_total",
			Help: "Statuses and references judged against the archive, the document not in this hub's index (yet)."}),
		statusSigned: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edx_hub_status_signatures_total",
			Help: "Statuses received, by signature: signed (verified, archived), unsigned (recorded as such: pipeline.unsigned_statuses flag), refused (unsigned where required, or a signature that does not verify)."},
			[]string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.accepted, m.rejected, m.transient, m.held, m.statuses, m.statusRejected, m.bytes,
			m.archiveSeconds, m.verifySeconds, m.e2eSeconds, m.backlog, m.fromArchive, m.statusSigned)
	}
	return m
}
