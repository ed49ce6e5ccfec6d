// Package pipeline is the hub's work: it takes each submission from the
// EDX_SUBMIT work queue and verifies, archives and routes it, or rejects it
// with its reasons; and it records the statuses recipients report and
// forwards them to the senders. Every hub runs one, on the same shared
// consumers.
//
// What it decides it publishes as a decision event (hub/events): every
// hub's index, its own included, applies the events; the pipeline never
// writes an index itself. It judges what it cannot know from the message
// against the shared truth, never against what this hub happens to have
// indexed: a status, or a document's in_reply_to, naming a document this
// hub's index lacks is checked against the archive (the document's receipt
// names its sender and recipients), and waits while the document is not
// accepted anywhere yet.
//
// Every decision is appended to the hub's transparency log (hub/tlog)
// before anyone is told of it: an acceptance before its receipt is signed
// (the receipt names the entry: the log's origin and the entry's index), a
// rejection, a refused status or a recorded status (and, for 01, the
// delivery) before the notice. The appends of many workers share the log's
// batched writes, and a worker waiting for its entry to be sequenced lends
// its slot to another submission meanwhile (Pipeline.await), so that the
// log costs latency, not throughput.
//
// Every step is idempotent, so that a redelivered message (after a crash, a
// timeout or a nak) changes nothing: archive writes are write-once with the
// content's digest, the receipt is written once and reused, and every
// published message (events included) carries a Nats-Msg-Id. A decision
// logged before a crash and decided again after it is logged again, with
// the same evidence.Entry.Key (an acceptance whose receipt is archived is
// not logged again: the receipt names its entry). A transient failure
// (storage, index, log or NATS unavailable) naks the message with a
// backoff; it never rejects a document and never loses one.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/evidence"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
)

// Archive is the write-once document store (hub/archive).
type Archive interface {
	Put(ctx context.Context, key string, data []byte, contentType string, meta map[string]string) (archive.Object, error)
	Get(ctx context.Context, key string) ([]byte, archive.Object, error)
	List(ctx context.Context, prefix string) iter.Seq2[archive.Object, error]
}

// Index is this hub's index (hub/index), which the pipeline reads: the
// units' state and what it has of a document. It never writes it: the
// events it publishes do (Events).
type Index interface {
	Get(ctx context.Context, id document.ID) (*index.Detail, error)
}

// Units is the unit registry every hub shares (hub/registry): who may send
// and receive. The pipeline never judges senders and recipients by its own
// index, which may lag behind a unit registered through another hub.
type Units interface {
	// UnitStatus reports whether a unit is registered and whether it is
	// disabled, as the shared registry holds it (asked, not assumed, before
	// any answer that refuses). An error says nothing about the unit: the
	// message is retried, never rejected for it.
	UnitStatus(ctx context.Context, id document.UnitID) (registered, disabled bool, err error)
	// UnitCert reports whether serial (hex) is the serial of the
	// certificate the unit is registered with (asked, not assumed, before
	// a "no"), and the registered one's.
	UnitCert(ctx context.Context, id document.UnitID, serial string) (ok bool, registered string, err error)
}

// Events publishes the pipeline's decisions to every hub's index
// (hub/events.Publisher); each returns the event's stream sequence.
type Events interface {
	Accepted(ctx context.Context, rec index.Record) (uint64, error)
	Status(ctx context.Context, e index.StatusEntry) (uint64, error)
	Rejected(ctx context.Context, r index.Rejected) (uint64, error)
}

// Log is the hub's transparency log (hub/tlog.Log): one per hub, named by
// its origin.
type Log interface {
	Origin() string
	// AppendAsync queues an entry and returns a function that waits until
	// it is durably sequenced and returns its index.
	AppendAsync(ctx context.Context, e *evidence.Entry) func() (uint64, error)
}

// Sent is told the stream sequence of every delivery and notice the
// pipeline stored in EDX_DELIVER, so that it can be removed once its unit
// acknowledged it (hub/broker.Trimmer).
type Sent interface {
	Sent(unit string, seq uint64)
}

// Applied tells when this hub's own index has applied an event
// (hub/events.Follower): the pipeline waits, briefly, before it tells the
// sender, so that the sender finds on this hub what it was told of.
type Applied interface {
	WaitApplied(ctx context.Context, seq uint64) bool
}

// Config tunes the pipeline.
type Config struct {
	// Workers is how many submissions are processed at once, and how
	// many statuses (default 4 × GOMAXPROCS: most of their time is spent
	// waiting on S3, NATS and the log). Statuses had half as many: with a
	// recipient's signed 01 for every delivery, they fell seconds behind
	// the documents under edx bench --statuses (submit → status told to
	// the sender p50 3.9 s; 0.41 s with as many as submissions).
	Workers int `yaml:"workers"`
	// AckWait is how long a message may go unacknowledged before JetStream
	// redelivers it (default 30s): after a replica dies, its messages in
	// progress go to another replica (or the restarted one) this long after.
	// A worker tells JetStream it is still busy every AckWait/3, so slow
	// work (a 200 MiB container) is not redelivered while it runs.
	//
	// AckWait and MaxAckPending are settings of the consumers every hub
	// shares (broker.HubConsumerConfigs): the first hub to create them
	// sets them; a hub configured differently logs the difference and
	// uses the consumers as they are, unless started with
	// -update-consumers (UpdateConsumers).
	AckWait time.Duration `yaml:"ack_wait"`
	// MaxAckPending bounds the messages of each shared consumer out at
	// once, across every hub (default 256).
	MaxAckPending int `yaml:"max_ack_pending"`
	// UpdateConsumers makes this hub update the shared consumers to its
	// settings (edx-hub -update-consumers, an operator's explicit act).
	UpdateConsumers bool `yaml:"-"`
	// MaxBackoff caps the delay of a nak after a transient failure (default 1m).
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// ReferenceWait is how long a document whose in_reply_to names a
	// document not accepted yet (in no index, not in the archive) waits for
	// it (default 2m): the referenced document may still be in the
	// pipeline, submitted just before. After that the document is rejected
	// (reference.unknown). A status on a document not accepted yet waits
	// as long before it is refused (recipient.unknown).
	ReferenceWait time.Duration `yaml:"reference_wait"`
	// FanoutStageBytes: a container whose size times its number of
	// recipients exceeds this is staged once in the stage store, and every
	// delivery names it, instead of being copied inline into each delivery
	// (default 16 MiB). Containers above protocol.InlineLimit are always
	// staged.
	FanoutStageBytes int64 `yaml:"fanout_stage_bytes"`
	// StageSweep is how often the hub checks the stage store against the
	// deliveries waiting in EDX_DELIVER (default 5m): it deletes staged
	// objects no delivery names any more and stages again, from the
	// archive, any object a waiting delivery names but the store lacks.
	StageSweep time.Duration `yaml:"stage_sweep"`
	// StageGrace is the age under which a staged object no delivery names
	// yet is kept (default 1h): its deliveries are being published.
	StageGrace time.Duration `yaml:"stage_grace"`
	// MaxStatuses bounds how many statuses one unit may report on one
	// document (default 64): 05 (in progress) may repeat, but not without
	// end. Further statuses are refused with status.too_many.
	MaxStatuses int `yaml:"max_statuses_per_unit"`
	// RejectedKeep bounds how many bytes of a rejected submission are
	// archived beside its reasons and digest (default 4 MiB): a larger one
	// keeps its first RejectedKeep bytes. RejectedUnitBudget bounds the
	// bytes of one unit's rejected submissions archived in an hour
	// (default 64 MiB); past it only the reasons and the digest are kept.
	// Either way the sender is told why.
	RejectedKeep       int64 `yaml:"rejected_keep_bytes"`
	RejectedUnitBudget int64 `yaml:"rejected_unit_bytes_per_hour"`
	// UploadOrphanAfter is how long after its last chunk an upload that no
	// submission can use is removed (default 30m): see sweepUploads.
	UploadOrphanAfter time.Duration `yaml:"upload_orphan_after"`
	// Gateway names the unit that carries documents to and from an upstream
	// axis, and the recipients outside the city it carries to (Gateway).
	Gateway Gateway `yaml:"gateway"`
	// UnsignedStatuses is what becomes of a status its unit did not sign
	// (an agent from before signed statuses): "flag" (the default, for the
	// transition: recorded, and shown unsigned, with no signature to
	// fetch) or "refuse" (refused, status.unsigned). A status whose
	// signature does not verify is always refused (status.signature).
	UnsignedStatuses string `yaml:"unsigned_statuses"`
	// LogWaitBytes bounds the container bytes held by submissions waiting
	// for their log entry without a worker slot (default 64 MiB): past it,
	// a waiting submission keeps its slot.
	LogWaitBytes int64 `yaml:"log_wait_bytes"`
	// Limits bound what a submitted container may be.
	Limits container.Limits `yaml:"-"`
}

// Defaults of Config.
const (
	DefaultMaxStatuses        = 64
	DefaultRejectedKeep       = 4 << 20
	DefaultRejectedUnitBudget = 64 << 20
	DefaultUploadOrphanAfter  = 30 * time.Minute
	DefaultLogWaitBytes       = 64 << 20
)

func (c *Config) setDefaults() {
	if c.Workers <= 0 {
		c.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = time.Minute
	}
	if c.ReferenceWait <= 0 {
		c.ReferenceWait = 2 * time.Minute
	}
	if c.FanoutStageBytes <= 0 {
		c.FanoutStageBytes = DefaultFanoutStageBytes
	}
	if c.StageSweep <= 0 {
		c.StageSweep = 5 * time.Minute
	}
	if c.StageGrace <= 0 {
		c.StageGrace = time.Hour
	}
	if c.MaxStatuses <= 0 {
		c.MaxStatuses = DefaultMaxStatuses
	}
	if c.RejectedKeep == 0 {
		c.RejectedKeep = DefaultRejectedKeep
	}
	if c.RejectedUnitBudget == 0 {
		c.RejectedUnitBudget = DefaultRejectedUnitBudget
	}
	if c.UploadOrphanAfter == 0 {
		c.UploadOrphanAfter = DefaultUploadOrphanAfter
	}
	if c.UnsignedStatuses == "" {
		c.UnsignedStatuses = UnsignedFlag
	}
	if c.LogWaitBytes == 0 {
		c.LogWaitBytes = DefaultLogWaitBytes
	}
	if c.Limits == (container.Limits{}) {
		c.Limits = container.DefaultLimits
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.MaxAckPending < 0 {
		return fmt.Errorf("pipeline: max_ack_pending %d is negative", c.MaxAckPending)
	}
	if c.Workers < 0 || c.Workers > 1024 {
		return fmt.Errorf("pipeline: workers %d: want 1 to 1024", c.Workers)
	}
	if c.AckWait < 0 || (c.AckWait > 0 && c.AckWait < time.Second) {
		return fmt.Errorf("pipeline: ack_wait %s: want at least 1s", c.AckWait)
	}
	if c.MaxBackoff < 0 || c.ReferenceWait < 0 || c.StageSweep < 0 || c.StageGrace < 0 {
		return errors.New("pipeline: negative duration")
	}
	if c.FanoutStageBytes < 0 {
		return errors.New("pipeline: fanout_stage_bytes is negative")
	}
	if c.MaxStatuses < 0 {
		return fmt.Errorf("pipeline: max_statuses_per_unit %d: want a positive number", c.MaxStatuses)
	}
	switch c.UnsignedStatuses {
	case "", UnsignedFlag, UnsignedRefuse:
	default:
		return fmt.Errorf("pipeline: unsigned_statuses %q: want flag or refuse", c.UnsignedStatuses)
	}
	if c.UploadOrphanAfter < 0 {
		return fmt.Errorf("pipeline: upload_orphan_after %s is negative", c.UploadOrphanAfter)
	}
	if c.LogWaitBytes < 0 {
		return fmt.Errorf("pipeline: log_wait_bytes %d is negative", c.LogWaitBytes)
	}
	if c.RejectedKeep < 0 || c.RejectedUnitBudget < 0 || c.RejectedUnitBudget > 1<<40 {
		return fmt.Errorf("pipeline: rejected_keep_bytes %d, rejected_unit_bytes_per_hour %d: want positive sizes", c.RejectedKeep, c.RejectedUnitBudget)
	}
	return c.Gateway.Validate()
}

// DefaultFanoutStageBytes is the default of Config.FanoutStageBytes.
const DefaultFanoutStageBytes = 16 << 20

// Deps are what the pipeline works with.
type Deps struct {
	// JS is the hub's JetStream in the EDX account (broker.HubConn.JS): the
	// streams, the upload stream among them, from which it reads large
	// submissions.
	JS jetstream.JetStream
	// Stage is the stage store in the STAGE account (broker.HubConn.Stage),
	// where it puts large deliveries.
	Stage   jetstream.ObjectStore
	Archive Archive
	Index   Index
	Units   Units
	Events  Events
	Applied Applied // may be nil
	// TLog is the hub's transparency log; nil logs nothing and signs
	// receipts naming no entry (a hub with tlog.disabled, tests).
	TLog    Log
	Sent    Sent // may be nil
	Trust   *pki.Trust
	Hub     *pki.Signer // signs receipts
	Metrics *Metrics    // may be nil
	Log     *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// hook, for tests, runs after each named step; a non-nil error
	// abandons the message there without ack or nak, as a crash would.
	hook func(step string) error
}

// Pipeline processes submissions and statuses.
type Pipeline struct {
	cfg      Config
	js       jetstream.JetStream
	stage    jetstream.ObjectStore // large deliveries (STAGE)
	submits  jetstream.Stream      // EDX_SUBMIT
	uploads  jetstream.Stream      // large submissions (EDX_UPLOAD)
	statuses jetstream.Stream      // EDX_STATUS
	arch     Archive
	ix       Index
	units    Units
	ev       Events
	applied  Applied
	tlog     Log
	sent     Sent
	ackWait  time.Duration // the shared consumers' (Run), for keepAlive
	trust    *pki.Trust
	hub      *pki.Signer
	m        *Metrics
	log      *slog.Logger
	now      func() time.Time
	hook     func(string) error

	rejMu     sync.Mutex
	rejBudget map[document.UnitID]*rate.Limiter // bytes of rejected submissions archived, per unit

	waitMu    sync.Mutex
	waitBytes int64 // container bytes of submissions waiting for the log without a slot
}

// New checks cfg and deps and returns a pipeline; Run starts it.
func New(ctx context.Context, cfg Config, d Deps) (*Pipeline, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if d.JS == nil || d.Stage == nil || d.Archive == nil || d.Index == nil || d.Units == nil || d.Events == nil || d.Trust == nil || d.Hub == nil {
		return nil, errors.New("pipeline: JetStream, stage store, archive, index, unit registry, events, trust and hub signer are required")
	}
	if !pki.IsHub(d.Hub.Cert()) {
		return nil, errors.New("pipeline: the receipt signer's certificate is not a hub certificate (organizationIdentifier EDX-HUB)")
	}
	uploads, err := d.JS.Stream(ctx, protocol.StreamUpload)
	if err != nil {
		return nil, fmt.Errorf("pipeline: upload stream %s: %w", protocol.StreamUpload, err)
	}
	submits, err := d.JS.Stream(ctx, protocol.StreamSubmit)
	if err != nil {
		return nil, fmt.Errorf("pipeline: submission stream %s: %w", protocol.StreamSubmit, err)
	}
	statuses, err := d.JS.Stream(ctx, protocol.StreamStatus)
	if err != nil {
		return nil, fmt.Errorf("pipeline: status stream %s: %w", protocol.StreamStatus, err)
	}
	p := &Pipeline{cfg: cfg, js: d.JS, stage: d.Stage, submits: submits, uploads: uploads, statuses: statuses, arch: d.Archive, ix: d.Index, units: d.Units,
		ev: d.Events, applied: d.Applied, tlog: d.TLog, sent: d.Sent, ackWait: cfg.AckWait, trust: d.Trust, hub: d.Hub,
		m: d.Metrics, log: d.Log, now: d.Now, hook: d.hook, rejBudget: map[document.UnitID]*rate.Limiter{}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.m == nil {
		p.m = NewMetrics(nil)
	}
	return p, nil
}

// errAbandon leaves a message unacknowledged (tests' simulated crash).
var errAbandon = errors.New("pipeline: abandoned")

// errAcked: the handler acknowledged the message itself.
var errAcked = errors.New("pipeline: acknowledged")

func (p *Pipeline) step(name string) error {
	if p.hook != nil {
		if err := p.hook(name); err != nil {
			return errAbandon
		}
	}
	return nil
}

// Run consumes submissions and statuses until ctx is done, then stops
// fetching, lets the messages in progress finish, and returns.
func (p *Pipeline) Run(ctx context.Context) error {
	sub, err := p.sharedConsumer(ctx, protocol.StreamSubmit)
	if err != nil {
		return err
	}
	st, err := p.sharedConsumer(ctx, protocol.StreamStatus)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(5)
	fail := func(err error) {
		if err != nil {
			cancel() // one side failing stops the other
		}
		errs <- err
	}
	go func() { defer wg.Done(); fail(p.consume(ctx, sub, p.cfg.Workers, p.handleSubmission)) }()
	go func() { defer wg.Done(); fail(p.consume(ctx, st, p.cfg.Workers, p.handleStatus)) }()
	go func() { defer wg.Done(); p.watchBacklog(ctx, sub, st) }()
	go func() { defer wg.Done(); p.keepStage(ctx) }()
	go func() { defer wg.Done(); p.sweepEvery(ctx, uploadSweep) }()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// sharedConsumer returns the pipeline's consumer of stream, which every hub
// shares: created with this hub's settings when missing; when it exists with
// other settings, used as it is (the difference logged) unless the operator
// asked this hub to update it.
func (p *Pipeline) sharedConsumer(ctx context.Context, stream string) (jetstream.Consumer, error) {
	want := broker.HubConsumerConfigs(p.cfg.AckWait, p.cfg.MaxAckPending)[stream]
	c, diff, err := broker.EnsureSharedConsumer(ctx, p.js, stream, want, p.cfg.UpdateConsumers)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	switch {
	case len(diff) > 0 && p.cfg.UpdateConsumers:
		p.log.Warn("pipeline: shared consumer updated to this hub's settings, for every hub", "consumer", want.Durable, "stream", stream,
			"changes", strings.Join(diff, "; "))
	case len(diff) > 0:
		p.log.Warn("pipeline: this hub's settings differ from the consumer every hub shares: using the consumer as it is "+
			"(start one hub with -update-consumers to change it for all)", "consumer", want.Durable, "stream", stream,
			"differences", strings.Join(diff, "; "))
	}
	if aw := c.CachedInfo().Config.AckWait; aw > 0 {
		p.ackWait = min(p.ackWait, aw) // keepAlive tells within the shortest
	}
	return c, nil
}

// consume pulls messages and processes up to workers of them at once.
//
// It takes messages with a callback (Consume), not an iterator: the
// iterator hands messages over through a channel as large as the pull,
// which the server's status messages (heartbeats, request timeouts) share,
// and while every worker was busy a full channel made the client drop a
// message ("slow consumer"), which JetStream delivered again only after
// AckWait. The callback blocks while every worker is busy, which holds the
// next pull back; nothing is dropped.
func (p *Pipeline) consume(ctx context.Context, cons jetstream.Consumer, workers int, handle func(context.Context, jetstream.Msg) error) error {
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	// At most twice as many as the workers take, so that another hub gets
	// the rest (MaxAckPending bounds all hubs together); bounded by bytes
	// too (within the client's 64 MB of pending messages), so that large
	// messages never stall the pull.
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			// Work goes on past shutdown so that a message in progress
			// finishes; a hard stop is covered by redelivery.
			wctx := context.WithValue(context.WithoutCancel(ctx), slotKey{}, sem)
			done := make(chan struct{})
			go p.keepAlive(msg, done)
			err := handle(wctx, msg)
			close(done)
			p.finish(wctx, msg, err)
		}()
	}, jetstream.PullMaxMessagesWithBytesLimit(2*workers, 32<<20), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		p.log.Warn("pipeline: pull", "err", err)
	}))
	if err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	select {
	case <-ctx.Done():
		cc.Drain()
		<-cc.Closed()
	case <-cc.Closed(): // the connection closed for good
	}
	return nil
}

// slotKey holds, in a handler's context, the semaphore of the worker slot
// it holds (consume).
type slotKey struct{}

// await waits for a log append queued with AppendAsync. A handler holding a
// worker slot lends it to the next message while it waits, when the bytes
// it holds (size) fit Config.LogWaitBytes with those of the others
// waiting, and takes a slot again before it goes on: appends are sequenced
// in batches, and the waits of many submissions overlap instead of each
// holding a worker idle.
func (p *Pipeline) await(ctx context.Context, size int, wait func() (uint64, error)) (uint64, error) {
	sem, _ := ctx.Value(slotKey{}).(chan struct{})
	if sem == nil || !p.lendSlot(int64(size)) {
		return wait()
	}
	<-sem
	defer func() {
		sem <- struct{}{}
		p.waitMu.Lock()
		p.waitBytes -= int64(size)
		p.waitMu.Unlock()
	}()
	return wait()
}

func (p *Pipeline) lendSlot(size int64) bool {
	p.waitMu.Lock()
	defer p.waitMu.Unlock()
	if p.waitBytes+size > p.cfg.LogWaitBytes {
		return false
	}
	p.waitBytes += size
	return true
}

// keepAlive tells JetStream the message is still being worked on until done.
func (p *Pipeline) keepAlive(msg jetstream.Msg, done <-chan struct{}) {
	t := time.NewTicker(p.ackWait / 3)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			msg.InProgress()
		}
	}
}

// finish acks a processed message or naks it with backoff after a transient
// failure.
func (p *Pipeline) finish(ctx context.Context, msg jetstream.Msg, err error) {
	switch {
	case errors.Is(err, errAbandon), errors.Is(err, errAcked):
		return
	case err == nil:
		if err := msg.DoubleAck(ctx); err != nil {
			p.log.Warn("pipeline: ack", "subject", msg.Subject(), "err", err)
		}
	default:
		n := uint64(1)
		if md, merr := msg.Metadata(); merr == nil {
			n = md.NumDelivered
		}
		delay := min(time.Duration(1<<min(n, 10))*250*time.Millisecond, p.cfg.MaxBackoff)
		p.m.transient.Inc()
		p.log.Warn("pipeline: transient failure, will retry", "subject", msg.Subject(), "attempt", n, "retry_in", delay, "err", err)
		if err := msg.NakWithDelay(delay); err != nil {
			p.log.Warn("pipeline: nak", "subject", msg.Subject(), "err", err)
		}
	}
}

// uploadSweep is how often the pipeline looks for uploads no submission can
// use (sweepUploads).
const uploadSweep = 5 * time.Minute

func (p *Pipeline) sweepEvery(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.sweepUploads(ctx); err != nil && ctx.Err() == nil {
				p.log.Warn("pipeline: sweep uploads", "err", err)
			}
		}
	}
}

// watchBacklog keeps the backlog gauges current.
func (p *Pipeline) watchBacklog(ctx context.Context, cons ...jetstream.Consumer) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		for _, c := range cons {
			ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
			info, err := c.Info(ictx)
			cancel()
			if err == nil {
				p.m.backlog.WithLabelValues(info.Stream).Set(float64(info.NumPending + uint64(info.NumAckPending)))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
