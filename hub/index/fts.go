package index

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"
	"strings"

	"github.com/edxhub/edx/pkg/document"
)

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

// text returns the folded text columns, in table order.
func (r *ftsRow) text() []string {
	return []string{indexText(r.subject), indexText(r.number), indexText(r.notation), indexText(r.signer),
		indexText(r.fromName), indexText(strings.Join(r.files, " "))}
}

func (r *ftsRow) tags() string {
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
	return b.String()
}

// ftsInsert is the statement writing an FTS row.
const ftsInsert = "INSERT INTO search(rowid, subject, number, notation, signer, from_name, files, tags) VALUES(?, ?, ?, ?, ?, ?, ?, ?)"

func (r *ftsRow) insert(ctx context.Context, st *sql.Stmt, seq int64, text []string) error {
	_, err := st.ExecContext(ctx, seq, text[0], text[1], text[2], text[3], text[4], text[5], r.tags())
	return err
}

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

func prepareCodes(ctx context.Context, tx *sql.Tx) (*codeStmts, error) {
	p := &codeStmts{}
	for _, s := range []struct {
		dst **sql.Stmt
		q   string
	}{
		{&p.doc, "SELECT subject, number, notation, signer_name, from_name, files, from_unit, type, codes FROM documents WHERE seq = ?"},
		{&p.recips, "SELECT unit, last_code FROM recipients WHERE doc = ? ORDER BY unit"},
		{&p.setCodes, "UPDATE documents SET codes = ? WHERE seq = ?"},
		{&p.delFTS, "DELETE FROM search WHERE rowid = ?"},
		{&p.insFTS, ftsInsert},
	} {
		st, err := tx.PrepareContext(ctx, s.q)
		if err != nil {
			p.close()
			return nil, err
		}
		*s.dst = st
	}
	return p, nil
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
		r                ftsRow
		files, from, old string
	)
	if err := p.doc.QueryRowContext(ctx, seq).Scan(&r.subject, &r.number, &r.notation, &r.signer, &r.fromName,
		&files, &from, &r.typ, &old); err != nil {
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
	var fs []File
	if err := json.Unmarshal([]byte(files), &fs); err != nil {
		return err
	}
	for _, f := range fs {
		r.files = append(r.files, f.Name)
	}
	r.from = document.UnitID(from)
	if _, err := p.delFTS.ExecContext(ctx, seq); err != nil {
		return err
	}
	if err := r.insert(ctx, p.insFTS, seq, r.text()); err != nil {
		return err
	}
	_, err = p.setCodes.ExecContext(ctx, codes, seq)
	return err
}
