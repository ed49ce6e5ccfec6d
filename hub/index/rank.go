package index

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// Relevance.
//
// FTS5's bm25() cannot serve a large index: it scores every match before
// ORDER BY rank can keep the best, and it computes each phrase's inverse
// document frequency by walking the phrase's whole doclist, every query. At
// 10,000,000 documents a frequent word ("ke hoach") or a busy unit's tag
// costs hundreds of milliseconds that way, however narrow the date range.
// So the index ranks a bounded set itself:
//
//   - the candidates are the newest MaxRanked matches (FTS5 streams them in
//     rowid order and stops), all of them when there are fewer; the first
//     page fixes their rowid window in the cursor, so later pages rank the
//     same set;
//   - each candidate's text comes from the covering index documents_rank
//     (a page of the table per candidate would be a disk read at national
//     scale), folded and split exactly as it was indexed (see ftsRow.text
//     and tokens);
//   - a query term's document frequency is counted among the idfSample
//     documents accepted last, a bounded count that estimates the share of
//     documents holding the term; the estimate is kept for idfTTL (the
//     share moves slowly) and carried in the cursor, so that every page of
//     a query ranks alike;
//   - the score is FTS5's BM25 (k1 = 1.2, b = 0.75, the same column
//     weights: subject 10, number and notation 4, signer 2, sender name and
//     file names 1), negated so that lower ranks first as with FTS5.
const (
	idfSample = 20_000
	idfTTL    = 10 * time.Minute
	idfKeep   = 10_000 // estimates kept at most; all are dropped past it
	bm25K1    = 1.2
	bm25B     = 0.75
)

// The statements of a relevance order (TestQueryPlans explains them).
const (
	rankCandidatesSQL = "SELECT rowid FROM search WHERE search MATCH ? AND rowid >= ? AND rowid < ? ORDER BY rowid DESC LIMIT ?"
	// The documents_accepted index, not the (wide) rows.
	rankSampleSQL = `SELECT count(*), min(accepted_at) FROM
		(SELECT accepted_at FROM documents WHERE accepted_at <= ? ORDER BY accepted_at DESC LIMIT ?)`
	rankCountSQL = "SELECT count(*) FROM search WHERE search MATCH ? AND rowid >= ? AND rowid < ?"
	// One parameter, a JSON array of seqs: a statement with thousands of
	// parameters costs more to prepare than to run.
	// The covering index documents_rank, not the table (see schema.go).
	rankTextsSQL = "SELECT seq, subject, number, notation, signer_name, from_name, files FROM documents INDEXED BY documents_rank WHERE seq IN (SELECT value FROM json_each(?))"
)

// rankWeights are the text columns' weights, in ftsRow.text order.
var rankWeights = [...]float64{10, 4, 4, 2, 1, 1}

// rank returns the page of a relevance order; page.Total is set.
func (p *plan) rank(ctx context.Context, tx *sql.Tx, page Page) (Page, error) {
	lo, hi := p.lo, p.hi
	c := p.cur
	if c != nil && c.WinHi > 0 {
		lo, hi = max(lo, c.WinLo), min(hi, c.WinHi)
	}
	rows, err := tx.QueryContext(ctx, rankCandidatesSQL, p.match, lo, hi, p.maxRanked)
	if err != nil {
		return page, err
	}
	var seqs []int64
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return page, err
		}
		seqs = append(seqs, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return page, err
	}
	if len(seqs) == 0 {
		return page, nil
	}
	winLo, winHi := seqs[len(seqs)-1], seqs[0]+1
	if c != nil && c.WinHi > 0 {
		winLo, winHi = c.WinLo, c.WinHi
	}
	if page.TotalCapped || page.Total > len(seqs) {
		page.Ranked = len(seqs)
	}
	idf := []float64(nil)
	if c != nil && c.WinHi > 0 {
		if len(c.IDF) != len(p.text) {
			return page, invalid("search: cursor is not for this query")
		}
		idf = c.IDF
	} else if idf, err = p.idf(ctx, tx); err != nil {
		return page, err
	}
	docs, err := rankTexts(ctx, tx, seqs)
	if err != nil {
		return page, err
	}
	type hit struct {
		seq  int64
		rank float64
	}
	hits := make([]hit, 0, len(docs))
	var total float64
	for _, d := range docs {
		total += float64(d.len)
	}
	avg := total / float64(max(len(docs), 1))
	for _, d := range docs {
		h := hit{seq: d.seq, rank: -d.bm25(p.text, idf, avg)}
		if c != nil && !(h.rank > c.Rank || (h.rank == c.Rank && h.seq < c.Seq)) {
			continue
		}
		hits = append(hits, h)
	}
	slices.SortFunc(hits, func(a, b hit) int {
		if r := cmp.Compare(a.rank, b.rank); r != 0 {
			return r
		}
		return cmp.Compare(b.seq, a.seq)
	})
	if len(hits) > p.limit {
		hits = hits[:p.limit]
		last := hits[len(hits)-1]
		page.NextCursor = cursor{Sort: p.sort, Seq: last.seq, Rank: last.rank, WinLo: winLo, WinHi: winHi, IDF: idf}.encode()
	}
	out := make([]int64, len(hits))
	for i, h := range hits {
		out[i] = h.seq
	}
	page.Items, err = summaries(ctx, tx, out)
	return page, err
}

// idfCache holds recent estimates of inverse document frequencies, by
// FTS5 expression.
type idfCache struct {
	mu sync.Mutex
	m  map[string]idfEntry
}

type idfEntry struct {
	idf float64
	at  time.Time
}

// idf returns the inverse document frequency of each text term.
func (p *plan) idf(ctx context.Context, tx *sql.Tx) ([]float64, error) {
	out := make([]float64, len(p.texts))
	now := time.Now()
	c := p.idfs
	var miss []int
	c.mu.Lock()
	for i, e := range p.texts {
		if v, ok := c.m[e]; ok && now.Sub(v.at) < idfTTL {
			out[i] = v.idf
		} else {
			miss = append(miss, i)
		}
	}
	c.mu.Unlock()
	if len(miss) == 0 {
		return out, nil
	}
	var (
		n     int
		first sql.NullInt64
	)
	if err := tx.QueryRowContext(ctx, rankSampleSQL, maxAcceptedUS, idfSample).Scan(&n, &first); err != nil {
		return nil, err
	}
	for _, i := range miss {
		var k int
		if err := tx.QueryRowContext(ctx, rankCountSQL, p.texts[i], first.Int64*seqSpan, int64(1<<63-1)).Scan(&k); err != nil {
			return nil, err
		}
		// FTS5's formula, and its floor for terms in most documents.
		out[i] = max(math.Log((float64(n)-float64(k)+0.5)/(float64(k)+0.5)), 1e-6)
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= idfKeep {
		c.m = make(map[string]idfEntry)
	}
	for _, i := range miss {
		c.m[p.texts[i]] = idfEntry{out[i], now}
	}
	c.mu.Unlock()
	return out, nil
}

// rankDoc is a candidate's indexed text, as tokens per column.
type rankDoc struct {
	seq  int64
	cols [len(rankWeights)][]string
	len  int // tokens in all columns
}

// bm25 returns FTS5's BM25 score of d for the query terms (prefixes) with
// their idf, avg being the mean token count of a document.
func (d *rankDoc) bm25(terms []string, idf []float64, avg float64) float64 {
	var score float64
	norm := bm25K1 * (1 - bm25B + bm25B*float64(d.len)/max(avg, 1))
	for i, t := range terms {
		var f float64
		for c, toks := range d.cols {
			for _, tok := range toks {
				if strings.HasPrefix(tok, t) {
					f += rankWeights[c]
				}
			}
		}
		score += idf[i] * f * (bm25K1 + 1) / (f + norm)
	}
	return score
}

// rankTexts returns the indexed text of the documents seqs.
func rankTexts(ctx context.Context, tx *sql.Tx, seqs []int64) ([]rankDoc, error) {
	list, err := json.Marshal(seqs)
	if err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, rankTextsSQL, string(list))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]rankDoc, 0, len(seqs))
	for rows.Next() {
		var (
			d     rankDoc
			r     ftsRow
			files []byte
		)
		if err := rows.Scan(&d.seq, &r.subject, &r.number, &r.notation, &r.signer, &r.fromName, &files); err != nil {
			return nil, err
		}
		if r.files, err = fileNames(files); err != nil {
			return nil, err
		}
		for c, col := range r.text() {
			d.cols[c] = tokens(col)
			d.len += len(d.cols[c])
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// fileNames returns the names in a documents.files array (JSON, as
// PutDocuments writes it) without decoding the rest of it: ranking reads
// thousands per query.
func fileNames(files []byte) ([]string, error) {
	if bytes.IndexByte(files, '\\') >= 0 {
		return fileNamesSlow(files) // escapes: let encoding/json read them
	}
	// Without escapes every '"' opens or closes a string: a "name" key of an
	// object in the array is followed by ':' and its value.
	var names []string
	depth := 0
	for i := 0; i < len(files); i++ {
		switch files[i] {
		case '[', '{':
			depth++
		case ']', '}':
			depth--
		case '"':
			j := bytes.IndexByte(files[i+1:], '"')
			if j < 0 {
				return fileNamesSlow(files)
			}
			key := files[i+1 : i+1+j]
			i += j + 1
			if depth != 2 || string(key) != "name" || i+2 >= len(files) || files[i+1] != ':' {
				continue
			}
			if files[i+2] != '"' {
				return fileNamesSlow(files)
			}
			k := bytes.IndexByte(files[i+3:], '"')
			if k < 0 {
				return fileNamesSlow(files)
			}
			names = append(names, string(files[i+3:i+3+k]))
			i += 3 + k
		}
	}
	return names, nil
}

func fileNamesSlow(files []byte) ([]string, error) {
	var fs []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(files, &fs); err != nil {
		return nil, err
	}
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.Name
	}
	return names, nil
}
