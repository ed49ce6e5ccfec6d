package index

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// Sort orders of a search.
const (
	SortAcceptedDesc    = "accepted_desc" // newest accepted first (the default)
	SortAcceptedAsc     = "accepted_asc"
	SortPromulgatedDesc = "promulgated_desc" // by ngày ban hành, newest first
	// SortRelevance orders by BM25 over the text, subject first (see
	// rank.go), the newest MaxRanked matches when there are more
	// (Page.Ranked then says so); accepted_desc without text.
	SortRelevance = "relevance"
)

// Search limits.
const (
	DefaultLimit = 20
	MaxLimit     = 500
	// MaxTotal is how far Search counts matches: past it, Page.Total is
	// MaxTotal and Page.TotalCapped is set. Counting is the one part of a
	// search whose cost grows with the number of matches (a frequent word
	// matches millions of documents at national scale); the page itself
	// streams and stops after Limit+1 hits.
	MaxTotal = 10_000
	// MaxRanked is how many matches a relevance order ranks: the newest
	// MaxRanked of them (see SortRelevance).
	MaxRanked = 1_000
	// MaxScanned bounds the work of counting and ranking: they look at
	// the newest MaxScanned documents of the date range (whole days, so
	// about as many), and past them Page.TotalCapped says that there may
	// be more matches. FTS5 walks the doclists of a query's words within
	// the range, and a frequent word is in a third of all documents: at
	// 10,000,000 documents a year of them costs a few hundred milliseconds
	// (README, "Search at national scale"). Pages themselves walk the whole
	// range, newest first, and stop after Limit+1 hits.
	MaxScanned = 250_000
)

// usPerDay is a day in microseconds: accepted_days counts documents by
// accepted_at / usPerDay.
const usPerDay = 86_400_000_000

// seqDay is the day (in accepted_days) of the document seq.
func seqDay(seq int64) int64 { return seq / seqSpan / usPerDay }

// scanFrom returns where the newest max documents of [lo, hi) begin: the
// first seq of the day that completes them, lo when there are fewer.
func scanFrom(ctx context.Context, tx *sql.Tx, lo, hi int64, limit int) (int64, error) {
	if hi <= lo {
		return lo, nil
	}
	rows, err := tx.QueryContext(ctx, "SELECT day, docs FROM accepted_days WHERE day >= ? AND day <= ? ORDER BY day DESC",
		seqDay(lo), seqDay(hi-1))
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var day int64
		var docs int
		if err := rows.Scan(&day, &docs); err != nil {
			return 0, err
		}
		if n += docs; n >= limit {
			return max(lo, day*usPerDay*seqSpan), nil
		}
	}
	return lo, rows.Err()
}

// scanStart returns where the plan's scan window begins (see MaxScanned):
// FTS5 counts and ranks within [scanStart, hi).
func (p *plan) scanStart(ctx context.Context, tx *sql.Tx) (int64, error) {
	if !p.scanned {
		s, err := scanFrom(ctx, tx, p.lo, p.hi, p.maxScanned)
		if err != nil {
			return 0, err
		}
		p.scan, p.scanned = s, true
	}
	return p.scan, nil
}

// Query selects documents. Every set field narrows the result (AND).
type Query struct {
	// Text: words searched, folded (see Fold), as prefixes, all required, in
	// subject, number, notation, signer name, sender name and file names.
	// Any input is safe: FTS syntax in it is taken literally.
	Text string
	From document.UnitID // sent by
	To   document.UnitID // received by (a recipient)
	// Unit: sent or received by, for per-unit access.
	Unit   document.UnitID
	Type   string // document type code, exactly (e.g. "QĐ")
	Number string // số, exactly (case and diacritics folded)
	Signer string // words of the signer's name, as prefixes
	// Since ≤ accepted_at < Until, the hub's acceptance time (set, trusted,
	// always present, and the default order, so a date range is an index
	// range). Zero means unbounded.
	Since, Until time.Time
	// Status: the latest status (by time) of at least one recipient. The
	// set of these codes is kept as tags in the document's full-text row,
	// rewritten when it changes, so this filter costs no more than others.
	Status document.StatusCode
	Sort   string // SortAcceptedDesc when ""
	Limit  int    // DefaultLimit when ≤ 0, at most MaxLimit
	Cursor string // Page.NextCursor of the previous page, "" for the first
}

// Summary is one search hit.
type Summary struct {
	ID             document.ID      `json:"id"`
	From           document.UnitID  `json:"from"`
	FromName       string           `json:"from_name"`
	Type           string           `json:"type"`
	TypeName       string           `json:"type_name"`
	Number         string           `json:"number"`
	Notation       string           `json:"notation"`
	Subject        string           `json:"subject"`
	PromulgatedAt  string           `json:"promulgated_at"`
	DueDate        string           `json:"due_date"`
	Urgency        document.Urgency `json:"urgency"`
	SignerName     string           `json:"signer_name"`
	SignerPosition string           `json:"signer_position"`
	AcceptedAt     time.Time        `json:"accepted_at"`
}

// Page is one page of search hits.
type Page struct {
	Items []Summary `json:"items"`
	// Total counts the matches of the query, on all pages, up to MaxTotal
	// and within the newest MaxScanned documents of the date range, as of
	// the first page: later pages repeat it.
	Total int `json:"total"`
	// TotalCapped: counting stopped at MaxTotal matches or at MaxScanned
	// documents; there may be more matches than Total.
	TotalCapped bool `json:"total_capped,omitempty"`
	// Ranked: in a relevance order, the number of matches ranked (the
	// newest), when there may be more; 0 when every match is ranked.
	Ranked     int    `json:"ranked,omitempty"`
	NextCursor string `json:"next_cursor,omitempty"` // "" on the last page
}

// cursor is the opaque keyset position after the last item of a page.
type cursor struct {
	Sort string  `json:"o"`
	Seq  int64   `json:"s"`
	Prom string  `json:"p,omitempty"`
	Rank float64 `json:"r,omitempty"`
	// The relevance order's candidates: the matches in [WinLo, WinHi),
	// fixed by the first page so that later pages rank the same set.
	WinLo int64 `json:"wl,omitempty"`
	WinHi int64 `json:"wh,omitempty"`
	// The text terms' inverse document frequencies the first page used.
	IDF []float64 `json:"i,omitempty"`
	// Page.Total and Page.TotalCapped as the first page counted them.
	Total  int  `json:"n,omitempty"`
	Capped bool `json:"c,omitempty"`
}

func (c cursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s, sort string) (cursor, error) {
	var c cursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &c) != nil {
		return c, invalid("search: malformed cursor")
	}
	if c.Sort != sort {
		return c, invalid("search: cursor is for sort %q, not %q", c.Sort, sort)
	}
	return c, nil
}

// plan is a query compiled to its driving source.
type plan struct {
	text   []string // terms of Query.Text
	texts  []string // FTS5 expression of each of text (set by expand)
	signer []string // terms of Query.Signer
	tags   []string // exact filters, see tags
	match  string   // FTS5 expression (set by expand); "" when nothing goes through FTS
	lo, hi int64    // seq range [lo, hi)
	idfs   *idfCache
	// Caps: MaxTotal, MaxRanked and MaxScanned but in tests.
	maxTotal, maxRanked, maxScanned int
	scan                            int64 // see scanStart, once scanned
	scanned                         bool
	sort                            string
	limit                           int
	cur                             *cursor
}

func compile(q *Query) (*plan, error) {
	p := &plan{lo: 0, hi: 1<<63 - 1, sort: q.Sort, limit: q.Limit, maxTotal: MaxTotal, maxRanked: MaxRanked, maxScanned: MaxScanned}
	if p.sort == "" {
		p.sort = SortAcceptedDesc
	}
	switch p.sort {
	case SortAcceptedDesc, SortAcceptedAsc, SortPromulgatedDesc, SortRelevance:
	default:
		return nil, invalid("search: unknown sort %q", q.Sort)
	}
	if p.limit <= 0 {
		p.limit = DefaultLimit
	}
	p.limit = min(p.limit, MaxLimit)
	if q.Status != "" {
		if err := q.Status.Validate(); err != nil {
			return nil, invalid("search: %v", err)
		}
	}
	p.text, p.signer = terms(q.Text), terms(q.Signer)
	if p.sort == SortRelevance && len(p.text) == 0 {
		p.sort = SortAcceptedDesc
	}
	for _, f := range []struct {
		name string
		u    document.UnitID
		tag  func(document.UnitID) string
	}{{"from", q.From, tagFrom}, {"to", q.To, tagTo}, {"unit", q.Unit, tagUnit}} {
		if f.u == "" {
			continue
		}
		if err := f.u.Validate(); err != nil {
			return nil, invalid("search: %s: %v", f.name, err)
		}
		p.tags = append(p.tags, f.tag(f.u))
	}
	if t := strings.TrimSpace(q.Type); t != "" {
		p.tags = append(p.tags, tagType(t))
	}
	if n := strings.TrimSpace(q.Number); n != "" {
		p.tags = append(p.tags, tagNumber(n))
	}
	if q.Status != "" {
		p.tags = append(p.tags, tagCode(q.Status))
	}

	if !q.Since.IsZero() {
		p.lo = max(p.lo, seqBound(q.Since))
	}
	if !q.Until.IsZero() {
		p.hi = min(p.hi, seqBound(q.Until))
	}
	if q.Cursor != "" {
		c, err := decodeCursor(q.Cursor, p.sort)
		if err != nil {
			return nil, err
		}
		p.cur = &c
	}
	return p, nil
}

// seqBound returns the first seq at or after t.
func seqBound(t time.Time) int64 {
	u := t.UnixMicro()
	if t.After(time.UnixMicro(u)) {
		u++ // t has sub-microsecond digits: round up
	}
	switch {
	case u <= 0:
		return 0
	case u > maxAcceptedUS:
		return 1<<63 - 1
	}
	return u * seqSpan
}

// source returns the FROM and WHERE of the plan's candidate documents, the
// expression of their seq, and its arguments. Two shapes:
//
//   - FTS: any text, unit, type, number, signer or status filter. FTS5
//     intersects the doclists of the terms and tags, seeks to the seq range
//     (a range of its rowids, ftsKey(seq)) and streams newest first (rowid
//     order), so a LIMIT stops early.
//   - nothing: the documents table by seq.
func (p *plan) source() (from, where, seq string, args []any) {
	if p.match != "" {
		return "search", "search MATCH ? AND search.rowid >= ? AND search.rowid <= ?", "-search.rowid",
			[]any{p.match, ftsKey(p.hi - 1), ftsKey(p.lo)}
	}
	return "documents", "documents.seq >= ? AND documents.seq < ?", "documents.seq", []any{p.lo, p.hi}
}

// countSQL returns the query counting the matches, up to MaxTotal+1.
func (p *plan) countSQL() (string, []any) {
	from, where, _, args := p.source()
	if from == "documents" {
		if p.lo == 0 && p.hi == 1<<63-1 {
			return "SELECT count(*) FROM (SELECT 1 FROM documents LIMIT ?)", []any{p.maxTotal + 1}
		}
		// The documents_accepted index is far smaller than the table.
		// lo and hi are multiples of seqSpan here (no cursor in a count).
		return "SELECT count(*) FROM (SELECT 1 FROM documents WHERE accepted_at >= ? AND accepted_at < ? LIMIT ?)",
			[]any{p.lo / seqSpan, p.hi / seqSpan, p.maxTotal + 1}
	}
	return "SELECT count(*) FROM (SELECT 1 FROM " + from + " WHERE " + where + " LIMIT ?)", append(args, p.maxTotal+1)
}

// pageSQL returns the query for one page (limit+1 rows, to know whether
// there is a next one): seq, promulgated_at, rank.
func (p *plan) pageSQL() (string, []any) {
	lo, hi := p.lo, p.hi
	if c := p.cur; c != nil {
		switch p.sort {
		case SortAcceptedDesc:
			hi = min(hi, c.Seq)
		case SortAcceptedAsc:
			lo = max(lo, c.Seq+1)
		}
	}
	q := *p
	q.lo, q.hi = lo, hi
	from, where, seq, args := q.source()
	n := p.limit + 1
	switch p.sort {
	case SortAcceptedDesc, SortAcceptedAsc:
		// Newest first is the search table's rowid order, and the
		// documents table's seq order backward.
		desc := p.sort == SortAcceptedDesc
		order := "documents.seq DESC"
		switch {
		case from == "search" && desc:
			order = "search.rowid"
		case from == "search":
			order = "search.rowid DESC"
		case !desc:
			order = "documents.seq"
		}
		return "SELECT " + seq + ", '', 0.0 FROM " + from + " WHERE " + where +
			" ORDER BY " + order + " LIMIT ?", append(args, n)
	case SortPromulgatedDesc:
		var s string
		switch from {
		case "search":
			// The covering index answers seq → promulgated_at from a few hot
			// pages; the table would cost a page read per hit.
			s = "SELECT d.seq, d.promulgated_at, 0.0 FROM search JOIN documents d INDEXED BY documents_seq_promulgated ON d.seq = -search.rowid WHERE " + where
		default:
			if p.lo == 0 && p.hi == 1<<63-1 {
				// Everything: walk the index in order rather than sort it all.
				s, args = "SELECT d.seq, d.promulgated_at, 0.0 FROM documents d INDEXED BY documents_promulgated WHERE 1", nil
			} else {
				s = "SELECT d.seq, d.promulgated_at, 0.0 FROM documents d WHERE d.seq >= ? AND d.seq < ?"
			}
		}
		if c := p.cur; c != nil {
			// A row value, so that an index walk can seek to the cursor.
			s += " AND (d.promulgated_at, d.seq) < (?, ?)"
			args = append(args, c.Prom, c.Seq)
		}
		return s + " ORDER BY d.promulgated_at DESC, d.seq DESC LIMIT ?", append(args, n)
	default: // SortRelevance: see rank
		panic("index: pageSQL for " + p.sort)
	}
}

// Search returns one page of the documents matching q, and the number of all
// matches. Pages are keyset-paginated: following NextCursor visits every
// match exactly once, even while documents are added (new ones are seen
// only if they sort after the cursor). A relevance order may shift while
// documents are added, since scores depend on the whole index.
func (ix *Index) Search(ctx context.Context, q Query) (Page, error) {
	p, err := compile(&q)
	if err != nil {
		return Page{}, err
	}
	// One read transaction: the count and the page see the same snapshot.
	tx, err := ix.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Page{}, fmt.Errorf("index: search: %w", err)
	}
	defer tx.Rollback()
	p.idfs, p.maxTotal, p.maxRanked, p.maxScanned = &ix.idfs, ix.maxTotal, ix.maxRanked, ix.maxScanned
	page, err := p.run(ctx, tx)
	if err != nil {
		return Page{}, fmt.Errorf("index: search: %w", err)
	}
	return page, nil
}

// maxExpansions is how many vocabulary terms a query prefix may stand for
// before the index lets FTS5 handle the prefix itself (slower: it merges
// every matching doclist whole).
const maxExpansions = 16

// expand builds p.match, each query term replaced by the vocabulary terms it
// is a prefix of. It reports false when some term matches nothing, so
// neither does the query.
func (p *plan) expand(ctx context.Context, tx *sql.Tx) (bool, error) {
	var last []string
	group := func(ts []string, as func(string) string) (string, bool, error) {
		parts := make([]string, len(ts))
		for i, t := range ts {
			e, ok, err := expandTerm(ctx, tx, t, as)
			if !ok || err != nil {
				return "", ok, err
			}
			parts[i] = e
		}
		last = parts
		return "(" + strings.Join(parts, " AND ") + ")", true, nil
	}
	var parts []string
	if len(p.text) > 0 {
		g, ok, err := group(p.text, nil)
		if !ok || err != nil {
			return ok, err
		}
		p.texts = last
		// No column filter: text terms cannot match a tag (see tagFrom).
		parts = append(parts, g)
	}
	if len(p.signer) > 0 {
		g, ok, err := group(p.signer, tagSigner)
		if !ok || err != nil {
			return ok, err
		}
		parts = append(parts, g)
	}
	for _, t := range p.tags {
		parts = append(parts, ftsString(t))
	}
	p.match = strings.Join(parts, " AND ")
	return true, nil
}

// expandTerm returns the FTS5 expression for the prefix t; with as, for the
// tags as makes of the terms t stands for.
func expandTerm(ctx context.Context, tx *sql.Tx, t string, as func(string) string) (string, bool, error) {
	if as == nil {
		as = func(s string) string { return s }
	}
	// 0xFF never occurs in UTF-8, so t+"\xff" bounds every term starting with t.
	rows, err := tx.QueryContext(ctx, "SELECT term FROM terms WHERE term >= ? AND term < ? ORDER BY term LIMIT ?",
		t, t+"\xff", maxExpansions+1)
	if err != nil {
		return "", false, err
	}
	defer rows.Close()
	var ts []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return "", false, err
		}
		ts = append(ts, ftsString(as(s)))
	}
	if err := rows.Err(); err != nil {
		return "", false, err
	}
	switch {
	case len(ts) == 0:
		return "", false, nil
	case len(ts) > maxExpansions:
		return ftsString(as(t)) + "*", true, nil
	case len(ts) == 1:
		return ts[0], true, nil
	}
	return "(" + strings.Join(ts, " OR ") + ")", true, nil
}

func (p *plan) run(ctx context.Context, tx *sql.Tx) (Page, error) {
	var page Page
	if ok, err := p.expand(ctx, tx); !ok || err != nil {
		return page, err
	}
	if p.sort == SortRelevance {
		return p.rank(ctx, tx, page)
	}
	pq, pargs := p.pageSQL()
	rows, err := tx.QueryContext(ctx, pq, pargs...)
	if err != nil {
		return page, err
	}
	type hit struct {
		seq  int64
		prom string
		rank float64
	}
	var hits []hit
	for rows.Next() {
		var h hit
		if err := rows.Scan(&h.seq, &h.prom, &h.rank); err != nil {
			rows.Close()
			return page, err
		}
		hits = append(hits, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return page, err
	}
	// A first page that holds every match has counted them.
	if err := p.total(ctx, tx, &page, p.cur == nil && len(hits) <= p.limit, len(hits)); err != nil {
		return page, err
	}
	if len(hits) > p.limit {
		hits = hits[:p.limit]
		last := hits[len(hits)-1]
		page.NextCursor = cursor{Sort: p.sort, Seq: last.seq, Prom: last.prom, Rank: last.rank,
			Total: page.Total, Capped: page.TotalCapped}.encode()
	}
	seqs := make([]int64, len(hits))
	for i, h := range hits {
		seqs[i] = h.seq
	}
	page.Items, err = summaries(ctx, tx, seqs)
	return page, err
}

// total sets page.Total and page.TotalCapped, n being the matches already
// walked, newest first: n when known says that they are all, the cursor's
// when it has them (the first page counted), else a count within the scan
// window (see MaxScanned), and at least n.
func (p *plan) total(ctx context.Context, tx *sql.Tx, page *Page, known bool, n int) error {
	switch {
	case known:
		page.Total = n
	case p.cur != nil && (p.cur.Total > 0 || p.cur.Capped):
		page.Total, page.TotalCapped = p.cur.Total, p.cur.Capped
		return nil
	default:
		w := *p
		if p.match != "" {
			s, err := p.scanStart(ctx, tx)
			if err != nil {
				return err
			}
			w.lo = s
			page.TotalCapped = s > p.lo // older documents are not counted
		}
		cq, cargs := w.countSQL()
		if err := tx.QueryRowContext(ctx, cq, cargs...).Scan(&page.Total); err != nil {
			return err
		}
		page.Total = max(page.Total, n)
	}
	if page.Total > p.maxTotal {
		page.Total, page.TotalCapped = p.maxTotal, true
	}
	return nil
}

const summaryCols = `seq, id, from_unit, from_name, type, type_name, number, notation, subject,
	promulgated_at, due_date, urgency, signer_name, signer_position, accepted_at`

func scanSummary(rows *sql.Rows) (int64, Summary, error) {
	var (
		s             Summary
		seq, accepted int64
		id, from      string
	)
	err := rows.Scan(&seq, &id, &from, &s.FromName, &s.Type, &s.TypeName, &s.Number, &s.Notation, &s.Subject,
		&s.PromulgatedAt, &s.DueDate, &s.Urgency, &s.SignerName, &s.SignerPosition, &accepted)
	s.ID, s.From, s.AcceptedAt = document.ID(id), document.UnitID(from), fromUS(accepted)
	return seq, s, err
}

// summaries returns the summaries of seqs, in that order.
func summaries(ctx context.Context, q queryer, seqs []int64) ([]Summary, error) {
	if len(seqs) == 0 {
		return nil, nil
	}
	args := make([]any, len(seqs))
	for i, s := range seqs {
		args[i] = s
	}
	rows, err := q.QueryContext(ctx, "SELECT "+summaryCols+" FROM documents WHERE seq IN (?"+
		strings.Repeat(", ?", len(seqs)-1)+")", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	by := make(map[int64]Summary, len(seqs))
	for rows.Next() {
		seq, s, err := scanSummary(rows)
		if err != nil {
			return nil, err
		}
		by[seq] = s
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]Summary, 0, len(seqs))
	for _, s := range seqs {
		if sum, ok := by[s]; ok {
			out = append(out, sum)
		}
	}
	return out, nil
}

// vietnam is the zone due dates are written in (UTC+7, no daylight saving).
var vietnam = time.FixedZone("ICT", 7*3600)

// today returns now's date in Vietnam, YYYY-MM-DD.
func today(now time.Time) string { return now.In(vietnam).Format("2006-01-02") }

// Overdue returns the documents unit received whose due date (hạn xử lý, a
// date in Vietnam's time zone) is before now's date and for which unit has
// reported no final status: 06 finished, and also 02 refused or 13 cancelled,
// which close a document without finishing it. Earliest due first.
func (ix *Index) Overdue(ctx context.Context, unit document.UnitID, now time.Time) ([]Summary, error) {
	rows, err := ix.r.QueryContext(ctx, `SELECT `+prefixCols("d", summaryCols)+`
		FROM recipients r JOIN documents d ON d.seq = r.doc
		WHERE r.unit = ? AND r.done = 0 AND r.due_date > '' AND r.due_date < ?
		ORDER BY r.due_date, r.doc`, string(unit), today(now))
	if err != nil {
		return nil, fmt.Errorf("index: overdue: %w", err)
	}
	defer rows.Close()
	var out []Summary
	for rows.Next() {
		_, s, err := scanSummary(rows)
		if err != nil {
			return nil, fmt.Errorf("index: overdue: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("index: overdue: %w", err)
	}
	return out, nil
}

func prefixCols(alias, cols string) string {
	f := strings.Split(cols, ",")
	for i, c := range f {
		f[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(f, ", ")
}

// Counters are a unit's document counts.
type Counters struct {
	Sent        int `json:"sent"`        // documents the unit sent
	Received    int `json:"received"`    // documents the unit is a recipient of
	Pending     int `json:"pending"`     // received, no final status (06, 02, 13) yet
	Overdue     int `json:"overdue"`     // pending and past the due date (see Overdue)
	Undelivered int `json:"undelivered"` // received, not yet delivered to the unit's agent
}

// UnitCounters returns unit's counts; Overdue is as of the index's clock.
func (ix *Index) UnitCounters(ctx context.Context, unit document.UnitID) (Counters, error) {
	now := ix.now()
	var c Counters
	tx, err := ix.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return c, fmt.Errorf("index: counters: %w", err)
	}
	defer tx.Rollback()
	u := string(unit)
	for _, q := range []struct {
		dst  *int
		sql  string
		args []any
	}{
		{&c.Sent, "SELECT count(*) FROM documents WHERE from_unit = ?", []any{u}},
		{&c.Received, "SELECT count(*) FROM recipients WHERE unit = ?", []any{u}},
		{&c.Pending, "SELECT count(*) FROM recipients WHERE unit = ? AND done = 0", []any{u}},
		{&c.Overdue, "SELECT count(*) FROM recipients WHERE unit = ? AND done = 0 AND due_date > '' AND due_date < ?", []any{u, today(now)}},
		{&c.Undelivered, "SELECT count(*) FROM recipients INDEXED BY recipients_routed WHERE unit = ? AND state = 'routed'", []any{u}},
	} {
		if err := tx.QueryRowContext(ctx, q.sql, q.args...).Scan(q.dst); err != nil {
			return c, fmt.Errorf("index: counters: %w", err)
		}
	}
	return c, nil
}
