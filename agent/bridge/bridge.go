// Package bridge makes the agent of the city's gateway unit a client of an
// upstream axis (the national axis, VDXP) through the axis's client
// protocol (pkg/axis), as a provincial axis is: documents of the city's
// units for recipients outside the city go up with sendEdoc; documents from
// outside come down with getReceivedEdocList and getEdoc, are brought into
// the city as documents the gateway signs (document.Upstream names the
// sender outside and the upstream's id; the packet is kept in the
// container as files/original.edxml) and acknowledged with updateStatus;
// statuses travel both ways.
//
// The hub decides which recipients are outside (hub/pipeline Gateway): a
// delivery to the gateway names those it carries (protocol.Delivery.For).
//
// Nothing is lost or doubled across restarts and outages. Everything the
// bridge takes on is recorded in SQLite (DATA/state/bridge.db) before it
// is acknowledged: a delivery before the hub's message is acknowledged, a
// document or status from the upstream before updateStatus. A document
// brought in carries the idempotency key of its upstream id, so fetching
// it again after a crash gives back the document spooled the first time; a
// status relayed into the city keeps the time it was given when first
// taken, so the hub takes it once. Going up, a send whose answer was lost
// may still have reached the upstream: before sending a document again,
// the bridge looks for it in the upstream's getSentEdocList (not yet
// claimed by another document, same recipient and number/notation, sent
// since the attempt); a status sent again after a lost answer that the
// upstream refuses is taken as the duplicate it refused (peers refuse an
// exact duplicate status). Every upstream id is kept for reconciliation.
package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/agent/outbox"
	"github.com/edxhub/edx/agent/packets"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/axis"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
	"github.com/edxhub/edx/pkg/reason"
)

// Exchange brings packets into the city (agent/packets).
type Exchange interface {
	SubmitDocument(ctx context.Context, r io.Reader, s packets.Submission) (*spool.Record, bool, error)
}

// Spool is the agent's spool of sent documents (agent/spool).
type Spool interface {
	Get(ctx context.Context, id document.ID) (*spool.Record, error)
	Container(id document.ID) ([]byte, error)
}

// Deps are what the bridge works with.
type Deps struct {
	Unit     document.UnitID
	Exchange Exchange
	Spool    Spool
	// Publish sends a status into the city on the gateway's status
	// subject (protocol.RelayStatusMsg): an outside unit's, or the
	// gateway's own 13 on a document it brought in.
	Publish func(ctx context.Context, st *document.Status) error
	// Spooled wakes the agent's sender after a document was brought in
	// (may be nil).
	Spooled func()
	// MaxPacket bounds a document packet fetched from the upstream.
	MaxPacket int64
	Log       *slog.Logger
	// Observe counts what happens (may be nil): carried_sent,
	// carried_reconciled, carried_refused, document_in, status_in,
	// status_up, status_down, refused_in, upstream_error.
	Observe func(event string)
}

// Bridge runs the exchange with the upstream.
type Bridge struct {
	cfg  Config
	d    Deps
	st   *store
	c    *Client
	dir  string
	log  *slog.Logger
	now  func() time.Time
	wake struct{ up, down, poll chan struct{} }
}

// New opens the bridge's state under dataDir (state/bridge.db, bridge/).
func New(ctx context.Context, cfg Config, secret []byte, dataDir string, d Deps) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(secret) < MinSecretLength {
		return nil, fmt.Errorf("bridge: the secret must be at least %d bytes", MinSecretLength)
	}
	if d.Exchange == nil || d.Spool == nil || d.Publish == nil || d.Unit.Validate() != nil {
		return nil, errors.New("bridge: unit, exchange, spool and publish are required")
	}
	if d.MaxPacket <= 0 {
		d.MaxPacket = container.DefaultLimits.MaxSize
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	loc, err := time.LoadLocation(cfg.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	b := &Bridge{cfg: cfg, d: d, dir: filepath.Join(dataDir, "bridge"), log: d.Log, now: time.Now,
		c: NewClient(cfg.URL, cfg.SystemID, secret, loc, cfg.Timeout)}
	for _, sub := range []string{"out", "tmp"} {
		if err := os.MkdirAll(filepath.Join(b.dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
	}
	// Packets being fetched when the agent stopped are fetched again.
	if tmp, err := os.ReadDir(filepath.Join(b.dir, "tmp")); err == nil {
		for _, e := range tmp {
			os.Remove(filepath.Join(b.dir, "tmp", e.Name()))
		}
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "state"), 0o750); err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	if b.st, err = openStore(ctx, filepath.Join(dataDir, "state", "bridge.db")); err != nil {
		return nil, err
	}
	b.wake.up, b.wake.down, b.wake.poll = make(chan struct{}, 1), make(chan struct{}, 1), make(chan struct{}, 1)
	// The packets of documents sent up or refused when the agent stopped
	// are not needed any more.
	if out, err := os.ReadDir(filepath.Join(b.dir, "out")); err == nil {
		for _, e := range out {
			id, ok := strings.CutSuffix(e.Name(), ".edxml")
			if c, err := b.st.carried(ctx, document.ID(id)); ok && err == nil && c.State != stateQueued || strings.HasPrefix(e.Name(), ".tmp-") {
				os.Remove(filepath.Join(b.dir, "out", e.Name()))
			}
		}
	}
	return b, nil
}

// Close closes the state.
func (b *Bridge) Close() error { return b.st.close() }

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (b *Bridge) observe(event string) {
	if b.d.Observe != nil {
		b.d.Observe(event)
	}
}

// Run exchanges with the upstream until ctx is done: it sends up what the
// city gives it, polls the upstream every Config.Poll, and relays statuses
// into the city.
func (b *Bridge) Run(ctx context.Context) {
	done := make(chan struct{}, 3)
	for _, loop := range []func(context.Context){b.upLoop, b.pollLoop, b.downLoop} {
		go func() { loop(ctx); done <- struct{}{} }()
	}
	for range 3 {
		<-done
	}
}

// KickPoll asks the upstream at once (tests, and an operator's nudge).
func (b *Bridge) KickPoll() { kick(b.wake.poll) }

func (b *Bridge) backoff(n int) time.Duration {
	return min(250*time.Millisecond<<min(n, 12), b.cfg.MaxBackoff)
}

func sleep(ctx context.Context, d time.Duration, wake chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wake:
	}
	return true
}

// loop runs step until ctx is done: again at once after work was done,
// after a backoff after a failure, else at the next wake or tick.
func (b *Bridge) loop(ctx context.Context, name string, tick time.Duration, wake chan struct{}, step func(context.Context) (bool, error)) {
	failures := 0
	for ctx.Err() == nil {
		did, err := step(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failures++
			b.observe("upstream_error")
			b.log.Warn("bridge: "+name+" failed, will retry", "attempt", failures, "err", err)
			if !sleep(ctx, b.backoff(failures), nil) {
				return
			}
		case did:
			failures = 0
		default:
			failures = 0
			if !sleep(ctx, tick, wake) {
				return
			}
		}
	}
}

// Carry takes a document of the city for recipients outside it (those the
// hub names in the delivery): its packet, written from the verified
// container as the recipients' axis reads it, is kept durably and the
// document queued to go up. A document carried before is not carried again.
func (b *Bridge) Carry(ctx context.Context, c *container.Container, acceptedAt time.Time, recipients []document.UnitID) error {
	d := c.Meta
	if _, err := b.st.carried(ctx, d.ID); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	path := b.outPath(d.ID)
	if err := writeDurable(path, func(w io.Writer) error { return inbox.WritePacket(w, c, acceptedAt) }); err != nil {
		return fmt.Errorf("bridge: packet of %s: %w", d.ID, err)
	}
	added, err := b.st.addCarried(ctx, &Carried{ID: d.ID, Sender: d.From, Recipients: recipients, EdXMLID: inbox.EdXMLID(d),
		About: about(d), Notation: code(d), Subject: d.Subject})
	if err != nil {
		return err
	}
	if added {
		b.log.Info("bridge: document to carry up", "doc_id", d.ID, "from", d.From, "to", units(recipients))
		kick(b.wake.up)
	}
	return nil
}

func (b *Bridge) outPath(id document.ID) string {
	return filepath.Join(b.dir, "out", string(id)+".edxml")
}

// about names d as the upstream knows it.
func about(d *document.Document) edxml.ResponseFor {
	return edxml.ResponseFor{OrganID: string(edxml.Sender(d)), Code: code(d), PromulgationDate: d.PromulgatedAt, DocumentID: inbox.EdXMLID(d)}
}

func code(d *document.Document) string { return strings.Trim(d.Number+"/"+d.Notation, "/") }

func units(us []document.UnitID) string {
	ss := make([]string, len(us))
	for i, u := range us {
		ss[i] = string(u)
	}
	return strings.Join(ss, ",")
}

// writeDurable writes a file atomically and durably from write.
func writeDurable(path string, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// RefuseCarried refuses, on behalf of the outside recipients the hub gave
// it, a delivery the gateway could not verify: status 02 from each, with
// the reasons, so that the sender knows. Once per recipient.
func (b *Bridge) RefuseCarried(ctx context.Context, id document.ID, recipients []document.UnitID, rs reason.List) error {
	if id.Validate() != nil {
		return nil
	}
	for _, r := range recipients {
		st := document.Status{DocumentID: id, Unit: r, Time: b.now().UTC(), Code: document.StatusRefused,
			Description: description("not delivered: refused on receipt by the city's gateway: " + rs.Error())}
		if err := b.st.addDown(ctx, "refused:"+string(id)+":"+string(r), &st); err != nil {
			return err
		}
	}
	kick(b.wake.down)
	return nil
}

// Carries reports whether the bridge carries document id up.
func (b *Bridge) Carries(ctx context.Context, id document.ID) (bool, error) {
	_, err := b.st.carried(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// FromCity takes a status the hub passed to the gateway: a city sender's
// 13 on a document the gateway carried up, or a city recipient's status on
// a document the gateway brought in; each is queued to go up, once. It
// reports whether the status was the bridge's to relay.
func (b *Bridge) FromCity(ctx context.Context, st document.Status) (bool, error) {
	if st.Code.BySender() {
		c, err := b.st.carried(ctx, st.DocumentID)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		if err != nil || st.Unit != c.Sender {
			return err == nil, err
		}
		return true, b.up(ctx, &UpStatus{Status: st, About: c.About, Recipients: c.Recipients})
	}
	f, err := b.st.injected(ctx, "", st.DocumentID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if f.About == nil || f.Sender == "" {
		return true, nil
	}
	return true, b.up(ctx, &UpStatus{Status: st, About: *f.About, Recipients: []document.UnitID{f.Sender}})
}

func (b *Bridge) up(ctx context.Context, u *UpStatus) error {
	added, err := b.st.addUp(ctx, u)
	if added {
		b.log.Info("bridge: status to relay up", "doc_id", u.Status.DocumentID, "unit", u.Status.Unit, "code", u.Status.Code, "to", units(u.Recipients))
		kick(b.wake.up)
	}
	return err
}

// Rejected takes the hub's rejection of a document the gateway sent: one
// it brought in is refused to its sender outside (status 02, with the
// reasons). It reports whether the document was one the bridge brought in.
func (b *Bridge) Rejected(ctx context.Context, id document.ID, at time.Time, rs reason.List) (bool, error) {
	f, err := b.st.injected(ctx, "", id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil || f.About == nil || f.Sender == "" {
		return err == nil, err
	}
	st := document.Status{DocumentID: id, Unit: b.d.Unit, Time: at.UTC(), Code: document.StatusRefused,
		Description: description("refused by the city's hub: " + rs.Error())}
	return true, b.up(ctx, &UpStatus{Status: st, About: *f.About, Recipients: []document.UnitID{f.Sender}})
}

// StatusRejected takes the hub's refusal of a status the bridge relayed
// into the city. It reports whether the bridge relayed it.
func (b *Bridge) StatusRejected(ctx context.Context, st document.Status, rs reason.List) (bool, error) {
	found, err := b.st.downRejected(ctx, &st, rs)
	if found {
		b.log.Warn("bridge: the hub refused a status relayed from outside", "doc_id", st.DocumentID, "unit", st.Unit, "code", st.Code, "reasons", rs.Error())
	}
	return found, err
}

// Ready reports the bridge's backlog.
func (b *Bridge) Ready(ctx context.Context) (map[string]int, error) { return b.st.counts(ctx) }

func description(s string) string {
	if len(s) <= document.MaxStatusDescription {
		return s
	}
	s = s[:document.MaxStatusDescription-len("…")]
	for len(s) > 0 && !isRuneStart(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	if len(s) > 0 {
		s = s[:len(s)-1]
	}
	return s + "…"
}

func isRuneStart(c byte) bool { return c&0xC0 != 0x80 }

// upLoop sends up, in order, the documents carried and then the statuses.
func (b *Bridge) upLoop(ctx context.Context) {
	b.loop(ctx, "send up", b.cfg.Poll, b.wake.up, func(ctx context.Context) (bool, error) {
		c, err := b.st.nextCarried(ctx)
		if err != nil {
			return false, err
		}
		if c != nil {
			return true, b.sendCarried(ctx, c)
		}
		u, err := b.st.nextUp(ctx)
		if err != nil || u == nil {
			return false, err
		}
		return true, b.sendUp(ctx, u)
	})
}

// sendCarried sends a document up once: after an attempt that may have
// reached the upstream, the upstream's list of sent documents is read
// first.
func (b *Bridge) sendCarried(ctx context.Context, c *Carried) error {
	if c.Uncertain {
		id, err := b.reconcile(ctx, c)
		if err != nil {
			return err
		}
		if id != "" {
			if err := b.st.carriedSent(ctx, c.ID, id); err != nil {
				return err
			}
			os.Remove(b.outPath(c.ID))
			b.observe("carried_reconciled")
			b.log.Info("bridge: document found sent at the upstream after a lost answer", "doc_id", c.ID, "upstream_id", id)
			return nil
		}
	}
	f, err := os.Open(b.outPath(c.ID))
	if err != nil {
		return fmt.Errorf("bridge: packet of %s: %w", c.ID, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("bridge: packet of %s: %w", c.ID, err)
	}
	if err := b.st.trying(ctx, c.ID); err != nil {
		return err
	}
	id, err := b.c.Send(ctx, c.Sender, c.Recipients, axis.MessageEdoc, f, fi.Size())
	switch {
	case err == nil:
		if err := b.st.carriedSent(ctx, c.ID, id); err != nil {
			return err
		}
		f.Close()
		os.Remove(b.outPath(c.ID))
		b.observe("carried_sent")
		b.log.Info("bridge: document sent up", "doc_id", c.ID, "upstream_id", id, "to", units(c.Recipients))
		return nil
	case Refused(err):
		// The upstream will not take it: its recipients refuse it, so
		// that the sender knows.
		if err := b.st.carriedRefused(ctx, c.ID, err.Error()); err != nil {
			return err
		}
		for _, r := range c.Recipients {
			st := document.Status{DocumentID: c.ID, Unit: r, Time: b.now().UTC(), Code: document.StatusRefused,
				Description: description("not delivered: the upstream axis refused the document: " + err.Error())}
			if err := b.st.addDown(ctx, "refused:"+string(c.ID)+":"+string(r), &st); err != nil {
				return err
			}
		}
		f.Close()
		os.Remove(b.outPath(c.ID))
		b.observe("carried_refused")
		b.log.Error("bridge: the upstream refused a document", "doc_id", c.ID, "err", err)
		kick(b.wake.down)
		return nil
	}
	if serr := b.st.carriedFailed(ctx, c.ID, err); serr != nil {
		return serr
	}
	return err
}

// reconcile looks for a carried document among those the upstream lists
// as sent by this system and not claimed by another: one to a recipient of
// it, with its number/notation, sent since its last attempt began.
func (b *Bridge) reconcile(ctx context.Context, c *Carried) (string, error) {
	items, err := b.c.Sent(ctx)
	if err != nil {
		return "", err
	}
	claimed, err := b.st.claimed(ctx)
	if err != nil {
		return "", err
	}
	for _, it := range items {
		id := it.SenderDocID
		if id == "" || claimed[id] || !slices.Contains(c.Recipients, document.UnitID(it.ToCode)) {
			continue
		}
		if it.Notation != "" && c.Notation != "" && !strings.EqualFold(strings.TrimSpace(it.Notation), c.Notation) {
			continue
		}
		if it.Title != "" && c.Subject != "" && strings.TrimSpace(html.UnescapeString(it.Title)) != strings.TrimSpace(c.Subject) {
			continue
		}
		if t, err := time.Parse(time.RFC3339, it.SentTime); err == nil && c.TriedAt != nil && t.Before(c.TriedAt.Add(-time.Minute)) {
			continue
		}
		return id, nil
	}
	return "", nil
}

// sendUp sends a status up, once it is about a document the upstream knows.
func (b *Bridge) sendUp(ctx context.Context, u *UpStatus) error {
	var buf bytes.Buffer
	if err := edxml.WriteStatus(&buf, edxml.NewStatusPacket(u.Status, u.About)); err != nil {
		return b.st.upDone(ctx, u.Seq, stateRefused, "", "cannot be written as a status packet: "+err.Error())
	}
	if err := b.st.upTrying(ctx, u.Seq); err != nil {
		return err
	}
	id, err := b.c.Send(ctx, u.Status.Unit, u.Recipients, axis.MessageStatus, bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	switch {
	case err == nil:
		b.observe("status_up")
		b.log.Info("bridge: status sent up", "doc_id", u.Status.DocumentID, "unit", u.Status.Unit, "code", u.Status.Code, "upstream_id", id)
		return b.st.upDone(ctx, u.Seq, stateSent, id, "")
	case Refused(err) && u.Uncertain:
		b.observe("status_up")
		b.log.Info("bridge: status refused after an attempt whose answer was lost: taken as the duplicate the upstream refuses",
			"doc_id", u.Status.DocumentID, "code", u.Status.Code, "err", err)
		return b.st.upDone(ctx, u.Seq, stateSent, "", err.Error())
	case Refused(err):
		b.log.Error("bridge: the upstream refused a status", "doc_id", u.Status.DocumentID, "code", u.Status.Code, "err", err)
		return b.st.upDone(ctx, u.Seq, stateRefused, "", err.Error())
	}
	if serr := b.st.upFailed(ctx, u.Seq, err); serr != nil {
		return serr
	}
	return err
}

// pollLoop takes what the upstream holds for the city.
func (b *Bridge) pollLoop(ctx context.Context) {
	b.loop(ctx, "poll", b.cfg.Poll, b.wake.poll, func(ctx context.Context) (bool, error) {
		more := false
		for _, kind := range []string{axis.MessageEdoc, axis.MessageStatus} {
			items, err := b.c.List(ctx, kind)
			if err != nil {
				return false, err
			}
			// What the upstream no longer lists it took as acknowledged,
			// even when the answer to updateStatus was lost. (Listed again
			// later, an item is acknowledged again.)
			listed := make([]string, 0, len(items))
			for _, it := range items {
				listed = append(listed, strings.TrimSpace(it.DocID))
			}
			if err := b.st.ackedUnlisted(ctx, kind, listed); err != nil {
				return false, err
			}
			if len(items) > b.cfg.ListLimit {
				items, more = items[:b.cfg.ListLimit], true
			}
			for _, it := range items {
				if err := b.take(ctx, kind, it); err != nil {
					return false, err
				}
			}
			if more {
				// Statuses wait for every document listed before them to be
				// taken: a 13 names a document brought in.
				return true, nil
			}
		}
		return false, nil
	})
}

// take takes one item of the upstream's list, once, and acknowledges it.
func (b *Bridge) take(ctx context.Context, kind string, it axis.Item) error {
	id := strings.TrimSpace(it.DocID)
	if id == "" || len(id) > 200 {
		b.log.Warn("bridge: an item without a usable docId in the upstream's list", "kind", kind, "doc_id", clip(id))
		return nil
	}
	f, err := b.st.fetched(ctx, kind, id)
	switch {
	case errors.Is(err, ErrNotFound):
		if kind == axis.MessageEdoc {
			err = b.takeDocument(ctx, id)
		} else {
			err = b.takeStatus(ctx, id)
		}
		if err != nil {
			return err
		}
		if f, err = b.st.fetched(ctx, kind, id); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	// Listed again: taken before, and the acknowledgement lost or not yet
	// made.
	ack := axis.TransportDone
	if f.State == stateRefused && f.Error != "" && f.Sender == "" {
		ack = axis.TransportFail
	}
	if err := b.c.Ack(ctx, id, ack); err != nil {
		return err
	}
	return b.st.acked(ctx, kind, id)
}

// takeDocument fetches a document and brings it into the city.
func (b *Bridge) takeDocument(ctx context.Context, id string) error {
	tmp, err := os.CreateTemp(filepath.Join(b.dir, "tmp"), "in-*.edxml")
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	err = b.c.Get(ctx, id, tmp, b.d.MaxPacket)
	if Refused(err) {
		return b.refuseIn(ctx, axis.MessageEdoc, id, nil, err)
	}
	if err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	up := &document.Upstream{Axis: b.cfg.Name, DocID: id}
	rec, _, err := b.d.Exchange.SubmitDocument(ctx, tmp, packets.Submission{Source: "bridge:" + b.cfg.Name,
		IdempotencyKey: "bridge:" + b.cfg.Name + ":" + id, Upstream: up})
	var oe *outbox.Error
	if errors.As(err, &oe) || errors.Is(err, packets.ErrStatusPacket) {
		return b.refuseIn(ctx, axis.MessageEdoc, id, tmp, err)
	}
	if err != nil {
		return err
	}
	if b.d.Spooled != nil {
		b.d.Spooled()
	}
	raw, err := b.d.Spool.Container(rec.ID)
	if err != nil {
		return err
	}
	lim := container.DefaultLimits
	lim.MaxSize = max(lim.MaxSize, int64(len(raw)))
	c, err := container.Open(raw, lim)
	if err != nil {
		return fmt.Errorf("bridge: %s: %w", rec.ID, err)
	}
	d := c.Meta
	ab := about(d)
	f := &Fetched{Kind: axis.MessageEdoc, UpstreamID: id, State: stateTaken, DocID: d.ID, EdXMLID: ab.DocumentID, About: &ab}
	if d.Upstream != nil {
		f.Sender = d.Upstream.From
	}
	if err := b.st.putFetched(ctx, f, nil); err != nil {
		return err
	}
	b.observe("document_in")
	b.log.Info("bridge: document brought in from the upstream", "upstream_id", id, "doc_id", d.ID, "from", f.Sender, "to", units(d.To))
	return nil
}

// refuseIn records an item that cannot come into the city. A document
// packet that names its sender is refused to it (status 02) and
// acknowledged done; one that cannot be read is acknowledged fail.
func (b *Bridge) refuseIn(ctx context.Context, kind, id string, packet *os.File, cause error) error {
	b.observe("refused_in")
	b.log.Error("bridge: cannot bring in an item from the upstream", "kind", kind, "upstream_id", id, "err", cause)
	f := &Fetched{Kind: kind, UpstreamID: id, State: stateRefused, Error: cause.Error()}
	if packet != nil {
		if _, err := packet.Seek(0, io.SeekStart); err == nil {
			if p, err := edxml.Parse(io.LimitReader(packet, b.d.MaxPacket+1), edxml.Options{Limits: edxml.Limits{MaxPacket: b.d.MaxPacket}}); err == nil &&
				p.Document.From.Validate() == nil && p.Document.From != b.d.Unit {
				ab := about(p.Document)
				f.Sender, f.EdXMLID, f.About = p.Document.From, ab.DocumentID, &ab
			}
		}
	}
	if err := b.st.putFetched(ctx, f, nil); err != nil {
		return err
	}
	if f.Sender == "" {
		return nil
	}
	// The 02 names no document of edx: the refusal is about the packet.
	st := document.Status{DocumentID: document.NewID(b.now()), Unit: b.d.Unit, Time: b.now().UTC(), Code: document.StatusRefused,
		Description: description("refused by the city's gateway: " + cause.Error())}
	return b.up(ctx, &UpStatus{Status: st, About: *f.About, Recipients: []document.UnitID{f.Sender}})
}

// takeStatus fetches a status and queues it for the city: an outside
// recipient's on a document the gateway carried up, or an outside
// sender's 13 on one it brought in.
func (b *Bridge) takeStatus(ctx context.Context, id string) error {
	var buf bytes.Buffer
	err := b.c.Get(ctx, id, &buf, packets.MaxStatusPacket)
	if Refused(err) {
		return b.refuseIn(ctx, axis.MessageStatus, id, nil, err)
	}
	if err != nil {
		return err
	}
	sp, err := edxml.ParseStatus(&buf, edxml.Limits{MaxPacket: packets.MaxStatusPacket})
	if err != nil {
		return b.refuseIn(ctx, axis.MessageStatus, id, nil, err)
	}
	from := document.UnitID(strings.TrimSpace(sp.From.ID))
	ref := strings.TrimSpace(sp.ResponseFor.DocumentID)
	st := sp.Status(func(string) (document.ID, bool) { return "", false })
	st.Time = b.now().UTC() // the gateway's time, as an agent's: the hub judges times by its clock
	var why string
	if sp.Code.BySender() {
		f, err := b.st.injected(ctx, ref, "")
		switch {
		case errors.Is(err, ErrNotFound):
			why = fmt.Sprintf("13 names %s, not a document the gateway brought in", ref)
		case err != nil:
			return err
		case f.Sender != from:
			why = fmt.Sprintf("13 from %s on a document %s sent", from, f.Sender)
		default:
			st.DocumentID, st.Unit = f.DocID, b.d.Unit
		}
	} else {
		c, err := b.carriedRef(ctx, ref)
		switch {
		case errors.Is(err, ErrNotFound):
			why = fmt.Sprintf("the status names %s, not a document the gateway carried up", ref)
		case err != nil:
			return err
		case !slices.Contains(c.Recipients, from):
			why = fmt.Sprintf("the status is from %s, not a recipient the gateway carried document %s to", from, c.ID)
		default:
			st.DocumentID, st.Unit = c.ID, from
		}
	}
	if why == "" {
		if err := st.Validate(); err != nil {
			why = err.Error()
		}
	}
	if why != "" {
		b.observe("refused_in")
		b.log.Warn("bridge: a status from the upstream names nothing to relay", "upstream_id", id, "from", from, "code", sp.Code, "why", why)
		return b.st.putFetched(ctx, &Fetched{Kind: axis.MessageStatus, UpstreamID: id, State: stateRefused, Error: why, Sender: from}, nil)
	}
	if err := b.st.putFetched(ctx, &Fetched{Kind: axis.MessageStatus, UpstreamID: id, State: stateTaken, DocID: st.DocumentID, EdXMLID: ref, Sender: from}, &st); err != nil {
		return err
	}
	b.observe("status_in")
	b.log.Info("bridge: status taken from the upstream", "upstream_id", id, "doc_id", st.DocumentID, "unit", st.Unit, "code", st.Code)
	kick(b.wake.down)
	return nil
}

// carriedRef finds a carried document by its edXML DocumentId or edx id.
func (b *Bridge) carriedRef(ctx context.Context, ref string) (*Carried, error) {
	if id, err := document.ParseID(ref); err == nil {
		return b.st.carried(ctx, id)
	}
	return b.st.carriedByEdXML(ctx, ref)
}

// downLoop publishes the statuses taken from the upstream, in order; the
// gateway's own 13 on a document it brought in waits for the hub to have
// accepted that document.
func (b *Bridge) downLoop(ctx context.Context) {
	b.loop(ctx, "relay into the city", b.cfg.Poll, b.wake.down, func(ctx context.Context) (bool, error) {
		ds, err := b.st.nextDown(ctx, 100)
		if err != nil {
			return false, err
		}
		did := false
		for _, d := range ds {
			if d.Status.Unit == b.d.Unit {
				rec, err := b.d.Spool.Get(ctx, d.Status.DocumentID)
				if err != nil {
					return did, err
				}
				if rec.State != spool.Accepted {
					if rec.State == spool.Rejected {
						if err := b.st.downSent(ctx, d.Seq); err != nil {
							return did, err
						}
					}
					continue
				}
			}
			if err := b.d.Publish(ctx, &d.Status); err != nil {
				return did, fmt.Errorf("bridge: relay %s's %s on %s: %w", d.Status.Unit, d.Status.Code, d.Status.DocumentID, err)
			}
			if err := b.st.downSent(ctx, d.Seq); err != nil {
				return did, err
			}
			did = true
			b.observe("status_down")
			b.log.Info("bridge: status relayed into the city", "doc_id", d.Status.DocumentID, "unit", d.Status.Unit, "code", d.Status.Code)
		}
		return did && len(ds) == 100, nil
	})
}
