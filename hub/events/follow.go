package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
)

// Index is the hub's own index, which the follower keeps (hub/index).
type Index interface {
	projection.Index
	EventsState(ctx context.Context) (index.EventsState, error)
	SetEventsState(ctx context.Context, st index.EventsState) error
}

// Config tunes a follower.
type Config struct {
	// Consumer is the follower's durable consumer of EDX_EVENTS: one per
	// hub, named from the hub's stable id (hub.id in its data directory).
	Consumer string
	// MaxLag is how far behind the events the index may be before the hub
	// reports itself not ready (default 30s).
	MaxLag time.Duration
	// Forget is how long a consumer no hub follows is kept (default 30
	// days, the events' default max age: past it the hub would rebuild
	// anyway).
	Forget time.Duration
}

// Defaults of Config.
const (
	DefaultMaxLag = 30 * time.Second
	DefaultForget = 30 * 24 * time.Hour
)

// Deps are what a follower works with.
type Deps struct {
	JS      jetstream.JetStream // the hub's connection to the EDX account
	Index   Index
	Archive projection.Archive // for rebuilding, and documents whose event has not come
	Trust   *pki.Trust
	// Now is the clock receipts are checked against (default time.Now);
	// the lag is measured in real time, as the stream stamps events.
	Now func() time.Time
	Log *slog.Logger
	// Registerer takes the follower's metrics (nil: not exported).
	Registerer prometheus.Registerer
	// Progress, when set, is told of a rebuild's progress too (a progress
	// bar on the operator's terminal).
	Progress projection.Progress
}

// Follower applies every decision event to the hub's index, and rebuilds
// the index from the archive when it cannot follow from where it stands (a
// new hub, an index never followed, a rebuild that did not finish, events
// the stream no longer holds).
type Follower struct {
	cfg   Config
	d     Deps
	log   *slog.Logger
	m     *metrics
	ready chan struct{} // closed once the index is complete

	mu       sync.Mutex
	phase    string // "starting", "rebuilding", "following"
	total    int    // objects of the rebuild in progress
	done     int
	lastErr  error
	lag      time.Duration
	pending  uint64              // events waiting, as the last one applied said
	hi       uint64              // every event up to hi is handled, but those deferred
	next     uint64              // the stream sequence the next new event should have
	deferred map[uint64]struct{} // events naked for later (a status before its document)
	changed  chan struct{}       // closed and replaced when hi or deferred change
	units    map[document.UnitID]time.Time
	saved    uint64    // the events state seq last written
	savedAt  time.Time // when
}

// NewFollower checks cfg and deps; Run starts following.
func NewFollower(cfg Config, d Deps) (*Follower, error) {
	if cfg.Consumer == "" {
		return nil, errors.New("events: a consumer name is required")
	}
	if d.JS == nil || d.Index == nil || d.Archive == nil || d.Trust == nil {
		return nil, errors.New("events: JetStream, index, archive and trust are required")
	}
	if cfg.MaxLag <= 0 {
		cfg.MaxLag = DefaultMaxLag
	}
	if cfg.Forget <= 0 {
		cfg.Forget = DefaultForget
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Follower{cfg: cfg, d: d, log: log, m: newMetrics(d.Registerer), ready: make(chan struct{}),
		phase: "starting", deferred: map[uint64]struct{}{}, changed: make(chan struct{}), units: map[document.UnitID]time.Time{}}, nil
}

// Ready is closed once the hub's pipeline may run: the index holds the
// units (its judgement of senders and recipients reads them; for the rest it
// reads the archive when the index lacks a document). That is at once for
// an index that follows from where it stood, and as soon as a rebuild has
// loaded the units, long before it has loaded the documents: a hub catching
// up processes documents meanwhile (its decisions are applied once the
// rebuild is done), and only its searches are incomplete, which Check says.
func (f *Follower) Ready() <-chan struct{} { return f.ready }

// Check is the follower's readiness: nil, or why the index is incomplete
// or behind.
func (f *Follower) Check() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.phase == "rebuilding":
		pct := 0.0
		if f.total > 0 {
			pct = 100 * float64(f.done) / float64(f.total)
		}
		return fmt.Errorf("catching up: rebuilding the index from the archive, %d of %d objects (%.0f%%)", f.done, f.total, pct)
	case f.phase == "starting" && f.lastErr != nil:
		return fmt.Errorf("catching up: cannot follow the decision events yet: %v", f.lastErr)
	case f.phase == "starting":
		return errors.New("catching up: starting to follow the decision events")
	case f.lastErr != nil:
		return fmt.Errorf("not following the decision events: %v", f.lastErr)
	case f.lag > f.cfg.MaxLag:
		return fmt.Errorf("behind the decision events by %s (%d events waiting)", f.lag.Round(time.Second), f.pending)
	}
	return nil
}

// maxWaitApplied bounds WaitApplied: a publisher waits for its own hub's
// index for read-your-writes, never for long.
const maxWaitApplied = 5 * time.Second

// WaitApplied waits, at most a few seconds, until the event at stream
// sequence seq is applied to the index, and reports whether it is. While
// the index is being rebuilt it does not wait: the event is applied after.
func (f *Follower) WaitApplied(ctx context.Context, seq uint64) bool {
	t := time.NewTimer(maxWaitApplied)
	defer t.Stop()
	for {
		f.mu.Lock()
		_, later := f.deferred[seq]
		ok := seq <= f.hi && !later
		following := f.phase == "following" && f.lastErr == nil // an index failing to write is not waited for
		ch := f.changed
		f.mu.Unlock()
		if ok || !following {
			return ok
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		case <-t.C:
			return false
		}
	}
}

// Run follows the events until ctx is done. It never gives up: a failure
// (NATS or the index unavailable) is logged, reported by Check, and
// retried with backoff.
func (f *Follower) Run(ctx context.Context) error {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		cons, err := f.prepare(ctx)
		if err == nil {
			backoff = 500 * time.Millisecond
			err = f.follow(ctx, cons)
		}
		if ctx.Err() != nil {
			break
		}
		f.setErr(err)
		f.log.Warn("events: following the decision events", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	return nil
}

func (f *Follower) setErr(err error) {
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
}

func (f *Follower) setPhase(p string) {
	f.mu.Lock()
	f.phase = p
	f.lastErr = nil
	f.mu.Unlock()
	if p == "rebuilding" {
		f.m.rebuilding.Set(1)
	} else {
		f.m.rebuilding.Set(0)
	}
}

// prepare decides, from the index's events state and the stream, whether
// the index can follow from where it stands or must be rebuilt, and returns
// the consumer to follow.
func (f *Follower) prepare(ctx context.Context) (jetstream.Consumer, error) {
	stream, err := f.d.JS.Stream(ctx, protocol.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("events: stream %s: %w", protocol.StreamEvents, err)
	}
	state := stream.CachedInfo().State
	st, err := f.d.Index.EventsState(ctx)
	if err != nil {
		return nil, err
	}
	why := ""
	switch {
	case st.Consumer == "":
		why = "the index has never followed the decision events (a new hub, or an index from before them)"
	case !st.Complete:
		why = "a rebuild of the index did not finish"
	case st.Seq > state.LastSeq:
		why = fmt.Sprintf("the events stream ends at %d, before the index (%d): the stream was made anew", state.LastSeq, st.Seq)
	case st.Seq+1 < state.FirstSeq:
		why = fmt.Sprintf("the events stream starts at %d: events %d to %d this index has not applied are gone (max age or max bytes)",
			state.FirstSeq, st.Seq+1, state.FirstSeq-1)
	}
	if why != "" {
		return f.rebuild(ctx, state.LastSeq, why)
	}
	cons, err := f.consumer(ctx, st.Seq)
	if err != nil {
		return nil, err
	}
	if st.Consumer != f.cfg.Consumer {
		st.Consumer = f.cfg.Consumer
		if err := f.d.Index.SetEventsState(ctx, st); err != nil {
			return nil, err
		}
	}
	// The consumer delivers new events after what it delivered before.
	f.resetApplied(st.Seq, max(st.Seq, cons.CachedInfo().Delivered.Stream)+1)
	f.setPhase("following")
	f.markReady()
	f.log.Info("events: following the decision events", "consumer", f.cfg.Consumer, "from", st.Seq+1, "last", state.LastSeq)
	return cons, nil
}

// consumer returns the follower's durable consumer, made to deliver from
// seq+1 when it is missing or ahead of the index (an index restored from a
// copy): events the consumer would deliver again are applied again,
// harmlessly; events it would skip are not.
func (f *Follower) consumer(ctx context.Context, seq uint64) (jetstream.Consumer, error) {
	c, err := f.d.JS.Consumer(ctx, protocol.StreamEvents, f.cfg.Consumer)
	switch {
	case err == nil && c.CachedInfo().AckFloor.Stream <= seq:
		return c, nil
	case err == nil:
		// The index recorded its position last a moment before it
		// stopped (saveEvery), or was restored from a copy.
		f.log.Info("events: the consumer is ahead of the index: following again from the index's position",
			"consumer", f.cfg.Consumer, "consumer_at", c.CachedInfo().AckFloor.Stream, "index_at", seq)
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("events: consumer %s: %w", f.cfg.Consumer, err)
	}
	return f.newConsumer(ctx, seq+1)
}

func (f *Follower) newConsumer(ctx context.Context, start uint64) (jetstream.Consumer, error) {
	if err := f.d.JS.DeleteConsumer(ctx, protocol.StreamEvents, f.cfg.Consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("events: remove consumer %s: %w", f.cfg.Consumer, err)
	}
	c, err := f.d.JS.CreateConsumer(ctx, protocol.StreamEvents, jetstream.ConsumerConfig{
		Durable:           f.cfg.Consumer,
		Description:       "one hub's index: every decision event, applied once",
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       max(start, 1),
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           30 * time.Second,
		MaxDeliver:        -1,
		MaxAckPending:     4 * batchSize,
		FilterSubject:     protocol.SubjectEventPrefix + ">",
		InactiveThreshold: f.cfg.Forget,
	})
	if err != nil {
		return nil, fmt.Errorf("events: create consumer %s: %w", f.cfg.Consumer, err)
	}
	return c, nil
}

// rebuild notes the stream's last sequence, makes the consumer deliver
// from the next one, rebuilds the index from the archive (the hub serving
// meanwhile), then marks the index complete: the events it then follows
// include every decision made during the rebuild, and those the archive
// already held are applied again, harmlessly.
func (f *Follower) rebuild(ctx context.Context, last uint64, why string) (jetstream.Consumer, error) {
	f.log.Warn("events: rebuilding the index from the archive", "why", why, "then_from_event", last+1)
	f.m.rebuilds.Inc()
	if err := f.d.Index.SetEventsState(ctx, index.EventsState{Consumer: f.cfg.Consumer, Seq: last, Complete: false}); err != nil {
		return nil, err
	}
	cons, err := f.newConsumer(ctx, last+1)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.total, f.done = 0, 0
	f.mu.Unlock()
	f.setPhase("rebuilding")
	start := time.Now()
	st, err := projection.Rebuild(ctx, f.d.Archive, f.d.Index, f.d.Trust, f.d.Now, f.log, &progress{f: f, start: start})
	if err != nil {
		f.setPhase("starting")
		return nil, fmt.Errorf("events: rebuild the index: %w", err)
	}
	if err := f.d.Index.SetEventsState(ctx, index.EventsState{Consumer: f.cfg.Consumer, Seq: last, Complete: true}); err != nil {
		return nil, err
	}
	took := time.Since(start)
	f.m.rebuildSeconds.Set(took.Seconds())
	f.log.Info("events: index rebuilt from the archive; following the decision events", "units", st.Units, "documents", st.Documents,
		"statuses", st.Statuses, "rejected", st.Rejected, "skipped", st.Skipped, "took", took.Round(time.Millisecond),
		"docs_per_second", int(float64(st.Documents)/max(took.Seconds(), 1e-3)), "from_event", last+1)
	f.resetApplied(last, last+1)
	f.setPhase("following")
	f.markReady()
	return cons, nil
}

func (f *Follower) markReady() {
	select {
	case <-f.ready:
	default:
		close(f.ready)
	}
}

// progress reports a rebuild's progress to Check, the metrics, the log
// (every logEvery) and Deps.Progress.
type progress struct {
	f      *Follower
	start  time.Time
	logged time.Time
}

const logEvery = 5 * time.Second

// UnitsLoaded: the index holds the units; the pipeline may run.
func (p *progress) UnitsLoaded() { p.f.markReady() }

func (p *progress) Start(total int) {
	p.f.mu.Lock()
	p.f.total = total
	p.f.mu.Unlock()
	p.f.m.rebuildTotal.Set(float64(total))
	p.f.m.rebuildDone.Set(0)
	p.f.log.Info("events: rebuilding the index from the archive", "objects", total)
	if p.f.d.Progress != nil {
		p.f.d.Progress.Start(total)
	}
}

func (p *progress) Done(n int) {
	p.f.mu.Lock()
	p.f.done += n
	done, total := p.f.done, p.f.total
	p.f.mu.Unlock()
	p.f.m.rebuildDone.Set(float64(done))
	if p.f.d.Progress != nil {
		p.f.d.Progress.Done(n)
	}
	if time.Since(p.logged) >= logEvery && done < total {
		p.logged = time.Now()
		el := time.Since(p.start).Seconds()
		p.f.log.Info("events: rebuilding the index from the archive", "done", done, "of", total,
			"objects_per_second", int(float64(done)/max(el, 1e-3)))
	}
}

// resetApplied starts the applied bookkeeping at seq (everything up to it
// is in the index); next is the stream sequence of the next new event.
func (f *Follower) resetApplied(seq, next uint64) {
	f.mu.Lock()
	f.hi, f.saved, f.next = seq, seq, next
	clear(f.deferred)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// errGap: events this index had not applied are gone from the stream.
var errGap = errors.New("events: events lost")

// batchSize is how many events are applied in one go (one transaction per
// kind).
const batchSize = 256

// infoEvery is how often, while idle, the follower checks that its
// consumer still exists and how far behind it is.
const infoEvery = 10 * time.Second

// follow applies events as they come, in batches, until ctx is done or the
// consumer fails (gone: prepare makes it again).
func (f *Follower) follow(ctx context.Context, cons jetstream.Consumer) error {
	it, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(2*batchSize, 64<<20))
	if err != nil {
		return fmt.Errorf("events: consume: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer func() {
		// Where the index stands, for the next start.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		f.save(sctx, true)
	}()
	checked := time.Now()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(time.Second))
		switch {
		case errors.Is(err, nats.ErrTimeout):
			f.idle()
			f.save(ctx, true)
			if time.Since(checked) > infoEvery {
				checked = time.Now()
				if err := f.checkConsumer(ctx, cons); err != nil {
					return err
				}
			}
			continue
		case errors.Is(err, jetstream.ErrMsgIteratorClosed) && ctx.Err() != nil:
			return nil
		case err != nil:
			return fmt.Errorf("events: consume: %w", err)
		}
		batch := []jetstream.Msg{msg}
		for len(batch) < batchSize {
			// Only what has come already: a decision waits for no batch.
			m, err := it.Next(jetstream.NextMaxWait(200 * time.Microsecond))
			if err != nil {
				break
			}
			batch = append(batch, m)
		}
		err = f.apply(ctx, batch)
		if errors.Is(err, errGap) {
			return err
		}
		f.setErr(err)
	}
}

// checkConsumer reports a consumer that is gone, or a stream that dropped
// events the consumer had not delivered.
func (f *Follower) checkConsumer(ctx context.Context, cons jetstream.Consumer) error {
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("events: consumer %s: %w", f.cfg.Consumer, err)
	}
	f.mu.Lock()
	f.pending = info.NumPending
	f.mu.Unlock()
	stream, err := f.d.JS.Stream(ctx, protocol.StreamEvents)
	if err != nil {
		return fmt.Errorf("events: stream %s: %w", protocol.StreamEvents, err)
	}
	f.mu.Lock()
	lo := f.hi
	for s := range f.deferred {
		lo = min(lo, s-1)
	}
	f.mu.Unlock()
	if first := stream.CachedInfo().State.FirstSeq; lo+1 < first {
		// Events this index has not applied are gone: prepare rebuilds.
		return fmt.Errorf("events: the stream dropped events %d to %d before this hub applied them", lo+1, first-1)
	}
	return nil
}

func (f *Follower) idle() {
	f.mu.Lock()
	if len(f.deferred) == 0 {
		f.lag, f.pending = 0, 0
	}
	f.mu.Unlock()
	f.m.lag.Set(0)
}

// item is one event of a batch.
type item struct {
	msg  jetstream.Msg
	md   *jetstream.MsgMetadata
	ev   *Event
	done bool // applied or given up: acknowledged
}

// retryDelay is how long a batch waits after the index failed to write.
const retryDelay = time.Second

// apply applies a batch: units, then documents, then rejected records,
// then statuses, each kind in one transaction, so that a status after its
// document in the same batch finds it. A status whose document this index
// does not hold is deferred (deferStatus). An event that cannot be applied
// at all is logged and counted, never silently dropped; the index failing
// to write naks the whole batch, to be applied again.
func (f *Follower) apply(ctx context.Context, batch []jetstream.Msg) error {
	// Events come in stream order (a redelivered one again later): a new
	// one past the next expected means the stream dropped events this index
	// had not applied (max age, max bytes). Apply nothing: the index is
	// rebuilt from the archive (prepare).
	f.mu.Lock()
	next := f.next
	f.mu.Unlock()
	for _, m := range batch {
		md, err := m.Metadata()
		if err != nil || md.NumDelivered != 1 {
			continue
		}
		if md.Sequence.Stream > next {
			for _, m := range batch {
				m.Nak()
			}
			return fmt.Errorf("%w: the stream dropped events %d to %d before this hub applied them", errGap, next, md.Sequence.Stream-1)
		}
		next = md.Sequence.Stream + 1
	}
	f.mu.Lock()
	f.next = max(f.next, next)
	f.mu.Unlock()
	items := make([]*item, 0, len(batch))
	for _, m := range batch {
		it := &item{msg: m}
		md, err := m.Metadata()
		if err != nil {
			f.log.Error("events: message without metadata", "subject", m.Subject(), "err", err)
			m.Term()
			continue
		}
		it.md = md
		it.ev, err = Decode(m.Data())
		switch {
		case errors.Is(err, errNewer):
			f.log.Error("events: an event of a newer schema: upgrade this hub; it waits", "seq", md.Sequence.Stream, "err", err)
			f.deferMsg(it, time.Minute)
			continue
		case err != nil:
			f.giveUp(it, "unknown", err)
			continue
		}
		items = append(items, it)
	}
	fail := func(what string, err error) error {
		f.log.Warn("events: the index could not apply events; they come again", "what", what, "err", err)
		for _, it := range items {
			if !it.done {
				it.msg.NakWithDelay(retryDelay)
			}
		}
		return fmt.Errorf("events: apply %s: %w", what, err)
	}
	// Units, latest record of each.
	for _, it := range items {
		if it.ev.Kind != Unit {
			continue
		}
		u := *it.ev.Unit
		f.mu.Lock()
		seen, ok := f.units[u.ID]
		f.mu.Unlock()
		if !ok || !u.At.Before(seen) {
			if err := f.d.Index.PutUnit(ctx, u); err != nil {
				return fail("unit", err)
			}
			f.mu.Lock()
			f.units[u.ID] = u.At
			f.mu.Unlock()
		}
		f.applied(it)
	}
	// Documents, in one transaction; one by one when the index refuses one.
	var recs []index.Record
	var recItems []*item
	for _, it := range items {
		if it.ev.Kind != Accepted {
			continue
		}
		rec, err := it.ev.Document.Record()
		if err != nil {
			f.giveUp(it, string(Accepted), err)
			continue
		}
		recs, recItems = append(recs, rec), append(recItems, it)
	}
	if len(recs) > 0 {
		if err := f.d.Index.PutDocuments(ctx, recs); err == nil {
			for _, it := range recItems {
				f.applied(it)
			}
		} else if !refused(err) {
			return fail("documents", err)
		} else {
			for i, it := range recItems {
				switch err := f.d.Index.PutDocuments(ctx, recs[i:i+1]); {
				case err == nil:
					f.applied(it)
				case refused(err):
					f.giveUp(it, string(Accepted), err)
				default:
					return fail("document", err)
				}
			}
		}
	}
	for _, it := range items {
		if it.ev.Kind != Rejected {
			continue
		}
		switch err := f.d.Index.PutRejected(ctx, *it.ev.Rejected); {
		case err == nil:
			f.applied(it)
		case refused(err):
			f.giveUp(it, string(Rejected), err)
		default:
			return fail("rejected", err)
		}
	}
	var sts []index.StatusEntry
	var stItems []*item
	for _, it := range items {
		if it.ev.Kind == Status {
			sts, stItems = append(sts, *it.ev.Status), append(stItems, it)
		}
	}
	if len(sts) > 0 {
		if err := f.d.Index.PutStatuses(ctx, sts); err == nil {
			for _, it := range stItems {
				f.applied(it)
			}
		} else if !refused(err) {
			return fail("statuses", err)
		} else {
			for i, it := range stItems {
				switch err := f.d.Index.PutStatuses(ctx, sts[i:i+1]); {
				case err == nil:
					f.applied(it)
				case errors.Is(err, index.ErrNotFound):
					if err := f.deferStatus(ctx, it); err != nil {
						return fail("status", err)
					}
				case refused(err):
					f.giveUp(it, string(Status), err)
				default:
					return fail("status", err)
				}
			}
		}
	}
	f.settle(ctx, batch)
	return nil
}

// refused reports whether the index refused a record (invalid, unknown
// document, not a recipient), as opposed to failing to write.
func refused(err error) bool {
	return errors.Is(err, index.ErrNotFound) || errors.Is(err, index.ErrNotRecipient) || errors.Is(err, index.ErrInvalid)
}

// Deferring a status whose document is not in the index: the document's
// event is most likely a moment behind (another hub crashed between
// archiving and publishing it, and its redelivery publishes it). The status
// is naked (deferShortTries times, shortly); then the document is read
// from the archive, where the deciding hub found it; a document in neither
// place after deferMaxTries deliveries (about a quarter of an hour) is
// given up, loudly.
const (
	deferShortTries = 2
	deferMaxTries   = 20
)

func (f *Follower) deferStatus(ctx context.Context, it *item) error {
	st := it.ev.Status
	n := it.md.NumDelivered
	if n <= deferShortTries {
		f.deferMsg(it, time.Duration(n)*500*time.Millisecond)
		return nil
	}
	rec, err := projection.Document(ctx, f.d.Archive, f.d.Trust, f.d.Now(), projection.ContainerKey(st.DocumentID))
	if err == nil {
		if err := f.d.Index.PutDocuments(ctx, []index.Record{rec}); err != nil {
			return err
		}
		if err := f.d.Index.PutStatuses(ctx, []index.StatusEntry{*st}); err != nil {
			if refused(err) {
				f.giveUp(it, string(Status), err)
				return nil
			}
			return err
		}
		f.log.Info("events: a status came before its document: the document was read from the archive", "doc_id", st.DocumentID)
		f.applied(it)
		return nil
	}
	if n >= deferMaxTries {
		f.giveUp(it, string(Status), fmt.Errorf("document %s is neither indexed nor archived after %d tries: %w", st.DocumentID, n, err))
		return nil
	}
	if !errors.Is(err, archive.ErrNotFound) {
		f.log.Warn("events: a status waits for its document, which the archive did not give", "doc_id", st.DocumentID, "err", err)
	}
	f.deferMsg(it, min(time.Duration(1<<min(n, 10))*250*time.Millisecond, time.Minute))
	return nil
}

// deferMsg naks an event to be applied later.
func (f *Follower) deferMsg(it *item, delay time.Duration) {
	it.msg.NakWithDelay(delay)
	it.done = true
	f.mu.Lock()
	f.deferred[it.md.Sequence.Stream] = struct{}{}
	f.mu.Unlock()
}

// giveUp acknowledges an event that can never be applied, loudly: the
// archive holds what it reported, and a rebuild indexes it.
func (f *Follower) giveUp(it *item, kind string, err error) {
	seq := uint64(0)
	if it.md != nil {
		seq = it.md.Sequence.Stream
	}
	f.log.Error("events: an event cannot be applied to this index (a rebuild from the archive indexes what the archive holds)",
		"seq", seq, "kind", kind, "err", err)
	f.m.unapplied.WithLabelValues(kind).Inc()
	it.msg.Term()
	it.done = true
	f.mu.Lock()
	delete(f.deferred, seq)
	f.mu.Unlock()
}

func (f *Follower) applied(it *item) {
	it.msg.Ack()
	it.done = true
	f.m.applied.WithLabelValues(string(it.ev.Kind)).Inc()
	if it.md.NumDelivered == 1 {
		f.m.delay.Observe(time.Since(it.md.Timestamp).Seconds())
	}
	f.mu.Lock()
	delete(f.deferred, it.md.Sequence.Stream)
	f.mu.Unlock()
}

// settle records how far the index is: in memory for WaitApplied, in the
// index's events state (the last sequence below which nothing waits), and
// the lag.
func (f *Follower) settle(ctx context.Context, batch []jetstream.Msg) {
	var last *jetstream.MsgMetadata
	for _, m := range batch {
		if md, err := m.Metadata(); err == nil && (last == nil || md.Sequence.Stream > last.Sequence.Stream) {
			last = md
		}
	}
	if last == nil {
		return
	}
	f.mu.Lock()
	f.hi = max(f.hi, last.Sequence.Stream)
	f.pending = last.NumPending
	if last.NumPending == 0 && len(f.deferred) == 0 {
		f.lag = 0
	} else {
		f.lag = time.Since(last.Timestamp)
	}
	lag := f.lag
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	f.m.lag.Set(lag.Seconds())
	f.save(ctx, false)
}

// saveEvery is how often, at most, a busy follower records where its index
// stands (one more transaction): a restart applies the events since again,
// harmlessly.
const saveEvery = time.Second

// save records, in the index's events state, the sequence below which every
// event is applied: when it changed, and, unless now, saveEvery after the
// last time.
func (f *Follower) save(ctx context.Context, now bool) {
	f.mu.Lock()
	floor := f.hi
	for s := range f.deferred {
		floor = min(floor, s-1)
	}
	due := floor != f.saved && (now || time.Since(f.savedAt) >= saveEvery)
	f.mu.Unlock()
	if !due {
		return
	}
	if err := f.d.Index.SetEventsState(ctx, index.EventsState{Consumer: f.cfg.Consumer, Seq: floor, Complete: true}); err != nil {
		f.log.Warn("events: record the index's position", "err", err)
		return
	}
	f.mu.Lock()
	f.saved, f.savedAt = floor, time.Now()
	f.mu.Unlock()
}

type metrics struct {
	lag, rebuilding, rebuildTotal, rebuildDone, rebuildSeconds prometheus.Gauge
	delay                                                      prometheus.Histogram
	applied, unapplied                                         *prometheus.CounterVec
	rebuilds                                                   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edx_hub_index_lag_seconds",
			Help: "How far this hub's index is behind the decision events: the age of the last event applied while more wait, 0 when none waits."}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edx_hub_index_apply_delay_seconds",
			Help:    "From an event's publication (by any hub) to its application to this hub's index.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edx_hub_events_applied_total",
			Help: "Decision events applied to this hub's index, by kind."}, []string{"kind"}),
		unapplied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edx_hub_events_unapplied_total",
			Help: "Decision events this hub's index could never apply (logged at error level; a rebuild indexes what the archive holds)."}, []string{"kind"}),
		rebuilding: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edx_hub_index_rebuilding",
			Help: "1 while this hub rebuilds its index from the archive (catching up), else 0."}),
		rebuildTotal: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edx_hub_index_rebuild_objects",
			Help: "Archived objects the last rebuild of the index reads."}),
		rebuildDone: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edx_hub_index_rebuild_objects_done",
			Help: "Archived objects the last rebuild of the index has read."}),
		rebuildSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edx_hub_index_rebuild_seconds",
			Help: "How long the last completed rebuild of the index took."}),
		rebuilds: prometheus.NewCounter(prometheus.CounterOpts{Name: "edx_hub_index_rebuilds_total",
			Help: "Rebuilds of the index from the archive since the hub started."}),
	}
	if reg != nil {
		reg.MustRegister(m.lag, m.delay, m.applied, m.unapplied, m.rebuilding, m.rebuildTotal, m.rebuildDone, m.rebuildSeconds, m.rebuilds)
	}
	return m
}
