package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

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

// handleStatus records a recipient's status report and forwards it to the
// document's sender; a status for a document the unit never received is
// refused and the unit told why.
func (p *Pipeline) handleStatus(ctx context.Context, msg jetstream.Msg) error {
	nm := &nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()}
	unit, st, err := protocol.ParseStatus(nm)
	refuse := func(c reason.Code, text string) error {
		p.m.statusRejected.WithLabelValues(string(c)).Inc()
		p.log.Info("status refused", "unit", unit, "reason", c, "detail", text)
		if unit.Validate() != nil {
			return nil
		}
		n := &protocol.Notice{Type: protocol.NoticeStatusRejected, Time: p.now().UTC(), Reasons: reason.List{{Code: c, Message: text}}, Status: st}
		id := fmt.Sprintf("status-rejected.%d", msgSeq(msg))
		if st != nil {
			n.DocumentID = st.DocumentID
		}
		return p.notify(ctx, unit, n, id)
	}
	if err != nil {
		return refuse(reason.SubmissionInvalid, err.Error())
	}
	if st.Unit != unit {
		return refuse(reason.SenderMismatch, fmt.Sprintf("unit %s reported a status as %s", unit, st.Unit))
	}
	flagged, err := p.ix.AddStatus(ctx, *st)
	switch {
	case errors.Is(err, index.ErrNotRecipient), errors.Is(err, index.ErrNotFound):
		return refuse(reason.RecipientUnknown, fmt.Sprintf("unit %s never received document %s", unit, st.DocumentID))
	case errors.Is(err, index.ErrInvalid):
		return refuse(reason.SubmissionInvalid, err.Error())
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
	det, err := p.ix.Get(ctx, st.DocumentID)
	if err != nil {
		return retry("pipeline: status %s: %w", st.DocumentID, err)
	}
	n := &protocol.Notice{Type: protocol.NoticeStatus, DocumentID: st.DocumentID, Time: st.Time, Status: st}
	if err := p.notify(ctx, det.Doc.From, n, "status."+protocol.StatusMsgID(st)); err != nil {
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
