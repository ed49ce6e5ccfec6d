package index

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// File is one payload file of a container as its manifest lists it.
type File struct {
	Name      string `json:"name"`
	MediaType string `json:"media_type"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"` // hex
}

// SignerInfo is what the container's signature says about its signer.
type SignerInfo struct {
	SubjectCN   string          `json:"subject_cn"`            // the certificate's subject common name
	Serial      string          `json:"serial"`                // the certificate's serial number (hex)
	Unit        document.UnitID `json:"unit"`                  // the unit the certificate is bound to
	SigningTime time.Time       `json:"signing_time,omitzero"` // the signed signing-time attribute (the signer's claim)
}

// Record is everything the index keeps about one accepted document.
type Record struct {
	Doc             document.Document `json:"document"`
	RawMeta         []byte            `json:"-"` // document.json as archived; Doc.Marshal() when nil
	Files           []File            `json:"files"`
	Signer          SignerInfo        `json:"signer"`
	ContainerSHA256 string            `json:"container_sha256"` // hex
	Size            int64             `json:"size"`             // container bytes
	ArchiveKey      string            `json:"archive_key"`
	ReceiptKey      string            `json:"receipt_key"`
	AcceptedAt      time.Time         `json:"accepted_at"` // hub time; required
}

// Delivery states of a recipient.
const (
	StateRouted    = "routed"    // published to the recipient's deliveries
	StateDelivered = "delivered" // the recipient's agent has it
	StateRefused   = "refused"   // the recipient refused it (02) before it was delivered: its agent could not take it
)

// Recipient is one recipient of a document and where it stands.
type Recipient struct {
	Unit        document.UnitID     `json:"unit"`
	State       string              `json:"state"` // StateRouted, StateDelivered or StateRefused
	RoutedAt    time.Time           `json:"routed_at"`
	DeliveredAt time.Time           `json:"delivered_at,omitzero"` // zero while routed
	LastCode    document.StatusCode `json:"last_code,omitempty"`   // the status with the latest time, "" for none
	LastAt      time.Time           `json:"last_at,omitzero"`
	Done        bool                `json:"done"` // a final code (02, 06, 13) has been recorded
}

// StatusEntry is one recorded status.
type StatusEntry struct {
	document.Status
	Flagged    bool      `json:"flagged"`     // out of order per document.InOrder
	ReceivedAt time.Time `json:"received_at"` // hub time
	// SignatureSHA256 is the SHA-256 (hex) of the reporting unit's
	// signature over the status (container.SignStatus), archived beside it
	// (projection.StatusSignatureKey); empty for an unsigned status.
	SignatureSHA256 string `json:"signature_sha256,omitempty"`
}

// Detail is a document with its recipients and status history (by time).
type Detail struct {
	Record
	Recipients []Recipient   `json:"recipients"`
	History    []StatusEntry `json:"history"`
}

// seqSpan: a document's seq is its acceptance time in µs times seqSpan, plus
// a tie-break for documents accepted in the same microsecond.
const seqSpan = 1000

// maxAcceptedUS keeps seq = µs*1000+k inside int64 (about the year 2262).
const maxAcceptedUS = (1<<63 - 1 - seqSpan) / seqSpan

func checkRecord(rec *Record) error {
	d := &rec.Doc
	if err := d.ID.Validate(); err != nil {
		return invalid("record: %v", err)
	}
	if err := d.From.Validate(); err != nil {
		return invalid("record %s: from: %v", d.ID, err)
	}
	for _, u := range d.To {
		if err := u.Validate(); err != nil {
			return invalid("record %s: to: %v", d.ID, err)
		}
	}
	if rec.AcceptedAt.IsZero() || rec.AcceptedAt.Unix() < 0 || us(rec.AcceptedAt) > maxAcceptedUS {
		return invalid("record %s: accepted_at %v out of range", d.ID, rec.AcceptedAt)
	}
	return nil
}

// PutDocument stores rec, or replaces what the index holds under its id,
// with its recipients (new ones in state routed; existing ones keep their
// delivery state and statuses). Storing the same record again changes
// nothing.
func (ix *Index) PutDocument(ctx context.Context, rec Record) error {
	return ix.PutDocuments(ctx, []Record{rec})
}

// PutDocuments is PutDocument for many records in one transaction, for bulk
// loads and reindexing. Either all are stored or none.
func (ix *Index) PutDocuments(ctx context.Context, recs []Record) error {
	for i := range recs {
		if err := checkRecord(&recs[i]); err != nil {
			return err
		}
	}
	var fresh map[string]struct{}
	ix.termsMu.Lock()
	gen := ix.termsGen
	ix.termsMu.Unlock()
	err := ix.write(ctx, "put document", func(tx *sql.Tx) error {
		p, err := preparePut(ctx, tx, ix.wstmts)
		if err != nil {
			return err
		}
		defer p.close()
		p.known, p.fresh, p.fts = ix.knownTerm, make(map[string]struct{}), make(map[int64][2]string)
		for i := range recs {
			if err := p.put(ctx, &recs[i]); err != nil {
				return fmt.Errorf("%s: %w", recs[i].Doc.ID, err)
			}
		}
		fresh = p.fresh
		return p.writeFTS(ctx)
	})
	if err == nil {
		ix.learnTerms(fresh, gen)
	}
	return err
}

// maxKnownTerms bounds the in-memory copy of the vocabulary; past it, terms
// are upserted every time, which is only slower.
const maxKnownTerms = 1 << 20

func (ix *Index) knownTerm(t string) bool {
	ix.termsMu.Lock()
	_, ok := ix.known[t]
	ix.termsMu.Unlock()
	return ok
}

// learnTerms records terms once their transaction has committed, unless a
// Reset has emptied the table since the transaction began.
func (ix *Index) learnTerms(ts map[string]struct{}, gen int) {
	ix.termsMu.Lock()
	defer ix.termsMu.Unlock()
	if gen != ix.termsGen {
		return
	}
	for t := range ts {
		if len(ix.known) >= maxKnownTerms {
			return
		}
		ix.known[t] = struct{}{}
	}
}

type putStmts struct {
	find, free, insDoc, updDoc, delFTS, insFTS, delText, insText, addDay, recips, insRecip, updRecip, delRecip, updStat, insTerm, codes, setCodes *sql.Stmt

	known func(string) bool   // committed terms
	fresh map[string]struct{} // terms this transaction added
	// The search rows to write, by key: written last, in key order (see
	// writeFTS).
	fts map[int64][2]string
}

// countDay adds n to the documents of seq's day in accepted_days.
func (p *putStmts) countDay(ctx context.Context, seq int64, n int) error {
	_, err := p.addDay.ExecContext(ctx, seqDay(seq), n)
	return err
}

// writeFTS writes the search rows of the transaction in key order: FTS5
// flushes its pending terms to a new segment whenever a rowid is smaller
// than the one before, and keys decrease as documents get newer.
func (p *putStmts) writeFTS(ctx context.Context) error {
	for _, k := range slices.Sorted(maps.Keys(p.fts)) {
		r := p.fts[k]
		if _, err := p.insFTS.ExecContext(ctx, k, r[0], r[1]); err != nil {
			return err
		}
	}
	return nil
}

func preparePut(ctx context.Context, tx *sql.Tx, c *stmtCache) (*putStmts, error) {
	p := &putStmts{}
	specs := p.specs()
	if err := c.prepare(ctx, tx, specs); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *putStmts) specs() []stmtSpec {
	const cols = `id, edxml_id, business_type, from_unit, from_name, type, type_name, number, notation,
		subject, promulgated_at, promulgated_place, due_date, urgency, in_reply_to,
		signer_name, signer_position, signer_competence, cert_subject_cn, cert_serial, cert_unit,
		signed_at, container_sha256, size, archive_key, receipt_key, accepted_at, files, meta`
	return []stmtSpec{
		{&p.find, "SELECT seq FROM documents WHERE id = ?"},
		{&p.free, "SELECT max(seq) FROM documents WHERE seq >= ? AND seq < ?"},
		{&p.insDoc, "INSERT INTO documents(seq, " + cols + ") VALUES(?" + strings.Repeat(", ?", 29) + ")"},
		{&p.updDoc, "UPDATE documents SET (seq, " + cols + ") = (?" + strings.Repeat(", ?", 29) + ") WHERE seq = ?"},
		{&p.delFTS, ftsDelete},
		{&p.insFTS, ftsInsert},
		{&p.delText, textDelete},
		{&p.insText, textInsert},
		{&p.addDay, "INSERT INTO accepted_days(day, docs) VALUES(?, ?) ON CONFLICT DO UPDATE SET docs = docs + excluded.docs"},
		{&p.recips, "SELECT unit FROM recipients WHERE doc = ?"},
		{&p.insRecip, "INSERT INTO recipients(doc, unit, state, routed_at, due_date, last_code, done) VALUES(?, ?, 'routed', ?, ?, '', 0) ON CONFLICT DO UPDATE SET due_date = excluded.due_date"},
		{&p.updRecip, "UPDATE recipients SET doc = ? WHERE doc = ?"},
		{&p.delRecip, "DELETE FROM recipients WHERE doc = ? AND unit = ?"},
		{&p.updStat, "UPDATE statuses SET doc = ? WHERE doc = ?"},
		{&p.insTerm, "INSERT INTO terms(term) VALUES(?) ON CONFLICT DO NOTHING"},
		{&p.codes, "SELECT DISTINCT last_code FROM recipients WHERE doc = ? AND last_code <> '' ORDER BY last_code"},
		{&p.setCodes, "UPDATE documents SET codes = ? WHERE seq = ?"},
	}
}

func (p *putStmts) close() {
	for _, sp := range p.specs() {
		if *sp.dst != nil {
			(*sp.dst).Close()
		}
	}
}

func (p *putStmts) put(ctx context.Context, rec *Record) error {
	d := &rec.Doc
	raw := rec.RawMeta
	if raw == nil {
		b, err := d.Marshal()
		if err != nil {
			return err
		}
		raw = b
	}
	files := rec.Files
	if files == nil {
		files = []File{}
	}
	filesJSON, err := json.Marshal(files)
	if err != nil {
		return err
	}
	acc := rec.AcceptedAt.Truncate(time.Microsecond)
	base := us(acc) * seqSpan

	var old int64
	err = p.find.QueryRowContext(ctx, string(d.ID)).Scan(&old)
	exists := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	seq := old
	if !exists || old/seqSpan != base/seqSpan {
		// A new row, or the acceptance time moved: take the next free slot.
		var top sql.NullInt64
		if err := p.free.QueryRowContext(ctx, base, base+seqSpan).Scan(&top); err != nil {
			return err
		}
		seq = base
		if top.Valid {
			seq = top.Int64 + 1
		}
		if seq >= base+seqSpan {
			return fmt.Errorf("more than %d documents accepted in one microsecond", seqSpan)
		}
	}
	args := []any{seq,
		string(d.ID), d.EdXMLID, int(d.BusinessType), string(d.From), d.FromName, d.Type, d.TypeName, d.Number, d.Notation,
		d.Subject, d.PromulgatedAt, d.PromulgatedPlace, d.DueDate, int(d.Urgency), string(d.InReplyTo),
		d.Signer.FullName, d.Signer.Position, d.Signer.Competence, rec.Signer.SubjectCN, rec.Signer.Serial, string(rec.Signer.Unit),
		usOrNil(rec.Signer.SigningTime), rec.ContainerSHA256, rec.Size, rec.ArchiveKey, rec.ReceiptKey, us(acc), string(filesJSON), raw,
	}
	if exists {
		if _, err := p.updDoc.ExecContext(ctx, append(args, old)...); err != nil {
			return err
		}
		if _, err := p.delFTS.ExecContext(ctx, ftsKey(old)); err != nil {
			return err
		}
		delete(p.fts, ftsKey(old)) // put before in this transaction
		if seq != old {
			if _, err := p.delText.ExecContext(ctx, old); err != nil {
				return err
			}
			if err := p.countDay(ctx, old, -1); err != nil {
				return err
			}
			if err := p.countDay(ctx, seq, 1); err != nil {
				return err
			}
			if _, err := p.updRecip.ExecContext(ctx, seq, old); err != nil {
				return err
			}
			if _, err := p.updStat.ExecContext(ctx, seq, old); err != nil {
				return err
			}
		}
	} else {
		if _, err := p.insDoc.ExecContext(ctx, args...); err != nil {
			return err
		}
		if err := p.countDay(ctx, seq, 1); err != nil {
			return err
		}
	}

	if exists {
		// Drop recipients the record no longer names.
		keep := make(map[document.UnitID]bool, len(d.To))
		for _, u := range d.To {
			keep[u] = true
		}
		rows, err := p.recips.QueryContext(ctx, seq)
		if err != nil {
			return err
		}
		var drop []string
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return err
			}
			if !keep[document.UnitID(u)] {
				drop = append(drop, u)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, u := range drop {
			if _, err := p.delRecip.ExecContext(ctx, seq, u); err != nil {
				return err
			}
		}
	}
	for _, u := range d.To {
		if _, err := p.insRecip.ExecContext(ctx, seq, string(u), us(acc), d.DueDate); err != nil {
			return err
		}
	}

	row := rowOf(rec)
	if exists {
		// Keep the status tags of the recipients that remain.
		rows, err := p.codes.QueryContext(ctx, seq)
		if err != nil {
			return err
		}
		for rows.Next() {
			var c string
			if err := rows.Scan(&c); err != nil {
				rows.Close()
				return err
			}
			row.codes = append(row.codes, document.StatusCode(c))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := p.setCodes.ExecContext(ctx, joinCodes(row.codes), seq); err != nil {
			return err
		}
	}
	text := row.text()
	p.fts[ftsKey(seq)] = [2]string{text, row.tags(text)}
	if _, err := p.insText.ExecContext(ctx, seq, text); err != nil {
		return err
	}
	for _, t := range strings.Fields(text) {
		if _, ok := p.fresh[t]; ok || p.known(t) {
			continue
		}
		if _, err := p.insTerm.ExecContext(ctx, t); err != nil {
			return err
		}
		p.fresh[t] = struct{}{}
	}
	return nil
}

// MarkDelivered records that unit's agent has the document: state delivered
// at the given time. Marking again keeps the first time.
func (ix *Index) MarkDelivered(ctx context.Context, id document.ID, unit document.UnitID, at time.Time) error {
	return ix.write(ctx, "mark delivered", func(tx *sql.Tx) error {
		seq, err := seqByID(ctx, tx, id)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE recipients SET state = 'delivered', delivered_at = coalesce(delivered_at, ?)
			WHERE doc = ? AND unit = ?`, us(at), seq, string(unit))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: mark delivered %s to %s", ErrNotRecipient, id, unit)
		}
		return nil
	})
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func seqByID(ctx context.Context, q queryer, id document.ID) (int64, error) {
	var seq int64
	err := q.QueryRowContext(ctx, "SELECT seq FROM documents WHERE id = ?", string(id)).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%w: document %s", ErrNotFound, id)
	}
	return seq, err
}

// Get returns a document with its recipients and status history.
func (ix *Index) Get(ctx context.Context, id document.ID) (*Detail, error) {
	tx, err := ix.g.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("index: get %s: %w", id, err)
	}
	defer tx.Rollback()
	det, err := getDetail(ctx, tx, ix.rstmts, id)
	if err != nil {
		if isKind(err) {
			return nil, err
		}
		return nil, fmt.Errorf("index: get %s: %w", id, err)
	}
	return det, nil
}

// detailStmts read a document (getDetail).
type detailStmts struct {
	doc, recips, statuses *sql.Stmt
}

func (p *detailStmts) specs() []stmtSpec {
	return []stmtSpec{
		{&p.doc, `SELECT seq, cert_subject_cn, cert_serial, cert_unit, signed_at,
		container_sha256, size, archive_key, receipt_key, accepted_at, files, meta
		FROM documents WHERE id = ?`},
		{&p.recips, `SELECT unit, state, routed_at, delivered_at, last_code, last_at, done
		FROM recipients WHERE doc = ? ORDER BY unit`},
		{&p.statuses, `SELECT unit, code, at, description, officer, flagged, received_at, signature_sha256
		FROM statuses WHERE doc = ? ORDER BY at, received_at, unit, code`},
	}
}

func (p *detailStmts) close() {
	for _, s := range []*sql.Stmt{p.doc, p.recips, p.statuses} {
		if s != nil {
			s.Close()
		}
	}
}

func getDetail(ctx context.Context, tx *sql.Tx, c *stmtCache, id document.ID) (*Detail, error) {
	var (
		det           Detail
		seq, accepted int64
		signed        sql.NullInt64
		certUnit      string
		filesJSON     []byte
		raw           []byte
	)
	rec := &det.Record
	var q detailStmts
	if err := c.prepare(ctx, tx, q.specs()); err != nil {
		return nil, err
	}
	defer q.close()
	err := q.doc.QueryRowContext(ctx, string(id)).Scan(&seq, &rec.Signer.SubjectCN, &rec.Signer.Serial, &certUnit, &signed,
		&rec.ContainerSHA256, &rec.Size, &rec.ArchiveKey, &rec.ReceiptKey, &accepted, &filesJSON, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: document %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	rec.Signer.Unit = document.UnitID(certUnit)
	rec.Signer.SigningTime = fromNullUS(signed)
	rec.AcceptedAt = fromUS(accepted)
	rec.RawMeta = raw
	if err := json.Unmarshal(filesJSON, &rec.Files); err != nil {
		return nil, fmt.Errorf("files: %w", err)
	}
	// The archived document.json is the truth; the columns are its projection.
	if err := json.Unmarshal(raw, &rec.Doc); err != nil {
		return nil, fmt.Errorf("document.json: %w", err)
	}

	rows, err := q.recips.QueryContext(ctx, seq)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var (
			r               Recipient
			unit, code      string
			routed          int64
			delivered, last sql.NullInt64
		)
		if err := rows.Scan(&unit, &r.State, &routed, &delivered, &code, &last, &r.Done); err != nil {
			rows.Close()
			return nil, err
		}
		r.Unit, r.LastCode = document.UnitID(unit), document.StatusCode(code)
		r.RoutedAt, r.DeliveredAt, r.LastAt = fromUS(routed), fromNullUS(delivered), fromNullUS(last)
		det.Recipients = append(det.Recipients, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	rows, err = q.statuses.QueryContext(ctx, seq)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			e            StatusEntry
			unit, code   string
			at, received int64
			officer      sql.NullString
		)
		if err := rows.Scan(&unit, &code, &at, &e.Description, &officer, &e.Flagged, &received, &e.SignatureSHA256); err != nil {
			return nil, err
		}
		e.DocumentID, e.Unit, e.Code = id, document.UnitID(unit), document.StatusCode(code)
		e.Time, e.ReceivedAt = fromUS(at), fromUS(received)
		if officer.Valid {
			e.Officer = new(document.Officer)
			if err := json.Unmarshal([]byte(officer.String), e.Officer); err != nil {
				return nil, fmt.Errorf("officer: %w", err)
			}
		}
		det.History = append(det.History, e)
	}
	return &det, rows.Err()
}
