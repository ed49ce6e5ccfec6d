package index

import (
	"database/sql"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestQueryPlans keeps the planner honest: no search shape may scan a table
// whole, and the default order is streamed, never sorted. Run with -v to see
// the plans.
func TestQueryPlans(t *testing.T) {
	ix, _ := openTest(t)
	corpus(t, ix, 50)
	ctx := t.Context()
	// A full scan of a table; a scan of a covering index is allowed only
	// when it is the plan's point (counting everything, walking in order).
	table := regexp.MustCompile(`^SCAN (documents|d|recipients|r|statuses|units|rejected)( |$)`)
	fullScan := func(plan string) bool {
		for _, step := range strings.Split(plan, " | ") {
			if table.MatchString(step) && !strings.Contains(step, "USING COVERING INDEX") {
				return true
			}
		}
		return false
	}
	for _, q := range []Query{
		{Text: "dat dai", Unit: hcm, Since: t0, Until: t0.Add(100 * time.Hour)},
		{Text: "dat dai", Unit: hcm, Sort: SortAcceptedAsc, Cursor: cursor{Sort: SortAcceptedAsc, Seq: 5}.encode()},
		{Text: "dat dai", Unit: hcm, Sort: SortPromulgatedDesc},
		{Text: "dat dai", Unit: hcm, Sort: SortRelevance, Status: "01"},
		{Status: "01"},
		{Status: "01", Sort: SortPromulgatedDesc},
		{Sort: SortPromulgatedDesc, Cursor: cursor{Sort: SortPromulgatedDesc, Seq: 5, Prom: "2026-11-30"}.encode()},
		{},
		{Since: t0},
	} {
		p, err := compile(&q)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := ix.r.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.expand(ctx, tx); err != nil {
			t.Fatal(err)
		}
		cq, ca := p.countSQL()
		stmts := []struct {
			q string
			a []any
		}{{cq, ca}}
		pq := ""
		if p.sort == SortRelevance {
			stmts = append(stmts, []struct {
				q string
				a []any
			}{
				{rankCandidatesSQL, []any{p.match, ftsKey(p.hi - 1), ftsKey(p.lo), MaxRanked}},
				{rankSampleSQL, []any{p.hi, idfSample}},
				{rankCountSQL, []any{p.texts[0], ftsKey(p.hi - 1), ftsKey(p.lo)}},
			}...)
		} else {
			var pa []any
			pq, pa = p.pageSQL()
			stmts = append(stmts, struct {
				q string
				a []any
			}{pq, pa})
		}
		for _, s := range stmts {
			plan := explain(t, tx, s.q, s.a...)
			t.Logf("%s\n  -> %s", s.q, plan)
			if fullScan(plan) {
				t.Errorf("full scan: %s\n  -> %s", s.q, plan)
			}
			// Every full-text step seeks to the date range (a rowid range
			// FTS5 takes: '>' and '<' in its plan) and none sorts by FTS5's
			// rank, which scores every match (see rank.go).
			for _, m := range ftsStep.FindAllStringSubmatch(plan, -1) {
				flags, _ := strconv.Atoi(m[1])
				if !strings.Contains(m[2], ">") || !strings.Contains(m[2], "<") {
					t.Errorf("full-text step without the rowid range: %s\n  -> %s", s.q, plan)
				}
				if flags&fts5OrderRank != 0 {
					t.Errorf("full-text step ordered by rank: %s\n  -> %s", s.q, plan)
				}
			}
			if s.q == rankCandidatesSQL && !strings.Contains(plan, "SEARCH t USING INTEGER PRIMARY KEY") {
				t.Errorf("ranking does not look its texts up by key: %s\n  -> %s", s.q, plan)
			}
			// Newest first walks the search table forward: FTS5 walks a
			// doclist backward at a cost that grows with its square.
			if s.q == rankCandidatesSQL || (p.sort == SortAcceptedDesc && s.q == pq) {
				for _, m := range ftsStep.FindAllStringSubmatch(plan, -1) {
					if flags, _ := strconv.Atoi(m[1]); flags&fts5OrderDesc != 0 {
						t.Errorf("newest first walks the search table backward: %s\n  -> %s", s.q, plan)
					}
				}
			}
			if p.sort == SortAcceptedDesc && s.q == pq && strings.Contains(plan, "ORDER BY") {
				t.Errorf("default order sorted, not streamed: %s\n  -> %s", s.q, plan)
			}
		}
		tx.Rollback()
	}
	tx, err := ix.r.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	for _, s := range []string{
		`SELECT ` + prefixCols("d", summaryCols) + ` FROM recipients r JOIN documents d ON d.seq = r.doc WHERE r.unit = ? AND r.done = 0 AND r.due_date > '' AND r.due_date < ? ORDER BY r.due_date, r.doc`,
		"SELECT count(*) FROM documents WHERE from_unit = ?",
		"SELECT count(*) FROM recipients WHERE unit = ?",
		"SELECT count(*) FROM recipients WHERE unit = ? AND done = 0 AND due_date > '' AND due_date < ?",
		"SELECT count(*) FROM recipients INDEXED BY recipients_routed WHERE unit = ? AND state = 'routed'",
		"SELECT flagged FROM statuses WHERE doc = ? AND unit = ? AND code = ? AND at = ?",
		"SELECT max(seq) FROM documents WHERE seq >= ? AND seq < ?",
		"SELECT term FROM terms WHERE term >= ? AND term < ? ORDER BY term LIMIT ?",
		"SELECT ref, sender, at, reasons, archive_key FROM rejected WHERE sender = ? ORDER BY at DESC, ref LIMIT ?",
	} {
		n := strings.Count(s, "?")
		args := make([]any, n)
		for i := range args {
			args[i] = "x"
		}
		plan := explain(t, tx, s, args...)
		t.Logf("%s\n  -> %s", s, plan)
		if fullScan(plan) {
			t.Errorf("full scan: %s\n  -> %s", s, plan)
		}
	}
}

// ftsStep is an FTS5 step of a plan: its idxNum (flags) and idxStr ('M' a
// MATCH, '<' '>' '=' rowid constraints).
var ftsStep = regexp.MustCompile(`SCAN search VIRTUAL TABLE INDEX (\d+):(\S*)`)

// FTS5's FTS5_BI_ORDER_RANK and FTS5_BI_ORDER_DESC flags in idxNum.
const (
	fts5OrderRank = 0x20
	fts5OrderDesc = 0x80
)

func explain(t *testing.T, tx *sql.Tx, q string, args ...any) string {
	t.Helper()
	rows, err := tx.Query("EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	return strings.Join(plan, " | ")
}
