package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/evidence"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// transient marks an error worth retrying: the message is naked, never rejected.
type transient struct{ err error }

func (t transient) Error() string { return t.err.Error() }
func (t transient) Unwrap() error { return t.err }

func retry(format string, a ...any) error { return transient{fmt.Errorf(format, a...)} }

// submission is one message of EDX_SUBMIT in progress.
type submission struct {
	msg      jetstream.Msg
	received time.Time // the stream's timestamp: stable across redeliveries
	attempt  uint64    // 1 the first time the message is handled
	unit     document.UnitID
	wire     *protocol.Container
	data     []byte // the container bytes
	sha      string
	noticeTo string   // the sender's inbox for the decision (protocol.NoticeTo), or ""
	upload   []uint64 // the sequences of its upload's chunks, when staged
	// via are the recipients outside the city the gateway unit carries the
	// document to; upstream those the upstream axis serves itself (of a
	// document the gateway brought in): neither gets a delivery of its own.
	via, upstream []document.UnitID
	crls          []string // the CRLs the signer's chain was checked against (hex SHA-256, sorted)
}

// handleSubmission processes a submission; once it is acknowledged, the
// chunks of its upload are removed from the upload stream, which frees the
// unit's quota. (Not before: a redelivery must still find them.)
func (p *Pipeline) handleSubmission(ctx context.Context, msg jetstream.Msg) error {
	s := &submission{msg: msg}
	if err := p.processSubmission(ctx, s); err != nil || s.wire == nil || s.wire.Staged == "" {
		return err
	}
	if err := msg.DoubleAck(ctx); err != nil {
		p.log.Warn("pipeline: ack", "subject", msg.Subject(), "err", err)
		return nil // acked again by finish; sweepUploads removes the chunks later
	}
	seqs := s.upload
	if len(seqs) == 0 { // refused before its upload was read
		ups, err := protocol.ListUploads(ctx, p.js, s.unit)
		if err != nil {
			p.log.Warn("pipeline: release upload", "unit", s.unit, "err", err)
		}
		for _, u := range ups {
			if u.Name == s.wire.Staged {
				seqs = u.Seqs
			}
		}
	}
	if err := protocol.ReleaseUpload(ctx, p.uploads, seqs); err != nil {
		p.log.Warn("pipeline: release upload", "unit", s.unit, "err", err)
	}
	return errAcked
}

// sweepUploads removes the uploads no submission can use any more:
// incomplete ones, and, of a unit with no submission waiting, every one;
// each only once Config.UploadOrphanAfter has passed since its last chunk
// (an agent publishes its submission right after the upload). Without it a
// unit whose agent stopped half way, or uploaded and never submitted, would
// hold its quota until stage_ttl.
func (p *Pipeline) sweepUploads(ctx context.Context) error {
	info, err := p.uploads.Info(ctx, jetstream.WithSubjectFilter(protocol.SubjectUploadPrefix+">"))
	if err != nil {
		return fmt.Errorf("pipeline: sweep uploads: %w", err)
	}
	cutoff := p.now().Add(-p.cfg.UploadOrphanAfter)
	for subj := range info.State.Subjects {
		unit := document.UnitID(protocol.UnitFromSubject(subj))
		sub, err := p.submits.Info(ctx, jetstream.WithSubjectFilter(protocol.SubmitSubject(string(unit))))
		if err != nil {
			return fmt.Errorf("pipeline: sweep uploads: %w", err)
		}
		waiting := sub.State.Subjects[protocol.SubmitSubject(string(unit))] > 0
		ups, err := protocol.ListUploads(ctx, p.js, unit)
		if err != nil {
			return fmt.Errorf("pipeline: sweep uploads: %w", err)
		}
		for _, u := range ups {
			if u.Last.After(cutoff) || u.Complete && waiting {
				continue
			}
			if err := protocol.ReleaseUpload(ctx, p.uploads, u.Seqs); err != nil {
				return fmt.Errorf("pipeline: sweep uploads: %w", err)
			}
			p.log.Info("upload removed, no submission can use it", "unit", unit, "complete", u.Complete, "chunks", len(u.Seqs))
		}
	}
	return nil
}

func (p *Pipeline) processSubmission(ctx context.Context, s *submission) error {
	msg := s.msg
	start := p.now()
	s.received, s.attempt = start, 1
	if md, err := msg.Metadata(); err == nil {
		s.received, s.attempt = md.Timestamp, md.NumDelivered
	}
	nm := &nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()}
	unit, wire, perr := protocol.ParseSubmit(nm)
	s.unit, s.wire = unit, wire
	s.noticeTo = protocol.NoticeTo(nm, unit)
	if perr != nil {
		s.data = msg.Data()
		return p.reject(ctx, s, reason.List{{Code: reason.SubmissionInvalid, Message: perr.Error()}})
	}
	if wire.Size > p.cfg.Limits.MaxSize {
		return p.reject(ctx, s, reason.List{{Code: reason.ContainerTooLarge,
			Message: fmt.Sprintf("container of %d bytes exceeds the limit of %d", wire.Size, p.cfg.Limits.MaxSize)}})
	}
	if wire.Staged != "" {
		// Bound the read: a unit's upload whose chunks never come is
		// invalid, not worth waiting for.
		gctx, cancel := context.WithTimeout(ctx, max(p.cfg.AckWait, 2*time.Minute))
		data, seqs, err := protocol.GetUpload(gctx, p.uploads, unit, wire, p.cfg.Limits.MaxSize)
		cancel()
		s.upload = seqs
		switch {
		case errors.Is(err, protocol.ErrStageInvalid):
			return p.reject(ctx, s, reason.List{{Code: reason.SubmissionStaged, Message: err.Error()}})
		case err != nil:
			return retry("pipeline: get staged %s: %w", wire.Staged, err)
		}
		s.data = data
	} else {
		s.data = wire.Data
	}
	sum := sha256.Sum256(s.data)
	s.sha = hex.EncodeToString(sum[:])
	if s.sha != wire.SHA256 {
		return p.reject(ctx, s, reason.List{{Code: reason.SubmissionStaged, Message: fmt.Sprintf("the container's SHA-256 is %s, the message says %s", s.sha, wire.SHA256)}})
	}
	if err := msg.InProgress(); err != nil {
		p.log.Debug("pipeline: in progress", "err", err)
	}

	c, rep := container.VerifyBytes(s.data, p.cfg.Limits, container.Options{Trust: p.trust, At: p.now()})
	p.m.verifySeconds.Observe(p.now().Sub(start).Seconds())
	if rep.Signature != nil && len(rep.Signature.CRLs) > 0 {
		s.crls = slices.Compact(slices.Sorted(slices.Values(rep.Signature.CRLs)))
	}
	rs := rep.Reasons
	if c != nil {
		d := c.Meta
		if d.ID != wire.DocumentID {
			rs.Add(reason.SubmissionInvalid, fmt.Sprintf("the message names document %s, the container holds %s", wire.DocumentID, d.ID))
		}
		if d.From != unit {
			rs.Add(reason.SenderMismatch, fmt.Sprintf("unit %s submitted a document from %s", unit, d.From))
		}
		switch state, err := p.unitState(ctx, unit); {
		case err != nil:
			return err
		case state == unitUnknown:
			rs.Add(reason.SenderUnknown, fmt.Sprintf("unit %s is not registered", unit))
		case state == unitDisabled:
			rs.Add(reason.SenderDisabled, fmt.Sprintf("unit %s is disabled", unit))
		}
		if d.Upstream != nil && (p.cfg.Gateway.Unit == "" || d.From != p.cfg.Gateway.Unit) {
			rs.Add(reason.UpstreamNotGateway, fmt.Sprintf("upstream: unit %s is not the city's gateway to an upstream axis; only the gateway brings documents in from outside", d.From))
		}
		s.via = s.via[:0]
		s.upstream = s.upstream[:0]
		gateway := false
		for i, r := range d.To {
			if r.Validate() != nil {
				continue // already a metadata problem
			}
			rt, state, err := p.routeOf(ctx, d.Upstream != nil, r)
			switch {
			case err != nil:
				return err
			case rt == routeUnknown:
				rs.Add(reason.RecipientUnknown, fmt.Sprintf("to[%d]: unit %s is not registered", i, r))
			case rt == routeUnit && state == unitDisabled:
				rs.Add(reason.RecipientDisabled, fmt.Sprintf("to[%d]: unit %s is disabled", i, r))
			case rt == routeGateway:
				s.via = append(s.via, r)
				gateway = true
			case rt == routeUpstream:
				s.upstream = append(s.upstream, r)
			}
		}
		if gateway {
			// Outside recipients go through the gateway unit, which must be
			// there to take them.
			switch state, err := p.unitState(ctx, p.cfg.Gateway.Unit); {
			case err != nil:
				return err
			case state == unitUnknown:
				rs.Add(reason.RecipientUnknown, fmt.Sprintf("the recipients outside the city (%s) go through the gateway unit %s, which is not registered", unitList(s.via), p.cfg.Gateway.Unit))
			case state == unitDisabled:
				rs.Add(reason.RecipientDisabled, fmt.Sprintf("the recipients outside the city (%s) go through the gateway unit %s, which is disabled", unitList(s.via), p.cfg.Gateway.Unit))
			}
		}
	}
	// A reason that is about the hub's state, not the document (a CRL past
	// its nextUpdate), holds the submission: it is retried with backoff
	// until the hub can decide, never rejected for it.
	if held := transientReasons(rs); len(held) > 0 {
		for _, r := range held {
			p.m.held.WithLabelValues(string(r.Code)).Inc()
		}
		p.log.Error("pipeline: submission held, not rejected: the hub cannot decide yet (load a current CRL)",
			"doc_id", wire.DocumentID, "unit", unit, "reasons", held.Error())
		return retry("pipeline: verify %s: %v", wire.DocumentID, held)
	}
	if len(rs) == 0 && c != nil {
		refs, err := p.checkReference(ctx, s, c.Meta)
		if err != nil {
			return err
		}
		rs = append(rs, refs...)
	}
	if len(rs) > 0 {
		return p.reject(ctx, s, rs)
	}
	if err := p.step("verified"); err != nil {
		return err
	}
	return p.accept(ctx, s, c, rep)
}

// checkReference judges in_reply_to against the shared truth: this hub's
// index, or, for a document it has not indexed (yet), the archive. The
// document it names must be an accepted document the sender sent or
// received; a revocation, update or replacement (business types 1 to 3)
// must name one the sender itself sent. A document naming one not accepted
// yet (or one the sender is no party to: the answer is the same, so that no
// unit learns of documents it never saw) waits, naked, since the referenced
// document may still be in a pipeline: at least ReferenceWait after its
// submission and minReferenceAttempts attempts (a backlog after an outage
// holds both, the earlier one perhaps not processed yet); then it is
// rejected.
func (p *Pipeline) checkReference(ctx context.Context, s *submission, d *document.Document) (reason.List, error) {
	if d.InReplyTo == "" {
		return nil, nil
	}
	ref, err := p.document(ctx, d.InReplyTo, false)
	if err != nil && !errors.Is(err, errNotAccepted) {
		return nil, err
	}
	if err != nil || !ref.party(d.From) {
		if waited := p.now().Sub(s.received); waited < p.cfg.ReferenceWait || s.attempt < minReferenceAttempts {
			return nil, retry("pipeline: %s refers to %s, not accepted as a document %s sent or received (attempt %d, waited %s of %s)",
				d.ID, d.InReplyTo, d.From, s.attempt, waited.Round(time.Second), p.cfg.ReferenceWait)
		}
		return reason.List{{Code: reason.ReferenceUnknown,
			Message: fmt.Sprintf("in_reply_to: %s is not a document unit %s sent or received", d.InReplyTo, d.From)}}, nil
	}
	if d.BusinessType != document.BusinessNew && ref.from != d.From {
		return reason.List{{Code: reason.ReferenceNotSender,
			Message: fmt.Sprintf("business type %d: document %s was sent by %s; only its sender may revoke, update or replace it", d.BusinessType, d.InReplyTo, ref.from)}}, nil
	}
	return nil, nil
}

// minReferenceAttempts is how often, at least, a message naming a document
// not accepted yet is tried before it is refused: with the nak backoff,
// about 7 seconds of retries.
const minReferenceAttempts = 5

// accepted is what the pipeline knows of an accepted document: from this
// hub's index, or from the archive when the index does not have it yet.
type accepted struct {
	from       document.UnitID
	to         []document.UnitID
	acceptedAt time.Time
	sha256     string // the container's
	// history is the document's statuses: the index's, or, read from the
	// archive, who reported which code when (no flags, no text).
	history []index.StatusEntry
	indexed bool
	// upstream: the document came in from the upstream axis (its
	// document.Upstream is set; judged from the archive, a document of the
	// gateway unit, which sends nothing else).
	upstream bool
}

// party reports whether unit sent or received the document.
func (a *accepted) party(unit document.UnitID) bool {
	return a.from == unit || slices.Contains(a.to, unit)
}

// errNotAccepted: a document neither this hub's index nor the archive knows.
var errNotAccepted = errors.New("pipeline: document not accepted")

// document returns what is known of an accepted document, from this hub's
// index or, when the index lacks it (it lags, or another hub accepted it
// moments ago), from the archive: the receipt, and with history the
// statuses archived beside it. Never refused for the index lagging: only a
// document with no receipt is errNotAccepted.
func (p *Pipeline) document(ctx context.Context, id document.ID, history bool) (*accepted, error) {
	det, err := p.ix.Get(ctx, id)
	if err == nil {
		return &accepted{from: det.Doc.From, to: det.Doc.To, acceptedAt: det.AcceptedAt, sha256: det.ContainerSHA256, history: det.History, indexed: true,
			upstream: det.Doc.Upstream != nil}, nil
	}
	if !errors.Is(err, index.ErrNotFound) {
		return nil, retry("pipeline: document %s: %w", id, err)
	}
	acc, err := projection.ReadAccepted(ctx, p.arch, p.trust, p.now(), id)
	switch {
	case errors.Is(err, archive.ErrNotFound):
		return nil, errNotAccepted
	case err != nil:
		return nil, retry("pipeline: document %s: %w", id, err)
	}
	a := &accepted{from: acc.Receipt.From, to: acc.Receipt.To, acceptedAt: acc.Receipt.AcceptedAt, sha256: acc.Receipt.ContainerSHA256,
		upstream: p.cfg.Gateway.Unit != "" && acc.Receipt.From == p.cfg.Gateway.Unit}
	if history {
		if a.history, err = projection.Statuses(ctx, p.arch, id); err != nil {
			return nil, retry("pipeline: statuses of %s: %w", id, err)
		}
	}
	p.m.fromArchive.Inc()
	p.log.Debug("pipeline: a document this hub has not indexed, judged from the archive", "doc_id", id)
	return a, nil
}

type unitState int

const (
	unitUnknown unitState = iota
	unitDisabled
	unitActive
)

// unitState judges a unit by the shared registry; a registry it cannot
// reach is a transient failure (the message is retried).
func (p *Pipeline) unitState(ctx context.Context, u document.UnitID) (unitState, error) {
	registered, disabled, err := p.units.UnitStatus(ctx, u)
	switch {
	case err != nil:
		return 0, retry("pipeline: unit %s: %w", u, err)
	case !registered:
		return unitUnknown, nil
	case disabled:
		return unitDisabled, nil
	}
	return unitActive, nil
}

func transientReasons(rs reason.List) reason.List {
	var out reason.List
	for _, r := range rs {
		if r.Code.Transient() {
			out = append(out, r)
		}
	}
	return out
}

// accept archives the container, then its receipt, publishes the accepted
// event (every hub's index applies it), routes, and notifies the sender once
// this hub's index has it; each step is idempotent, so that a crash
// anywhere replays to the same result.
func (p *Pipeline) accept(ctx context.Context, s *submission, c *container.Container, rep *container.Report) error {
	d := c.Meta
	key := projection.ContainerKey(d.ID)
	t0 := p.now()
	obj, err := p.arch.Put(ctx, key, s.data, container.Mimetype, map[string]string{"document-id": string(d.ID), "from": string(d.From)})
	p.m.archiveSeconds.Observe(p.now().Sub(t0).Seconds())
	switch {
	case errors.Is(err, archive.ErrConflict):
		return p.reject(ctx, s, reason.List{{Code: reason.DocumentConflict,
			Message: fmt.Sprintf("another container was already accepted under document id %s", d.ID)}})
	case err != nil:
		return retry("pipeline: archive %s: %w", key, err)
	}
	if err := p.step("archived"); err != nil {
		return err
	}

	receipt, rc, err := p.receipt(ctx, s, d, key, obj.Existed)
	if err != nil {
		return err
	}
	if err := p.step("receipted"); err != nil {
		return err
	}
	if rc.ContainerSHA256 != s.sha {
		// The receipt on file names another container: cannot happen while
		// the archive is write-once; never paper over it.
		return retry("pipeline: receipt for %s names container %s, not %s", d.ID, rc.ContainerSHA256, s.sha)
	}

	rec := projection.Record(c, rep, rc, projection.ReceiptKey(d.ID))
	seq, err := p.ev.Accepted(ctx, rec)
	if err != nil {
		return retry("pipeline: %w", err)
	}
	if err := p.step("published"); err != nil {
		return err
	}

	if err := p.route(ctx, s, d, receipt); err != nil {
		return err
	}
	if err := p.step("routed"); err != nil {
		return err
	}
	p.waitApplied(ctx, seq)

	n := &protocol.Notice{Type: protocol.NoticeAccepted, DocumentID: d.ID, SHA256: s.sha, Time: rc.AcceptedAt,
		ArchiveKey: key, Receipt: receipt}
	for _, r := range d.To {
		n.Recipients = append(n.Recipients, string(r))
	}
	if err := p.notify(ctx, s.unit, n, string(d.ID)+".accepted"); err != nil {
		return err
	}
	p.tellSender(s, n, string(d.ID)+".accepted")
	p.m.accepted.Inc()
	p.m.bytes.Add(float64(len(s.data)))
	p.m.e2eSeconds.Observe(p.now().Sub(s.received).Seconds())
	p.log.Info("accepted", "doc_id", d.ID, "unit", s.unit, "recipients", len(d.To), "size", len(s.data))
	return p.step("notified")
}

// waitApplied waits, briefly, for this hub's index to apply the event at
// seq, so that a sender told of a decision finds it on this hub (the other
// hubs apply it within moments). The decision stands either way.
func (p *Pipeline) waitApplied(ctx context.Context, seq uint64) {
	if p.applied != nil && !p.applied.WaitApplied(ctx, seq) {
		p.log.Debug("pipeline: this hub's index has not applied the event yet", "seq", seq)
	}
}

// receipt returns the document's receipt: the one already archived (a
// redelivery after a crash), or a new one: the acceptance is appended to
// the hub's transparency log first, then the receipt naming its entry
// (origin and index) is signed and written once.
//
// The write is conditional (If-None-Match), so the first receipt written
// wins: a redelivery, or another replica racing on the same document, reads
// and reuses it; the entry its own attempt logged stays in the log, a
// duplicate of the one the receipt names (the same evidence.Entry.Key).
func (p *Pipeline) receipt(ctx context.Context, s *submission, d *document.Document, key string, again bool) ([]byte, *container.Receipt, error) {
	rkey := projection.ReceiptKey(d.ID)
	existing := func() ([]byte, *container.Receipt, error) {
		b, _, err := p.arch.Get(ctx, rkey)
		if err != nil {
			return nil, nil, err
		}
		r := container.VerifyReceipt(b, "", container.Options{Trust: p.trust, At: p.now()})
		if r.Receipt == nil {
			return nil, nil, fmt.Errorf("pipeline: archived receipt %s unreadable: %v", rkey, r.Reasons)
		}
		return b, r.Receipt, nil
	}
	if again {
		// The container was archived before: a redelivery, whose receipt
		// is most likely archived too.
		b, rc, err := existing()
		switch {
		case err == nil:
			return b, rc, nil
		case !errors.Is(err, archive.ErrNotFound):
			return nil, nil, retry("pipeline: receipt %s: %w", rkey, err)
		}
	}
	rc := &container.Receipt{DocumentID: d.ID, From: d.From, To: d.To, ContainerSHA256: s.sha,
		ContainerSize: int64(len(s.data)), ArchiveKey: key, AcceptedAt: p.now().UTC().Truncate(time.Millisecond)}
	if p.tlog != nil {
		e := &evidence.Entry{V: evidence.Version, Kind: evidence.Accepted, Time: rc.AcceptedAt, Doc: string(d.ID), Container: s.sha,
			Sender: string(d.From), Recipients: units(d.To), CRLs: s.crls}
		idx, err := p.await(ctx, len(s.data), p.tlog.AppendAsync(ctx, e))
		if err != nil {
			return nil, nil, retry("pipeline: log the acceptance of %s: %w", d.ID, err)
		}
		rc.Log = &container.LogRef{Origin: p.tlog.Origin(), Index: idx}
		if err := p.step("logged"); err != nil {
			return nil, nil, err
		}
	}
	b, err := container.SignReceipt(rc, p.hub)
	if err != nil {
		return nil, nil, retry("pipeline: sign receipt: %w", err)
	}
	_, err = p.arch.Put(ctx, rkey, b, "application/pkcs7-mime", map[string]string{"document-id": string(d.ID)})
	switch {
	case errors.Is(err, archive.ErrConflict):
		// Another replica wrote it first: use that one.
		if b, rc, err = existing(); err != nil {
			return nil, nil, retry("pipeline: receipt %s: %w", rkey, err)
		}
		return b, rc, nil
	case err != nil:
		return nil, nil, retry("pipeline: archive receipt %s: %w", rkey, err)
	}
	return b, rc, nil
}

// route publishes one delivery per recipient. A container above the inline
// limit, or one whose copies would add up to more than FanoutStageBytes, is
// staged, encrypted under a new key and a new random name, once for all of
// them, and each delivery names it.
//
// A staged object lives as long as a delivery waiting in EDX_DELIVER names
// it (see sweepStage). After a crash between staging and routing, the
// redelivered submission is staged again under another name: the first copy
// is then named by no delivery (and removed after StageGrace) or, for
// recipients whose delivery was published before the crash, still named and
// kept, since Nats-Msg-Id drops their second delivery.
func (p *Pipeline) route(ctx context.Context, s *submission, d *document.Document, receipt []byte) error {
	wire := protocol.Container{DocumentID: d.ID, SHA256: s.sha, Size: int64(len(s.data))}
	if len(s.data) > protocol.InlineLimit || int64(len(s.data))*int64(len(d.To)-len(s.via)-len(s.upstream)+1) > p.cfg.FanoutStageBytes {
		name, key, err := protocol.PutStaged(ctx, p.stage, s.data)
		if err != nil {
			return retry("pipeline: stage delivery of %s: %w", d.ID, err)
		}
		wire.Staged, wire.StageKey = name, key
	} else {
		wire.Data = s.data
	}
	ds := deliveries(d, s.via, s.upstream, p.cfg.Gateway.Unit)
	futures := make([]jetstream.PubAckFuture, 0, len(ds))
	for _, dl := range ds {
		dl.Sender, dl.Container, dl.Receipt = d.From, wire, receipt
		f, err := p.js.PublishMsgAsync(protocol.DeliverMsg(dl))
		if err != nil {
			return retry("pipeline: route %s to %s: %w", d.ID, dl.Recipient, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			p.stored(ds[i].Recipient, ack)
		case err := <-f.Err():
			return retry("pipeline: route %s to %s: %w", d.ID, ds[i].Recipient, err)
		case <-ctx.Done():
			return retry("pipeline: route %s: %w", d.ID, ctx.Err())
		case <-time.After(30 * time.Second):
			return retry("pipeline: route %s to %s: no acknowledgement", d.ID, ds[i].Recipient)
		}
	}
	return nil
}

// deliveries are the deliveries of d: one per recipient of the city, and
// one to the gateway for the recipients outside the city it carries (via),
// merged with the gateway's own when it is a recipient too; none for those
// the upstream serves itself.
func deliveries(d *document.Document, via, upstream []document.UnitID, gateway document.UnitID) []*protocol.Delivery {
	skip := map[document.UnitID]bool{}
	for _, u := range append(append([]document.UnitID(nil), via...), upstream...) {
		skip[u] = true
	}
	var out []*protocol.Delivery
	var gw *protocol.Delivery
	for _, r := range d.To {
		if skip[r] {
			continue
		}
		dl := &protocol.Delivery{Recipient: r}
		if r == gateway {
			gw = dl
		}
		out = append(out, dl)
	}
	if len(via) > 0 {
		if gw == nil {
			gw = &protocol.Delivery{Recipient: gateway}
			out = append(out, gw)
		}
		gw.For = via
	}
	return out
}

// unitList is unit ids, comma separated, for a message.
func unitList(us []document.UnitID) string {
	ss := make([]string, len(us))
	for i, u := range us {
		ss[i] = string(u)
	}
	return strings.Join(ss, ", ")
}

// notify publishes a notice to a unit and waits for the stream to have it.
func (p *Pipeline) notify(ctx context.Context, unit document.UnitID, n *protocol.Notice, msgID string) error {
	m, err := protocol.NoticeMsg(unit, n, msgID)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ack, err := p.js.PublishMsg(pctx, m)
	if err != nil {
		return retry("pipeline: notice to %s: %w", unit, err)
	}
	p.stored(unit, ack)
	return nil
}

// stored tells Deps.Sent where a delivery or notice to unit was stored.
func (p *Pipeline) stored(unit document.UnitID, ack *jetstream.PubAck) {
	if p.sent != nil && ack != nil {
		p.sent.Sent(string(unit), ack.Sequence)
	}
}

// tellSender sends a submission's decision, once more, to the inbox its
// sender named (protocol.NoticeTo), once the unit's notices have it: the
// client waiting there (edx send) hears of it even while the unit's agent
// consumes the unit's notices. Core NATS, at most once: a client that is
// gone misses nothing the stream does not keep.
func (p *Pipeline) tellSender(s *submission, n *protocol.Notice, msgID string) {
	if s.noticeTo == "" {
		return
	}
	m, err := protocol.NoticeMsg(s.unit, n, msgID)
	if err == nil {
		m.Subject = s.noticeTo
		err = p.js.Conn().PublishMsg(m)
	}
	if err != nil {
		p.log.Debug("pipeline: decision to the sender's inbox", "unit", s.unit, "subject", s.noticeTo, "err", err)
	}
}

// reject keeps the submission's reasons and digest, and as much of its
// bytes as the bounds allow, under rejected/ in the archive
// (projection.RejectedRecord), publishes the rejected event and tells the
// sender why.
func (p *Pipeline) reject(ctx context.Context, s *submission, rs reason.List) error {
	ref := "unknown"
	if s.wire != nil && s.wire.DocumentID.Validate() == nil {
		ref = string(s.wire.DocumentID)
	}
	sum := sha256.Sum256(s.data)
	ref += "-" + hex.EncodeToString(sum[:8])
	reasonsKey := projection.RejectedKey(s.received, ref, projection.ReasonsName)
	kept := p.rejectedKeep(s.unit, int64(len(s.data)))
	rec := projection.RejectedRecord{Ref: ref, Sender: s.unit, Subject: s.msg.Subject(), Received: s.received.UTC(), SHA256: hex.EncodeToString(sum[:]),
		Reasons: rs, Size: int64(len(s.data)), Kept: kept}
	body, _ := json.MarshalIndent(rec, "", "  ")
	if kept > 0 {
		name, ctype := projection.RejectedContainer, container.Mimetype
		if kept < int64(len(s.data)) {
			name, ctype = projection.RejectedHead, "application/octet-stream"
		}
		if _, err := p.arch.Put(ctx, projection.RejectedKey(s.received, ref, name), s.data[:kept], ctype, nil); err != nil && !errors.Is(err, archive.ErrConflict) {
			return retry("pipeline: archive rejected %s: %w", ref, err)
		}
	}
	var doc document.ID
	if s.wire != nil && s.wire.DocumentID.Validate() == nil {
		doc = s.wire.DocumentID
	}
	logged := p.logRejected(ctx, s.received, rec.SHA256, s.unit, doc, rs, s.crls)
	if err := p.archiveRejected(ctx, reasonsKey, &rec, body); err != nil {
		return err
	}
	if _, err := p.await(ctx, len(s.data), logged); err != nil {
		return retry("pipeline: log the rejection of %s: %w", ref, err)
	}
	n := &protocol.Notice{Type: protocol.NoticeRejected, Time: p.now().UTC(), ArchiveKey: reasonsKey, Reasons: rs, SHA256: hex.EncodeToString(sum[:])}
	if s.wire != nil {
		n.DocumentID = s.wire.DocumentID
	}
	if s.unit.Validate() == nil {
		if err := p.notify(ctx, s.unit, n, ref+".rejected"); err != nil {
			return err
		}
		p.tellSender(s, n, ref+".rejected")
	}
	for _, r := range rs {
		p.m.rejected.WithLabelValues(string(r.Code)).Inc()
	}
	p.log.Info("rejected", "ref", ref, "unit", s.unit, "reasons", strings.Join(codes(rs), ","))
	return nil
}

// rejectedKeep is how many of a rejected submission's size bytes to
// archive: at most Config.RejectedKeep, and nothing once the unit has used
// its budget (Config.RejectedUnitBudget bytes an hour, per hub).
func (p *Pipeline) rejectedKeep(unit document.UnitID, size int64) int64 {
	n := min(size, p.cfg.RejectedKeep, p.cfg.RejectedUnitBudget)
	if n <= 0 {
		return 0
	}
	p.rejMu.Lock()
	defer p.rejMu.Unlock()
	l := p.rejBudget[unit]
	if l == nil {
		if len(p.rejBudget) > 100_000 { // units that no longer reject anything
			clear(p.rejBudget)
		}
		l = rate.NewLimiter(rate.Limit(float64(p.cfg.RejectedUnitBudget)/3600), int(p.cfg.RejectedUnitBudget))
		p.rejBudget[unit] = l
	}
	if !l.AllowN(p.now(), int(n)) {
		return 0
	}
	return n
}

// logRejected queues the rejected entry of a submission or status: what was
// received when (the stream's time, the same on every redelivery), from
// whom, and why. It returns the wait for its index (nothing to wait for
// without a log).
func (p *Pipeline) logRejected(ctx context.Context, received time.Time, sha string, unit document.UnitID, doc document.ID, rs reason.List, crls []string) func() (uint64, error) {
	if p.tlog == nil {
		return func() (uint64, error) { return 0, nil }
	}
	// Each code once: a container with a thousand bad files is one reason
	// of its kind in the log (the archived reasons.json has them all).
	var cs []string
	for _, c := range codes(rs) {
		if !slices.Contains(cs, c) {
			cs = append(cs, c)
		}
	}
	e := &evidence.Entry{V: evidence.Version, Kind: evidence.Rejected, Time: received.UTC(), Container: sha, Reasons: cs, CRLs: crls}
	if unit.Validate() == nil {
		e.Sender = string(unit)
	}
	if doc != "" {
		e.Doc = string(doc)
	}
	return p.tlog.AppendAsync(ctx, e)
}

// units returns unit ids as strings.
func units(us []document.UnitID) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = string(u)
	}
	return out
}

func codes(rs reason.List) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r.Code)
	}
	return out
}

// archiveRejected archives a rejected submission's or refused status's
// reasons.json (once: a redelivery finds it there) and publishes its
// rejected event, then waits, briefly, for this hub's index to have it.
func (p *Pipeline) archiveRejected(ctx context.Context, key string, rec *projection.RejectedRecord, body []byte) error {
	if _, err := p.arch.Put(ctx, key, body, "application/json", nil); err != nil && !errors.Is(err, archive.ErrConflict) {
		return retry("pipeline: archive rejected %s: %w", rec.Ref, err)
	}
	seq, err := p.ev.Rejected(ctx, rec.Rejected(key))
	if err != nil {
		return retry("pipeline: %w", err)
	}
	p.waitApplied(ctx, seq)
	return nil
}
