package index

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// Rejected is a submission the hub refused, archived with its reasons.
type Rejected struct {
	Ref        string          `json:"ref"`    // the submission's reference (its document id when it had one)
	Sender     document.UnitID `json:"sender"` // as the submit subject names it; not validated
	At         time.Time       `json:"at"`     // hub time
	Reasons    reason.List     `json:"reasons"`
	ArchiveKey string          `json:"archive_key"`
}

// PutRejected records a rejected submission, replacing any under the same
// ref.
func (ix *Index) PutRejected(ctx context.Context, rej Rejected) error {
	if rej.Ref == "" {
		return invalid("rejected: ref is required")
	}
	reasons := rej.Reasons
	if reasons == nil {
		reasons = reason.List{}
	}
	b, err := json.Marshal(reasons)
	if err != nil {
		return invalid("rejected %s: reasons: %v", rej.Ref, err)
	}
	return ix.write(ctx, "put rejected", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO rejected(ref, sender, at, reasons, archive_key) VALUES(?, ?, ?, ?, ?)
			ON CONFLICT(ref) DO UPDATE SET sender = excluded.sender, at = excluded.at,
			reasons = excluded.reasons, archive_key = excluded.archive_key`,
			rej.Ref, string(rej.Sender), us(rej.At), string(b), rej.ArchiveKey)
		return err
	})
}

// ListRejected returns the latest rejected submissions of sender, or of
// every sender when sender is "", newest first. limit ≤ 0 means 100.
func (ix *Index) ListRejected(ctx context.Context, sender document.UnitID, limit int) ([]Rejected, error) {
	if limit <= 0 {
		limit = 100
	}
	q := "SELECT ref, sender, at, reasons, archive_key FROM rejected ORDER BY at DESC, ref LIMIT ?"
	args := []any{limit}
	if sender != "" {
		q = "SELECT ref, sender, at, reasons, archive_key FROM rejected WHERE sender = ? ORDER BY at DESC, ref LIMIT ?"
		args = []any{string(sender), limit}
	}
	rows, err := ix.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("index: list rejected: %w", err)
	}
	defer rows.Close()
	var out []Rejected
	for rows.Next() {
		var (
			r       Rejected
			s       string
			at      int64
			reasons []byte
		)
		if err := rows.Scan(&r.Ref, &s, &at, &reasons, &r.ArchiveKey); err != nil {
			return nil, fmt.Errorf("index: list rejected: %w", err)
		}
		r.Sender, r.At = document.UnitID(s), fromUS(at)
		if err := json.Unmarshal(reasons, &r.Reasons); err != nil {
			return nil, fmt.Errorf("index: list rejected %s: %w", r.Ref, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("index: list rejected: %w", err)
	}
	return out, nil
}
