package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/evidence"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// handleStatus records a status report and forwards it: a recipient's to
// the document's sender, a sender's 13 (taking the document back) to every
// recipient.
//
// The status is judged against the shared truth: the document as this
// hub's index has it or, when the index does not have it (yet), as the
// archive has it (its receipt names its sender and recipients; the
// statuses archived beside it who reported what). A status on a document
// not accepted anywhere yet waits, naked, as a reference does
// (Config.ReferenceWait), since the document may be in a pipeline still.
//
// A status is refused, and the unit told why with a reason code, when it is
// malformed or a field exceeds its bound (status.invalid), when the unit
// may not send that code on that document (13 is the sender's, the others
// a recipient's: status.not_entitled; a unit that is neither, or a document
// never accepted: recipient.unknown), when the unit has already reported
// Config.MaxStatuses statuses on the document (status.too_many), or when its
// time is in the future or before the document's acceptance (status.time).
// A refused status reaches neither the document's history nor any other
// unit; like a rejected submission, it is archived under rejected/ with its
// reasons (the body itself within the unit's budget of rejected bytes) and
// listed among the rejected.
//
// A recorded status is archived (with the flag and reception time the index
// keeps), published as a status event, and forwarded.
//
// The city's gateway unit (Gateway) also relays, on its own subject, the
// statuses of the recipients outside the city it carried a document to:
// each is judged as that recipient's own. A sender's 13 reaches those
// recipients through the gateway, once.
//
// Once recorded or refused, the status is removed from EDX_STATUS: the
// stream holds only what waits for the hub, which is what each unit's share
// of it (status_unit_pending) bounds.
func (p *Pipeline) handleStatus(ctx context.Context, msg jetstream.Msg) error {
	if err := p.status(ctx, msg); err != nil {
		return err
	}
	if seq := msgSeq(msg); seq > 0 {
		if err := p.statuses.DeleteMsg(ctx, seq); err != nil {
			p.log.Warn("pipeline: remove processed status", "seq", seq, "err", err)
		}
	}
	return nil
}

func (p *Pipeline) status(ctx context.Context, msg jetstream.Msg) error {
	nm := &nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()}
	unit, rep, err := protocol.ParseStatusReport(nm)
	var st *document.Status
	if rep != nil {
		st = &rep.Status
	}
	received, attempt := p.now(), uint64(1)
	if md, err := msg.Metadata(); err == nil {
		received, attempt = md.Timestamp, md.NumDelivered
	}
	received = received.UTC().Truncate(time.Microsecond) // the index's precision
	submitter := unit                                    // who published it: told of a refusal
	refuse := func(c reason.Code, text string) error {
		return p.refuseStatus(ctx, msg, submitter, st, received, c, text)
	}
	if err != nil {
		return refuse(reason.StatusInvalid, err.Error())
	}
	relayed := st.Unit != unit
	if relayed && (p.cfg.Gateway.Unit == "" || unit != p.cfg.Gateway.Unit) {
		return refuse(reason.SenderMismatch, fmt.Sprintf("unit %s reported a status as %s", unit, st.Unit))
	}
	doc, err := p.document(ctx, st.DocumentID, true)
	switch {
	case errors.Is(err, errNotAccepted):
		if waited := p.now().Sub(received); waited < p.cfg.ReferenceWait || attempt < minReferenceAttempts {
			return retry("pipeline: status of %s on %s: the document is not accepted yet (attempt %d, waited %s of %s)",
				unit, st.DocumentID, attempt, waited.Round(time.Second), p.cfg.ReferenceWait)
		}
		return refuse(reason.RecipientUnknown, fmt.Sprintf("unit %s never received document %s", unit, st.DocumentID))
	case err != nil:
		return err
	}
	if relayed {
		// The gateway relays the status of a recipient outside the city it
		// carried the document to: judged as that recipient's own.
		rt, _, err := p.routeOf(ctx, doc.upstream, st.Unit)
		if err != nil {
			return err
		}
		if rt != routeGateway || !slices.Contains(doc.to, st.Unit) || st.Code.BySender() {
			return refuse(reason.SenderMismatch, fmt.Sprintf("unit %s reported a status as %s, which is not a recipient outside the city it carried document %s to", unit, st.Unit, st.DocumentID))
		}
		unit = st.Unit
	}
	recipient := slices.Contains(doc.to, unit)
	switch {
	case st.Code.BySender() && doc.from != unit:
		return refuse(reason.StatusNotEntitled, fmt.Sprintf("code %s (taking a document back) is the sender's; unit %s did not send document %s", st.Code, unit, st.DocumentID))
	case !st.Code.BySender() && !recipient && doc.from == unit:
		return refuse(reason.StatusNotEntitled, fmt.Sprintf("code %s is a recipient's; unit %s sent document %s", st.Code, unit, st.DocumentID))
	case !st.Code.BySender() && !recipient:
		return refuse(reason.RecipientUnknown, fmt.Sprintf("unit %s never received document %s", unit, st.DocumentID))
	}
	// A status recorded before (a redelivery) goes through again, so that
	// its archive copy, event and notices are complete; only new ones count.
	var again *index.StatusEntry
	n := 0
	for i, h := range doc.history {
		if h.Unit == unit {
			n++
			if h.Code == st.Code && h.Time.UnixMicro() == st.Time.UnixMicro() {
				again = &doc.history[i]
			}
		}
	}
	entry := index.StatusEntry{Status: *st, Flagged: projection.Flag(doc.history, *st), ReceivedAt: received}
	switch {
	case again != nil && !again.ReceivedAt.IsZero():
		entry.Flagged, entry.ReceivedAt = again.Flagged, again.ReceivedAt
	case again == nil && n >= p.cfg.MaxStatuses:
		return refuse(reason.StatusTooMany, fmt.Sprintf("unit %s already reported %d statuses on document %s, the limit", unit, n, st.DocumentID))
	case again == nil:
		if err := st.CheckTime(doc.acceptedAt, p.now()); err != nil {
			return refuse(reason.StatusTime, err.Error())
		}
	}
	var sig []byte // the signature archived with the status
	if again == nil || again.ReceivedAt.IsZero() {
		sum, why, err := p.statusSignature(ctx, unit, rep, doc)
		if err != nil {
			return err
		}
		if why != nil {
			return refuse(why.Code, why.Message)
		}
		entry.SignatureSHA256 = sum
		if sum != "" {
			sig = rep.Signature
		}
	} else {
		// Recorded before: the archived entry (and signature) stands.
		entry.SignatureSHA256 = again.SignatureSHA256
	}
	if entry, sig, err = p.archiveStatus(ctx, entry, sig); err != nil {
		return err
	}
	logged := p.logStatus(ctx, doc, entry)
	seq, err := p.ev.Status(ctx, entry)
	if err != nil {
		return retry("pipeline: %w", err)
	}
	if err := p.step("status published"); err != nil {
		return err
	}
	if err := logged(); err != nil {
		return retry("pipeline: log the status of %s on %s: %w", unit, st.DocumentID, err)
	}
	p.waitApplied(ctx, seq)
	notice := &protocol.Notice{Type: protocol.NoticeStatus, DocumentID: st.DocumentID, Time: st.Time, Status: st,
		StatusSignature: p.signatureOf(ctx, st, sig, entry.SignatureSHA256)}
	if st.Code.BySender() {
		// The sender takes the document back: every recipient is told, on
		// its own notice subject (one Msg-Id each, the stream de-duplicates
		// across subjects).
		// Recipients outside the city hear of it through the gateway (one
		// notice for all it carries), those the upstream serves not at all.
		for _, r := range doc.to {
			to, err := p.noticeTarget(ctx, doc.upstream, r)
			if err != nil {
				return err
			}
			if to == "" {
				continue
			}
			if err := p.notify(ctx, to, notice, "status."+protocol.StatusMsgID(st)+"."+string(to)); err != nil {
				return err
			}
		}
	} else if err := p.notify(ctx, doc.from, notice, "status."+protocol.StatusMsgID(st)); err != nil {
		return err
	}
	p.m.statuses.WithLabelValues(string(st.Code)).Inc()
	p.log.Info("status", "doc_id", st.DocumentID, "unit", unit, "code", st.Code, "out_of_order", entry.Flagged, "signed", entry.SignatureSHA256 != "",
		"indexed_here", doc.indexed)
	return nil
}

// logStatus queues the log entries of a recorded status: the status (who
// reported which code on which document, at the time the hub received it),
// and for 01 the delivery (the container the recipient's agent took). The
// entry's time is the status's reception time as archived, so a
// redelivered status logs the same bytes. It returns the wait for them.
func (p *Pipeline) logStatus(ctx context.Context, doc *accepted, e index.StatusEntry) func() error {
	if p.tlog == nil {
		return func() error { return nil }
	}
	at := e.ReceivedAt.UTC()
	waits := []func() (uint64, error){p.tlog.AppendAsync(ctx, &evidence.Entry{V: evidence.Version, Kind: evidence.Status, Time: at,
		Doc: string(e.DocumentID), Unit: string(e.Unit), Status: string(e.Code), Digest: e.SignatureSHA256})}
	if e.Code == document.StatusDelivered && doc.sha256 != "" {
		waits = append(waits, p.tlog.AppendAsync(ctx, &evidence.Entry{V: evidence.Version, Kind: evidence.Delivered, Time: at,
			Doc: string(e.DocumentID), Container: doc.sha256, Unit: string(e.Unit)}))
	}
	return func() error {
		for _, w := range waits {
			if _, err := p.await(ctx, 0, w); err != nil {
				return err
			}
		}
		return nil
	}
}

// archiveStatus archives a recorded status beside its document, once,
// with its unit's signature (sig, nil for an unsigned status) in the same
// object. When the archive already holds it (a redelivery, or the same
// status recorded by another hub), the archived entry and signature are
// the truth, and they are returned: a status signed again (ECDSA
// signatures differ each time) keeps the signature archived first.
func (p *Pipeline) archiveStatus(ctx context.Context, e index.StatusEntry, sig []byte) (index.StatusEntry, []byte, error) {
	key := projection.StatusKey(&e.Status)
	body, err := projection.EncodeStatus(e, sig)
	if err != nil {
		return e, nil, retry("pipeline: status %s: %w", e.DocumentID, err)
	}
	_, err = p.arch.Put(ctx, key, body, "application/json", nil)
	switch {
	case err == nil:
		return e, sig, nil
	case !errors.Is(err, archive.ErrConflict):
		return e, nil, retry("pipeline: archive status %s: %w", e.DocumentID, err)
	}
	b, _, err := p.arch.Get(ctx, key)
	if err != nil {
		return e, nil, retry("pipeline: archived status %s: %w", key, err)
	}
	old, oldSig, err := projection.DecodeStatus(b)
	if err != nil || old.ReceivedAt.IsZero() {
		// Archived before flags were kept, or unreadable: the index will
		// flag it as it always did; this hub's entry stands, and its
		// signature, which that object cannot hold, goes beside it as
		// archives did then (signatureOf and the API read it there).
		if sig != nil {
			skey := projection.StatusSignatureKey(&e.Status)
			_, err := p.arch.Put(ctx, skey, sig, "application/pkcs7-mime", nil)
			switch {
			case errors.Is(err, archive.ErrConflict): // the one archived first stands
				if sig, _, err = p.arch.Get(ctx, skey); err != nil {
					return e, nil, retry("pipeline: archived status signature %s: %w", skey, err)
				}
				d := sha256.Sum256(sig)
				e.SignatureSHA256 = hex.EncodeToString(d[:])
			case err != nil:
				return e, nil, retry("pipeline: archive status signature %s: %w", skey, err)
			}
		}
		return e, sig, nil
	}
	if oldSig == nil && old.SignatureSHA256 != "" {
		// Archived before signatures went into the status's object: the
		// signature is beside it (signatureOf reads it).
		return old, nil, nil
	}
	if sig != nil && !bytes.Equal(oldSig, sig) {
		p.log.Info("status signed again: the signature archived first stands", "doc_id", e.DocumentID, "unit", e.Unit, "code", e.Code)
	}
	return old, oldSig, nil
}

// refuseStatus archives a refused status under rejected/ with its reasons,
// publishes it as rejected, and tells the unit why. The status body is kept
// within the unit's budget of rejected bytes (Config.RejectedUnitBudget).
func (p *Pipeline) refuseStatus(ctx context.Context, msg jetstream.Msg, unit document.UnitID, st *document.Status, received time.Time, c reason.Code, text string) error {
	rs := reason.List{{Code: c, Message: text}}
	body := msg.Data()
	sum := sha256.Sum256(body)
	ref := "status-unknown"
	if st != nil && st.DocumentID.Validate() == nil {
		ref = "status-" + string(st.DocumentID)
	}
	ref += "-" + hex.EncodeToString(sum[:8])
	kept := int64(0)
	if len(body) > 0 && p.rejectedKeep(unit, int64(len(body))) == int64(len(body)) {
		kept = int64(len(body))
	}
	rec := projection.RejectedRecord{Ref: ref, Sender: unit, Subject: msg.Subject(), Received: received, SHA256: hex.EncodeToString(sum[:]),
		Reasons: rs, Size: int64(len(body)), Kept: kept, Status: st}
	if kept > 0 {
		if _, err := p.arch.Put(ctx, projection.RejectedKey(received, ref, projection.RejectedStatus), body, "application/json", nil); err != nil && !errors.Is(err, archive.ErrConflict) {
			return retry("pipeline: archive refused status %s: %w", ref, err)
		}
	}
	rb, _ := json.MarshalIndent(rec, "", "  ")
	key := projection.RejectedKey(received, ref, projection.ReasonsName)
	var doc document.ID
	if st != nil && st.DocumentID.Validate() == nil {
		doc = st.DocumentID
	}
	logged := p.logRejected(ctx, received, rec.SHA256, unit, doc, rs, nil)
	if err := p.archiveRejected(ctx, key, &rec, rb); err != nil {
		return err
	}
	if _, err := p.await(ctx, 0, logged); err != nil {
		return retry("pipeline: log the refusal of %s: %w", ref, err)
	}
	if unit.Validate() == nil {
		n := &protocol.Notice{Type: protocol.NoticeStatusRejected, Time: p.now().UTC(), Reasons: rs, Status: st, ArchiveKey: key}
		if st != nil {
			n.DocumentID = st.DocumentID
		}
		if err := p.notify(ctx, unit, n, fmt.Sprintf("status-rejected.%d", msgSeq(msg))); err != nil {
			return err
		}
	}
	p.m.statusRejected.WithLabelValues(string(c)).Inc()
	p.log.Info("status refused", "unit", unit, "reason", c, "detail", text, "archive_key", key)
	return nil
}

func msgSeq(msg jetstream.Msg) uint64 {
	if md, err := msg.Metadata(); err == nil {
		return md.Sequence.Stream
	}
	return 0
}
