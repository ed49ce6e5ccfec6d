package index

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// bulkBuild fills the (new, empty) index at path with the generator's first
// n documents and their statuses, as load(…, 2000, true) would, but fast
// enough for 10,000,000 documents: the generator and the preparation of every
// row (JSON, folding, tags, the recipients' final state) run in one goroutine,
// the writes in another, through multi-row INSERTs on one connection with
// the journal off, in transactions of 20,000 documents. The FTS table
// gets a 64 MB pending-terms hash while loading (fewer, larger segments)
// and is optimized at the end. TestBulkBuildMatchesPut checks that the
// result is the index PutDocuments and AddStatuses make.
//
// Only for benchmarks: a crash midway leaves a broken file.
func bulkBuild(ctx context.Context, path string, n int, now time.Time, progress func(done int)) error {
	ix, err := Open(ctx, Config{Path: path}, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	var have int
	if err := ix.r.QueryRowContext(ctx, "SELECT count(*) FROM documents").Scan(&have); err != nil {
		ix.Close()
		return err
	}
	ix.Close()
	if have != 0 {
		return fmt.Errorf("bulk build: %s is not empty", path)
	}
	db, err := openDB(path, "immediate", []string{"locking_mode(EXCLUSIVE)", "journal_mode(OFF)", "synchronous(OFF)",
		"cache_size(-1048576)", "temp_store(MEMORY)"})
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	defer db.Close()
	for _, q := range []string{
		"INSERT INTO search(search, rank) VALUES('hashsize', 67108864)",
		"INSERT INTO search(search, rank) VALUES('automerge', 8)",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("bulk build: %s: %w", q, err)
		}
	}

	const batch, perTx = 2000, 20_000
	type prepared struct {
		docs, recips, stats, fts, texts, terms [][]any
		n                                      int
	}
	out := make(chan prepared, 2)
	genErr := make(chan error, 1)
	go func() {
		defer close(out)
		g := newGen(1, n)
		known := make(map[string]struct{})
		var lastSeq int64 = -1
		var p prepared
		for from := 0; from < n; from += batch {
			recs := make([]Record, 0, batch)
			for i := from; i < min(from+batch, n); i++ {
				recs = append(recs, g.record(i))
			}
			sts := g.statuses(recs)
			if err := prepareBulk(recs, sts, &lastSeq, known, now, &p.docs, &p.recips, &p.stats, &p.fts, &p.texts, &p.terms); err != nil {
				genErr <- err
				return
			}
			p.n += len(recs)
			if p.n >= perTx || from+batch >= n {
				select {
				case out <- p:
				case <-ctx.Done():
					return
				}
				p = prepared{}
			}
		}
		genErr <- nil
	}()

	done := 0
	for p := range out {
		// Search rows in key order (newest first): see putStmts.writeFTS.
		slices.Reverse(p.fts)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for _, t := range []struct {
			head string
			rows [][]any
		}{
			{"documents(seq, " + docCols + ", codes)", p.docs},
			{"recipients(doc, unit, state, routed_at, delivered_at, due_date, last_code, last_at, done)", p.recips},
			{"statuses(doc, unit, code, at, description, officer, flagged, received_at)", p.stats},
			{"search(rowid, text, tags)", p.fts},
			{"search_text(seq, text)", p.texts},
			{"terms(term)", p.terms},
		} {
			if err := insertRows(ctx, tx, t.head, t.rows); err != nil {
				tx.Rollback()
				return fmt.Errorf("bulk build: %s: %w", t.head, err)
			}
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		done += p.n
		if progress != nil {
			progress(done)
		}
	}
	if err := <-genErr; err != nil {
		return err
	}
	for _, q := range []string{
		"INSERT INTO accepted_days(day, docs) SELECT accepted_at / 86400000000, count(*) FROM documents GROUP BY 1",
		"DELETE FROM search_config WHERE k IN ('hashsize', 'automerge')", // back to the defaults
		"PRAGMA journal_mode=WAL",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("bulk build: %s: %w", q, err)
		}
	}
	if err := db.Close(); err != nil {
		return err
	}
	ix, err = Open(ctx, Config{Path: path}, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer ix.Close()
	return ix.Optimize(ctx)
}

// docCols are the documents columns PutDocuments writes after seq.
const docCols = `id, edxml_id, business_type, from_unit, from_name, type, type_name, number, notation,
	subject, promulgated_at, promulgated_place, due_date, urgency, in_reply_to,
	signer_name, signer_position, signer_competence, cert_subject_cn, cert_serial, cert_unit,
	signed_at, container_sha256, size, archive_key, receipt_key, accepted_at, files, meta`

// prepareBulk appends the rows of recs and their statuses sts (in order, as
// AddStatuses records them at time now) to the row lists.
func prepareBulk(recs []Record, sts []document.Status, lastSeq *int64, known map[string]struct{}, now time.Time,
	docs, recips, stats, fts, texts, terms *[][]any) error {
	type recip struct {
		state            string
		delivered, last  any
		lastAt           int64
		code             string
		done             bool
		progress         []document.Status // progress statuses so far
		progressRecorded []int64
	}
	type key struct {
		id   document.ID
		unit document.UnitID
	}
	byDoc := make(map[document.ID]int, len(recs))
	seqs := make([]int64, len(recs))
	rs := make(map[key]*recip)
	for i := range recs {
		rec := &recs[i]
		if err := checkRecord(rec); err != nil {
			return err
		}
		acc := rec.AcceptedAt.Truncate(time.Microsecond)
		seq := us(acc) * seqSpan
		if seq <= *lastSeq {
			if *lastSeq/seqSpan != seq/seqSpan {
				return fmt.Errorf("bulk build: records out of order at %s", rec.Doc.ID)
			}
			seq = *lastSeq + 1
		}
		*lastSeq = seq
		seqs[i] = seq
		byDoc[rec.Doc.ID] = i
		for _, u := range rec.Doc.To {
			rs[key{rec.Doc.ID, u}] = &recip{state: StateRouted}
		}
	}
	for _, st := range sts {
		i, ok := byDoc[st.DocumentID]
		if !ok {
			return fmt.Errorf("bulk build: status for unknown document %s", st.DocumentID)
		}
		r := rs[key{st.DocumentID, st.Unit}]
		if r == nil {
			return fmt.Errorf("bulk build: %s is not a recipient of %s", st.Unit, st.DocumentID)
		}
		at := us(st.Time)
		// The previous progress code: the latest with a time not after at
		// (ties: the larger code, as all share received_at).
		var prev document.StatusCode
		var prevAt int64 = -1
		for _, p := range r.progress {
			if t := us(p.Time); t <= at && (t > prevAt || (t == prevAt && p.Code > prev)) {
				prev, prevAt = p.Code, t
			}
		}
		flagged := !document.InOrder(prev, st.Code)
		if strings.Contains(progressCodes, "'"+string(st.Code)+"'") {
			r.progress = append(r.progress, st)
		}
		var officer any
		if st.Officer != nil {
			b, err := json.Marshal(st.Officer)
			if err != nil {
				return err
			}
			officer = string(b)
		}
		*stats = append(*stats, []any{seqs[i], string(st.Unit), string(st.Code), at, st.Description, officer, flagged, us(now)})
		if r.last == nil || r.lastAt <= at {
			r.code, r.lastAt, r.last = string(st.Code), at, at
		}
		r.done = r.done || st.Code.Final()
		switch {
		case st.Code == document.StatusDelivered:
			r.state = StateDelivered
			if r.delivered == nil {
				r.delivered = at
			}
		case st.Code == document.StatusRefused && r.state == StateRouted:
			r.state = StateRefused
		}
	}
	for i := range recs {
		rec := &recs[i]
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
		row := rowOf(rec)
		// Recipients in the order of the unit column, as the codes are.
		for _, u := range d.To {
			r := rs[key{d.ID, u}]
			*recips = append(*recips, []any{seqs[i], string(u), r.state, us(acc), r.delivered, d.DueDate, r.code, r.last, r.done})
			if r.code != "" && !slices.Contains(row.codes, document.StatusCode(r.code)) {
				row.codes = append(row.codes, document.StatusCode(r.code))
			}
		}
		slices.Sort(row.codes)
		if len(row.codes) > 0 {
			// AddStatuses rewrote the row from the recipients table, in unit order.
			row.to = slices.Sorted(slices.Values(d.To))
		}
		*docs = append(*docs, []any{seqs[i],
			string(d.ID), d.EdXMLID, int(d.BusinessType), string(d.From), d.FromName, d.Type, d.TypeName, d.Number, d.Notation,
			d.Subject, d.PromulgatedAt, d.PromulgatedPlace, d.DueDate, int(d.Urgency), string(d.InReplyTo),
			d.Signer.FullName, d.Signer.Position, d.Signer.Competence, rec.Signer.SubjectCN, rec.Signer.Serial, string(rec.Signer.Unit),
			usOrNil(rec.Signer.SigningTime), rec.ContainerSHA256, rec.Size, rec.ArchiveKey, rec.ReceiptKey, us(acc), string(filesJSON), raw,
			joinCodes(row.codes)})
		text := row.text()
		*fts = append(*fts, []any{ftsKey(seqs[i]), text, row.tags(text)})
		*texts = append(*texts, []any{seqs[i], text})
		for _, t := range strings.Fields(text) {
			if _, ok := known[t]; !ok {
				known[t] = struct{}{}
				*terms = append(*terms, []any{t})
			}
		}
	}
	return nil
}

// insertRows inserts rows into head ("table(col, …)") with multi-row
// INSERTs of up to 400 rows.
func insertRows(ctx context.Context, tx *sql.Tx, head string, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	const chunk = 400
	cols := len(rows[0])
	one := "(?" + strings.Repeat(", ?", cols-1) + ")"
	stmt := func(k int) string {
		return "INSERT INTO " + head + " VALUES " + one + strings.Repeat(", "+one, k-1)
	}
	var full *sql.Stmt
	args := make([]any, 0, chunk*cols)
	for len(rows) > 0 {
		k := min(chunk, len(rows))
		args = args[:0]
		for _, r := range rows[:k] {
			args = append(args, r...)
		}
		var err error
		if k == chunk {
			if full == nil {
				if full, err = tx.PrepareContext(ctx, stmt(chunk)); err != nil {
					return err
				}
				defer full.Close()
			}
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, stmt(k), args...)
		}
		if err != nil {
			return err
		}
		rows = rows[k:]
	}
	return nil
}

// TestBulkBuildMatchesPut: the benchmarks' bulk builder makes the same index
// as PutDocuments and AddStatuses, table by table and term by term.
func TestBulkBuildMatchesPut(t *testing.T) {
	ctx := t.Context()
	const n = 3000 // two generator batches, the second partial
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	a, b := dir+"/put.db", dir+"/bulk.db"
	ix, err := Open(ctx, Config{Path: a}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ix.now = func() time.Time { return now }
	load(t, ix, newGen(1, n), 0, n, 2000, true)
	if err := ix.Optimize(ctx); err != nil {
		t.Fatal(err)
	}
	ix.Close()
	if err := bulkBuild(ctx, b, n, now, nil); err != nil {
		t.Fatal(err)
	}
	ulid := regexp.MustCompile(`[0-9A-HJKMNP-TV-Z]{26}`)
	dump := func(path string) map[string][]string {
		db, err := openDB(path, "deferred", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, "CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, search, row)"); err != nil {
			t.Fatal(err)
		}
		out := map[string][]string{}
		for _, q := range []string{
			"SELECT * FROM documents ORDER BY seq",
			"SELECT * FROM recipients ORDER BY doc, unit",
			"SELECT * FROM statuses ORDER BY doc, unit, code, at",
			"SELECT * FROM terms ORDER BY term",
			"SELECT * FROM temp.v ORDER BY term",
			"SELECT * FROM search_text ORDER BY seq",
			"SELECT * FROM accepted_days ORDER BY day",
			"SELECT rowid FROM search ORDER BY rowid",
			"SELECT k, v FROM search_config WHERE k <> 'version' ORDER BY k",
		} {
			rows, err := db.QueryContext(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			cols, _ := rows.Columns()
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					t.Fatal(err)
				}
				// Document ids are random past their time: compare without them.
				out[q] = append(out[q], ulid.ReplaceAllString(fmt.Sprintf("%q", vals), "ID"))
			}
			rows.Close()
		}
		return out
	}
	da, db := dump(a), dump(b)
	for q, ra := range da {
		rb := db[q]
		if len(ra) == 0 {
			t.Errorf("%s: no rows", q)
		}
		if len(ra) != len(rb) {
			t.Errorf("%s: %d rows by put, %d by bulk", q, len(ra), len(rb))
			continue
		}
		for i := range ra {
			if ra[i] != rb[i] {
				t.Errorf("%s: row %d differs:\n put %s\nbulk %s", q, i, ra[i], rb[i])
				break
			}
		}
	}
	if _, err := os.Stat(b); err != nil {
		t.Fatal(err)
	}
}
