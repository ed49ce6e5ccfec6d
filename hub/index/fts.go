package index

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"
	"strings"

	"github.com/edxhub/edx/pkg/document"
)

// ftsKey is a document's rowid in the search table: its seq negated. FTS5
// walks a doclist forward cheaply and backward at a cost that grows with
// the square of its index pages (each step back decodes its doclist-index
// page from the start), and searches list the newest documents first: with
// the key negated, newest first is forward. A seq range [lo, hi) is the
// key range [ftsKey(hi-1), ftsKey(lo)].
func ftsKey(seq int64) int64 { return -seq }

// ftsRow is what the FTS table holds for one document: its searchable text,
// folded, and its tags (see tagFrom).
type ftsRow struct {
	subject, number, notation, signer, fromName string
	files                                       []string // file names
	from                                        document.UnitID
	to                                          []document.UnitID
	typ                                         string
	codes                                       []document.StatusCode // the recipients' latest codes, distinct, sorted
}

func rowOf(rec *Record) ftsRow {
	d := &rec.Doc
	names := make([]string, len(rec.Files))
	for i, f := range rec.Files {
		names[i] = f.Name
	}
	return ftsRow{subject: d.Subject, number: d.Number, notation: d.Notation, signer: d.Signer.FullName,
		fromName: d.FromName, files: names, from: d.From, to: d.To, typ: d.Type}
}

// The text columns, in the order of a stored text (see ftsRow.text) and of
// rankWeights.
const (
	colSubject = iota
	colNumber
	colNotation
	colSigner
	colFromName
	colFiles
	textCols
)

// text returns the searchable text as the index stores it (search_text)
// and gives it to FTS5: each text column's tokens, folded (see tokens and
// Fold), joined by ' ', the columns in colSubject… order joined by '\n'.
// FTS5 keeps no positions or columns (detail=none); relevance (rank.go)
// reads the columns back from here.
func (r *ftsRow) text() string {
	cols := [textCols]string{r.subject, r.number, r.notation, r.signer, r.fromName, strings.Join(r.files, " ")}
	var b strings.Builder
	for i, c := range cols {
		if i > 0 {
			b.WriteByte('\n')
		}
		for j, t := range tokens(indexText(c)) {
			if j > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(t)
		}
	}
	return b.String()
}

// textColumns splits a stored text into its columns' tokens.
func textColumns(text string) [textCols][]string {
	var out [textCols][]string
	for i, c := range strings.SplitN(text, "\n", textCols) {
		out[i] = strings.Fields(c)
	}
	return out
}

// tags returns the tag tokens of the row, text being its stored text (for
// the signer's words).
func (r *ftsRow) tags(text string) string {
	var b strings.Builder
	b.Grow(64 + 26*len(r.to))
	add := func(t string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(t)
	}
	add(tagFrom(r.from))
	add(tagUnit(r.from))
	for _, u := range r.to {
		add(tagTo(u))
		add(tagUnit(u))
	}
	add(tagType(r.typ))
	add(tagNumber(r.number))
	for _, c := range r.codes {
		add(tagCode(c))
	}
	for _, t := range textColumns(text)[colSigner] {
		add(tagSigner(t))
	}
	return b.String()
}

// The statements writing a document's rows of the search table and of
// search_text. A document's rows are deleted before they are written again.
const (
	ftsInsert  = "INSERT INTO search(rowid, text, tags) VALUES(?, ?, ?)"
	ftsDelete  = "DELETE FROM search WHERE rowid = ?"
	textInsert = "INSERT OR REPLACE INTO search_text(seq, text) VALUES(?, ?)"
	textDelete = "DELETE FROM search_text WHERE seq = ?"
)

func joinCodes(cs []document.StatusCode) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = string(c)
	}
	return strings.Join(s, " ")
}

// codeStmts rewrite a document's FTS row when the set of its recipients'
// latest status codes changes, so that a status filter is one more doclist
// for FTS5 to intersect.
type codeStmts struct {
	doc, recips, setCodes, delFTS, insFTS *sql.Stmt
}

func prepareCodes(ctx context.Context, tx *sql.Tx, c *stmtCache) (*codeStmts, error) {
	p := &codeStmts{}
	if err := c.prepare(ctx, tx, p.specs()); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *codeStmts) specs() []stmtSpec {
	return []stmtSpec{
		{&p.doc, "SELECT d.number, d.from_unit, d.type, d.codes, t.text FROM documents d JOIN search_text t ON t.seq = d.seq WHERE d.seq = ?"},
		{&p.recips, "SELECT unit, last_code FROM recipients WHERE doc = ? ORDER BY unit"},
		{&p.setCodes, "UPDATE documents SET codes = ? WHERE seq = ?"},
		{&p.delFTS, ftsDelete},
		{&p.insFTS, ftsInsert},
	}
}

func (p *codeStmts) close() {
	for _, s := range []*sql.Stmt{p.doc, p.recips, p.setCodes, p.delFTS, p.insFTS} {
		if s != nil {
			s.Close()
		}
	}
}

// refresh rewrites seq's FTS row if its status codes changed.
func (p *codeStmts) refresh(ctx context.Context, seq int64) error {
	var (
		r               ftsRow
		from, old, text string
	)
	if err := p.doc.QueryRowContext(ctx, seq).Scan(&r.number, &from, &r.typ, &old, &text); err != nil {
		return err
	}
	rows, err := p.recips.QueryContext(ctx, seq)
	if err != nil {
		return err
	}
	for rows.Next() {
		var u, c string
		if err := rows.Scan(&u, &c); err != nil {
			rows.Close()
			return err
		}
		r.to = append(r.to, document.UnitID(u))
		if c != "" && !slices.Contains(r.codes, document.StatusCode(c)) {
			r.codes = append(r.codes, document.StatusCode(c))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	slices.Sort(r.codes)
	codes := joinCodes(r.codes)
	if codes == old {
		return nil
	}
	r.from = document.UnitID(from)
	if _, err := p.delFTS.ExecContext(ctx, ftsKey(seq)); err != nil {
		return err
	}
	if _, err := p.insFTS.ExecContext(ctx, ftsKey(seq), text, r.tags(text)); err != nil {
		return err
	}
	_, err = p.setCodes.ExecContext(ctx, codes, seq)
	return err
}

// fillSearch writes the search table and search_text for every document,
// from the documents and recipients tables (its migration). It reads the
// documents in seq order (a forward scan of the table) and writes the search
// rows in chunks, each in key order (see putStmts.writeFTS).
func fillSearch(ctx context.Context, tx *sql.Tx, progress func(done int)) (int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT d.seq, d.subject, d.number, d.notation, d.signer_name, d.from_name, d.files,
		d.from_unit, d.type, d.codes, (SELECT group_concat(unit, ' ') FROM (SELECT unit FROM recipients WHERE doc = d.seq ORDER BY unit))
		FROM documents d ORDER BY d.seq`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	ins, err := tx.PrepareContext(ctx, ftsInsert)
	if err != nil {
		return 0, err
	}
	defer ins.Close()
	insText, err := tx.PrepareContext(ctx, textInsert)
	if err != nil {
		return 0, err
	}
	defer insText.Close()
	const chunk = 50_000
	type row struct {
		key        int64
		text, tags string
	}
	var pending []row
	flush := func() error {
		for i := len(pending) - 1; i >= 0; i-- {
			r := pending[i]
			if _, err := ins.ExecContext(ctx, r.key, r.text, r.tags); err != nil {
				return err
			}
		}
		pending = pending[:0]
		return nil
	}
	n := 0
	for rows.Next() {
		var (
			r           ftsRow
			seq         int64
			files       []byte
			from, codes string
			to          sql.NullString
		)
		if err := rows.Scan(&seq, &r.subject, &r.number, &r.notation, &r.signer, &r.fromName, &files,
			&from, &r.typ, &codes, &to); err != nil {
			return n, err
		}
		var fs []File
		if err := json.Unmarshal(files, &fs); err != nil {
			return n, err
		}
		for _, f := range fs {
			r.files = append(r.files, f.Name)
		}
		r.from = document.UnitID(from)
		for _, u := range strings.Fields(to.String) {
			r.to = append(r.to, document.UnitID(u))
		}
		for _, c := range strings.Fields(codes) {
			r.codes = append(r.codes, document.StatusCode(c))
		}
		text := r.text()
		if _, err := insText.ExecContext(ctx, seq, text); err != nil {
			return n, err
		}
		pending = append(pending, row{ftsKey(seq), text, r.tags(text)})
		if n++; len(pending) == chunk {
			if err := flush(); err != nil {
				return n, err
			}
			if progress != nil {
				progress(n)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return n, err
	}
	return n, flush()
}
