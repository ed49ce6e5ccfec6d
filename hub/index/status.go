package index

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

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
// unit is not one of its recipients. A 01 (delivered) status also marks the
// recipient delivered.
func (ix *Index) AddStatus(ctx context.Context, st document.Status) (flagged bool, err error) {
	fl, err := ix.AddStatuses(ctx, []document.Status{st})
	if err != nil {
		return false, err
	}
	return fl[0], nil
}

// AddStatuses is AddStatus for many statuses in one transaction, for
// replaying history into a rebuilt index. Either all are recorded or none;
// flagged[i] is the flag of sts[i].
func (ix *Index) AddStatuses(ctx context.Context, sts []document.Status) (flagged []bool, err error) {
	for i := range sts {
		if err := sts[i].Validate(); err != nil {
			return nil, invalid("status: %v", err)
		}
	}
	flagged = make([]bool, len(sts))
	err = ix.write(ctx, "add status", func(tx *sql.Tx) error {
		now := us(ix.now())
		for i := range sts {
			f, err := addStatus(ctx, tx, &sts[i], now)
			if err != nil {
				return err
			}
			flagged[i] = f
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return flagged, nil
}

func addStatus(ctx context.Context, tx *sql.Tx, st *document.Status, now int64) (flagged bool, err error) {
	var officer any
	if st.Officer != nil {
		b, err := json.Marshal(st.Officer)
		if err != nil {
			return false, invalid("status officer: %v", err)
		}
		officer = string(b)
	}
	at := us(st.Time)
	seq, err := seqByID(ctx, tx, st.DocumentID)
	if err != nil {
		return false, err
	}
	var one int
	err = tx.QueryRowContext(ctx, "SELECT 1 FROM recipients WHERE doc = ? AND unit = ?", seq, string(st.Unit)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("%w: %s is not a recipient of %s", ErrNotRecipient, st.Unit, st.DocumentID)
	}
	if err != nil {
		return false, err
	}
	err = tx.QueryRowContext(ctx, "SELECT flagged FROM statuses WHERE doc = ? AND unit = ? AND code = ? AND at = ?",
		seq, string(st.Unit), string(st.Code), at).Scan(&flagged)
	if err == nil {
		return flagged, nil // already recorded
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return false, err
	}
	var prev string
	err = tx.QueryRowContext(ctx, `SELECT code FROM statuses
		WHERE doc = ? AND unit = ? AND code IN `+progressCodes+` AND at <= ?
		ORDER BY at DESC, received_at DESC, code DESC LIMIT 1`, seq, string(st.Unit), at).Scan(&prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, err
	}
	flagged = !document.InOrder(document.StatusCode(prev), st.Code)
	if _, err := tx.ExecContext(ctx, `INSERT INTO statuses(doc, unit, code, at, description, officer, flagged, received_at)
		VALUES(?, ?, ?, ?, ?, ?, ?, ?)`, seq, string(st.Unit), string(st.Code), at, st.Description, officer, flagged, now); err != nil {
		return false, err
	}
	_, err = tx.ExecContext(ctx, `UPDATE recipients SET
		last_code = CASE WHEN last_at IS NULL OR last_at <= ?1 THEN ?2 ELSE last_code END,
		last_at = CASE WHEN last_at IS NULL OR last_at <= ?1 THEN ?1 ELSE last_at END,
		done = done OR ?3,
		state = CASE WHEN ?2 = '01' THEN 'delivered' ELSE state END,
		delivered_at = CASE WHEN ?2 = '01' THEN coalesce(delivered_at, ?1) ELSE delivered_at END
		WHERE doc = ?4 AND unit = ?5`, at, string(st.Code), st.Code.Final(), seq, string(st.Unit))
	return flagged, err
}
