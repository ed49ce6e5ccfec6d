package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// StatusKey is where a status event is archived, beside its document, so
// that the index's status history can be rebuilt from the archive alone.
func StatusKey(s *document.Status) string {
	return fmt.Sprintf("%s/status/%s-%s-%d.json",
		archive.ContainerKey(s.DocumentID.Time(), string(s.DocumentID))[:len("2006/01/02/")+len(s.DocumentID)],
		s.Unit, s.Code, s.Time.UnixNano())
}

// handleStatus records a status report and forwards it: a recipient's to
// the document's sender, a sender's 13 (taking the document back) to every
// recipient. A status is refused, and the unit told why with a reason code,
// when it is malformed or a field exceeds its bound (status.invalid), when
// the unit may not send that code on that document (13 is the sender's, the
// others a recipient's: status.not_entitled; a unit that is neither:
// recipient.unknown), when the unit has already reported
// Config.MaxStatuses statuses on the document (status.too_many), or when its
// time is in the future or before the document's acceptance (status.time).
// A refused status reaches neither the index, the archive nor any notice.
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
	unit, st, err := protocol.ParseStatus(nm)
	submitter := unit // who published it: told of a refusal
	refuse := func(c reason.Code, text string) error {
		p.m.statusRejected.WithLabelValues(string(c)).Inc()
		p.log.Info("status refused", "unit", submitter, "reason", c, "detail", text)
		if submitter.Validate() != nil {
			return nil
		}
		n := &protocol.Notice{Type: protocol.NoticeStatusRejected, Time: p.now().UTC(), Reasons: reason.List{{Code: c, Message: text}}, Status: st}
		id := fmt.Sprintf("status-rejected.%d", msgSeq(msg))
		if st != nil {
			n.DocumentID = st.DocumentID
		}
		return p.notify(ctx, submitter, n, id)
	}
	if err != nil {
		return refuse(reason.StatusInvalid, err.Error())
	}
	relayed := st.Unit != unit
	if relayed && (p.cfg.Gateway.Unit == "" || unit != p.cfg.Gateway.Unit) {
		return refuse(reason.SenderMismatch, fmt.Sprintf("unit %s reported a status as %s", unit, st.Unit))
	}
	det, err := p.ix.Get(ctx, st.DocumentID)
	switch {
	case errors.Is(err, index.ErrNotFound):
		return refuse(reason.RecipientUnknown, fmt.Sprintf("unit %s never received document %s", st.Unit, st.DocumentID))
	case err != nil:
		return retry("pipeline: status %s: %w", st.DocumentID, err)
	}
	if relayed {
		// The gateway relays the status of a recipient outside the city it
		// carried the document to: judged as that recipient's own.
		rt, _, err := p.routeOf(ctx, &det.Doc, st.Unit)
		if err != nil {
			return err
		}
		if rt != routeGateway || !slices.Contains(det.Doc.To, st.Unit) || st.Code.BySender() {
			return refuse(reason.SenderMismatch, fmt.Sprintf("unit %s reported a status as %s, which is not a recipient outside the city it carried document %s to", unit, st.Unit, st.DocumentID))
		}
		unit = st.Unit
	}
	recipient := slices.ContainsFunc(det.Recipients, func(r index.Recipient) bool { return r.Unit == unit })
	switch {
	case st.Code.BySender() && det.Doc.From != unit:
		return refuse(reason.StatusNotEntitled, fmt.Sprintf("code %s (taking a document back) is the sender's; unit %s did not send document %s", st.Code, unit, st.DocumentID))
	case !st.Code.BySender() && !recipient && det.Doc.From == unit:
		return refuse(reason.StatusNotEntitled, fmt.Sprintf("code %s is a recipient's; unit %s sent document %s", st.Code, unit, st.DocumentID))
	case !st.Code.BySender() && !recipient:
		return refuse(reason.RecipientUnknown, fmt.Sprintf("unit %s never received document %s", unit, st.DocumentID))
	}
	// A status recorded before (a redelivery) goes through again, so that
	// its archive copy and notices are complete; only new ones count.
	again, n := false, 0
	for _, h := range det.History {
		if h.Unit == unit {
			n++
			again = again || h.Code == st.Code && h.Time.UnixMicro() == st.Time.UnixMicro()
		}
	}
	if !again {
		if n >= p.cfg.MaxStatuses {
			return refuse(reason.StatusTooMany, fmt.Sprintf("unit %s already reported %d statuses on document %s, the limit", unit, n, st.DocumentID))
		}
		if err := st.CheckTime(det.AcceptedAt, p.now()); err != nil {
			return refuse(reason.StatusTime, err.Error())
		}
	}
	flagged, err := p.ix.AddStatus(ctx, *st)
	switch {
	case errors.Is(err, index.ErrNotRecipient), errors.Is(err, index.ErrNotFound):
		return refuse(reason.RecipientUnknown, fmt.Sprintf("unit %s never received document %s", unit, st.DocumentID))
	case errors.Is(err, index.ErrInvalid):
		return refuse(reason.StatusInvalid, err.Error())
	case err != nil:
		return retry("pipeline: status %s: %w", st.DocumentID, err)
	}
	body, _ := json.Marshal(st)
	if _, err := p.arch.Put(ctx, StatusKey(st), body, "application/json", nil); err != nil && !errors.Is(err, archive.ErrConflict) {
		return retry("pipeline: archive status %s: %w", st.DocumentID, err)
	}
	if st.Code == document.StatusDelivered {
		if err := p.ix.MarkDelivered(ctx, st.DocumentID, unit, st.Time); err != nil {
			return retry("pipeline: mark delivered %s: %w", st.DocumentID, err)
		}
	}
	notice := &protocol.Notice{Type: protocol.NoticeStatus, DocumentID: st.DocumentID, Time: st.Time, Status: st}
	if st.Code.BySender() {
		// The sender takes the document back: every recipient is told, on
		// its own notice subject (one Msg-Id each, the stream de-duplicates
		// across subjects).
		// Recipients outside the city hear of it through the gateway (one
		// notice for all it carries), those the upstream serves not at all.
		for _, r := range det.Doc.To {
			to, err := p.noticeTarget(ctx, &det.Doc, r)
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
	} else if err := p.notify(ctx, det.Doc.From, notice, "status."+protocol.StatusMsgID(st)); err != nil {
		return err
	}
	p.m.statuses.WithLabelValues(string(st.Code)).Inc()
	p.log.Info("status", "doc_id", st.DocumentID, "unit", unit, "code", st.Code, "out_of_order", flagged)
	return nil
}

func msgSeq(msg jetstream.Msg) uint64 {
	if md, err := msg.Metadata(); err == nil {
		return md.Sequence.Stream
	}
	return 0
}
