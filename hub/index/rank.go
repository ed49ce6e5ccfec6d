package index

import (
	"cmp"
	"context"
	"database/sql"
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
// costs hundreds of milliseconds that way, however narrow the date range,
// and ranking every match of a frequent word costs seconds (3.6 s of CPU a
// query, measured). So the index ranks a bounded set itself:
//
//   - the candidates are the newest MaxRanked matches among the newest
//     MaxScanned documents of the date range (FTS5 streams them in rowid
//     order and stops), all of them when there are fewer, and when those
//     documents hold less than a page of matches, enough of the newest
//     before them to fill one; the first page fixes their window in the
//     cursor, so later pages rank the same set;
//   - each candidate's text comes from search_text, folded and split into
//     columns and tokens exactly as it was indexed (see ftsRow.text); the
//     documents rows would cost a page read each;
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
	// The candidates newest first, each with its text from search_text.
	rankCandidatesSQL = "SELECT t.seq, t.text FROM search JOIN search_text t ON t.seq = -search.rowid " +
		"WHERE search MATCH ? AND search.rowid >= ? AND search.rowid <= ? ORDER BY search.rowid LIMIT ?"
	// The documents_accepted index, not the (wide) rows.
	rankSampleSQL = `SELECT count(*), min(accepted_at) FROM
		(SELECT accepted_at FROM documents WHERE accepted_at <= ? ORDER BY accepted_at DESC LIMIT ?)`
	rankCountSQL = "SELECT count(*) FROM search WHERE search MATCH ? AND rowid >= ? AND rowid <= ?"
)

// rankWeights are the text columns' weights, in colSubject… order.
var rankWeights = [textCols]float64{10, 4, 4, 2, 1, 1}

// rank returns the page of a relevance order.
func (p *plan) rank(ctx context.Context, tx *sql.Tx, page Page) (Page, error) {
	c := p.cur
	fixed := c != nil && c.WinHi > 0 // a later page: the first page's candidates
	var (
		docs      []rankDoc
		exhausted bool // docs are every match of the query
		err       error
	)
	if fixed {
		docs, err = rankCandidates(ctx, tx, p.match, max(p.lo, c.WinLo), min(p.hi, c.WinHi), p.maxRanked)
	} else {
		// The newest matches within the scan window, one more than are
		// ranked, to know whether there are more; past the window only
		// to fill a page.
		var scan int64
		if scan, err = p.scanStart(ctx, tx); err != nil {
			return page, err
		}
		docs, err = rankCandidates(ctx, tx, p.match, scan, p.hi, p.maxRanked+1)
		exhausted = len(docs) <= p.maxRanked && scan == p.lo
		if err == nil && len(docs) <= p.limit && scan > p.lo {
			var older []rankDoc
			want := p.limit + 1 - len(docs)
			older, err = rankCandidates(ctx, tx, p.match, p.lo, scan, want)
			docs, exhausted = append(docs, older...), len(older) < want
		}
		if len(docs) > p.maxRanked {
			docs, exhausted = docs[:p.maxRanked], false
		}
	}
	if err != nil {
		return page, err
	}
	// Candidates that are every match have counted them.
	if err := p.total(ctx, tx, &page, exhausted, len(docs)); err != nil {
		return page, err
	}
	if len(docs) == 0 {
		return page, nil
	}
	winLo, winHi := docs[len(docs)-1].seq, docs[0].seq+1
	if fixed {
		winLo, winHi = c.WinLo, c.WinHi
	}
	if !exhausted && (page.TotalCapped || page.Total > len(docs)) {
		page.Ranked = len(docs)
	}
	idf := []float64(nil)
	if fixed {
		if len(c.IDF) != len(p.text) {
			return page, invalid("search: cursor is not for this query")
		}
		idf = c.IDF
	} else if idf, err = p.idf(ctx, tx); err != nil {
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
		page.NextCursor = cursor{Sort: p.sort, Seq: last.seq, Rank: last.rank, WinLo: winLo, WinHi: winHi, IDF: idf,
			Total: page.Total, Capped: page.TotalCapped}.encode()
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
		if err := tx.QueryRowContext(ctx, rankCountSQL, p.texts[i], ftsKey(1<<63-1), ftsKey(first.Int64*seqSpan)).Scan(&k); err != nil {
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

// rankCandidates returns the first n matches of match among the documents
// [lo, hi), newest first, with their text.
func rankCandidates(ctx context.Context, tx *sql.Tx, match string, lo, hi int64, n int) ([]rankDoc, error) {
	rows, err := tx.QueryContext(ctx, rankCandidatesSQL, match, ftsKey(hi-1), ftsKey(lo), n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []rankDoc
	for rows.Next() {
		var (
			d    rankDoc
			text string
		)
		if err := rows.Scan(&d.seq, &text); err != nil {
			return nil, err
		}
		d.cols = textColumns(text)
		for _, col := range d.cols {
			d.len += len(col)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}
