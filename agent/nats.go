package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/agent/durable"
	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/agent/webhook"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// natsOption is a nats.Option (an alias so tests can add some).
type natsOption = nats.Option

// link is one connection to the hub's NATS.
type link struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	stage *protocol.Stage // large deliveries
}

func (l *link) close() {
	if err := l.nc.Drain(); err != nil {
		l.nc.Close()
	}
}

// connect is the one place that opens a connection to the hub.
func (a *Agent) connect(ctx context.Context) (*link, error) {
	opts := []nats.Option{
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			a.log.Warn("nats: async error", "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			a.m.connected.Set(0)
			a.log.Warn("nats: disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			a.m.connected.Set(1)
			a.log.Info("nats: reconnected", "url", nc.ConnectedUrlRedacted())
			a.kickSend()
			a.kickStatus()
			kick(a.wakeWitness)
		}),
		nats.ReconnectWait(time.Second),
	}
	if k := a.cfg.NATS.Keepalive; k > 0 {
		opts = append(opts, nats.PingInterval(k))
	}
	opts = append(opts, a.natsOpts...)
	nc, js, stage, err := protocol.ConnectUnit(ctx, a.cfg.NATS.URL, a.sec.Creds, a.cfg.Unit, opts...)
	if err != nil {
		return nil, err
	}
	return &link{nc: nc, js: js, stage: stage}, nil
}

func (a *Agent) current() *link {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.link
}

// backoff returns the wait before attempt n (1, 2, ...).
func (a *Agent) backoff(n int) time.Duration {
	return min(250*time.Millisecond<<min(n, 12), a.cfg.Send.MaxBackoff)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// runNATS connects (retrying until it can: the API keeps spooling
// meanwhile), then runs the sender, the status sender, the receiver and the
// notice reader until ctx is done.
func (a *Agent) runNATS(ctx context.Context) {
	var l *link
	for n := 1; ; n++ {
		var err error
		if l, err = a.connect(ctx); err == nil {
			break
		}
		a.log.Warn("nats: cannot connect, will retry", "url", a.cfg.NATS.URL, "attempt", n, "err", err)
		if !sleep(ctx, a.backoff(n)) {
			return
		}
	}
	a.mu.Lock()
	a.link = l
	a.mu.Unlock()
	a.m.connected.Set(1)
	a.log.Info("nats: connected", "url", l.nc.ConnectedUrlRedacted(), "unit", a.cfg.Unit)
	var wg sync.WaitGroup
	wg.Go(func() { a.sender(ctx, l) })
	wg.Go(func() { a.statusSender(ctx, l) })
	wg.Go(func() { a.witness(ctx, l) })
	var legacy context.CancelFunc // reading an earlier hub's notices
	wg.Go(func() {
		a.consume(ctx, l, protocol.StreamDeliver, protocol.UnitConsumer(string(a.cfg.Unit)), a.handleReceived, func(cons jetstream.Consumer) {
			// A hub of an earlier version keeps the notices apart, with a
			// consumer of their own: read it too, until the hub is
			// upgraded (its consumer then says it brings the notices).
			switch earlier := cons.CachedInfo().Config.Metadata[protocol.UnitConsumerMetadata] != "true"; {
			case earlier && legacy == nil:
				a.log.Info("nats: the hub keeps notices in a stream of their own (an earlier version): reading it too")
				var lctx context.Context
				lctx, legacy = context.WithCancel(ctx)
				wg.Go(func() {
					a.consume(lctx, l, protocol.LegacyStreamNotice, protocol.LegacyNoticeConsumer(string(a.cfg.Unit)), a.handleNotice, nil)
				})
			case !earlier && legacy != nil:
				legacy()
				legacy = nil
			}
		})
	})
	wg.Wait()
	if legacy != nil {
		legacy()
	}
}

// handleReceived hands a message of the unit's consumer to handleNotice or
// handleDelivery, as its kind says (protocol.IsNotice).
func (a *Agent) handleReceived(ctx context.Context, l *link, msg jetstream.Msg) error {
	if protocol.IsNotice(msg.Headers()) {
		return a.handleNotice(ctx, l, msg)
	}
	return a.handleDelivery(ctx, l, msg)
}

// sender publishes spooled documents in the order they were spooled, each
// until the stream acknowledges it; a failure is retried with backoff before
// anything later is sent.
func (a *Agent) sender(ctx context.Context, l *link) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	failures := 0
	lastResubmit := time.Now()
	for {
		recs, err := a.spool.Pending(ctx, 100)
		if err == nil && time.Since(lastResubmit) > time.Minute {
			lastResubmit = time.Now()
			var again []*spool.Record
			if again, err = a.spool.Unanswered(ctx, time.Now().Add(-a.cfg.Send.ResubmitAfter), 100); len(again) > 0 {
				a.log.Info("sender: publishing again documents the hub never answered", "count", len(again))
				recs = append(again, recs...)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Error("sender: spool", "err", err)
		}
		ok := true
		for _, r := range recs {
			if ctx.Err() != nil {
				return
			}
			if err := a.publish(ctx, l, r); err != nil {
				if ctx.Err() != nil {
					return
				}
				failures++
				a.m.publishErrors.Inc()
				a.spool.Attempt(ctx, r.ID, err)
				a.log.Warn("sender: publish failed, will retry", "doc_id", r.ID, "attempt", failures, "err", err)
				ok = false
				break
			}
			failures = 0
			if err := a.spool.MarkSubmitted(ctx, r.ID); err != nil {
				a.log.Error("sender: spool", "doc_id", r.ID, "err", err)
			}
			a.log.Info("document submitted", "doc_id", r.ID, "size", r.Size)
		}
		if !ok {
			if !sleep(ctx, a.backoff(failures)) {
				return
			}
			continue
		}
		if len(recs) == 100 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-a.wakeSend:
		case <-tick.C:
		}
	}
}

// publish sends one spooled document: inline, or staged (encrypted) when
// above the inline limit. Its Msg-Id is the same on every attempt, so the
// stream keeps one copy.
func (a *Agent) publish(ctx context.Context, l *link, r *spool.Record) error {
	data, err := a.spool.Container(r.ID)
	if err != nil {
		return err
	}
	t0 := time.Now()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(len(data)/(1<<20))*time.Second)
	defer cancel()
	c := &protocol.Container{DocumentID: r.ID, SHA256: r.SHA256, Size: int64(len(data)), Data: data}
	if len(data) > protocol.InlineLimit {
		if err := protocol.UploadStaged(pctx, l.js, a.cfg.Unit, c); err != nil {
			return err
		}
	}
	if _, err := l.js.PublishMsg(pctx, protocol.SubmitMsg(a.cfg.Unit, c)); err != nil {
		return err
	}
	a.m.publishSeconds.Observe(time.Since(t0).Seconds())
	return nil
}

// statusSender publishes queued statuses in order.
func (a *Agent) statusSender(ctx context.Context, l *link) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	failures := 0
	for {
		sts, err := a.inbox.PendingStatuses(ctx, 100)
		if err != nil && ctx.Err() == nil {
			a.log.Error("status sender: inbox", "err", err)
		}
		ok := true
		for _, st := range sts {
			rep, err := a.signedStatus(ctx, st)
			var m *nats.Msg
			if err == nil {
				m, err = protocol.StatusReportMsg(rep)
			}
			if err == nil {
				pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err = l.js.PublishMsg(pctx, m)
				cancel()
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				failures++
				a.m.publishErrors.Inc()
				a.log.Warn("status sender: publish failed, will retry", "doc_id", st.DocumentID, "code", st.Code, "err", err)
				ok = false
				break
			}
			failures = 0
			if err := a.inbox.MarkStatusSent(ctx, st.Seq); err != nil {
				a.log.Error("status sender: inbox", "err", err)
			}
			a.m.statuses.WithLabelValues(string(st.Code)).Inc()
			a.log.Info("status sent", "doc_id", st.DocumentID, "code", st.Code)
		}
		if !ok {
			if !sleep(ctx, a.backoff(failures)) {
				return
			}
			continue
		}
		if len(sts) == 100 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-a.wakeStatus:
		case <-tick.C:
		}
	}
}

// errRetry marks a failure worth a redelivery: the message is naked.
type errRetry struct{ error }

// consume reads a unit's durable consumer, one message at a time, until
// ctx is done; the message in hand is finished first. found, if not nil,
// sees the consumer each time it is looked up. A consumer that goes away
// (the hub replaced it, or a server that restarted forgot it until the
// hub gives it back) is looked up again until it is there. When the unit
// has no consumer of EDX_DELIVER, the hub may keep none
// (nats.streams.unit_consumers: cursor): the agent then asks the hub by
// cursor (protocol.PullCursor), for as long as the hub answers.
func (a *Agent) consume(ctx context.Context, l *link, stream, name string, handle func(context.Context, *link, jetstream.Msg) error,
	found func(jetstream.Consumer)) {
	for n := 1; ctx.Err() == nil; n++ {
		cons, err := l.js.Consumer(ctx, stream, name)
		if errors.Is(err, jetstream.ErrConsumerNotFound) && stream == protocol.StreamDeliver {
			err = a.consumeByCursor(ctx, l, handle)
			if err == nil {
				return
			}
			if !errors.Is(err, protocol.ErrNoFetchAnswer) {
				n = 0
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("nats: consumer unavailable, will retry", "consumer", name, "err", err)
			if !sleep(ctx, a.backoff(n)) {
				return
			}
			continue
		}
		n = 0
		if found != nil {
			found(cons)
		}
		if err := a.consumeFrom(ctx, l, cons, name, handle); err != nil {
			a.log.Warn("nats: consumer stopped, will look it up again", "consumer", name, "err", err)
			if !sleep(ctx, a.backoff(1)) {
				return
			}
		}
	}
}

// consumeFrom reads cons until ctx is done (nil) or the consumer stops
// (its error).
func (a *Agent) consumeFrom(ctx context.Context, l *link, cons jetstream.Consumer, name string, handle func(context.Context, *link, jetstream.Msg) error) error {
	it, err := protocol.PullUnit(l.nc, cons, 64<<20, a.cfg.NATS.Keepalive)
	if err != nil {
		return err
	}
	return a.read(ctx, l, it, name, handle)
}

// consumeByCursor reads the unit's messages by cursor until ctx is done
// (nil) or the hub stops answering (protocol.ErrNoFetchAnswer when it never
// did). The cursor, the unit's acknowledgement floor, is kept in the data
// directory (cursorFile) at most every second and when the reading stops:
// one lost or behind brings again messages the inbox already holds, which
// it takes once.
func (a *Agent) consumeByCursor(ctx context.Context, l *link, handle func(context.Context, *link, jetstream.Msg) error) error {
	from := a.loadCursor()
	var saved atomic.Int64 // when, in Unix nanoseconds
	it := protocol.PullCursor(l.nc, string(a.cfg.Unit), from, 64<<20, a.cfg.NATS.Keepalive, func(floor uint64) {
		if now := time.Now().UnixNano(); now-saved.Load() >= int64(time.Second) || floor == 0 {
			saved.Store(now)
			a.saveCursor(floor)
		}
	}, a.log)
	err := a.read(ctx, l, it, "cursor", handle)
	if f := it.Floor(); f != from || err == nil {
		a.saveCursor(f)
	}
	return err
}

// cursorFile is the file in the data directory that keeps the unit's
// cursor when it reads by cursor.
const cursorFile = "deliver.cursor"

func (a *Agent) loadCursor() uint64 {
	b, err := os.ReadFile(filepath.Join(a.cfg.Data, cursorFile))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.log.Warn("nats: reading the cursor, starting from the oldest message the hub holds", "err", err)
		}
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		a.log.Warn("nats: the cursor file is unreadable, starting from the oldest message the hub holds", "err", err)
		return 0
	}
	return n
}

func (a *Agent) saveCursor(floor uint64) {
	if err := durable.WriteFile(filepath.Join(a.cfg.Data, cursorFile), []byte(strconv.FormatUint(floor, 10)+"\n"), 0o600); err != nil {
		a.log.Warn("nats: keeping the cursor", "err", err)
	}
}

// read takes the messages of it until ctx is done (nil) or it stops (its
// error).
func (a *Agent) read(ctx context.Context, l *link, it interface {
	Next() (jetstream.Msg, error)
	Stop()
}, name string, handle func(context.Context, *link, jetstream.Msg) error) error {
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	var last error
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return fmt.Errorf("%w (after: %v)", err, last)
			}
			last = err
			a.log.Debug("nats: pull", "consumer", name, "err", err)
			continue
		}
		wctx := context.WithoutCancel(ctx)
		err = handle(wctx, l, msg)
		var retry errRetry
		switch {
		case errors.As(err, &retry):
			n := uint64(1)
			if md, merr := msg.Metadata(); merr == nil {
				n = md.NumDelivered
			}
			a.log.Warn("nats: will retry message", "consumer", name, "attempt", n, "err", err)
			msg.NakWithDelay(a.backoff(int(n)))
		case err != nil:
			a.log.Error("nats: message", "consumer", name, "err", err)
			fallthrough
		default:
			// Not waited for: an acknowledgement lost on the way brings
			// the message again after the consumer's ack wait, and the
			// inbox and the spool take each document and notice once.
			if err := msg.Ack(); err != nil {
				a.log.Warn("nats: ack", "consumer", name, "err", err)
			}
		}
	}
}

// handleDelivery verifies a delivery locally (the container and the hub's
// receipt, at the current time, against the agent's own trust roots),
// stores it in the inbox and queues status 01.
//
// What happens to the message depends on whether trying again could help:
//
//   - a delivery the agent could not obtain or store for now (its staged
//     container missing or unreadable, the server unreachable, the inbox
//     folder or its database failing: a full disk, a document system's
//     share down) is never acknowledged: it is naked and tried again with
//     backoff, until it goes through. A missing staged container is staged
//     again by the hub from its archive.
//   - a delivery that can never be handed over (malformed, larger than this
//     agent takes, failing verification, or with file names the inbox folder
//     cannot hold) is quarantined with its reasons, refused (status 02 with
//     the reasons, sent to the hub, which records it and tells the sender),
//     and acknowledged.
func (a *Agent) handleDelivery(ctx context.Context, l *link, msg jetstream.Msg) error {
	nm := &nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()}
	d, err := protocol.ParseDelivery(nm)
	if err != nil {
		return a.refuse(ctx, nm.Header.Get(protocol.HeaderDocID), msg.Data(), nil, reason.List{{Code: reason.SubmissionInvalid, Message: err.Error()}})
	}
	if d.Size > a.limits.MaxSize {
		return a.refuse(ctx, string(d.DocumentID), d.Data, d.Receipt, reason.List{{Code: reason.ContainerTooLarge,
			Message: fmt.Sprintf("container of %d bytes exceeds this agent's limit of %d", d.Size, a.limits.MaxSize)}})
	}
	data := d.Data
	if d.Staged != "" {
		msg.InProgress()
		data, err = protocol.GetStaged(ctx, l.stage, d.Staged, d.StageKey, a.limits.MaxSize)
		if err != nil {
			// Never acknowledged: the container is in the hub's archive,
			// and the hub stages it again when its object is missing.
			a.m.received.WithLabelValues("waiting").Inc()
			return errRetry{fmt.Errorf("delivery %s: staged container %s not available yet: %w", d.DocumentID, d.Staged, err)}
		}
	}
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	now := time.Now()
	var rs reason.List
	if sha != d.SHA256 {
		rs.Add(reason.SubmissionStaged, fmt.Sprintf("the container's SHA-256 is %s, the message says %s", sha, d.SHA256))
	}
	opts := container.Options{Trust: a.sec.Trust, At: now}
	c, rep := container.VerifyBytes(data, a.limits, opts)
	rs = append(rs, rep.Reasons...)
	if c != nil {
		if c.Meta.ID != d.DocumentID {
			rs.Add(reason.SubmissionInvalid, fmt.Sprintf("the message names document %s, the container holds %s", d.DocumentID, c.Meta.ID))
		}
		if !slices.Contains(c.Meta.To, a.cfg.Unit) && len(d.For) == 0 {
			rs.Add(reason.RecipientUnknown, fmt.Sprintf("unit %s is not among the document's recipients", a.cfg.Unit))
		}
		for _, u := range d.For {
			if !slices.Contains(c.Meta.To, u) {
				rs.Add(reason.RecipientUnknown, fmt.Sprintf("the hub gives the gateway %s to carry to %s, which is not among the document's recipients", a.cfg.Unit, u))
			}
		}
		if d.Sender != c.Meta.From {
			rs.Add(reason.SenderMismatch, fmt.Sprintf("the hub names sender %s, the document is from %s", d.Sender, c.Meta.From))
		}
	}
	rr := container.VerifyReceipt(d.Receipt, sha, opts)
	rs = append(rs, rr.Reasons...)
	if rr.Receipt != nil && c != nil {
		to := d.For
		if slices.Contains(c.Meta.To, a.cfg.Unit) {
			to = append([]document.UnitID{a.cfg.Unit}, to...)
		}
		if rr.Receipt.DocumentID != c.Meta.ID || rr.Receipt.From != c.Meta.From || !subset(to, rr.Receipt.To) {
			rs.Add(reason.ReceiptInvalid, "the receipt names another document, sender or recipients")
		}
	}
	if held := heldReasons(rs); len(held) > 0 {
		// The agent cannot tell yet (its CRL is stale): not the document's
		// fault, so no quarantine; retried with backoff.
		a.m.held.Inc()
		a.log.Error("delivery held, not verified: the agent's CRL is stale (install a current CRL)",
			"doc_id", d.DocumentID, "reasons", held.Error())
		return errRetry{fmt.Errorf("delivery %s: %w", d.DocumentID, held)}
	}
	if len(rs) > 0 || c == nil || rr.Receipt == nil {
		if len(d.For) > 0 && a.bridge != nil {
			// The outside recipients refuse it too: the sender learns of it.
			if err := a.bridge.RefuseCarried(ctx, d.DocumentID, d.For, rs); err != nil {
				return errRetry{err}
			}
		}
		return a.refuse(ctx, string(d.DocumentID), data, d.Receipt, rs)
	}
	if len(d.For) > 0 {
		// The hub gives the gateway the document to carry to recipients
		// outside the city.
		if a.bridge == nil {
			a.log.Error("the hub routes documents for recipients outside the city to this unit, but its agent has no bridge: configure bridge: (or the hub's pipeline.gateway); the delivery waits",
				"doc_id", d.DocumentID, "for", d.For)
			return errRetry{fmt.Errorf("delivery %s: no bridge to carry it to %v", d.DocumentID, d.For)}
		}
		if err := a.bridge.Carry(ctx, c, rr.Receipt.AcceptedAt, d.For); err != nil {
			return errRetry{err}
		}
		a.m.received.WithLabelValues("carried").Inc()
		if !slices.Contains(c.Meta.To, a.cfg.Unit) {
			return nil
		}
	}
	it, isNew, err := a.inbox.Put(ctx, a.cfg.Unit, inbox.Received{Container: c, SHA256: sha, Receipt: d.Receipt, Body: rr.Receipt})
	var ue *inbox.UnwritableError
	switch {
	case errors.As(err, &ue):
		return a.refuse(ctx, string(d.DocumentID), data, d.Receipt, ue.Reasons)
	case err != nil:
		return errRetry{err}
	}
	if !isNew {
		a.m.received.WithLabelValues("duplicate").Inc()
		a.log.Info("delivery seen before, not handed over again", "doc_id", it.ID)
		a.kickStatus()
		return nil
	}
	a.m.received.WithLabelValues("stored").Inc()
	a.log.Info("document received", "doc_id", it.ID, "from", it.From, "size", it.Size)
	a.hook.Notify(webhook.Event{ID: "inbox." + string(it.ID), Type: webhook.InboxDocument, DocumentID: it.ID, Time: it.ReceivedAt,
		Data: map[string]any{"cursor": it.Cursor, "from": it.From, "subject": it.Subject, "files": it.Files}})
	a.kickStatus()
	return nil
}

// refuse quarantines a delivery that can never be handed to the document
// system, with its reasons, and queues the unit's refusal (status 02) for
// the hub and the sender; the delivery is then acknowledged. Both steps
// are done once per delivery, however often it comes.
func (a *Agent) refuse(ctx context.Context, id string, data, receipt []byte, rs reason.List) error {
	dir, err := a.inbox.Quarantine(documentID(id), data, receipt, rs)
	if err != nil {
		return errRetry{err}
	}
	queued := false
	if documentID(id).Validate() == nil {
		sum := sha256.Sum256(data)
		if queued, err = a.inbox.Refuse(ctx, a.cfg.Unit, documentID(id), hex.EncodeToString(sum[:]), rs); err != nil {
			return errRetry{err}
		}
	}
	a.m.received.WithLabelValues("quarantined").Inc()
	a.log.Error("delivery refused: quarantined, not handed to the document system", "doc_id", id, "reasons", rs.Error(), "dir", dir, "refusal_queued", queued)
	if queued {
		a.kickStatus()
	}
	return nil
}

// handleNotice applies the hub's notice to the spool (accepted, rejected,
// a recipient's status) or the inbox (a status of ours refused).
func (a *Agent) handleNotice(ctx context.Context, _ *link, msg jetstream.Msg) error {
	n, err := protocol.ParseNotice(&nats.Msg{Data: msg.Data()})
	if err != nil {
		return err // unreadable: acked and logged
	}
	evID := "notice." + msg.Headers().Get(protocol.HeaderMsgID)
	switch n.Type {
	case protocol.NoticeAccepted, protocol.NoticeRejected:
		rec, err := a.spool.Get(ctx, n.DocumentID)
		if errors.Is(err, spool.ErrNotFound) {
			// Another client of this unit (edx send) submitted it: its
			// decision went to that client too; nothing to do here.
			a.log.Info("decision for a document another client of this unit sent", "doc_id", n.DocumentID, "type", n.Type)
			return nil
		}
		if err != nil {
			return errRetry{err}
		}
		var changed bool
		if n.Type == protocol.NoticeAccepted {
			rr := container.VerifyReceipt(n.Receipt, rec.SHA256, container.Options{Trust: a.sec.Trust, At: time.Now()})
			problems := rr.Reasons
			if rr.Receipt != nil && rr.Receipt.DocumentID != rec.ID {
				problems.Add(reason.ReceiptInvalid, "the receipt names document "+string(rr.Receipt.DocumentID))
			}
			if len(problems) > 0 {
				a.log.Error("the hub's receipt does not verify", "doc_id", rec.ID, "reasons", problems.Error())
			}
			changed, err = a.spool.Accept(ctx, rec.ID, spool.Acceptance{At: n.Time, ArchiveKey: n.ArchiveKey, Receipt: n.Receipt, ReceiptProblems: problems})
		} else {
			changed, err = a.spool.Reject(ctx, rec.ID, n.Time, n.Reasons)
			if err == nil && a.bridge != nil {
				// A document the gateway brought in is refused to its sender.
				_, err = a.bridge.Rejected(ctx, rec.ID, n.Time, n.Reasons)
			}
		}
		if err != nil {
			return errRetry{err}
		}
		if !changed {
			return nil
		}
		if rec, err = a.spool.Get(ctx, rec.ID); err != nil {
			return errRetry{err}
		}
		a.m.sent.WithLabelValues(string(rec.State)).Inc()
		a.m.sendSeconds.Observe(time.Since(rec.CreatedAt).Seconds())
		a.log.Info("document "+string(rec.State), "doc_id", rec.ID, "reasons", rec.Reasons.Error())
		typ := webhook.DocumentAccepted
		if rec.State == spool.Rejected {
			typ = webhook.DocumentRejected
		}
		a.hook.Notify(webhook.Event{ID: evID, Type: typ, DocumentID: rec.ID, Time: n.Time,
			Data: map[string]any{"state": rec.State, "archive_key": rec.ArchiveKey, "reasons": rec.Reasons}})
		if a.folders != nil {
			if err := a.folders.Decided(rec); err != nil {
				a.log.Warn("folders: update", "doc_id", rec.ID, "err", err)
			}
		}
	case protocol.NoticeStatus:
		if n.Status == nil {
			return errors.New("status notice without a status")
		}
		var problems string
		if len(n.StatusSignature) > 0 {
			problems = a.checkStatusSignature(ctx, n.Status, n.StatusSignature)
		}
		added, err := a.spool.AddSignedStatus(ctx, *n.Status, n.StatusSignature, problems)
		if a.bridge != nil && (err == nil || errors.Is(err, spool.ErrNotFound)) {
			// A status the gateway relays up: a city recipient's on a
			// document it brought in, a city sender's 13 on one it carried.
			relayed, rerr := a.bridge.FromCity(ctx, *n.Status)
			if rerr != nil {
				return errRetry{rerr}
			}
			if relayed && err != nil {
				return nil
			}
		}
		if errors.Is(err, spool.ErrNotFound) {
			return a.senderStatus(ctx, evID, n.Status)
		}
		if err != nil {
			return errRetry{err}
		}
		if added {
			a.log.Info("status received", "doc_id", n.Status.DocumentID, "unit", n.Status.Unit, "code", n.Status.Code)
			a.hook.Notify(webhook.Event{ID: evID, Type: webhook.DocumentStatus, DocumentID: n.Status.DocumentID, Time: n.Status.Time, Data: n.Status})
		}
	case protocol.NoticeStatusRejected:
		if n.Status == nil {
			a.log.Warn("the hub refused a status", "reasons", n.Reasons.Error())
			return nil
		}
		if err := a.inbox.RejectStatus(ctx, *n.Status, n.Reasons); err != nil {
			return errRetry{err}
		}
		if a.bridge != nil {
			if _, err := a.bridge.StatusRejected(ctx, *n.Status, n.Reasons); err != nil {
				return errRetry{err}
			}
		}
		a.log.Warn("the hub refused a status", "doc_id", n.Status.DocumentID, "code", n.Status.Code, "reasons", n.Reasons.Error())
		a.hook.Notify(webhook.Event{ID: evID, Type: webhook.StatusRejected, DocumentID: n.Status.DocumentID, Time: n.Time,
			Data: map[string]any{"status": n.Status, "reasons": n.Reasons}})
	default:
		a.log.Warn("notice of an unknown type", "type", n.Type)
	}
	return nil
}

// senderStatus records a status on a document this unit received, which
// the hub passes on from the document's sender (13: it takes the document
// back), for the document system.
func (a *Agent) senderStatus(ctx context.Context, evID string, st *document.Status) error {
	ss, isNew, err := a.inbox.AddSenderStatus(ctx, *st)
	var ps document.Problems
	switch {
	case errors.Is(err, inbox.ErrNotFound), errors.Is(err, inbox.ErrNotSender):
		a.log.Warn("status on a document this agent neither sent nor received from the reporting unit", "doc_id", st.DocumentID, "unit", st.Unit, "code", st.Code)
		return nil
	case errors.As(err, &ps):
		a.log.Warn("invalid status from the hub", "doc_id", st.DocumentID, "err", err)
		return nil
	case err != nil:
		return errRetry{err}
	}
	if isNew {
		a.log.Info("sender's status received", "doc_id", st.DocumentID, "unit", st.Unit, "code", st.Code)
		a.hook.Notify(webhook.Event{ID: evID, Type: webhook.InboxStatus, DocumentID: st.DocumentID, Time: st.Time,
			Data: map[string]any{"status": ss.Status, "seq": ss.Seq}})
	}
	return nil
}

// subset reports whether every unit of a is in b.
func subset(a, b []document.UnitID) bool {
	for _, u := range a {
		if !slices.Contains(b, u) {
			return false
		}
	}
	return true
}

// relayStatus publishes, on this unit's status subject, a status the
// gateway relays into the city (agent/bridge): an outside unit's, or its
// own 13 on a document it brought in.
func (a *Agent) relayStatus(ctx context.Context, st *document.Status) error {
	l := a.current()
	if l == nil {
		return errors.New("not connected to the hub")
	}
	m, err := protocol.RelayStatusMsg(a.cfg.Unit, st)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := l.js.PublishMsg(pctx, m); err != nil {
		return err
	}
	a.m.statuses.WithLabelValues(string(st.Code)).Inc()
	return nil
}
