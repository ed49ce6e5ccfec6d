package index

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/edxhub/edx/pkg/document"
)

// progress lists the codes that make up a recipient's progress; the previous
// one decides whether a new status is in order.
const progressCodes = "('01', '02', '03', '04', '05', '06')"

// AddStatus records a recipient's status report on a document. The status is
// flagged when it is out of order (document.InOrder) after the unit's
// previous progress code, the last one recorded with a time not after
// st.Time; a flagged status is still recorded. Recording the same status
// again (same document, unit, code and time) changes nothing and returns the
// flag recorded the first time.
//
// It returns ErrNotFound for an unknown document and ErrNotRecipient when the
// unit is not one of its recipients, except for a 13 (taken back) from the
// document's sender, which is recorded in the history alone. A 01
// (delivered) status also marks the recipient delivered; a 02 (refused)
// before any 01 marks it refused (its agent could not take the delivery).
func (ix *Index) AddStatus(ctx context.Context, st document.Status) (flagged bool, err error) {
	fl, err := ix.AddStatuses(ctx, []document.Status{st})
	if err != nil {
		return false, err
	}
	return fl[0], nil
}

// AddStatuses is AddStatus for many statuses in one transaction. Either
// all are recorded or none; flagged[i] is the flag of sts[i].
func (ix *Index) AddStatuses(ctx context.Context, sts []document.Status) (flagged []bool, err error) {
	es := make([]StatusEntry, len(sts))
	for i := range sts {
		es[i].Status = sts[i]
	}
	return ix.addStatuses(ctx, es)
}

// PutStatuses records statuses as another index, or the archive, recorded
// them: with the flag and the reception time each entry carries, so that
// every index that applies the same entries holds the same history,
// whatever order they come in. An entry with no ReceivedAt (archived before
// the flag was kept) is recorded as AddStatus records it. Recording an
// entry again changes nothing. Either all are recorded or none; the errors
// are AddStatus's.
func (ix *Index) PutStatuses(ctx context.Context, es []StatusEntry) error {
	_, err := ix.addStatuses(ctx, es)
	return err
}

func (ix *Index) addStatuses(ctx context.Context, es []StatusEntry) (flagged []bool, err error) {
	for i := range es {
		if err := es[i].Validate(); err != nil {
			return nil, invalid("status: %v", err)
		}
	}
	flagged = make([]bool, len(es))
	err = ix.write(ctx, "add status", func(tx *sql.Tx) error {
		p, err := prepareStatus(ctx, tx, ix.wstmts)
		if err != nil {
			return err
		}
		defer p.close()
		now := us(ix.now())
		var dirty []int64 // documents whose recipients' latest codes may have changed
		seen := make(map[int64]bool)
		for i := range es {
			seq, f, err := p.add(ctx, &es[i], now)
			if err != nil {
				return err
			}
			flagged[i] = f
			if seq != 0 && !seen[seq] {
				seen[seq] = true
				dirty = append(dirty, seq)
			}
		}
		if len(dirty) == 0 {
			return nil
		}
		c, err := prepareCodes(ctx, tx, ix.wstmts)
		if err != nil {
			return err
		}
		defer c.close()
		// Newest first: their keys in order (see putStmts.writeFTS).
		slices.Sort(dirty)
		slices.Reverse(dirty)
		for _, seq := range dirty {
			if err := c.refresh(ctx, seq); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return flagged, nil
}

type statusStmts struct {
	doc, recipient, same, prev, insert, update *sql.Stmt
}

func prepareStatus(ctx context.Context, tx *sql.Tx, c *stmtCache) (*statusStmts, error) {
	p := &statusStmts{}
	if err := c.prepare(ctx, tx, p.specs()); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *statusStmts) specs() []stmtSpec {
	return []stmtSpec{
		{&p.doc, "SELECT seq, from_unit FROM documents WHERE id = ?"},
		{&p.recipient, "SELECT 1 FROM recipients WHERE doc = ? AND unit = ?"},
		{&p.same, "SELECT flagged FROM statuses WHERE doc = ? AND unit = ? AND code = ? AND at = ?"},
		{&p.prev, `SELECT code FROM statuses
			WHERE doc = ? AND unit = ? AND code IN ` + progressCodes + ` AND at <= ?
			ORDER BY at DESC, received_at DESC, code DESC LIMIT 1`},
		{&p.insert, `INSERT INTO statuses(doc, unit, code, at, description, officer, flagged, received_at, signature_sha256)
			VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&p.update, `UPDATE recipients SET
			last_code = CASE WHEN last_at IS NULL OR last_at <= ?1 THEN ?2 ELSE last_code END,
			last_at = CASE WHEN last_at IS NULL OR last_at <= ?1 THEN ?1 ELSE last_at END,
			done = done OR ?3,
			state = CASE WHEN ?2 = '01' THEN 'delivered' WHEN ?2 = '02' AND state = 'routed' THEN 'refused' ELSE state END,
			delivered_at = CASE WHEN ?2 = '01' THEN coalesce(delivered_at, ?1) ELSE delivered_at END
			WHERE doc = ?4 AND unit = ?5`},
	}
}

func (p *statusStmts) close() {
	for _, s := range []*sql.Stmt{p.doc, p.recipient, p.same, p.prev, p.insert, p.update} {
		if s != nil {
			s.Close()
		}
	}
}

// add records e and returns its document's seq, or 0 when it was recorded
// before. An entry with a ReceivedAt keeps its flag and time; one without
// is flagged here and received now.
func (p *statusStmts) add(ctx context.Context, e *StatusEntry, now int64) (seq int64, flagged bool, err error) {
	st := &e.Status
	var officer any
	if st.Officer != nil {
		b, err := json.Marshal(st.Officer)
		if err != nil {
			return 0, false, invalid("status officer: %v", err)
		}
		officer = string(b)
	}
	at, unit, code := us(st.Time), string(st.Unit), string(st.Code)
	var from string
	err = p.doc.QueryRowContext(ctx, string(st.DocumentID)).Scan(&seq, &from)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, fmt.Errorf("%w: document %s", ErrNotFound, st.DocumentID)
	}
	if err != nil {
		return 0, false, err
	}
	var one int
	err = p.recipient.QueryRowContext(ctx, seq, unit).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) && st.Code.BySender() && unit == from {
		err = nil // the sender takes its document back (13)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, fmt.Errorf("%w: %s is not a recipient of %s", ErrNotRecipient, st.Unit, st.DocumentID)
	}
	if err != nil {
		return 0, false, err
	}
	err = p.same.QueryRowContext(ctx, seq, unit, code, at).Scan(&flagged)
	if err == nil {
		return 0, flagged, nil // already recorded
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, false, err
	}
	if !e.ReceivedAt.IsZero() {
		flagged, now = e.Flagged, us(e.ReceivedAt)
	} else {
		var prev string
		err = p.prev.QueryRowContext(ctx, seq, unit, at).Scan(&prev)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return 0, false, err
		}
		flagged = !document.InOrder(document.StatusCode(prev), st.Code)
	}
	if _, err := p.insert.ExecContext(ctx, seq, unit, code, at, st.Description, officer, flagged, now, e.SignatureSHA256); err != nil {
		return 0, false, err
	}
	_, err = p.update.ExecContext(ctx, at, code, st.Code.Final(), seq, unit)
	return seq, flagged, err
}
